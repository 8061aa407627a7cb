defmodule Pynode.Jobs.Client do
  @moduledoc false
  # The client side of the job API (docs/JOBS_PROTOCOL.md, "Client"), run in the caller.
  #
  # run(Op, Args): on a node whose registry runs (`:pynode_registry` is alive) the
  # operation runs here (`local/2`); otherwise it is sent as `{client, Op, Args}` to
  # `pynode_jobs` on a connected node (visible and hidden, round-robin), which runs
  # `local/2` there and answers its result.
  #
  # Operations (the same atoms and argument lists as pynode/jobs/client.py; each answers what the
  # function of that name answers):
  #
  #   start [Kind, Id, StartArgs] (also [Id] = 'Job', [Kind, Id])  {ok, Pid} | {error, R}
  #   otp_start [Id]                                                {ok, Pid} | {error, R}
  #   update [Id, Event]          ok | {error, no_such_job}
  #   finish [Id]                 State | {error, no_such_job}
  #   check_results [Id]          nil | Binary
  #   get_state [Id]              State | {error, no_such_job}
  #   op / call [Id, Request]     the job's raw answer {ok, Result} | {error, R}
  #   op / call [Id, Request, OpId]   the same with the caller's OpId (an extension: the
  #                               client-only path uses it so a retry through another host
  #                               node is deduplicated; falls back to the named op when a
  #                               host answers {error, {unknown_client_op, op, 3}})
  #   list_jobs / list []         [{Id, Kind, Pid}]
  #
  # Retries (both paths): an exit from a call whose reason is noproc, normal, shutdown,
  # noconnection, nodedown ({nodedown, Node} from gen), killed, timeout or
  # {name_conflict, ...} is retried with the same OpId, backoff 10 ms doubling to 200 ms,
  # until job_timeout. A job name missing for missing_grace means no such job. `start`
  # skips hosts that answered {error, stopping} or failed; a start whose earlier attempt
  # may have gone through and now meets job_already_started answers {ok, Holder}.

  alias Pynode.Jobs
  alias Pynode.Registry

  @backoff_first 10
  @backoff_max 200
  @retry_reasons [:noproc, :normal, :shutdown, :noconnection, :nodedown, :killed, :timeout]

  @doc false
  def run(op, args) do
    if Process.whereis(:pynode_registry), do: local(op, args), else: remote(op, args)
  end

  @doc false
  # The client operation `op` run on this node (what `{client, Op, Args}` answers).
  def local(:start, [id]), do: start(:Job, id, [])
  def local(:start, [kind, id]), do: start(Jobs.kind_atom(kind), id, [])

  def local(:start, [kind, id, args]),
    do: start(Jobs.kind_atom(kind), id, if(is_list(args), do: args, else: [args]))

  def local(:otp_start, [id]), do: start(:"Job.Otp", id, [])
  def local(:update, [id, event]), do: unwrap(op(id, {:update, event}))
  def local(:finish, [id]), do: unwrap(op(id, :finish))
  def local(:check_results, [id]), do: unwrap(op(id, :check_results), nil)
  def local(:get_state, [id]), do: unwrap(op(id, :get_state))
  # run kinds (protocol, "Run kinds"): the job's raw answer
  def local(o, [id]) when o in [:status, :results, :cancel], do: op(id, o)
  def local(o, [id, request]) when o in [:op, :call], do: op(id, request)
  def local(o, [id, request, op_id]) when o in [:op, :call], do: op(id, request, op_id)
  def local(o, []) when o in [:list_jobs, :list], do: list()
  def local(o, args), do: {:error, {:unknown_client_op, o, length(List.wrap(args))}}

  defp unwrap(reply, missing \\ {:error, :no_such_job})
  defp unwrap({:ok, result}, _missing), do: result
  defp unwrap({:error, :no_such_job}, missing), do: missing
  defp unwrap(other, _missing), do: other

  ## start: the least-loaded host that knows the kind (docs/JOBS_PROTOCOL.md, "Load")

  defp start(kind, id, args) do
    t0 = now()
    deadline = t0 + Jobs.config(:job_timeout)
    start_loop(kind, id, args, t0, deadline, MapSet.new(), false, @backoff_first)
  end

  defp start_loop(kind, id, args, t0, deadline, refused, retried, delay) do
    values = Registry.lookup_values(Jobs.host_key())
    all = values |> Enum.map(fn {pid, _} -> node(pid) end) |> Enum.uniq()

    hosts =
      for {pid, kinds} <- values, is_list(kinds), kind in kinds, node(pid) not in refused do
        {node(pid), pid}
      end
      |> Enum.uniq_by(&elem(&1, 0))
      |> Enum.sort()

    result =
      case hosts do
        [] ->
          if now() - t0 >= min(Jobs.config(:missing_grace), Jobs.config(:job_timeout)),
            do: {:done, {:error, if(values == [], do: :no_hosts, else: :unknown_kind)}},
            else: :again

        _ ->
          loads = Map.new(Registry.lookup_values(Jobs.load_key()), fn {p, v} -> {node(p), v} end)
          by_node = Map.new(hosts)

          cands =
            for {n, _} <- hosts do
              {r, q, m} = Jobs.load_of(Map.get(loads, n))
              {n, r, q, m}
            end

          host_node = Jobs.place(cands, next_rr())
          host_pid = Map.fetch!(by_node, host_node)
          timeout = call_timeout(deadline)

          try do
            GenServer.call(host_pid, {:start, kind, id, args}, timeout)
          catch
            :exit, reason ->
              reason = Pynode.Jobs.JobServer.exit_reason(reason)
              if retryable?(reason), do: {:refused, host_node}, else: {:done, {:error, reason}}
          else
            {:error, reason} when reason in [:stopping, :unknown_kind] ->
              # stopping, or it withdrew the kind since our registry heard: another host
              {:refused, host_node}

            {:error, :job_already_started} = r when retried ->
              # our own earlier attempt got through before its answer was lost
              case Registry.where(Jobs.key(id)) do
                pid when is_pid(pid) -> {:done, {:ok, pid}}
                _ -> {:done, r}
              end

            r ->
              {:done, r}
          end
      end

    case result do
      {:done, r} ->
        r

      other ->
        {refused, retried} =
          case other do
            {:refused, n} -> {MapSet.put(refused, n), true}
            :again -> {refused, retried}
          end

        refused = if MapSet.size(refused) >= length(all), do: MapSet.new(), else: refused

        if now() >= deadline do
          {:error, :timeout}
        else
          Process.sleep(delay)
          start_loop(kind, id, args, t0, deadline, refused, retried, min(delay * 2, @backoff_max))
        end
    end
  end

  ## operations on a job

  @doc false
  # {ok, Result} | {error, no_such_job} | {error, Reason}
  def op(id, request, op_id \\ make_ref()) do
    deadline = now() + Jobs.config(:job_timeout)
    op_loop(Jobs.key(id), {:pynode_job_op, op_id, request}, deadline, nil, @backoff_first)
  end

  defp op_loop(key, msg, deadline, missing_since, delay) do
    t = now()

    result =
      case Registry.where(key) do
        pid when is_pid(pid) ->
          try do
            {:done, GenServer.call(pid, msg, call_timeout(deadline))}
          catch
            :exit, reason ->
              reason = Pynode.Jobs.JobServer.exit_reason(reason)
              if retryable?(reason), do: {:again, nil}, else: {:done, {:error, reason}}
          end

        _ ->
          since = missing_since || t

          if t - since >= Jobs.config(:missing_grace),
            do: {:done, {:error, :no_such_job}},
            else: {:again, since}
      end

    case result do
      {:done, r} ->
        r

      {:again, since} ->
        if now() >= deadline do
          {:error, :timeout}
        else
          Process.sleep(delay)
          op_loop(key, msg, deadline, since, min(delay * 2, @backoff_max))
        end
    end
  end

  defp list do
    timeout = Jobs.config(:call_timeout)

    Registry.lookup_pids(Jobs.host_key())
    |> Enum.sort_by(&node/1)
    |> Enum.flat_map(fn pid ->
      try do
        case GenServer.call(pid, :list, timeout) do
          l when is_list(l) -> l
          _ -> []
        end
      catch
        :exit, _ -> []
      end
    end)
  end

  ## the remote path: {client, Op, Args} to a connected host node

  # The operations on a job go out as `op [Id, Request, OpId]` with an OpId made here, so
  # that a retry through another host node (the first one died or stopped mid-operation,
  # its answer lost) is answered from the job's `recent`, not applied twice. A host that
  # does not know the 3-argument `op` (answer {error, {unknown_client_op, op, 3}}) gets the
  # named operation instead (at-least-once across host nodes, as the protocol text has it).
  defp remote_form(:update, [id, event] = args),
    do: {[id, {:update, event}, make_ref()], &unwrap/1, args}

  defp remote_form(:finish, [id] = args), do: {[id, :finish, make_ref()], &unwrap/1, args}

  defp remote_form(:check_results, [id] = args),
    do: {[id, :check_results, make_ref()], &unwrap(&1, nil), args}

  defp remote_form(:get_state, [id] = args), do: {[id, :get_state, make_ref()], &unwrap/1, args}

  defp remote_form(o, [id] = args) when o in [:status, :results, :cancel],
    do: {[id, o, make_ref()], & &1, args}

  defp remote_form(_op, _args), do: nil

  defp remote(op, args) do
    job_timeout = Jobs.config(:job_timeout)
    deadline = now() + job_timeout
    # made once: every attempt of this operation, through any host node, carries the same OpId
    form = remote_form(op, args)
    remote_loop(op, args, form, job_timeout, deadline, false, @backoff_first)
  end

  defp remote_loop(op, args, form, job_timeout, deadline, retried, delay) do
    peers = Enum.sort(Node.list(:connected))

    peers =
      case peers do
        [] ->
          []

        _ ->
          {a, b} = Enum.split(peers, rem(next_rr(), length(peers)))
          b ++ a
      end

    # the remote side retries for up to job_timeout itself: allow it that, and more
    timeout = job_timeout + 5_000

    result =
      Enum.reduce_while(peers, {:again, retried}, fn peer, {:again, retried} ->
        try do
          {:halt, {:done, remote_call({:pynode_jobs, peer}, op, args, form, retried, timeout)}}
        catch
          :exit, reason ->
            reason = Pynode.Jobs.JobServer.exit_reason(reason)

            # noproc: no host there; others: the operation may or may not have run there
            if retryable?(reason),
              do: {:cont, {:again, retried or reason != :noproc}},
              else: {:halt, {:done, {:error, reason}}}
        end
      end)

    case result do
      {:done, r} ->
        r

      {:again, retried} ->
        if now() >= deadline do
          {:error, :no_hosts}
        else
          Process.sleep(delay)

          remote_loop(
            op,
            args,
            form,
            job_timeout,
            deadline,
            retried,
            min(delay * 2, @backoff_max)
          )
        end
    end
  end

  defp remote_call(host, op, args, form, retried, timeout) do
    case form do
      {op_args, unwrap, legacy_args} ->
        case GenServer.call(host, {:client, :op, op_args}, timeout) do
          {:error, {:unknown_client_op, :op, 3}} ->
            GenServer.call(host, {:client, op, legacy_args}, timeout)

          reply ->
            unwrap.(reply)
        end

      nil ->
        case GenServer.call(host, {:client, op, args}, timeout) do
          {:error, :job_already_started} = r when retried and op in [:start, :otp_start] ->
            # an earlier attempt through a host node that then went away may have started
            # the job: it is ours
            id = if op == :otp_start or length(args) == 1, do: hd(args), else: Enum.at(args, 1)

            case GenServer.call(host, {:client, :list_jobs, []}, timeout) do
              jobs when is_list(jobs) ->
                case List.keyfind(jobs, id, 0) do
                  {_, _, pid} when is_pid(pid) -> {:ok, pid}
                  _ -> r
                end

              _ ->
                r
            end

          reply ->
            reply
        end
    end
  end

  ## helpers

  @doc false
  def retryable?(reason) when reason in @retry_reasons, do: true
  def retryable?({:nodedown, _}), do: true
  def retryable?(reason) when is_tuple(reason) and elem(reason, 0) == :name_conflict, do: true
  def retryable?(_), do: false

  defp call_timeout(deadline),
    do: max(min(Jobs.config(:call_timeout), deadline - now()), 1)

  defp now, do: System.monotonic_time(:millisecond)

  # A process-wide round-robin counter (placement, and the choice of a remote host).
  defp next_rr do
    counter =
      case :persistent_term.get({__MODULE__, :rr}, nil) do
        nil ->
          c = :counters.new(1, [:atomics])
          :persistent_term.put({__MODULE__, :rr}, c)
          c

        c ->
          c
      end

    :counters.add(counter, 1, 1)
    :counters.get(counter, 1)
  end
end
