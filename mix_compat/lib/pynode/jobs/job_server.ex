defmodule Pynode.Jobs.JobServer do
  @moduledoc false
  # One job: a GenServer started (and linked) by the host `:pynode_jobs`, running one kind
  # module (`Pynode.Jobs.Kind`) on its portable state. Protocol: docs/JOBS_PROTOCOL.md,
  # repeated in Pynode.Jobs.Host.
  #
  # Theory of operation
  #
  # Life. `init/1` does nothing that can block on another node (the host is waiting in
  # start_link): the work is in `handle_continue/2`, so two hosts that start or adopt jobs
  # replicating to each other never wait on each other.
  #
  #   start: reg {n, g, {pynode_job, Id}} (value: kind) -> kind.init -> seq 1 -> replicate
  #          -> answer {ok, self()} to the host's caller.   Name taken: {error, job_already_started}.
  #   adopt: reg, retried while the holder is stale (the dead owner before the registry's
  #          nodedown purge, a pid on a node we are not connected to, or the process handing
  #          the job to us, whose unreg may still be on its way) for at most adopt_reg_timeout
  #          -> kind.restore -> seq = Seq + 1 -> replicate -> answer {ok, self()}.
  #
  # Operations. `{pynode_job_op, OpId, Request}`: an OpId found in `recent` gets the answer
  # it got before (a retry: not applied twice). `get_state` reads; the kind answers the
  # rest. A change bumps `seq`, enters `recent` (newest first, at most 64, the whole reply
  # `{ok, Result}`), is replicated, and only then answered. A stop (finish) unregisters the
  # name, casts drop_replica to the replica hosts, answers, and exits `normal`.
  #
  # Time. The kind's portable state holds remaining durations as of `stamped` (monotonic
  # ms). `refresh/1` subtracts the time passed since, which is done before the state leaves
  # the process and before the kind sees it; the timer is set to `kind.timeout(state)`.
  #
  # Replication. Replica hosts: the next `replicas` host nodes after ours in the sorted list
  # of `{p, g, pynode_job_host}` holders. Each gets `{replicate, Id, Kind, Portable, Seq,
  # self(), ReplicaNodes}` as a call; a host that fails or answers anything but `ok` is
  # skipped and the next one is tried. Hosts that stop being replica hosts get a
  # drop_replica cast. The job monitors its replica hosts: when one goes, it replicates to
  # the next one, so a second failure does not find it without a copy.
  #
  # Handoff. `{pynode_job_handoff, Target}` from the host: unreg, `{adopt, Kind, Id,
  # Portable}` on Target (durations computed now), exit `normal`. Calls still queued here
  # end with an exit (`normal`) and the clients retry at the new owner. If the adopt fails,
  # the job takes its name back, tells the host `{pynode_job_handoff_failed, self(), Target}`
  # and keeps serving (the host may try another target).

  use GenServer, restart: :temporary
  require Logger

  alias Pynode.Jobs
  alias Pynode.Registry

  @recent_max 64
  @backoff_first 10
  @backoff_max 200

  defstruct [
    :mod,
    :kind,
    :id,
    :state,
    :host,
    stamped: 0,
    recent: [],
    seq: 0,
    replica_nodes: [],
    replica_mons: %{},
    timer: nil
  ]

  ## Started by the host

  # mode: {:start, args, from} | {:adopt, portable, from | nil, opts}
  def start_link(mod, id, mode), do: GenServer.start_link(__MODULE__, {mod, id, mode, self()})

  @impl true
  def init({mod, id, mode, host}) do
    s = %__MODULE__{mod: mod, kind: mod.kind(), id: id, host: host, stamped: now()}
    {:ok, s, {:continue, mode}}
  end

  @impl true
  def handle_continue({:start, args, from}, s) do
    case Registry.reg(Jobs.key(s.id), s.kind) do
      :ok ->
        case safe(fn -> s.mod.init(s.id, args) end) do
          {:ok, state} ->
            s = %{s | state: state, seq: 1, stamped: now()} |> replicate([])
            reply(from, {:ok, self()})
            {:noreply, ready(s)}

          {:error, reason} ->
            Registry.unreg(Jobs.key(s.id))
            reply(from, {:error, reason})
            {:stop, :normal, s}
        end

      {:error, {:already_registered, _}} ->
        reply(from, {:error, :job_already_started})
        {:stop, :normal, s}

      other ->
        reply(from, {:error, other})
        {:stop, :normal, s}
    end
  end

  def handle_continue({:adopt, portable, from, opts}, s) do
    old_owner = opts[:old_owner]

    with :ok <- reg_for_adoption(s, old_owner, opts[:exclude]),
         {:ok, state} <- restore(s, portable) do
      seq = if is_integer(portable[:seq]), do: portable[:seq] + 1, else: 1

      s =
        %{s | state: state, stamped: now(), seq: seq, recent: recent_of(portable)}
        |> replicate(List.wrap(opts[:exclude]))

      if old_owner do
        for n <- opts[:old_replicas] || [], n != node(), n not in s.replica_nodes do
          GenServer.cast({:pynode_jobs, n}, {:drop_replica, s.id, old_owner})
        end
      end

      Logger.info("pynode jobs: adopted job #{inspect(s.id)} (#{s.kind}), seq #{seq}")
      reply(from, {:ok, self()})
      {:noreply, ready(s)}
    else
      {:error, reason} = error ->
        Logger.info("pynode jobs: adoption of job #{inspect(s.id)} gave up: #{inspect(reason)}")
        if Registry.where(Jobs.key(s.id)) == self(), do: Registry.unreg(Jobs.key(s.id))
        reply(from, error)
        {:stop, :normal, s}
    end
  end

  defp restore(s, portable) do
    case safe(fn -> s.mod.restore(s.id, portable[:state]) end) do
      {:ok, {:error, reason}} -> {:error, reason}
      other -> other
    end
  end

  defp recent_of(%{recent: recent}) when is_list(recent) do
    recent |> Enum.filter(&match?({_, _}, &1)) |> Enum.take(@recent_max)
  end

  defp recent_of(_), do: []

  defp reg_for_adoption(s, old_owner, exclude) do
    deadline = now() + Jobs.config(:adopt_reg_timeout)
    do_reg(s, old_owner, exclude, deadline, @backoff_first)
  end

  defp do_reg(s, old_owner, exclude, deadline, delay) do
    case Registry.reg(Jobs.key(s.id), s.kind) do
      :ok ->
        :ok

      {:error, {:already_registered, holder}} = error ->
        stale =
          holder == old_owner or node(holder) == exclude or
            (node(holder) != node() and node(holder) not in Node.list(:connected))

        if stale and now() < deadline do
          Process.sleep(delay)
          do_reg(s, old_owner, exclude, deadline, min(delay * 2, @backoff_max))
        else
          error
        end

      other ->
        {:error, other}
    end
  end

  defp ready(s) do
    send(s.host, {:pynode_job_ready, self()})
    set_timer(s)
  end

  ## Operations

  @impl true
  def handle_call({:pynode_job_op, op_id, request}, _from, s) do
    case List.keyfind(s.recent, op_id, 0) do
      {_, answer} ->
        {:reply, answer, s}

      nil ->
        s = refresh(s)
        run_op(op_id, request, s)
    end
  end

  def handle_call(request, _from, s), do: {:reply, {:error, {:unknown_call, request}}, s}

  defp run_op(_op_id, :get_state, s), do: {:reply, {:ok, s.state}, s}

  defp run_op(op_id, request, s) do
    case safe(fn -> s.mod.handle_op(request, s.id, s.state) end) do
      {:ok, {:read, result}} ->
        {:reply, {:ok, result}, s}

      {:ok, {:changed, result, state}} ->
        answer = {:ok, result}
        s = %{s | state: state, seq: s.seq + 1} |> remember(op_id, answer) |> replicate([])
        {:reply, answer, set_timer(s)}

      {:ok, {:stop, result}} ->
        answer = {:ok, result}
        s = s |> remember(op_id, answer) |> finish()
        {:stop, :normal, answer, s}

      {:ok, {:error, reason}} ->
        {:reply, {:error, reason}, s}

      {:ok, other} ->
        {:reply, {:error, {:bad_kind_reply, other}}, s}

      {:error, reason} ->
        {:reply, {:error, reason}, s}
    end
  end

  defp remember(s, op_id, answer),
    do: %{s | recent: Enum.take([{op_id, answer} | s.recent], @recent_max)}

  # The job is done (finish, TTL): give up the name, tell the replica hosts.
  defp finish(s) do
    s = cancel_timer(s)
    Registry.unreg(Jobs.key(s.id))

    for n <- s.replica_nodes,
        do: GenServer.cast({:pynode_jobs, n}, {:drop_replica, s.id, self()})

    %{s | replica_nodes: []}
  end

  ## Timers, replica hosts, handoff

  @impl true
  def handle_info({:pynode_job_timer, ref}, %{timer: ref} = s) do
    s = refresh(%{s | timer: nil})

    case safe(fn -> s.mod.handle_timeout(s.id, s.state) end) do
      {:ok, {:changed, state}} ->
        s = %{s | state: state, seq: s.seq + 1} |> replicate([])
        {:noreply, set_timer(s)}

      {:ok, {:noreply, state}} ->
        {:noreply, set_timer(%{s | state: state})}

      {:ok, :stop} ->
        {:stop, :normal, finish(s)}

      other ->
        Logger.error("pynode jobs: job #{inspect(s.id)}: handle_timeout: #{inspect(other)}")
        {:noreply, s}
    end
  end

  def handle_info({:pynode_job_timer, _stale}, s), do: {:noreply, s}

  def handle_info({:DOWN, ref, :process, _pid, reason}, s)
      when is_map_key(s.replica_mons, ref) do
    {gone, mons} = Map.pop(s.replica_mons, ref)

    Logger.info(
      "pynode jobs: job #{inspect(s.id)}: replica host #{gone} is gone (#{inspect(reason)}); replicating again"
    )

    s = %{s | replica_mons: mons, replica_nodes: List.delete(s.replica_nodes, gone)}
    {:noreply, s |> refresh() |> replicate([])}
  end

  def handle_info({:pynode_job_handoff, target}, s) do
    s = s |> refresh() |> cancel_timer()
    Registry.unreg(Jobs.key(s.id))
    request = {:adopt, s.kind, s.id, portable(s)}

    reply =
      try do
        GenServer.call({:pynode_jobs, target}, request, Jobs.config(:adopt_timeout))
      catch
        :exit, reason -> {:error, exit_reason(reason)}
      end

    case reply do
      {:ok, pid} when is_pid(pid) ->
        Logger.info("pynode jobs: job #{inspect(s.id)} handed off to #{target}")
        {:stop, :normal, %{s | replica_nodes: []}}

      other ->
        Logger.warning(
          "pynode jobs: handoff of job #{inspect(s.id)} to #{target} failed: #{inspect(other)}"
        )

        case Registry.reg(Jobs.key(s.id), s.kind) do
          :ok ->
            send(s.host, {:pynode_job_handoff_failed, self(), target})
            {:noreply, set_timer(s)}

          again ->
            Logger.error(
              "pynode jobs: job #{inspect(s.id)} could not take its name back (#{inspect(again)}); it ends"
            )

            {:stop, :normal, s}
        end
    end
  end

  def handle_info(_msg, s), do: {:noreply, s}

  defp set_timer(s) do
    s = cancel_timer(s)

    case function_exported?(s.mod, :timeout, 1) && s.mod.timeout(s.state) do
      ms when is_integer(ms) and ms >= 0 ->
        ref = make_ref()
        Process.send_after(self(), {:pynode_job_timer, ref}, ms)
        %{s | timer: ref}

      _ ->
        s
    end
  end

  defp cancel_timer(s), do: %{s | timer: nil}

  # Brings the remaining durations of the state up to now.
  defp refresh(s) do
    t = now()

    if function_exported?(s.mod, :elapse, 2) and s.state != nil do
      %{s | state: s.mod.elapse(s.state, max(t - s.stamped, 0)), stamped: t}
    else
      %{s | stamped: t}
    end
  end

  defp portable(s), do: %{kind: s.kind, id: s.id, state: s.state, recent: s.recent, seq: s.seq}

  ## Replication

  # Stores the portable state on the replica hosts (never on `exclude`), returning once each
  # has acknowledged, or at once when no other host can take it.
  defp replicate(s, exclude) do
    s = refresh(s)
    n = Jobs.config(:replicas)
    timeout = Jobs.config(:call_timeout)
    portable = portable(s)
    {targets, pids} = replicate_loop(s, portable, n, timeout, MapSet.new(exclude))

    for old <- s.replica_nodes,
        old not in targets,
        do: GenServer.cast({:pynode_jobs, old}, {:drop_replica, s.id, self()})

    for {ref, _} <- s.replica_mons, do: Process.demonitor(ref, [:flush])
    mons = Map.new(targets, fn t -> {Process.monitor(Map.fetch!(pids, t)), t} end)
    %{s | replica_nodes: targets, replica_mons: mons}
  end

  defp replicate_loop(s, portable, n, timeout, failed) do
    hosts = for {node, pid} <- host_pids(), node not in failed, into: %{}, do: {node, pid}
    targets = replica_targets(Map.keys(hosts), node(), n)

    failure =
      Enum.find(targets, fn t ->
        request = {:replicate, s.id, s.kind, portable, s.seq, self(), targets}

        try do
          GenServer.call(Map.fetch!(hosts, t), request, timeout) != :ok
        catch
          :exit, reason ->
            Logger.info(
              "pynode jobs: job #{inspect(s.id)}: replicate to #{t} failed: #{inspect(exit_reason(reason))}"
            )

            true
        end
      end)

    case failure do
      nil -> {targets, hosts}
      t -> replicate_loop(s, portable, n, timeout, MapSet.put(failed, t))
    end
  end

  defp host_pids do
    Registry.lookup_pids(Jobs.host_key())
    |> Enum.reduce(%{}, fn pid, acc -> Map.put_new(acc, node(pid), pid) end)
  end

  @doc false
  # The next `n` nodes after `owner` in the sorted list of host nodes, skipping the owner.
  def replica_targets(hosts, owner, n) do
    ordered = hosts |> Enum.uniq() |> Enum.reject(&(&1 == owner)) |> Enum.sort()

    if n <= 0 do
      []
    else
      {before, after_} = Enum.split_with(ordered, &(&1 < owner))
      Enum.take(after_ ++ before, n)
    end
  end

  ## Helpers

  defp reply(nil, _), do: :ok
  defp reply(from, msg), do: GenServer.reply(from, msg)

  defp now, do: System.monotonic_time(:millisecond)

  defp safe(fun) do
    {:ok, fun.()}
  rescue
    e ->
      Logger.error(Exception.format(:error, e, __STACKTRACE__))
      {:error, {:exception, Exception.message(e)}}
  end

  @doc false
  def exit_reason({reason, {GenServer, :call, _}}), do: reason
  def exit_reason({reason, {:gen_server, :call, _}}), do: reason
  def exit_reason(reason), do: reason
end
