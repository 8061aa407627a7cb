defmodule Pynode.RegistryProtocolTest do
  # The raw protocol, message by message: relays on peer nodes (which run no registry of
  # their own) play remote registries against this node's registry, so that the exact
  # message shapes and the rules of docs/REGISTRY_PROTOCOL.md are checked one by one.
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Registry
  alias Pynode.Test.Relay

  @moduletag timeout: 60_000
  @tag_ :"$pynode_reg"

  defp uniq, do: {__MODULE__, System.unique_integer([:positive])}

  # Peer names start with "a"/"b": smaller than this node's "mixtest…", so their holders win.
  setup do
    {_, fa} = start_peer("fa", start_app: false)
    {_, fb} = start_peer("fb", start_app: false)
    assert fa < fb and fb < node()
    g = :erpc.call(fa, Relay, :start, [self()])
    f = :erpc.call(fb, Relay, :start, [self()])
    registry = Process.whereis(:pynode_registry)
    %{g: g, f: f, fa: fa, fb: fb, registry: registry}
  end

  defp as(relay, msg), do: send(relay, {:relay_send, {:pynode_registry, node()}, msg})

  defp member?(n), do: n in Registry.members()

  test "discover is answered by discover and sync (first time only); sync carries own entries and members",
       %{g: g, fa: fa, registry: registry} do
    key = {:n, :g, uniq()}
    :ok = Registry.reg(key, :v)
    as(g, {@tag_, 1, :discover, g})
    assert_receive {:relayed, ^g, {@tag_, 1, :discover, ^registry}}, 5_000
    assert_receive {:relayed, ^g, {@tag_, 1, :sync, ^registry, entries, members}}, 5_000
    assert {key, self(), :v} in entries
    assert Enum.all?(entries, fn {_, pid, _} -> node(pid) == node() end)
    assert node() in members and fa in members
    assert member?(fa)

    # a second discover from a registry that has our snapshot: no answer (no sync, no
    # discover). A reg from g behind it on the same link is a barrier: once it is applied,
    # the discover was handled, and our next write is the next message g gets.
    as(g, {@tag_, 1, :discover, g})
    barrier = {:p, :g, uniq()}
    as(g, {@tag_, 1, :reg, g, barrier, g, :b})
    wait_until(fn -> Registry.lookup_values(barrier) == [{g, :b}] end)
    prop = {:p, :g, uniq()}
    :ok = Registry.reg(prop, 1)
    assert_receive {:relayed, ^g, {@tag_, 1, :reg, ^registry, ^prop, pid, 1}} when pid == self()
    refute_received {:relayed, ^g, {@tag_, 1, :sync, _, _, _}}
    refute_received {:relayed, ^g, {@tag_, 1, :discover, _}}
    :ok = Registry.unreg(prop)
    assert_receive {:relayed, ^g, {@tag_, 1, :unreg, ^registry, ^prop, pid}} when pid == self()
  end

  test "sync replaces a node's entries; members it reports are discovered", %{f: f, fb: fb} do
    k1 = {:n, :g, uniq()}
    k2 = {:p, :g, uniq()}
    as(f, {@tag_, 1, :sync, f, [{k1, f, 1}, {k2, f, 2}], [fb, :nosuchnode@localhost]})
    wait_until(fn -> Registry.where(k1) == f end)
    assert Registry.lookup_values(k2) == [{f, 2}]
    assert member?(fb)

    as(f, {@tag_, 1, :sync, f, [{k2, f, 3}], [fb]})
    wait_until(fn -> Registry.where(k1) == :undefined end)
    assert Registry.lookup_values(k2) == [{f, 3}]
  end

  test "protocol violations change nothing", %{g: g, f: f} do
    key = {:n, :g, uniq()}
    as(f, {@tag_, 1, :sync, f, [{key, f, :f}], []})
    wait_until(fn -> Registry.where(key) == f end)
    # reg of a pid that is not on the sender's node
    as(f, {@tag_, 1, :reg, f, other = {:n, :g, uniq()}, g, :x})
    # unreg of an entry that is not the current one
    as(g, {@tag_, 1, :unreg, g, key, g})
    # another version
    as(g, {@tag_, 2, :reg, g, other, g, :x})
    # a barrier: the registry has handled everything sent before it
    as(f, {@tag_, 1, :discover, f})
    assert_receive {:relayed, ^f, {@tag_, 1, :sync, _, _, _}}, 5_000
    assert Registry.where(key) == f
    assert Registry.where(other) == :undefined
  end

  test "conflict: the smaller node name wins whatever the order; a dropped loser comes back if the winner goes first",
       %{g: g, f: f} do
    key = {:n, :g, uniq()}
    # f (node fb) holds it, then g (node fa, smaller) claims it: g wins
    as(f, {@tag_, 1, :reg, f, key, f, :f})
    wait_until(fn -> Registry.where(key) == f end)
    as(g, {@tag_, 1, :reg, g, key, g, :g})
    wait_until(fn -> Registry.where(key) == g end)
    # f claims again (a value update of its losing claim): g stays
    as(f, {@tag_, 1, :reg, f, key, f, :f2})
    # g goes away before fb's registry heard of it: f's claim is the holder again
    as(g, {@tag_, 1, :unreg, g, key, g})
    wait_until(fn -> Registry.lookup_values(key) == [{f, :f2}] end)
    # and f's own unreg removes it
    as(f, {@tag_, 1, :unreg, f, key, f})
    wait_until(fn -> Registry.where(key) == :undefined end)
  end

  test "a local loser is unregistered, announced and signalled", %{g: g, registry: registry} do
    as(g, {@tag_, 1, :discover, g})
    assert_receive {:relayed, ^g, {@tag_, 1, :sync, _, _, _}}, 5_000
    key = {:n, :g, uniq()}
    test = self()

    holder =
      spawn(fn ->
        Process.flag(:trap_exit, true)
        send(test, {:reg, Registry.reg(key, :local)})
        receive(do: (msg -> send(test, {:holder_got, msg})))
      end)

    assert_receive {:reg, :ok}
    assert_receive {:relayed, ^g, {@tag_, 1, :reg, ^registry, ^key, ^holder, :local}}, 5_000
    as(g, {@tag_, 1, :reg, g, key, g, :remote})
    assert_receive {:holder_got, {:EXIT, ^registry, {:name_conflict, ^key, ^g}}}, 5_000
    assert_receive {:relayed, ^g, {@tag_, 1, :unreg, ^registry, ^key, ^holder}}, 5_000
    assert Registry.lookup_values(key) == [{g, :remote}]
    refute Map.has_key?(:sys.get_state(registry).locals, holder)
  end

  test "a peer registry that dies is purged and stops being a member", %{f: f, fb: fb} do
    key = {:n, :g, uniq()}
    prop = {:p, :g, uniq()}
    as(f, {@tag_, 1, :sync, f, [{key, f, 1}, {prop, f, 1}], [fb]})
    wait_until(fn -> Registry.where(key) == f and member?(fb) end)
    send(f, :relay_stop)
    wait_until(fn -> Registry.where(key) == :undefined and not member?(fb) end)
    assert Registry.lookup_pids(prop) == []
  end

  test "a waiter is answered by a remote reg", %{g: g} do
    key = {:n, :g, uniq()}
    task = Task.async(fn -> Registry.await(key, 5_000) end)
    wait_until(fn -> Map.has_key?(:sys.get_state(:pynode_registry).waiters, key) end)
    as(g, {@tag_, 1, :sync, g, [{key, g, :hi}], []})
    assert Task.await(task) == {g, :hi}
  end
end
