defmodule Mix.Tasks.RunJob do
  @shortdoc "Starts, updates and finishes N jobs on the cluster and checks their results"
  @moduledoc """
  A smoke test of the job cluster, run from a client node that hosts no jobs:

      cd mix_compat
      elixir --sname c1@localhost --cookie test -S mix run_job 10

  It compiles the project and loads its code but does **not** start the
  `:available_processes` application or the `:pynode` library's application under it (no
  registry, no job host on this node), so every
  operation goes through a connected host node (`{client, Op, Args}`, see `Pynode.Jobs`).

  Steps: connect to the cluster nodes (`--connect NODE`, repeatable; else the `connect`
  list of the `:pynode` application env, e.g. from `--erl "-config ../sys.config"`; else
  `n1@localhost`, `n2@localhost`, `n3@localhost`) and wait (up to `--wait` seconds,
  default 30) until at least one answers; then, for the integer ids `1..N`, start a `Job`
  each, update each with the atom `:update`, finish each and check that the result is
  `[:update, id]`. Prints one line per job, `job <id>: ok` or `job <id>: FAILED <reason>`,
  then `run_job: <ok> ok, <failed> failed`. `--pause SECONDS` waits that long after the
  starts (saying so), e.g. to stop or kill a server by hand mid-run.

  A failed run names its cause and cleans up after itself (as `python -m pynode run_job`):

    * a node it cannot connect to is named with why: not registered in EPMD (still waited
      for, up to `--wait`: a server may be starting), no EPMD on its host, registered but
      refusing this node (most likely another cookie; given up after a short retry), the
      other naming mode;
    * a cluster in which no node runs a job host (`pynode_jobs`) fails at once, naming them;
    * a failed job says what lay behind the answer: its host went down (nodedown), did not
      answer in time, or no job host is left (then the other jobs are not tried);
    * the jobs it started and did not finish are finished before it exits (at most
      10 s in all), and a line says how that went.

  Exit status: 0 when every job passed, 1 when any failed, 2 when no cluster node could be
  reached or no node of the cluster hosts jobs (the same as `python -m pynode run_job N`).
  A node started without a name (`mix run_job 3`) becomes `run_job_<n>@localhost` with the
  default cookie.
  """

  use Mix.Task

  @default_nodes [:n1@localhost, :n2@localhost, :n3@localhost]
  # a node registered in EPMD that refuses us this long (retried meanwhile) is given up on
  @refused_after_ms 1_000
  @retry_ms 200
  # the clean-up of the jobs a failed run leaves: at most this long in all
  @cleanup_ms 10_000
  # a name no node registers: the answer to its monitor closes a probe (see registered/2)
  @sentinel :"run_job no such name"

  @impl true
  def run(argv) do
    {opts, rest, invalid} =
      OptionParser.parse(argv, strict: [connect: :keep, wait: :float, pause: :float])

    count =
      case {rest, invalid} do
        {[n], []} ->
          case Integer.parse(n) do
            {count, ""} when count >= 0 -> count
            _ -> usage()
          end

        _ ->
          usage()
      end

    Mix.Task.run("compile")
    Mix.Task.run("loadpaths")
    # the :pynode env (mix.exs defaults, overridden by sys.config): its `connect` list
    _ = Application.load(:pynode)
    ensure_distributed()

    nodes =
      case Keyword.get_values(opts, :connect) do
        [] ->
          case Application.get_env(:pynode, :connect, []) do
            [] -> @default_nodes
            configured -> Enum.map(List.wrap(configured), &to_node/1)
          end

        given ->
          Enum.map(given, &to_node/1)
      end

    deadline = now() + round(Keyword.get(opts, :wait, 30) * 1_000)

    case wait_for_cluster(nodes, deadline, %{}) do
      :ok ->
        :ok

      {:error, why} ->
        for n <- nodes, do: IO.puts(:stderr, "run_job: cannot connect to #{n}: #{why[n]}")

        IO.puts(
          :stderr,
          "run_job: none of #{Enum.map_join(nodes, ", ", &to_string/1)} is reachable"
        )

        System.halt(2)
    end

    hosts =
      case wait_for_hosts(deadline) do
        {:ok, hosts} ->
          hosts

        {:error, text} ->
          IO.puts(:stderr, "run_job: " <> text)
          System.halt(2)
      end

    :ok = :net_kernel.monitor_nodes(true)
    run = %{hosts: hosts, host_of: %{}, done: MapSet.new(), failed: %{}}
    pause = Keyword.get(opts, :pause)

    failed =
      try do
        Process.put(:run_job, run)
        steps(run, count, pause).failed
      after
        # also when a step raised: the jobs it started must not stay
        cleanup(Process.get(:run_job))
      end

    if map_size(failed) > 0, do: System.halt(1)
  end

  defp usage do
    Mix.raise(
      "usage: mix run_job N [--connect NODE ...] [--wait SECONDS] [--pause SECONDS]"
    )
  end

  ## the connection: wait for nodes not (yet) registered, give up at once on refusals

  # :ok once a node is connected; {:error, %{node => why}} when every node refuses us (after
  # @refused_after_ms) or at the deadline. `refused` maps a node to when it first refused.
  defp wait_for_cluster(nodes, deadline, refused) do
    if Enum.filter(nodes, &(Node.connect(&1) == true)) != [] do
      :ok
    else
      t = now()
      status = Map.new(nodes, &{&1, epmd_status(&1)})

      refused =
        Map.new(for {n, s} <- status, s in [:refused, :other_mode], do: {n, refused[n] || t})

      why =
        Map.new(status, fn {n, s} ->
          {n, explain(n, s, t - Map.get(refused, n, t))}
        end)

      given_up = fn n ->
        status[n] == :other_mode or
          (status[n] == :refused and t - refused[n] >= @refused_after_ms)
      end

      cond do
        Enum.all?(nodes, given_up) -> {:error, why}
        t > deadline -> {:error, why}
        true -> Process.sleep(@retry_ms) && wait_for_cluster(nodes, deadline, refused)
      end
    end
  end

  # What EPMD on the node's host says about a node we could not connect to.
  defp epmd_status(node) do
    {name, host} = split(node)

    case :net_adm.names(String.to_charlist(host)) do
      {:ok, names} ->
        registered = Enum.map(names, fn {n, _port} -> to_string(n) end)

        cond do
          name not in registered -> {:not_registered, registered}
          String.contains?(host, ".") != long_names?() -> :other_mode
          true -> :refused
        end

      {:error, reason} ->
        {:no_epmd, reason}
    end
  end

  defp explain(node, status, refused_ms) do
    {_name, host} = split(node)

    case status do
      {:not_registered, names} ->
        there = if names == [], do: "none", else: Enum.join(Enum.sort(names), ", ")

        "#{node} is not registered in EPMD (on #{host}: #{there}): it is not running, " <>
          "or runs under another name"

      {:no_epmd, reason} ->
        "no EPMD answered on #{host} (#{inspect(reason)}); is the host right, and is a node " <>
          "running there?"

      :other_mode ->
        "the other naming mode: this node uses #{mode_text(long_names?())}, the name #{node} " <>
          "needs #{mode_text(not long_names?())}"

      :refused ->
        "the cookie was most likely rejected (it is registered in EPMD on #{host} but refused " <>
          "this node for #{Float.round(refused_ms / 1000, 1)} s): check --cookie (default " <>
          "~/.erlang.cookie); or it runs the other naming mode, or TLS distribution " <>
          "(-proto_dist inet_tls) on one side only"
    end
  end

  defp mode_text(true), do: "long names (--name)"
  defp mode_text(false), do: "short names (--sname)"

  defp long_names?, do: node() |> split() |> elem(1) |> String.contains?(".")

  defp split(node) do
    [name, host] = node |> to_string() |> String.split("@", parts: 2)
    {name, host}
  end

  ## the job hosts

  # {:ok, host nodes} once a connected node runs `pynode_jobs`. When every connected node
  # runs a registry (`pynode_registry`: its application is up) and none a job host, it fails
  # at once; a node with neither may still be starting (`iex -S mix` compiles first), so it
  # is waited for, until the deadline.
  defp wait_for_hosts(deadline) do
    peers = Enum.sort(Node.list(:connected))
    found = registered(peers, [:pynode_jobs, :pynode_registry])
    hosts = for n <- peers, {n, :pynode_jobs} in found, do: n
    bare = for n <- peers, {n, :pynode_registry} not in found, do: n

    cond do
      hosts != [] ->
        {:ok, hosts}

      bare == [] ->
        {:error,
         "{:error, :no_hosts}: no node of the cluster hosts jobs (#{names(peers)} run(s) no " <>
           "pynode_jobs host: started with --no-jobs, or host_jobs false)"}

      now() > deadline ->
        {:error,
         "#{names(bare)} run(s) no pynode registry (plain BEAM nodes, or still starting?): " <>
           "no job host to use"}

      true ->
        Process.sleep(@retry_ms)
        wait_for_hosts(deadline)
    end
  end

  # Which of the {node, name} pairs are registered: a monitor of a name that is not
  # registered there is answered at once with noproc; the answer for @sentinel (monitored
  # last, on the same connection) tells that every earlier answer has arrived.
  defp registered(nodes, names) do
    pairs = for n <- nodes, name <- names, do: {n, name}
    refs = Map.new(pairs, fn {n, name} = pair -> {Process.monitor({name, n}), pair} end)
    sentinels = MapSet.new(nodes, &Process.monitor({@sentinel, &1}))
    missing = collect_down(refs, sentinels, MapSet.new(), now() + 2_000)
    for {ref, _} <- refs, do: Process.demonitor(ref, [:flush])
    for pair <- pairs, pair not in missing, do: pair
  end

  defp collect_down(refs, sentinels, missing, deadline) do
    if MapSet.size(sentinels) == 0 do
      missing
    else
      receive do
        {:DOWN, ref, :process, _, _} ->
          cond do
            MapSet.member?(sentinels, ref) ->
              collect_down(refs, MapSet.delete(sentinels, ref), missing, deadline)

            Map.has_key?(refs, ref) ->
              collect_down(refs, sentinels, MapSet.put(missing, refs[ref]), deadline)

            true ->
              collect_down(refs, sentinels, missing, deadline)
          end
      after
        max(deadline - now(), 0) ->
          for ref <- sentinels, do: Process.demonitor(ref, [:flush])
          missing
      end
    end
  end

  defp hosts_left(run) do
    case Enum.filter(run.hosts, &(&1 in Node.list(:connected))) do
      [] ->
        # a host that joined since the start counts too
        peers = Node.list(:connected)
        for {n, :pynode_jobs} <- registered(peers, [:pynode_jobs]), do: n

      left ->
        left
    end
  end

  ## the steps

  defp steps(run, count, pause) do
    ids = if count > 0, do: Enum.to_list(1..count), else: []

    run =
      Enum.reduce(ids, run, fn id, run ->
        step(run, id, :start, fn -> Job.start(id) end, fn
          {:ok, pid}, run when is_pid(pid) -> {:ok, put_in(run.host_of[id], node(pid))}
          other, _run -> {:failed, other}
        end)
      end)

    if pause do
      on = run.host_of |> Map.values() |> Enum.uniq() |> Enum.sort() |> names()
      IO.puts("run_job: started #{map_size(run.host_of)} job(s) on #{on}; pausing #{pause} s")
      Process.sleep(round(pause * 1000))
    end

    run =
      Enum.reduce(ids, run, fn id, run ->
        step(run, id, :update, fn -> Job.update(id, :update) end, fn
          :ok, run -> {:ok, run}
          other, _run -> {:failed, other}
        end)
      end)

    run =
      Enum.reduce(ids, run, fn id, run ->
        step(run, id, :finish, fn -> Job.finish(id) end, fn
          [:update, ^id], run -> {:ok, done(run, id)}
          other, run when is_list(other) -> {:failed, other, done(run, id)}
          other, _run -> {:failed, other}
        end)
      end)

    for id <- ids do
      case run.failed do
        %{^id => reason} -> IO.puts("job #{id}: FAILED #{reason}")
        _ -> IO.puts("job #{id}: ok")
      end
    end

    IO.puts("run_job: #{length(ids) - map_size(run.failed)} ok, #{map_size(run.failed)} failed")
    run
  end

  defp done(run, id), do: %{run | done: MapSet.put(run.done, id)}

  # One step of job `id`: skipped when an earlier one failed, not tried when no job host is
  # left; else `op` runs (given up on when its host goes down and no host is left) and
  # `check` turns its answer into {:ok, run} or {:failed, answer(, run)}.
  defp step(run, id, name, op, check) do
    run = step1(run, id, name, op, check)
    # what the clean-up works from, also when a later step raises
    Process.put(:run_job, run)
    run
  end

  defp step1(run, id, name, op, check) do
    cond do
      Map.has_key?(run.failed, id) ->
        run

      hosts_left(run) == [] ->
        fail(run, id, "#{name}: not tried: no job host is left in the cluster#{lost(run)}")

      true ->
        case attempt(run, op) do
          :hosts_gone ->
            fail(run, id, "#{name}: gave up#{why(run, id, :hosts_gone)}")

          answer ->
            case check.(answer, run) do
              {:ok, run} -> run
              {:failed, other} -> fail(run, id, "#{name}: #{describe(run, id, name, other)}")
              {:failed, other, run} -> fail(run, id, "#{name}: #{describe(run, id, name, other)}")
            end
        end
    end
  end

  defp describe(_run, id, :finish, other) when is_list(other),
    do: "expected [:update, #{id}], got #{inspect(other)}"

  defp describe(run, id, _name, other), do: "#{inspect(other)}#{why(run, id, other)}"

  defp fail(run, id, text), do: put_in(run.failed[id], text)

  # The answer of `op`, run in a task: :hosts_gone when, while it waits, a node goes down
  # and no job host is left (the client would retry until job_timeout for nothing).
  defp attempt(run, op) do
    task = Task.async(fn -> guarded(op) end)
    await(run, task)
  end

  # `op`'s answer, or {:crashed, {kind, reason}}: a task that raises would take this Mix task
  # down through its link, before the failure line and the clean-up
  defp guarded(op) do
    op.()
  catch
    kind, reason -> {:crashed, {kind, reason}}
  end

  defp await(run, %Task{ref: ref} = task) do
    receive do
      {^ref, answer} ->
        Process.demonitor(ref, [:flush])
        answer

      {:DOWN, ^ref, _, _, reason} ->
        {:exit, reason}

      {:nodeup, _} ->
        await(run, task)

      {:nodedown, _} ->
        if hosts_left(run) == [] do
          Task.shutdown(task, :brutal_kill)
          :hosts_gone
        else
          await(run, task)
        end
    end
  end

  # What lay behind a failed answer for job `id`.
  defp why(run, id, answer) do
    host = run.host_of[id]
    limit = "#{div(Pynode.Jobs.config(:job_timeout), 1000)} s"

    cond do
      host != nil and host not in Node.list(:connected) ->
        " (its host #{host} went down: nodedown; no other host took the job over)"

      answer == :hosts_gone ->
        " (no job host is left in the cluster#{lost(run)})"

      answer == {:error, :timeout} ->
        " (no answer within #{limit}" <> if(host, do: " from its host #{host})", else: ")")

      answer == {:error, :no_hosts} ->
        " (no job host answered within #{limit}#{lost(run)})"

      answer == {:error, :no_such_job} and host != nil ->
        " (its host #{host} no longer has it)"

      true ->
        ""
    end
  end

  defp lost(run) do
    case Enum.reject(run.hosts, &(&1 in Node.list(:connected))) do
      [] -> ""
      gone -> " (#{names(gone)} went down: nodedown)"
    end
  end

  ## the clean-up: finish the jobs it started and did not finish

  defp cleanup(run) do
    left = run.host_of |> Map.keys() |> Enum.sort() |> Enum.reject(&(&1 in run.done))

    if left != [] do
      # those whose host went down, when no host is left to have taken them over, went with it
      {gone, tried} =
        if hosts_left(run) == [],
          do: Enum.split_with(left, &(run.host_of[&1] not in Node.list(:connected))),
          else: {[], left}

      tasks = Enum.map(tried, fn id -> {id, Task.async(fn -> guarded(fn -> Job.finish(id) end) end)} end)
      answers = Task.yield_many(Enum.map(tasks, &elem(&1, 1)), @cleanup_ms)

      outcome =
        Enum.zip(tasks, answers)
        |> Enum.map(fn {{id, task}, {_task, answer}} ->
          case answer do
            {:ok, state} when is_list(state) ->
              {:finished, id}

            {:ok, {:error, :no_such_job}} ->
              {:gone, id}

            {:ok, other} ->
              {:stuck, "job #{id}: #{inspect(other)}#{why(run, id, other)}"}

            {:exit, reason} ->
              {:stuck, "job #{id}: exit #{inspect(reason)}"}

            nil ->
              Task.shutdown(task, :brutal_kill)
              {:stuck, "job #{id}: no answer within #{div(@cleanup_ms, 1000)} s"}
          end
        end)

      finished = for {:finished, id} <- outcome, do: id
      gone = Enum.sort(gone ++ for({:gone, id} <- outcome, do: id))
      stuck = for {:stuck, text} <- outcome, do: text

      parts =
        ["#{length(finished)} finished"] ++
          if(gone != [],
            do: [
              "#{length(gone)} already gone (#{Enum.map_join(gone, ", ", &"job #{&1}")})"
            ],
            else: []
          ) ++
          if(stuck != [],
            do: ["#{length(stuck)} could not be finished: #{Enum.join(stuck, "; ")}"],
            else: []
          )

      IO.puts(
        "run_job: cleaning up the #{length(left)} job(s) it started and did not finish: " <>
          Enum.join(parts, ", ")
      )
    end
  end

  ## helpers

  defp names(nodes), do: Enum.map_join(nodes, ", ", &to_string/1)

  defp now, do: System.monotonic_time(:millisecond)

  defp ensure_distributed do
    unless Node.alive?() do
      name = :"run_job_#{System.unique_integer([:positive])}@localhost"
      {:ok, _} = :net_kernel.start([name, :shortnames])
    end
  end

  defp to_node(node) when is_atom(node), do: node
  defp to_node(node), do: node |> IO.chardata_to_string() |> String.to_atom()
end
