defmodule Pynode.KindsTest do
  # Pynode.Jobs.Kinds: an application provides its kinds to the host while it runs; when it
  # stops, the host stops advertising them and hands their jobs off to another host (the
  # registry, the host and other kinds keep running). The test node runs :pynode (no kinds
  # of its own); the kind is Pynode.Test.Tally (test/support).
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Jobs
  alias Pynode.Jobs.Kinds
  alias Pynode.Registry
  alias Pynode.Test.Tally

  @kind :"Pynode.Test.Tally"

  # the kinds the host of `node` advertises
  defp advertised(node) do
    for {pid, kinds} <- Registry.lookup_values(Jobs.host_key()), node(pid) == node, do: kinds
  end

  # a provider not linked to the caller (on a peer, the caller is a short-lived rpc process)
  defp provide(node, kinds) do
    {:ok, pid} = :erpc.call(node, GenServer, :start, [Kinds, kinds])
    pid
  end

  test "kinds are advertised while provided and withdrawn when the provider stops" do
    assert Jobs.kinds() == []
    assert advertised(node()) == [[]]

    pid = provide(node(), [Tally])
    assert Jobs.kinds() == [Tally]
    assert advertised(node()) == [[@kind]]
    assert Jobs.host_kinds() == %{@kind => Tally}

    assert {:ok, _} = Jobs.start(Tally, "tally-1")
    assert {:ok, 2} = Jobs.op("tally-1", {:add, 2})

    # no other host runs the kind: its job ends with it
    :ok = GenServer.stop(pid)
    assert Jobs.kinds() == []
    assert advertised(node()) == [[]]
    assert Jobs.start(Tally, "tally-2") == {:error, :unknown_kind}
    wait_until(fn -> Registry.where(Jobs.key("tally-1")) == :undefined end)
  end

  test "a provider that is not a kind is refused" do
    Process.flag(:trap_exit, true)
    assert {:error, {:not_a_kind, Enum}} = Kinds.start_link([Tally, Enum])
    assert Jobs.kinds() == []
  end

  test "withdrawing a kind hands its jobs to another host, which keeps them; the host stays" do
    {_peer, b} = start_peer("kindsb")
    wait_until(fn -> b in Registry.members() end)
    here = provide(node(), [Tally])
    provide(b, [Tally])
    wait_until(fn -> advertised(b) == [[@kind]] end)

    # a job on this node (the least-loaded host is chosen; place it here explicitly)
    {:ok, job} = GenServer.call(Pynode.Jobs.Host.name(), {:start, @kind, "moving", []})
    assert node(job) == node()
    assert {:ok, 5} = Jobs.op("moving", {:add, 5})

    :ok = GenServer.stop(here)
    # the stop returned after the handoff: the job runs on b with its state
    moved = Registry.where(Jobs.key("moving"))
    assert is_pid(moved) and node(moved) == b
    assert {:ok, 6} = Jobs.op("moving", {:add, 1})
    assert advertised(node()) == [[]]
    # the host of this node is the same process, and still hosts (replicas, other kinds)
    assert Process.alive?(Process.whereis(Pynode.Jobs.Host.name()))
  end

  test "a restarted host finds the kinds provided before" do
    pid = provide(node(), [Tally])
    on_exit(fn -> GenServer.stop(pid) end)
    host = Process.whereis(Pynode.Jobs.Host.name())
    :ok = Supervisor.terminate_child(Pynode.Supervisor, Pynode.Jobs.Host)
    {:ok, new} = Supervisor.restart_child(Pynode.Supervisor, Pynode.Jobs.Host)
    assert new != host
    assert advertised(node()) == [[@kind]]
    assert Jobs.host_kinds() == %{@kind => Tally}
  end
end
