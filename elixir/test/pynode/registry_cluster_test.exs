defmodule Pynode.RegistryClusterTest do
  # Several BEAM nodes: this test node (its registry runs from the application) and :peer
  # nodes running the :pynode application. Each test starts its own peers
  # with unique names and stops them at the end.
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Registry
  alias Pynode.Test.Holder

  @moduletag timeout: 120_000

  defp uniq, do: {__MODULE__, System.unique_integer([:positive])}

  defp rpc(node, fun, args), do: :erpc.call(node, Registry, fun, args, 10_000)

  defp where_on(nodes, key), do: Enum.map(nodes, &rpc(&1, :where, [key]))

  # Wait until every node's mirror shows `expected` as the holder of `key`.
  defp converge(nodes, key, expected) do
    wait_until(
      fn -> Enum.all?(where_on(nodes, key), &(&1 == expected)) end,
      10_000,
      "#{inspect(key)} -> #{inspect(expected)} on #{inspect(nodes)} (now #{inspect(where_on(nodes, key))})"
    )
  end

  defp wait_members(node, expected) do
    wait_until(
      fn -> Enum.all?(expected, &(&1 in rpc(node, :members, []))) end,
      10_000,
      "#{inspect(expected)} in members of #{node}"
    )
  end

  defp holder_on(node, key, value, opts \\ []) do
    :erpc.call(node, Holder, :start, [key, value, opts])
  end

  defp wait_reg(watcher) do
    wait_until(fn ->
      case Holder.status(watcher) do
        # The registry replied :ok and then sent the conflict exit; an exit signal acts on
        # arrival, so the holder can die before it reads the reply. Its reg did succeed.
        {_, :waiting, _, {:dead, {:name_conflict, _, _}}} -> :ok
        {_, reg, _, _} -> reg not in [nil, :waiting] and reg
      end
    end)
  end

  test "registrations replicate to every member, and so do unreg and death" do
    {_, a} = start_peer("rega")
    {_, b} = start_peer("regb")
    nodes = [node(), a, b]
    Enum.each(nodes, &wait_members(&1, nodes))

    name = {:n, :g, uniq()}
    prop = {:p, :g, uniq()}
    {wa, pa} = holder_on(a, name, :from_a)
    assert wait_reg(wa) == :ok
    converge(nodes, name, pa)
    assert rpc(b, :lookup_values, [name]) == [{pa, :from_a}]

    {wpa, ppa} = holder_on(a, prop, 1)
    {wpb, ppb} = holder_on(b, prop, 2)
    assert wait_reg(wpa) == :ok and wait_reg(wpb) == :ok

    for n <- nodes do
      wait_until(fn ->
        Enum.sort(rpc(n, :lookup_values, [prop])) == Enum.sort([{ppa, 1}, {ppb, 2}])
      end)
    end

    # only the owning node registers its processes: a remote caller is refused
    assert :erpc.call(a, GenServer, :call, [
             {:pynode_registry, node()},
             {:reg, {:n, :g, uniq()}, 1}
           ]) ==
             {:error, :not_local}

    # send by name from here reaches the holder on a
    assert Registry.send(name, {:hello, 1}) == {:hello, 1}
    wait_until(fn -> match?({_, _, [{:hello, 1}], :alive}, Holder.status(wa)) end)

    # unreg on a is seen everywhere; the name is free again
    send(wa, {:unreg, name})
    converge(nodes, name, :undefined)
    assert Registry.reg(name, :mine) == :ok
    converge(nodes, name, self())

    # a registered process that dies is purged everywhere
    Holder.stop(wpb)
    for n <- nodes, do: wait_until(fn -> rpc(n, :lookup_pids, [prop]) == [ppa] end)
  end

  test "sys.config (mix_compat/sys.config, linked from the repository root) is a valid config with the documented defaults" do
    path = Path.expand("../../../mix_compat/sys.config", __DIR__)
    assert {:ok, [[{:pynode, env}]]} = :file.consult(String.to_charlist(path))

    assert Enum.sort(env) == [
             connect: [],
             discovery: true,
             dns: :undefined,
             host_jobs: true,
             hosts: [],
             job_kinds: :all,
             max_jobs: 1000,
             poll_interval: 5_000,
             replica_check: 100,
             replicas: 1,
             result_ttl: 600_000
           ]

    # the same defaults as the library's mix.exs gives a node started without the file, and
    # every key mix.exs defaults is documented in the file
    defaults = Mix.Project.get!().application()[:env]
    for {key, value} <- env, do: assert({key, defaults[key]} == {key, value})
    assert Enum.sort(Keyword.keys(defaults)) == Enum.sort(Keyword.keys(env))
    # and the repository root's sys.config is the same file
    root = Path.expand("../../../sys.config", __DIR__)
    assert File.read!(root) == File.read!(path)
  end

  test "the application connects to the nodes of its `connect` key" do
    {_, a} = start_peer("rega")
    # b is not connected to this node; `connect` (or its discovery through this host's
    # EPMD, which finds a too: docs/DISCOVERY.md, test/pynode/discovery_test.exs) reaches a
    {peer_b, b} =
      start_peer("regb",
        connection: :standard_io,
        args: [~c"-pynode", ~c"connect", String.to_charlist("['#{a}']")]
      )

    wait_until(fn -> a in :peer.call(peer_b, Registry, :members, []) end)
    # and through a's member list it meets this node too
    wait_until(fn -> b in Registry.members() end)
  end

  test "await on one node wakes when another node registers the name" do
    {_, a} = start_peer("rega")
    wait_members(node(), [a])
    name = {:n, :g, uniq()}
    task = Task.async(fn -> Registry.await(name, 10_000) end)
    wait_until(fn -> Map.has_key?(:sys.get_state(:pynode_registry).waiters, name) end)
    {_w, pa} = holder_on(a, name, :v)
    assert Task.await(task) == {pa, :v}
  end

  test "a node that joins late receives a snapshot of everything" do
    {_, a} = start_peer("rega")
    wait_members(node(), [a])
    name = {:n, :g, uniq()}
    prop = {:p, :g, uniq()}
    {wa, pa} = holder_on(a, name, %{some: "state"})
    {wp, pp} = holder_on(a, prop, 1)
    assert wait_reg(wa) == :ok and wait_reg(wp) == :ok
    :ok = Registry.reg(prop, 2)

    {_, late} = start_peer("late")
    wait_members(late, [node(), a, late])
    converge([late], name, pa)
    assert rpc(late, :lookup_values, [name]) == [{pa, %{some: "state"}}]

    wait_until(fn ->
      Enum.sort(rpc(late, :lookup_values, [prop])) == Enum.sort([{pp, 1}, {self(), 2}])
    end)
  end

  test "the entries of a node that dies are purged everywhere" do
    {_, a} = start_peer("rega")
    {_, b} = start_peer("regb")
    Enum.each([node(), a, b], &wait_members(&1, [node(), a, b]))
    name = {:n, :g, uniq()}
    prop = {:p, :g, uniq()}
    {wa, pa} = holder_on(a, name, 1)
    {wp, _} = holder_on(a, prop, 1)
    assert wait_reg(wa) == :ok and wait_reg(wp) == :ok
    :ok = Registry.reg(prop, :here)
    converge([node(), b], name, pa)

    # sudden death: no goodbye from a's registry, the connection just goes away
    :erpc.cast(a, :erlang, :halt, [])

    for n <- [node(), b] do
      wait_until(fn -> rpc(n, :where, [name]) == :undefined end)
      wait_until(fn -> rpc(n, :lookup_pids, [prop]) == [self()] end)
      wait_until(fn -> a not in rpc(n, :members, []) end)
    end
  end

  test "hidden nodes are members and end up connected to each other" do
    # Like Python nodes: hidden, each connected only to this node at first. Their discovery
    # is off: it would connect them to each other through EPMD, and this test is about the
    # registry connecting the members that another registry reports.
    hidden = [~c"-hidden", ~c"-pynode", ~c"discovery", ~c"false"]
    {_, h1} = start_peer("hida", args: hidden)
    {_, h2} = start_peer("hidb", args: hidden)
    assert h1 in Node.list(:hidden) and h2 in Node.list(:hidden)
    nodes = [node(), h1, h2]
    Enum.each(nodes, &wait_members(&1, nodes))
    assert h2 in :erpc.call(h1, Node, :list, [:hidden])

    name = {:n, :g, uniq()}
    {_, p1} = holder_on(h1, name, :hidden)
    converge(nodes, name, p1)
  end

  test "concurrent registration of one name converges on the smaller node name" do
    {_, a} = start_peer("rega")
    {_, b} = start_peer("regb")
    assert a < b
    nodes = [node(), a, b]
    Enum.each(nodes, &wait_members(&1, nodes))

    for _round <- 1..5 do
      name = {:n, :g, uniq()}
      {wa, pa} = holder_on(a, name, :a, go?: true)
      {wb, pb} = holder_on(b, name, :b, go?: true)
      Holder.go(wa)
      Holder.go(wb)
      ra = wait_reg(wa)
      rb = wait_reg(wb)

      {winner, loser_watcher, loser_result} =
        case {ra, rb} do
          # both won locally: the conflict rule picks a (smaller node name), b's loses
          {:ok, :ok} -> {pa, wb, :conflict}
          # b's reg reached a first: a was refused, b keeps the name
          {{:error, {:already_registered, ^pb}}, :ok} -> {pb, wa, :refused}
          {:ok, {:error, {:already_registered, ^pa}}} -> {pa, wb, :refused}
        end

      converge(nodes, name, winner)

      case loser_result do
        :conflict ->
          wait_until(fn -> match?({_, _, _, {:dead, _}}, Holder.status(loser_watcher)) end)

          assert {^pb, reg, [], {:dead, {:name_conflict, ^name, ^pa}}} =
                   Holder.status(loser_watcher)

          assert reg in [:ok, :waiting]

        :refused ->
          assert {_, _, [], :alive} = Holder.status(loser_watcher)
      end

      # and it stays converged: nobody holds the loser
      assert where_on(nodes, name) == [winner, winner, winner]
    end
  end

  test "a partition that heals with the name on both sides: the smaller node wins, the loser gets the exit" do
    # a and b are not connected to this node nor to each other: each registers the same
    # names alone, then they meet. Their discovery is off, or they would find each other
    # (and this node) through EPMD at once.
    no_discovery = [~c"-pynode", ~c"discovery", ~c"false"]
    {peer_a, a} = start_peer("rega", connection: :standard_io, args: no_discovery)
    {peer_b, b} = start_peer("regb", connection: :standard_io, args: no_discovery)
    assert a < b
    refute a in Node.list(:connected) or b in Node.list(:connected)
    killed = {:n, :g, uniq()}
    trapped = {:n, :g, uniq()}

    {wa1, pa1} = :peer.call(peer_a, Holder, :start, [killed, :a, []])
    {wb1, pb1} = :peer.call(peer_b, Holder, :start, [killed, :b, []])
    {wa2, pa2} = :peer.call(peer_a, Holder, :start, [trapped, :a, []])
    {wb2, pb2} = :peer.call(peer_b, Holder, :start, [trapped, :b, [trap_exit: true]])
    status = fn peer, w -> :peer.call(peer, Holder, :status, [w]) end

    for {peer, w} <- [{peer_a, wa1}, {peer_b, wb1}, {peer_a, wa2}, {peer_b, wb2}] do
      wait_until(fn -> match?({_, :ok, _, _}, status.(peer, w)) end)
    end

    assert :peer.call(peer_b, Registry, :where, [killed]) == pb1

    # heal
    assert :peer.call(peer_a, :net_kernel, :connect_node, [b]) == true

    for peer <- [peer_a, peer_b], key <- [killed, trapped] do
      winner = if key == killed, do: pa1, else: pa2
      wait_until(fn -> :peer.call(peer, Registry, :where, [key]) == winner end)
    end

    # the loser that does not trap exits dies with {:name_conflict, key, winner}
    wait_until(fn -> match?({_, _, _, {:dead, _}}, status.(peer_b, wb1)) end)
    assert {^pb1, :ok, [], {:dead, {:name_conflict, ^killed, ^pa1}}} = status.(peer_b, wb1)

    # the one that traps exits gets the signal as a message from its registry and lives on
    registry_b = :peer.call(peer_b, Process, :whereis, [:pynode_registry])

    wait_until(fn -> match?({_, _, [_], _}, status.(peer_b, wb2)) end)

    assert {^pb2, :ok, [{:EXIT, ^registry_b, {:name_conflict, ^trapped, ^pa2}}], :alive} =
             status.(peer_b, wb2)

    # the winners are untouched
    assert {^pa1, :ok, [], :alive} = status.(peer_a, wa1)
    assert {^pa2, :ok, [], :alive} = status.(peer_a, wa2)

    # and this node, joining now, sees only the winners
    assert Node.connect(a)
    wait_members(node(), [a, b])
    converge([node()], killed, pa1)
    converge([node()], trapped, pa2)
  end
end
