defmodule JobClusterTest do
  # Several BEAM nodes: this test node (its job host runs from the application) and :peer
  # nodes running the :available_processes application. Each test starts its own peers and
  # uses its own job ids, so tests do not see each other's jobs (the peers are stopped when
  # the test ends).
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Jobs
  alias Pynode.Registry

  @moduletag timeout: 120_000

  setup do
    Pynode.Test.AppEnv.keep([:work_ms])
  end

  defp uniq, do: System.unique_integer([:positive])

  defp put_env(nodes, key, value) do
    for n <- nodes,
        do: :ok = :erpc.call(n, Application, :put_env, [:pynode, key, value])
  end

  defp host_nodes, do: Registry.lookup_pids(Jobs.host_key()) |> Enum.map(&node/1) |> Enum.sort()

  defp wait_hosts(nodes) do
    # peers print their logs here: keep a passing run quiet (this node's are captured)
    for n <- nodes, n != node(), do: :erpc.call(n, Logger, :configure, [[level: :warning]])
    wanted = Enum.sort(nodes)
    wait_until(fn -> host_nodes() == wanted end, 10_000, "hosts #{inspect(wanted)}")
    # and every peer sees the same hosts
    for n <- nodes do
      wait_until(
        fn ->
          :erpc.call(n, Registry, :lookup_pids, [Jobs.host_key()])
          |> Enum.map(&node/1)
          |> Enum.sort() ==
            wanted
        end,
        10_000,
        "hosts seen from #{n}"
      )
    end
  end

  defp where_node(id) do
    case Registry.where(Jobs.key(id)) do
      pid when is_pid(pid) -> node(pid)
      _ -> nil
    end
  end

  # How many hosts run job `id` (each host's own `list`).
  defp holders(nodes, id) do
    for n <- nodes,
        {^id, _kind, pid} <- GenServer.call({:pynode_jobs, n}, :list),
        do: {n, pid}
  end

  test "placement spreads jobs over every host, round-robin" do
    {_, a} = start_peer("joba")
    {_, b} = start_peer("jobb")
    nodes = [node(), a, b]
    wait_hosts(nodes)
    tag = uniq()
    ids = for i <- 1..9, do: {tag, i}
    for id <- ids, do: assert({:ok, _} = Job.start(id))
    placed = Enum.frequencies_by(ids, &where_node/1)
    assert Enum.sort(Map.keys(placed)) == Enum.sort(nodes)
    assert Enum.all?(Map.values(placed), &(&1 == 3)), inspect(placed)

    # started from a peer too, and from a node that hosts nothing
    {_, c} = start_peer("jobc", start_app: false)
    true = :erpc.call(c, Node, :connect, [node()])
    other = {tag, :from_c}
    assert {:ok, pid} = :erpc.call(c, Job, :start, [other])
    assert :erpc.call(c, Job, :update, [other, :u]) == :ok
    assert :erpc.call(c, Job, :finish, [other]) == [:u, other]
    assert node(pid) in nodes
    assert :erpc.call(c, Job.Otp, :check_results, [{tag, :none}]) == nil
    for id <- ids, do: assert(Job.finish(id) == [id])
  end

  test "Application.stop on a node hands its jobs off with their state; callers never see :no_such_job" do
    {_, a} = start_peer("joba")
    {_, b} = start_peer("jobb")
    nodes = [node(), a, b]
    wait_hosts(nodes)
    put_env(nodes, :work_ms, 1_500)
    tag = uniq()
    ids = for i <- 1..12, do: {tag, i}
    otp_ids = for i <- 1..6, do: {tag, :otp, i}
    t0 = System.monotonic_time(:millisecond)

    for id <- ids, do: assert({:ok, _} = Job.start(id))
    for id <- otp_ids, do: assert({:ok, _} = Job.Otp.start(id))
    on_a = Enum.filter(ids ++ otp_ids, &(where_node(&1) == a))
    assert length(on_a) >= 4

    # A client keeps updating every job while `a` stops.
    parent = self()

    updater =
      spawn_link(fn ->
        loop = fn loop, n, log ->
          receive do
            :stop -> send(parent, {:updates, log})
          after
            0 ->
              log = Enum.reduce(ids, log, fn id, log -> [{id, n, Job.update(id, n)} | log] end)
              send(parent, {:round, n})
              loop.(loop, n + 1, log)
          end
        end

        loop.(loop, 1, [])
      end)

    assert_receive {:round, 1}, 10_000
    assert :ok = :erpc.call(a, Application, :stop, [:available_processes], 60_000)
    {:messages, msgs} = Process.info(self(), :messages)

    last =
      msgs
      |> Enum.flat_map(fn
        {:round, n} -> [n]
        _ -> []
      end)
      |> Enum.max(fn -> 1 end)

    # the seed's kinds are withdrawn from a's host, which holds no job now; the :pynode
    # application (registry, host) keeps running there
    assert :erpc.call(a, GenServer, :call, [:pynode_jobs, :list]) == []

    wait_until(fn ->
      for(
        {pid, kinds} <- Pynode.Registry.lookup_values(Pynode.Jobs.host_key()),
        node(pid) == a,
        do: kinds
      ) ==
        [[]]
    end)

    # every job moved: it is held by a running host other than `a`
    for id <- on_a, do: assert(where_node(id) in [node(), b])
    # two more full rounds of updates after the stop, then stop the updater
    assert_receive {:round, n} when n == last + 2, 30_000
    send(updater, :stop)
    assert_receive {:updates, log}, 30_000

    assert Enum.all?(log, fn {_, _, r} -> r == :ok end),
           inspect(Enum.reject(log, fn {_, _, r} -> r == :ok end))

    for id <- ids do
      events = for {^id, n, :ok} <- Enum.reverse(log), do: n
      assert events != []
      # every acknowledged update, once each, in order
      assert Job.finish(id) == Enum.reverse(events) ++ [id]
    end

    # the Job.Otp jobs kept their remaining work time across the move (not restarted)
    for id <- otp_ids do
      r = wait_until(fn -> Job.Otp.check_results(id) end, 5_000, "results of #{inspect(id)}")
      assert r == "results of " <> inspect(id)
    end

    assert System.monotonic_time(:millisecond) - t0 < 1_500 + 2_500
    for id <- otp_ids, do: assert(length(holders([node(), b], id)) == 1)
  end

  test ":init.stop on a node hands its jobs off" do
    {_, a} = start_peer("joba")
    nodes = [node(), a]
    wait_hosts(nodes)
    tag = uniq()

    ids =
      for i <- 1..3 do
        id = {tag, i}
        assert {:ok, pid} = GenServer.call({:pynode_jobs, a}, {:start, :Job, id, []})
        assert node(pid) == a
        assert Job.update(id, :before) == :ok
        id
      end

    :erpc.cast(a, :init, :stop, [])

    for id <- ids,
        do: wait_until(fn -> where_node(id) == node() end, 10_000, "#{inspect(id)} moved")

    for id <- ids, do: assert(Job.finish(id) == [:before, id])
  end

  test "a node that dies: its jobs are adopted by exactly one other node with the last acknowledged state" do
    {_, a} = start_peer("joba")
    {_, b} = start_peer("jobb")
    {_, c} = start_peer("jobc")
    nodes = [node(), a, b, c]
    wait_hosts(nodes)
    put_env(nodes, :work_ms, 60_000)
    tag = uniq()

    # jobs placed on `a` directly, with a few acknowledged updates each
    ids =
      for i <- 1..6 do
        id = {tag, i}
        assert {:ok, pid} = GenServer.call({:pynode_jobs, a}, {:start, :Job, id, []})
        assert node(pid) == a
        for e <- 1..i, do: assert(Job.update(id, e) == :ok)
        id
      end

    otp = {tag, :otp}
    assert {:ok, otp_pid} = GenServer.call({:pynode_jobs, a}, {:start, :"Job.Otp", otp, []})
    assert node(otp_pid) == a
    others = for i <- 1..4, do: {tag, :other, i}
    for id <- others, do: assert({:ok, _} = Job.start(id))

    :erpc.cast(a, :erlang, :halt, [])
    survivors = [node(), b, c]

    for id <- [otp | ids] do
      wait_until(fn -> where_node(id) in survivors end, 15_000, "#{inspect(id)} adopted")
    end

    # a second adopter would show up within moments: give it that time (there is no event
    # to wait for when the behaviour is right), then count
    Process.sleep(500)

    for id <- [otp | ids] do
      assert [{_n, _pid}] = holders(survivors, id)
    end

    for {id, i} <- Enum.with_index(ids, 1) do
      assert Jobs.get_state(id) == Enum.to_list(i..1//-1) ++ [id]
    end

    # the adopted Job.Otp job carries on with its remaining work time (not restarted at 0)
    assert %{results: nil, work_left_ms: left} = Jobs.get_state(otp)
    assert left > 50_000 and left <= 60_000

    # the adopted jobs replicate again: a second death loses nothing
    for {id, i} <- Enum.with_index(ids, 1) do
      assert Job.update(id, :after) == :ok
      assert Job.finish(id) == [:after | Enum.to_list(i..1//-1)] ++ [id]
    end

    for id <- others, do: assert(Job.finish(id) == [id])
  end

  test "two successive deaths: the adopted job's new replica takes over" do
    {_, a} = start_peer("joba")
    {_, b} = start_peer("jobb")
    nodes = [node(), a, b]
    wait_hosts(nodes)
    id = {uniq(), :twice}
    assert {:ok, pid} = GenServer.call({:pynode_jobs, a}, {:start, :Job, id, []})
    assert node(pid) == a
    assert Job.update(id, 1) == :ok

    :erpc.cast(a, :erlang, :halt, [])
    wait_until(fn -> where_node(id) in [node(), b] end, 15_000, "first adoption")
    assert Job.update(id, 2) == :ok

    if where_node(id) == b do
      :erpc.cast(b, :erlang, :halt, [])
      wait_until(fn -> where_node(id) == node() end, 15_000, "second adoption")
    end

    assert Job.finish(id) == [2, 1, id]
  end
end
