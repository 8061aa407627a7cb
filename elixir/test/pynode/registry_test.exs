defmodule Pynode.RegistryTest do
  # One node: the registry of this test node (started by the application). Every test uses
  # its own names, so the tests can run concurrently.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import Pynode.Test.Cluster, only: [wait_until: 1]

  alias Pynode.Registry

  doctest Pynode.Registry

  defp uniq, do: {__MODULE__, System.unique_integer([:positive])}

  # A process that registers `key` (with `value`) and then waits for :stop or forwards.
  defp spawn_holder(key, value \\ :undefined) do
    test = self()

    pid =
      spawn(fn ->
        send(test, {:reg, self(), Registry.reg(key, value)})

        receive do
          :stop -> :ok
        end
      end)

    assert_receive {:reg, ^pid, result}
    {pid, result}
  end

  describe "unique names" do
    test "reg, where, lookup_pids, lookup_values" do
      key = {:n, :g, uniq()}
      assert Registry.where(key) == :undefined
      assert Registry.lookup_pids(key) == []
      assert Registry.reg(key) == :ok
      assert Registry.where(key) == self()
      assert Registry.lookup_pids(key) == [self()]
      assert Registry.lookup_values(key) == [{self(), :undefined}]
    end

    test "registering again updates the value" do
      key = {:n, :g, uniq()}
      assert Registry.reg(key, 1) == :ok
      assert Registry.reg(key, %{v: 2}) == :ok
      assert Registry.lookup_values(key) == [{self(), %{v: 2}}]
    end

    test "a name held by another process is refused with the holder" do
      key = {:n, :g, uniq()}
      {holder, :ok} = spawn_holder(key)
      assert Registry.reg(key) == {:error, {:already_registered, holder}}
      assert Registry.where(key) == holder
    end

    test "unreg removes the name; unreg of a key not held is :ok and changes nothing" do
      key = {:n, :g, uniq()}
      {holder, :ok} = spawn_holder(key)
      assert Registry.unreg(key) == :ok
      assert Registry.where(key) == holder

      assert Registry.reg(other = {:n, :g, uniq()}) == :ok
      assert Registry.unreg(other) == :ok
      assert Registry.where(other) == :undefined
      assert Registry.reg(other) == :ok
    end

    test "names compare exactly: 1 and 1.0 are two names" do
      n = uniq()
      {a, :ok} = spawn_holder({:n, :g, {n, 1}})
      {b, :ok} = spawn_holder({:n, :g, {n, 1.0}})
      assert Registry.where({:n, :g, {n, 1}}) == a
      assert Registry.where({:n, :g, {n, 1.0}}) == b
    end

    test "a name that looks like a match-spec wildcard is just a name" do
      {a, :ok} = spawn_holder({:p, :g, :_})
      {b, :ok} = spawn_holder({:p, :g, :"$1"})
      assert a in Registry.lookup_pids({:p, :g, :_})
      refute b in Registry.lookup_pids({:p, :g, :_})
      send(a, :stop)
      wait_until(fn -> a not in Registry.lookup_pids({:p, :g, :_}) end)
      assert b in Registry.lookup_pids({:p, :g, :"$1"})
    end
  end

  describe "properties" do
    test "any number of holders, each once; where gives the first" do
      key = {:p, :g, uniq()}
      {a, :ok} = spawn_holder(key, :a)
      {b, :ok} = spawn_holder(key, :b)
      assert Registry.reg(key, :me) == :ok
      assert Registry.reg(key, :me_again) == :ok
      assert Enum.sort(Registry.lookup_pids(key)) == Enum.sort([a, b, self()])

      assert Enum.sort(Registry.lookup_values(key)) ==
               Enum.sort([{a, :a}, {b, :b}, {self(), :me_again}])

      assert Registry.where(key) == a
      assert Registry.unreg(key) == :ok
      assert Enum.sort(Registry.lookup_pids(key)) == Enum.sort([a, b])
    end

    test "a name and a property with the same name are different keys" do
      n = uniq()
      assert Registry.reg({:n, :g, n}) == :ok
      assert Registry.lookup_pids({:p, :g, n}) == []
    end
  end

  describe "send/2" do
    test "to a name, to every holder of a property; returns the message" do
      name = {:n, :g, uniq()}
      prop = {:p, :g, uniq()}
      :ok = Registry.reg(name)
      :ok = Registry.reg(prop)
      test = self()

      other =
        spawn(fn ->
          :ok = Registry.reg(prop)
          send(test, :registered)

          receive do
            msg -> send(test, {:other_got, msg})
          end
        end)

      assert_receive :registered
      assert Registry.send(name, :hello) == :hello
      assert_receive :hello
      assert Registry.send(prop, :all) == :all
      assert_receive :all
      assert_receive {:other_got, :all}
      assert is_pid(other)
    end

    test "a name with no holder raises badarg; a property with none sends nothing" do
      assert_raise ArgumentError, fn -> Registry.send({:n, :g, uniq()}, :x) end
      assert Registry.send({:p, :g, uniq()}, :x) == :x
    end
  end

  describe "await" do
    test "returns at once when the name is there" do
      key = {:n, :g, uniq()}
      :ok = Registry.reg(key, 7)
      assert Registry.await(key, 0) == {self(), 7}
    end

    test "wakes up when the name is registered" do
      key = {:n, :g, uniq()}
      test = self()
      waiter = spawn(fn -> send(test, {:awaited, Registry.await(key, 5_000)}) end)
      wait_until(fn -> waiting?(waiter) end)
      {holder, :ok} = spawn_holder(key, :v)
      assert_receive {:awaited, {^holder, :v}}
    end

    test "a property wakes its waiter too" do
      key = {:p, :g, uniq()}
      test = self()
      waiter = spawn(fn -> send(test, {:awaited, Registry.await(key)}) end)
      wait_until(fn -> waiting?(waiter) end)
      {holder, :ok} = spawn_holder(key, :v)
      assert_receive {:awaited, {^holder, :v}}
    end

    test "times out with {:error, :timeout}" do
      assert Registry.await({:n, :g, uniq()}, 50) == {:error, :timeout}
    end

    test "a waiter that dies is forgotten" do
      key = {:n, :g, uniq()}
      waiter = spawn(fn -> Registry.await(key, :infinity) end)
      wait_until(fn -> waiting?(waiter) end)
      Process.exit(waiter, :kill)
      wait_until(fn -> not Map.has_key?(:sys.get_state(:pynode_registry).waiters, key) end)
    end
  end

  defp waiting?(pid), do: match?({:status, :waiting}, Process.info(pid, :status))

  describe "process death" do
    test "purges every entry of the dead process, names and properties" do
      name = {:n, :g, uniq()}
      prop = {:p, :g, uniq()}
      test = self()

      pid =
        spawn(fn ->
          :ok = Registry.reg(name)
          :ok = Registry.reg(prop, 1)
          send(test, :ready)
          receive(do: (:stop -> :ok))
        end)

      assert_receive :ready
      assert Registry.where(name) == pid
      ref = Process.monitor(pid)
      send(pid, :stop)
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}

      wait_until(fn -> Registry.where(name) == :undefined and Registry.lookup_pids(prop) == [] end)

      assert Registry.reg(name) == :ok
      refute Map.has_key?(:sys.get_state(:pynode_registry).locals, pid)
    end
  end

  describe "api misuse" do
    test "keys other than {:n, :g, _} / {:p, :g, _} raise ArgumentError" do
      for bad <- [{:n, :l, 1}, {:x, :g, 1}, :name, {:n, :g}] do
        assert_raise ArgumentError, fn -> Registry.reg(bad) end
        assert_raise ArgumentError, fn -> Registry.where(bad) end
      end
    end
  end

  test "members includes this node" do
    assert node() in Registry.members()
    assert Registry.members() == Enum.sort(Registry.members())
  end

  describe "malformed messages" do
    test "are logged once per sender and never crash the registry" do
      registry = Process.whereis(:pynode_registry)
      key = {:n, :g, uniq()}
      :ok = Registry.reg(key)

      # A fake "remote" sender: a pid of this node is not a peer registry either.
      from = spawn(fn -> receive(do: (:never -> :ok)) end)

      bad = [
        :garbage,
        {:"$pynode_reg"},
        {:"$pynode_reg", 2, :discover, from},
        {:"$pynode_reg", 1, :discover, :not_a_pid},
        {:"$pynode_reg", 1, :discover, from},
        {:"$pynode_reg", 1, :sync, from, [1 | 2], []},
        {:"$pynode_reg", 1, :sync, from, [{key, from, 1}], [:a | :b]},
        {:"$pynode_reg", 1, :reg, from, key, from, :stolen},
        {:"$pynode_reg", 1, :reg, from, {:bad, :key}, from, 1},
        {:"$pynode_reg", 1, :unreg, from, key, self()},
        {:"$pynode_reg", 1, :unknown_op, from, 1, 2, 3}
      ]

      log =
        capture_log(fn ->
          Enum.each(bad, &send(registry, &1))
          GenServer.cast(registry, :nonsense)
          assert GenServer.call(registry, :nonsense) == {:error, :badarg}
          assert GenServer.call(registry, {:await, key, :soon}) == {:error, :badarg}
          assert GenServer.call(registry, {:reg, {:n, :l, 1}, 1}) == {:error, :badarg}
        end)

      assert Process.whereis(:pynode_registry) == registry
      assert Registry.where(key) == self()
      assert Registry.lookup_values(key) == [{self(), :undefined}]
      # once per sender: `from` sent many bad messages, one line
      assert length(Regex.scan(~r/from #{Regex.escape(inspect(from))}/, log)) == 1
    end
  end
end
