defmodule Job.Otp do
  @moduledoc """
  The job kind `'Job.Otp'`: simulated work, then results kept for a while.

      iex> {:ok, _pid} = Job.Otp.start("report-3")
      iex> Job.Otp.check_results("report-3")
      nil
      iex> Process.sleep(2_100); Job.Otp.check_results("report-3")
      "results of report-3"

  The work takes `work_ms` milliseconds (application env, default 2000); the results stay
  readable for `result_ttl` milliseconds (default 600000, ten minutes), after which the job
  ends. Both durations travel as remaining milliseconds, so a job that moves to another
  node (graceful shutdown) carries on where it was, and one adopted after its node died
  resumes from its last replicated state (less the time its replica waited).

  Portable state (the same in Python):
  `%{id: id, results: nil | binary, work_left_ms: int | nil, ttl_left_ms: int | nil}`.

  After a partition with a copy of the job on each side, the surviving copy keeps its own
  state when it has results, else takes the other copy's when that one has, else keeps the
  smaller work time left of the two (`merge/2`).
  """

  @behaviour Pynode.Jobs.Kind

  alias Pynode.Jobs.Client

  @doc """
  Starts the job `id`. Returns `{:ok, pid}` or `{:error, :job_already_started}` (or another
  `{:error, reason}`: `:no_hosts`, `:timeout`).
  """
  @spec start(term) :: {:ok, pid} | {:error, term}
  def start(id), do: Client.run(:otp_start, [id])

  @doc """
  The results of job `id` (`"results of <id>"`), or `nil` while the work is running or when
  there is no such job (never started, or its results expired).
  """
  @spec check_results(term) :: binary | nil
  def check_results(id), do: Client.run(:check_results, [id])

  ## Pynode.Jobs.Kind

  @impl true
  def kind, do: :"Job.Otp"

  @impl true
  def init(id, _args),
    do: %{
      id: id,
      results: nil,
      work_left_ms: Pynode.Jobs.config(:work_ms),
      ttl_left_ms: nil
    }

  @impl true
  def restore(id, %{results: nil} = state) do
    %{id: id, results: nil, work_left_ms: ms(state[:work_left_ms], 0), ttl_left_ms: nil}
  end

  def restore(id, %{results: results} = state) do
    ttl = ms(state[:ttl_left_ms], Pynode.Jobs.config(:result_ttl))
    %{id: id, results: results, work_left_ms: nil, ttl_left_ms: ttl}
  end

  def restore(_id, state), do: {:error, {:bad_state, state}}

  defp ms(n, _default) when is_integer(n) and n >= 0, do: n
  defp ms(_, default), do: default

  @impl true
  def handle_op(:check_results, _id, state), do: {:read, state.results}
  def handle_op(request, _id, _state), do: {:error, {:unknown_request, request}}

  @impl true
  def timeout(%{results: nil, work_left_ms: left}), do: left
  def timeout(%{ttl_left_ms: left}), do: left

  @impl true
  def elapse(%{results: nil, work_left_ms: left} = s, ms) when is_integer(left),
    do: %{s | work_left_ms: max(left - ms, 0)}

  def elapse(%{ttl_left_ms: left} = s, ms) when is_integer(left),
    do: %{s | ttl_left_ms: max(left - ms, 0)}

  def elapse(s, _ms), do: s

  @impl true
  def handle_timeout(id, %{results: nil, work_left_ms: 0} = s) do
    {:changed,
     %{
       s
       | results: Pynode.Jobs.results_binary(id),
         work_left_ms: nil,
         ttl_left_ms: Pynode.Jobs.config(:result_ttl)
     }}
  end

  def handle_timeout(_id, %{ttl_left_ms: 0}), do: :stop
  def handle_timeout(_id, s), do: {:noreply, s}

  # Partitions: the winner's state when it has results; else the loser's when it has; else
  # the winner's with the smaller work_left_ms of the two.
  @impl true
  def merge(%{state: %{results: r} = mine}, _theirs) when r != nil, do: mine
  def merge(_winner, %{state: %{results: r} = theirs}) when r != nil, do: theirs

  def merge(%{state: mine}, %{state: theirs}) do
    case {mine[:work_left_ms], theirs[:work_left_ms]} do
      {a, b} when is_integer(a) and is_integer(b) -> %{mine | work_left_ms: min(a, b)}
      {nil, b} when is_integer(b) -> Map.put(mine, :work_left_ms, b)
      _ -> mine
    end
  end

  @impl true
  def describe_merge(%{state: mine}, %{state: theirs}, merged) do
    cond do
      mine[:results] != nil -> "kept this copy's results"
      theirs[:results] != nil -> "took that copy's results"
      true -> "work left #{inspect(merged[:work_left_ms])} ms (the smaller of the two)"
    end
  end
end
