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
  # Membership. The host sends `pynode_job_membership` when the set of host processes
  # changed (it looks on nodeup/nodedown and every replica_check ms). The job recomputes its
  # targets; when they (or the host process on a target node) differ from the hosts that
  # hold its current state (`replica_list`, `replica_hosts`), it replicates the current
  # state with the same Seq (a refresh to a host that already has it) and drops the hosts
  # that are no longer targets. So a job that was alone, was adopted, or has not changed
  # since (a Job.Otp with results) gets its copies when a host joins. A host that already
  # holds this Seq under the same list of replicas is not asked again.
  #
  # Partitions. The job traps exits. `{EXIT, _, {name_conflict, OurKey, Winner}}`: stop
  # serving, call `{pynode_job_merge, Portable}` on Winner (durations computed now); `ok` ->
  # drop_replica to our replica hosts, exit `normal` (queued calls end with it and are
  # retried at the winner); an error or an exit -> reg the name again: `ok` -> serve again,
  # held by another -> merge into that one, with backoff, until job_timeout, then log the
  # state at ERROR and end. The exit signal of the parent (the host) is handled by
  # gen_server itself (the job ends with that reason); any other `normal` signal is ignored
  # and any other signal ends the job with its reason, as without trapping.
  # The winner, on `{pynode_job_merge, Theirs}` (same id and kind, else
  # `{error, not_this_job}`): Theirs' state is checked with kind.restore; state =
  # kind.merge(Mine, Theirs) (or Mine's without merge/2); Recent = ours ++ theirs not in
  # ours, at most 64; Seq = max + 1; replicate, answer `ok`, WARNING.
  #
  # Handoff. `{pynode_job_handoff, Target}` from the host: unreg, `{adopt, Kind, Id,
  # Portable}` on Target (durations computed now), exit `normal`. Calls still queued here
  # end with an exit (`normal`) and the clients retry at the new owner. If the adopt fails,
  # the job takes its name back, tells the host `{pynode_job_handoff_failed, self(), Target}`
  # and keeps serving (the host may try another target).
  #
  # Run kinds (Pynode.Jobs.Run, docs/JOBS_PROTOCOL.md "Run kinds"). A kind that exports
  # run/1 has its work run in a process linked to the job (`run_pid`, generation `run_gen`).
  # After every change (set_timer/1) the job starts it when the state wants it running and
  # kills it when not (cancelled, ended, waiting for a retry). `{pynode_run_checkpoint, Gen,
  # S}` (a call from the run process): the checkpoint, seq + 1, replicate, then `ok`; one of
  # an older generation is refused. `{pynode_run_progress, Gen, Map}`: merged into progress.
  # The run process's exit `{pynode_run_end, Outcome}` (any other reason: an error) is a
  # change: done, or a retry after the backoff, or failed. A handoff and the end of the job
  # kill the run process first.

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
    replica_list: [],
    replica_hosts: %{},
    replica_mons: %{},
    timer: nil,
    run_pid: nil,
    run_gen: 0,
    # the host's admission (docs/JOBS_PROTOCOL.md, "Load"): true (a slot), false (queued),
    # nil (no slot needed); the last status told to the host
    admitted: nil,
    reported: nil
  ]

  ## Started by the host

  # mode: {:start, args, from} | {:adopt, portable, from | nil, opts}
  def start_link(mod, id, mode, admitted \\ nil),
    do: GenServer.start_link(__MODULE__, {mod, id, mode, self(), admitted})

  @impl true
  def init({mod, id, mode, host, admitted}) do
    # Exit signals become messages: a lost name conflict is merged into the winner.
    Process.flag(:trap_exit, true)

    s = %__MODULE__{
      mod: mod,
      kind: mod.kind(),
      id: id,
      host: host,
      stamped: now(),
      admitted: admitted
    }

    {:ok, s, {:continue, mode}}
  end

  @impl true
  def handle_continue({:start, args, from}, s) do
    case Registry.reg(Jobs.key(s.id), s.kind) do
      :ok ->
        case safe(fn -> s.mod.init(s.id, args) end) do
          {:ok, state} ->
            state = admission(s, state)
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
      state = admission(s, state)
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

  # The host's admission applied to a run-kind state (docs/JOBS_PROTOCOL.md, "Load").
  defp admission(%{admitted: true} = s, state) when is_map(state),
    do: if(Pynode.Jobs.Run.run_kind?(s.mod), do: Pynode.Jobs.Run.admit(state), else: state)

  defp admission(%{admitted: false} = s, state) when is_map(state),
    do: if(Pynode.Jobs.Run.run_kind?(s.mod), do: Pynode.Jobs.Run.queue(state), else: state)

  defp admission(_s, state), do: state

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

  def handle_call({:pynode_job_merge, theirs}, {from_pid, _}, s) do
    if is_map(theirs) and theirs[:id] === s.id and theirs[:kind] === s.kind and
         is_map_key(theirs, :state) do
      merge_copy(s, theirs, node(from_pid))
    else
      {:reply, {:error, :not_this_job}, s}
    end
  end

  def handle_call({:pynode_run_checkpoint, gen, checkpoint}, _from, s) do
    if gen == s.run_gen and s.run_pid != nil do
      s = refresh(s)
      s = %{s | state: Pynode.Jobs.Run.checkpointed(s.state, checkpoint), seq: s.seq + 1}
      {:reply, :ok, replicate(s, [])}
    else
      {:reply, {:error, :cancelled}, s}
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

  ## Partitions: the winner's side

  defp merge_copy(s, theirs, from_node) do
    s = refresh(s)

    case restore(s, theirs) do
      {:ok, their_state} ->
        mine = portable(s)

        theirs =
          Map.merge(theirs, %{state: their_state, recent: recent_of(theirs), seq: seq_of(theirs)})

        case kind_merge(s.mod, mine, theirs) do
          {:ok, state, report} ->
            {recent, seq} = merge_recent(mine, theirs)
            s = %{s | state: state, recent: recent, seq: seq} |> replicate([])

            Logger.warning(
              "pynode jobs: job #{inspect(s.id)} merged the copy from #{from_node} after a partition: #{report}"
            )

            {:reply, :ok, set_timer(s)}

          {:error, reason} ->
            {:reply, {:error, reason}, s}
        end

      {:error, reason} ->
        {:reply, {:error, reason}, s}
    end
  end

  defp kind_merge(mod, mine, theirs) do
    if function_exported?(mod, :merge, 2) do
      with {:ok, state} <- safe(fn -> mod.merge(mine, theirs) end) do
        report =
          if function_exported?(mod, :describe_merge, 3) do
            case safe(fn -> mod.describe_merge(mine, theirs, state) end) do
              {:ok, text} when is_binary(text) -> text
              _ -> "merged state #{inspect(state)}"
            end
          else
            "merged state #{inspect(state)}"
          end

        {:ok, state, report}
      end
    else
      {:ok, mine.state,
       "kind #{inspect(mine.kind)} has no merge: kept this copy's state, dropped #{inspect(theirs.state)}"}
    end
  end

  @doc false
  # Recent and Seq of a merge (vectors: recent_merge): the winner's entries, then the
  # loser's entries whose OpId the winner's do not hold, at most 64; max(SeqW, SeqL) + 1.
  def merge_recent(winner, loser) do
    mine = recent_of(winner)
    known = MapSet.new(mine, fn {op_id, _} -> op_id end)
    theirs = Enum.reject(recent_of(loser), fn {op_id, _} -> MapSet.member?(known, op_id) end)
    {Enum.take(mine ++ theirs, @recent_max), max(seq_of(winner), seq_of(loser)) + 1}
  end

  defp seq_of(%{seq: seq}) when is_integer(seq), do: seq
  defp seq_of(_), do: 0

  ## Partitions: the loser's side

  # We lost our name to `winner` (a copy of this job on the other side of a partition).
  defp lose(s, winner) do
    Logger.info(
      "pynode jobs: job #{inspect(s.id)} lost its name to #{inspect(winner)} on #{node(winner)}; merging into it"
    )

    s = cancel_timer(s)
    merge_into(s, winner, now() + Jobs.config(:job_timeout), @backoff_first)
  end

  defp merge_into(s, target, deadline, delay) do
    s = refresh(s)
    timeout = Jobs.config(:call_timeout)

    reply =
      try do
        GenServer.call(target, {:pynode_job_merge, portable(s)}, timeout)
      catch
        :exit, reason -> {:exit, exit_reason(reason)}
      end

    case reply do
      :ok ->
        for n <- s.replica_nodes,
            do: GenServer.cast({:pynode_jobs, n}, {:drop_replica, s.id, self()})

        {:stop, :normal, %{s | replica_nodes: []}}

      failed ->
        case Registry.reg(Jobs.key(s.id), s.kind) do
          :ok ->
            Logger.warning(
              "pynode jobs: job #{inspect(s.id)}: merge into #{inspect(target)} failed (#{inspect(failed)}); " <>
                "it holds its name again and serves"
            )

            {:noreply, set_timer(s)}

          other ->
            next =
              case other do
                {:error, {:already_registered, holder}} -> holder
                _ -> target
              end

            if now() >= deadline do
              Logger.error(
                "pynode jobs: job #{inspect(s.id)} (#{s.kind}) could not merge into the copy that holds its name " <>
                  "(#{inspect(failed)}); it ends with state #{inspect(portable(s))}"
              )

              {:stop, {:shutdown, :merge_failed}, s}
            else
              Process.sleep(delay)
              merge_into(s, next, deadline, min(delay * 2, @backoff_max))
            end
        end
    end
  end

  defp remember(s, op_id, answer),
    do: %{s | recent: Enum.take([{op_id, answer} | s.recent], @recent_max)}

  # The job is done (finish, TTL): give up the name, tell the replica hosts.
  defp finish(s) do
    s = s |> cancel_timer() |> stop_run()
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

    s = %{
      s
      | replica_mons: mons,
        replica_nodes: List.delete(s.replica_nodes, gone),
        replica_hosts: Map.delete(s.replica_hosts, gone)
    }

    {:noreply, replicate(s, [], s.replica_hosts)}
  end

  def handle_info(:pynode_job_membership, s) do
    hosts = host_pids(s)
    targets = replica_targets(Map.keys(hosts), node(), Jobs.config(:replicas))

    if targets == s.replica_list and Map.take(hosts, targets) == s.replica_hosts do
      {:noreply, s}
    else
      Logger.debug(
        "pynode jobs: job #{inspect(s.id)}: hosts changed; replicas #{inspect(s.replica_list)} -> #{inspect(targets)}"
      )

      {:noreply, replicate(s, [], s.replica_hosts)}
    end
  end

  def handle_info({:EXIT, pid, reason}, %{run_pid: pid} = s) when is_pid(pid) do
    outcome =
      case reason do
        {:pynode_run_end, outcome} -> outcome
        other -> {:error, other}
      end

    s = refresh(%{s | run_pid: nil})
    s = %{s | state: Pynode.Jobs.Run.ended(s.state, outcome), seq: s.seq + 1} |> replicate([])
    {:noreply, set_timer(s)}
  end

  # The host gives this queued job a slot: queued becomes running (replicated), then run/1
  # starts. A job that is no longer queued tells the host its status again.
  def handle_info(:pynode_job_admit, %{state: %{status: :queued}} = s) do
    s = refresh(s)
    s = %{s | state: Pynode.Jobs.Run.admit(s.state), seq: s.seq + 1} |> replicate([])
    {:noreply, set_timer(s)}
  end

  def handle_info(:pynode_job_admit, s), do: {:noreply, set_timer(%{s | reported: nil})}

  def handle_info({:pynode_run_progress, gen, map}, s) do
    if gen == s.run_gen and is_map(s.state),
      do: {:noreply, %{s | state: Pynode.Jobs.Run.progressed(s.state, map)}},
      else: {:noreply, s}
  end

  def handle_info({:EXIT, _from, {:name_conflict, key, winner} = reason}, s) do
    if key == Jobs.key(s.id) and is_pid(winner),
      do: lose(s, winner),
      else: {:stop, reason, s}
  end

  # As for a process that does not trap exits (the host's own exit signal, as the parent's,
  # never comes here: gen_server ends the job with it).
  def handle_info({:EXIT, _from, :normal}, s), do: {:noreply, s}
  def handle_info({:EXIT, _from, reason}, s), do: {:stop, reason, s}

  def handle_info({:pynode_job_handoff, target}, s) do
    s = s |> stop_run() |> refresh() |> cancel_timer()
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

    s =
      case function_exported?(s.mod, :timeout, 1) && s.mod.timeout(s.state) do
        ms when is_integer(ms) and ms >= 0 ->
          ref = make_ref()
          Process.send_after(self(), {:pynode_job_timer, ref}, ms)
          %{s | timer: ref}

        _ ->
          s
      end

    sync_run(s)
  end

  # Run kinds: run/1 runs exactly while the state wants it; the host hears of every change
  # of status (an ended job frees its slot or leaves the queue).
  defp sync_run(s) do
    if Pynode.Jobs.Run.run_kind?(s.mod) do
      s = report_load(s)

      wants = Pynode.Jobs.Run.wants_run?(s.state)

      cond do
        wants and s.run_pid == nil ->
          gen = s.run_gen + 1
          %{s | run_gen: gen, run_pid: Pynode.Jobs.Run.spawn_run(s.mod, s.id, s.state, gen)}

        not wants and s.run_pid != nil ->
          stop_run(s)

        true ->
          s
      end
    else
      s
    end
  end

  defp report_load(%{state: %{status: st}, reported: st} = s), do: s

  defp report_load(%{state: %{status: st}} = s) do
    send(s.host, {:pynode_job_load, self(), st})
    %{s | reported: st}
  end

  defp report_load(s), do: s

  defp stop_run(%{run_pid: nil} = s), do: s

  defp stop_run(%{run_pid: pid} = s) do
    Process.unlink(pid)
    Process.exit(pid, :kill)

    receive do
      {:EXIT, ^pid, _} -> :ok
    after
      0 -> :ok
    end

    %{s | run_pid: nil, run_gen: s.run_gen + 1}
  end

  defp cancel_timer(s), do: %{s | timer: nil}

  # Brings the remaining durations of the state up to now. A queued run-kind job's durations
  # stand still: no timer runs while it waits for a slot (docs/JOBS_PROTOCOL.md, "Load").
  defp refresh(s) do
    t = now()

    if function_exported?(s.mod, :elapse, 2) and s.state != nil and not queued?(s.state) do
      %{s | state: s.mod.elapse(s.state, max(t - s.stamped, 0)), stamped: t}
    else
      %{s | stamped: t}
    end
  end

  defp queued?(%{status: :queued}), do: true
  defp queued?(_), do: false

  defp portable(s), do: %{kind: s.kind, id: s.id, state: s.state, recent: s.recent, seq: s.seq}

  ## Replication

  # Stores the portable state on the replica hosts (never on `exclude`), returning once each
  # has acknowledged, or at once when no other host can take it. `held` (node => host pid):
  # hosts that already hold this very Seq (an unchanged state: membership, a replica host
  # gone); they are not asked again while the list of replicas stays the same.
  defp replicate(s, exclude, held \\ %{}) do
    s = refresh(s)
    n = Jobs.config(:replicas)
    timeout = Jobs.config(:call_timeout)
    portable = portable(s)
    {targets, pids} = replicate_loop(s, portable, n, timeout, MapSet.new(exclude), held)

    for old <- s.replica_nodes,
        old not in targets,
        do: GenServer.cast({:pynode_jobs, old}, {:drop_replica, s.id, self()})

    for {ref, _} <- s.replica_mons, do: Process.demonitor(ref, [:flush])
    hosts = Map.take(pids, targets)
    mons = Map.new(hosts, fn {t, pid} -> {Process.monitor(pid), t} end)

    %{
      s
      | replica_nodes: targets,
        replica_list: targets,
        replica_hosts: hosts,
        replica_mons: mons
    }
  end

  defp replicate_loop(s, portable, n, timeout, failed, held) do
    hosts = for {node, pid} <- host_pids(s), node not in failed, into: %{}, do: {node, pid}
    targets = replica_targets(Map.keys(hosts), node(), n)
    skip = if targets == s.replica_list, do: held, else: %{}

    failure =
      Enum.find(targets, fn t ->
        pid = Map.fetch!(hosts, t)
        request = {:replicate, s.id, s.kind, portable, s.seq, self(), targets}

        try do
          Map.get(skip, t) != pid and GenServer.call(pid, request, timeout) != :ok
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
      t -> replicate_loop(s, portable, n, timeout, MapSet.put(failed, t), held)
    end
  end

  # The host nodes that know the job's kind (only they can take it over).
  defp host_pids(s) do
    Registry.lookup_values(Jobs.host_key())
    |> Enum.reduce(%{}, fn {pid, kinds}, acc ->
      if is_list(kinds) and s.kind in kinds, do: Map.put_new(acc, node(pid), pid), else: acc
    end)
  end

  @doc false
  # The next `n` nodes after `owner` in the sorted list of host nodes, skipping the owner,
  # wrapping around (vectors: replica_targets). The owner need not be in `hosts`.
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
