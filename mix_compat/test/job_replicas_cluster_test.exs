defmodule JobReplicasClusterTest do
  # docs/JOBS_PROTOCOL.md on real nodes: replicas that follow membership, a restart followed
  # by a sudden death, partitions that heal with two copies of a job, and nodes configured
  # not to host (or to host some kinds only).
  #
  # Most tests here run a small cluster of their own: :peer nodes that share a cookie of the
  # test's own (so no other node of this run, which all share the run's cookie, can join
  # them), are not connected to this test node (`connection: :standard_io`; the test drives
  # them with :peer.call), and run without discovery (so that they meet exactly when the
  # test connects them).
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Jobs
  alias Pynode.Registry
  alias Pynode.Test.LogKeeper

  @moduletag timeout: 180_000

  defp uniq, do: System.unique_integer([:positive])

  # A node of a private cluster: {peer, node}. `env`: extra application env ({key, term text}).
  defp private_peer(name, cookie, env \\ [], args \\ []) do
    env_args =
      Enum.flat_map([{:discovery, "false"} | env], fn {k, v} ->
        [~c"-pynode", Atom.to_charlist(k), String.to_charlist(v)]
      end)

    {peer, node} =
      start_peer("", name: name, cookie: cookie, connection: :standard_io, args: env_args ++ args)

    # its log goes to this terminal: keep a passing run quiet, but keep the warnings in
    # the node (LogKeeper) for the tests that look for one
    pcall(peer, Logger, :configure_backend, [:console, [level: :error]])
    :ok = pcall(peer, LogKeeper, :start, [:warning])
    {peer, node}
  end

  defp pcall(peer, m, f, a), do: :peer.call(peer, m, f, a, 30_000)

  defp connect(peer, other), do: assert(pcall(peer, :net_kernel, :connect_node, [other]))

  defp host_nodes(peer),
    do: pcall(peer, Registry, :lookup_pids, [Jobs.host_key()]) |> Enum.map(&node/1) |> Enum.sort()

  defp wait_hosts(peers, nodes) do
    wanted = Enum.sort(nodes)

    for peer <- peers,
        do: wait_until(fn -> host_nodes(peer) == wanted end, 10_000, "hosts #{inspect(wanted)}")
  end

  defp where(peer, id), do: pcall(peer, Registry, :where, [Jobs.key(id)])

  defp where_node(peer, id) do
    case where(peer, id) do
      pid when is_pid(pid) -> node(pid)
      _ -> nil
    end
  end

  # The replica of job `id` stored by the host of `peer` (a Pynode.Jobs.Host.Replica), or nil.
  defp replica(peer, id), do: Map.get(pcall(peer, :sys, :get_state, [:pynode_jobs]).replicas, id)

  # Waits until the host of `peer` holds the replica of `id` with the job's current state.
  defp wait_replica(peer, id, state, timeout \\ 5_000) do
    wait_until(
      fn ->
        case replica(peer, id) do
          %{portable: %{state: ^state}, owner: owner} -> owner
          _ -> false
        end
      end,
      timeout,
      "a replica of #{inspect(id)}"
    )
  end

  # An ungraceful death: SIGKILL to the node's OS process.
  defp kill9(peer) do
    os_pid = pcall(peer, :os, :getpid, [])
    ref = Process.monitor(peer)
    {_, 0} = System.cmd("kill", ["-9", to_string(os_pid)])
    assert_receive {:DOWN, ^ref, :process, _, _}, 10_000
  end

  defp job_start(peer, kind, id),
    do: pcall(peer, GenServer, :call, [:pynode_jobs, {:start, kind, id, []}])

  # How many hosts run job `id`, from each host's own `list`.
  defp copies(peer, id), do: for({^id, _, _} <- pcall(peer, Jobs, :list, []), do: id) |> length()

  defp private_cookie, do: :"jobs#{uniq()}_#{:rand.uniform(1_000_000_000)}"

  test "a job started while its node was the only host gets a replica when a second host joins" do
    cookie = private_cookie()
    n = uniq()
    {pa, a} = private_peer(:"rja#{n}", cookie, work_ms: "100")
    wait_hosts([pa], [a])
    id = {n, :alone}
    otp = {n, :otp}
    assert {:ok, pid} = job_start(pa, :Job, id)
    assert pcall(pa, Job, :update, [id, :x]) == :ok
    assert {:ok, otp_pid} = job_start(pa, :"Job.Otp", otp)
    # its results come while it is alone: a Job.Otp with results changes no more
    results = wait_until(fn -> pcall(pa, Job.Otp, :check_results, [otp]) end, 5_000, "results")
    assert results == "results of " <> inspect(otp)

    {pb, b} = private_peer(:"rjb#{n}", cookie)
    t0 = System.monotonic_time(:millisecond)
    connect(pb, a)
    wait_hosts([pa, pb], [a, b])
    # replica_check is 100 ms: the copies come within about that
    assert wait_replica(pb, id, [:x, id]) == pid
    otp_state = fn -> pcall(pb, :sys, :get_state, [:pynode_jobs]).replicas[otp].portable.state end

    assert wait_until(fn -> replica(pb, otp) end, 5_000, "the Job.Otp replica").owner == otp_pid
    assert %{results: ^results, work_left_ms: nil} = otp_state.()
    assert System.monotonic_time(:millisecond) - t0 < 5_000

    # and the copies do their job: a's sudden death loses neither
    kill9(pa)
    wait_until(fn -> where_node(pb, id) == b end, 15_000, "adoption of #{inspect(id)}")
    assert pcall(pb, Jobs, :get_state, [id]) == [:x, id]
    assert pcall(pb, Job.Otp, :check_results, [otp]) == results
    assert pcall(pb, Job, :finish, [id]) == [:x, id]
  end

  test "stop A (its jobs move to B), start A again, kill B: no job is lost" do
    cookie = private_cookie()
    n = uniq()
    name_a = :"rsa#{n}"
    {pa, a} = private_peer(name_a, cookie, work_ms: "100")
    {pb, b} = private_peer(:"rsb#{n}", cookie, work_ms: "100")
    connect(pa, b)
    wait_hosts([pa, pb], [a, b])

    jobs = for i <- 1..6, do: {n, :job, i}
    otps = for i <- 1..4, do: {n, :otp, i}

    # half of each kind on each node, with a few acknowledged updates on the Job ones
    for {id, i} <- Enum.with_index(jobs ++ otps) do
      peer = if rem(i, 2) == 0, do: pa, else: pb
      kind = if match?({_, :job, _}, id), do: :Job, else: :"Job.Otp"
      assert {:ok, _} = job_start(peer, kind, id)
    end

    expected =
      Map.new(jobs, fn {_, _, i} = id ->
        for e <- 1..i, do: assert(pcall(pa, Job, :update, [id, e]) == :ok)
        {id, Enum.to_list(i..1//-1) ++ [id]}
      end)

    results = Map.new(otps, &{&1, "results of " <> inspect(&1)})

    for id <- otps,
        do: wait_until(fn -> pcall(pb, Job.Otp, :check_results, [id]) == results[id] end)

    # A stops gracefully: every job is on B, which is now alone (no replicas anywhere)
    ref = Process.monitor(pa)
    :ok = pcall(pa, :init, :stop, [])
    assert_receive {:DOWN, ^ref, :process, _, _}, 60_000
    for id <- jobs ++ otps, do: assert(where_node(pb, id) == b)
    wait_hosts([pb], [b])

    # A again (the same name, a new node): it joins, and B's jobs get their replicas there
    wait_until(
      fn ->
        {:ok, names} = :erl_epmd.names(~c"localhost")
        not List.keymember?(names, Atom.to_charlist(name_a), 0)
      end,
      10_000,
      "#{a} out of EPMD"
    )

    {pa, ^a} = private_peer(name_a, cookie)
    connect(pa, b)
    wait_hosts([pa, pb], [a, b])
    for id <- jobs, do: wait_replica(pa, id, expected[id])

    for id <- otps do
      wait_until(
        fn -> match?(%{portable: %{state: %{results: r}}} when r != nil, replica(pa, id)) end,
        5_000,
        "a replica of #{inspect(id)}"
      )
    end

    # B dies suddenly: A adopts every job, with its state and its results
    kill9(pb)

    for id <- jobs ++ otps,
        do: wait_until(fn -> where_node(pa, id) == a end, 15_000, "adoption of #{inspect(id)}")

    for id <- jobs, do: assert(pcall(pa, Jobs, :get_state, [id]) == expected[id])
    for id <- otps, do: assert(pcall(pa, Job.Otp, :check_results, [id]) == results[id])

    assert Enum.sort(for {id, _, _} <- pcall(pa, Jobs, :list, []), do: id) ==
             Enum.sort(jobs ++ otps)
  end

  test "a partition heals with two copies of a job: one survives with every acknowledged event" do
    cookie = private_cookie()
    n = uniq()
    # dist_auto_connect never: once cut, a and b stay apart until the test connects them
    # (the registries' messages to each other would reconnect them otherwise)
    apart = [~c"-kernel", ~c"dist_auto_connect", ~c"never"]
    {pa, a} = private_peer(:"rpa#{n}", cookie, [work_ms: "60000"], apart)
    {pb, b} = private_peer(:"rpb#{n}", cookie, [work_ms: "100"], apart)
    assert a < b
    connect(pa, b)
    wait_hosts([pa, pb], [a, b])

    # x: started on a before the split and replicated to b, which adopts it during the split
    x = {n, :x}
    assert {:ok, x_pid} = job_start(pa, :Job, x)
    assert pcall(pa, Job, :update, [x, :shared]) == :ok
    assert wait_replica(pb, x, [:shared, x]) == x_pid

    # the split
    true = pcall(pa, :erlang, :disconnect_node, [b])
    wait_hosts([pa], [a])
    wait_hosts([pb], [b])
    wait_until(fn -> where_node(pb, x) == b end, 15_000, "adoption of x on b")

    # y and the Job.Otp o: started on each side during the split
    y = {n, :y}
    o = {n, :o}
    for peer <- [pa, pb], id <- [y, o], do: assert({:ok, _} = job_start(peer, kind(id), id))

    # both sides acknowledge updates
    for {peer, id, e} <- [
          {pa, x, :a1},
          {pb, x, :b1},
          {pb, x, :b2},
          {pa, y, :ya1},
          {pa, y, :ya2},
          {pb, y, :yb1}
        ],
        do: assert(pcall(peer, Job, :update, [id, e]) == :ok)

    # only b's o has its results (b's work_ms is 100 ms, a's a minute)
    o_results = "results of " <> inspect(o)
    wait_until(fn -> pcall(pb, Job.Otp, :check_results, [o]) == o_results end)
    assert pcall(pa, Job.Otp, :check_results, [o]) == nil

    # heal: the copies on a (the smaller node name) keep the names and merge b's copies
    a_pids = Map.new([x, y, o], &{&1, where(pa, &1)})
    connect(pa, b)
    wait_hosts([pa, pb], [a, b])

    # the loser's new events first (in its order), then the winner's state
    x_state = [:b2, :b1, :a1, :shared, x]
    y_state = [:yb1, :ya2, :ya1, y]

    for peer <- [pa, pb] do
      wait_until(fn -> pcall(peer, Jobs, :get_state, [x]) == x_state end, 10_000, "x merged")
      wait_until(fn -> pcall(peer, Jobs, :get_state, [y]) == y_state end, 10_000, "y merged")
      wait_until(fn -> pcall(peer, Job.Otp, :check_results, [o]) == o_results end, 10_000, "o")
      for id <- [x, y, o], do: assert(where(peer, id) == a_pids[id])
    end

    for id <- [x, y, o], do: wait_until(fn -> copies(pa, id) == 1 end, 10_000, "one copy")

    # the winner says what it merged
    merged = fn id ->
      Enum.any?(pcall(pa, LogKeeper, :messages, []), fn {level, text} ->
        level == :warning and
          String.contains?(
            text,
            "job #{inspect(id)} merged the copy from #{b} after a partition"
          )
      end)
    end

    for id <- [x, y, o],
        do: wait_until(fn -> merged.(id) end, 5_000, "the WARNING for #{inspect(id)}")

    # the survivors replicate: b holds their copies, and clients on either side reach them
    assert wait_replica(pb, x, x_state) == a_pids[x]
    assert pcall(pb, Job, :finish, [x]) == x_state
    assert pcall(pa, Job, :finish, [y]) == y_state
  end

  defp kind({_, :o}), do: :"Job.Otp"
  defp kind(_), do: :Job

  test "host_jobs false: no host on that node, a client only; job_kinds limits the kinds" do
    no_host = [~c"-pynode", ~c"host_jobs", ~c"false"]
    otp_only = [~c"-pynode", ~c"job_kinds", ~c"['Job.Otp']"]
    {_, c} = start_peer("jnohost", args: no_host)
    {_, k} = start_peer("jotponly", args: otp_only)
    assert :erpc.call(c, Process, :whereis, [:pynode_jobs]) == nil
    assert is_pid(:erpc.call(c, Process, :whereis, [:pynode_registry]))

    wait_until(fn -> k in (Registry.lookup_pids(Jobs.host_key()) |> Enum.map(&node/1)) end)

    assert [{_, [:"Job.Otp"]}] =
             Registry.lookup_values(Jobs.host_key()) |> Enum.filter(&(node(elem(&1, 0)) == k))

    refute c in (Registry.lookup_pids(Jobs.host_key()) |> Enum.map(&node/1))

    # the client-only node starts jobs elsewhere and works on them
    tag = uniq()

    for i <- 1..4 do
      id = {tag, i}
      assert {:ok, pid} = :erpc.call(c, Job, :start, [id])
      assert node(pid) not in [c, k]
      assert :erpc.call(c, Job, :update, [id, :u]) == :ok
      assert :erpc.call(c, Job, :finish, [id]) == [:u, id]
    end
  end
end
