defmodule Job do
  @moduledoc """
  The job kind `'Job'`: a list of events, newest first, ending with the job's id.

      iex> {:ok, _pid} = Job.start("order-17")
      iex> Job.update("order-17", :paid)
      :ok
      iex> Job.update("order-17", :shipped)
      :ok
      iex> Job.finish("order-17")
      [:shipped, :paid, "order-17"]

  The job runs on one host of the cluster (placed round-robin, Elixir or Python), moves
  with its state when that node shuts down, and is adopted by the node holding its replica
  when that node dies. The functions work on any node, also one that only has the code
  loaded and runs no job host (they then go through a connected host node). See
  `Pynode.Jobs` for placement, replication and configuration.

  Portable state (the same in Python): `[Id]` at start; `{update, Event}` makes it
  `[Event | State]`; `finish` answers the state and ends the job.

  After a partition with a copy of the job on each side, the surviving copy takes in the
  other copy's acknowledged events (`merge/2`): they come first, in that copy's order, then
  the survivor's state; an update retried on both sides (the same operation id) is kept once.
  """

  @behaviour Pynode.Jobs.Kind

  alias Pynode.Jobs.Client

  @doc """
  Starts the job `id`. Returns `{:ok, pid}`, or `{:error, :job_already_started}` when a job
  with this id runs somewhere in the cluster (or another `{:error, reason}`:
  `:no_hosts`, `:timeout`).
  """
  @spec start(term) :: {:ok, pid} | {:error, term}
  def start(id), do: Client.run(:start, [:Job, id, []])

  @doc "Prepends `event` to the job's state. Returns `:ok` or `{:error, :no_such_job}`."
  @spec update(term, term) :: :ok | {:error, term}
  def update(id, event), do: Client.run(:update, [id, event])

  @doc """
  Ends the job and returns its state, `[last_event, ..., id]`, or `{:error, :no_such_job}`.
  """
  @spec finish(term) :: list | {:error, term}
  def finish(id), do: Client.run(:finish, [id])

  ## Pynode.Jobs.Kind

  @impl true
  def kind, do: :Job

  @impl true
  def init(id, _args), do: [id]

  @impl true
  def restore(_id, state) when is_list(state), do: state
  def restore(_id, state), do: {:error, {:bad_state, state}}

  @impl true
  def handle_op({:update, event}, _id, state), do: {:changed, :ok, [event | state]}
  def handle_op(:finish, _id, state), do: {:stop, state}
  def handle_op(request, _id, _state), do: {:error, {:unknown_request, request}}

  # Partitions: the loser's new events are its first min(length(RecentL), length(StateL) - 1)
  # events (each acknowledged update added one event and one Recent entry, newest first, so
  # the n-th event goes with the n-th OpId of RecentL) whose OpId the winner's Recent does
  # not hold; they come first (in the loser's order), then the winner's state.
  @impl true
  def merge(%{state: mine} = winner, theirs) do
    {new, _} = new_events(winner, theirs)
    new ++ mine
  end

  @impl true
  def describe_merge(winner, theirs, _merged) do
    {new, dup} = new_events(winner, theirs)

    "kept #{length(new)} event(s) of that copy #{inspect(new)}" <>
      if(dup > 0, do: " (#{dup} retried on both sides, kept once)", else: "")
  end

  # {the loser's new events, how many of its recent events the winner also holds}
  defp new_events(winner, theirs) do
    known = winner |> recent_ids() |> MapSet.new()
    state = if is_list(theirs[:state]), do: theirs[:state], else: []
    ids = recent_ids(theirs)
    n = min(length(ids), length(state) - 1)
    pairs = Enum.zip(Enum.take(state, max(n, 0)), ids)
    new = for {event, op_id} <- pairs, not MapSet.member?(known, op_id), do: event
    {new, length(pairs) - length(new)}
  end

  defp recent_ids(%{recent: recent}) when is_list(recent),
    do: for({op_id, _reply} <- recent, do: op_id)

  defp recent_ids(_), do: []
end
