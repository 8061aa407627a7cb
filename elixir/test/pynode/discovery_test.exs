defmodule Pynode.DiscoveryTest do
  # docs/DISCOVERY.md: the pure rules against the shared vectors (docs/vectors/discovery.terms,
  # also read by the Python suite), then real peer nodes. The test node's own discovery is
  # off (test_helper.exs); the peers run it. Other nodes may be registered in this host's
  # EPMD (other test runs, other cookies): the tests only look at the nodes they start.
  use ExUnit.Case, async: false

  import Pynode.Test.Cluster

  alias Pynode.Discovery

  @moduletag timeout: 120_000

  doctest Pynode.Discovery

  @vectors Path.expand("../../../docs/vectors/discovery.terms", __DIR__)

  defp vectors(kind) do
    {:ok, terms} = :file.consult(String.to_charlist(@vectors))
    found = for term <- terms, elem(term, 0) == kind, do: term
    assert found != [], "no #{kind} vectors in #{@vectors}"
    found
  end

  describe "the shared test vectors" do
    test "host_list" do
      for {:host_list, %{own: own, hosts: hosts, file: file} = input, expected} <-
            vectors(:host_list) do
        assert Discovery.host_list(own, hosts, file) == expected, inspect(input)
      end
    end

    test "candidates" do
      for {:candidates, input, expected} <- vectors(:candidates) do
        assert Discovery.candidates(input) == expected, inspect(input)
      end
    end

    test "retry" do
      for {:retry, poll_interval, steps} <- vectors(:retry) do
        Enum.reduce(steps, nil, fn {time, event, expected_due} = step, rec ->
          rec = Discovery.record(rec, time, event, poll_interval)

          assert Discovery.due(rec) == expected_due,
                 "#{inspect(step)} of #{inspect(steps)} (poll interval #{poll_interval}): " <>
                   "got #{inspect(rec)}"

          rec
        end)
      end
    end
  end

  describe "the rules beyond the vectors" do
    test "a candidate with no record is due at once; due?/2 compares with the record's time" do
      assert Discovery.due(nil) == nil
      assert Discovery.due?(nil, -1_000_000)
      rec = Discovery.record(nil, 100, :refused, 50)
      refute Discovery.due?(rec, 149)
      assert Discovery.due?(rec, 150)
    end

    test "a long refused streak stays at the cap without huge numbers" do
      rec = Enum.reduce(1..10_000, nil, &Discovery.record(&2, &1, :refused, 5_000))
      assert rec.k == 10_000 and Discovery.due(rec) == 10_000 + 300_000
    end

    test "connect entries that cannot be node names are skipped; strings of any kind count" do
      input = %{
        self: :me@h,
        connected: [],
        connect: ["a@h", ~c"b@h", :c@h, "nohost", "x@y@z", 42, "", nil],
        hosts: [~c"h"],
        epmd: [],
        dns: :undefined
      }

      assert Discovery.candidates(input) == [:a@h, :b@h, :c@h]
    end
  end

  ## Real nodes

  defp poll_args(ms), do: [~c"-pynode", ~c"poll_interval", ~c"#{ms}"]
  defp env_args(key, value), do: [~c"-pynode", ~c"#{key}", ~c"#{value}"]

  defp status(peer, node), do: call(peer, node, Discovery, :status, [])
  defp members(peer, node), do: call(peer, node, Pynode.Registry, :members, [])
  defp connected(peer, node), do: call(peer, node, Node, :list, [:connected])
  defp polls(peer, node), do: call(peer, node, :sys, :get_state, [:pynode_discovery]).polls

  defp now, do: System.monotonic_time(:millisecond)

  test "two nodes with no configuration find each other through EPMD and become members" do
    # neither is connected to this node nor told about the other
    {peer_a, a} = start_peer("disa", connection: :standard_io)
    {peer_b, b} = start_peer("disb", connection: :standard_io)

    wait_until(fn -> b in members(peer_a, a) end, 30_000, "#{b} in the members of #{a}")
    wait_until(fn -> a in members(peer_b, b) end, 30_000, "#{a} in the members of #{b}")
    # one of them made the connection
    assert Enum.any?(
             [status(peer_b, b)[a], status(peer_a, a)[b]],
             &match?(%{outcome: :ok, k: 0}, &1)
           )
  end

  test "a node with another cookie is refused, backed off, and reached at once when it restarts" do
    name = :"discookie#{System.unique_integer([:positive])}"

    # (its kernel logger is off: it would print an error report for every refused attempt)
    {bad_peer, bad} =
      start_peer("",
        name: name,
        cookie: :another_cookie,
        connection: :standard_io,
        start_app: false,
        args: [~c"-kernel", ~c"logger_level", ~c"none"]
      )

    {peer, obs} = start_peer("disobs", args: poll_args(100))

    # refused, with the streak growing: 1, 2, 4, 8 ... poll intervals apart
    wait_until(fn -> match?(%{outcome: :refused}, status(peer, obs)[bad]) end, 30_000, "refused")
    first = now()
    %{port: port} = status(peer, obs)[bad]
    assert is_integer(port)
    polls0 = polls(peer, obs)

    st = wait_until(fn -> match?(%{k: k} when k >= 5, s = status(peer, obs)[bad]) && s end)
    elapsed = now() - first
    polls = polls(peer, obs) - polls0

    # attempts 2..5 come 1 + 2 + 4 + 8 = 15 poll intervals after the first: not every poll
    assert elapsed >= 1_300, "k = #{st.k} after #{elapsed} ms"
    assert polls >= 12 and st.attempts <= st.k + 1, "#{st.attempts} attempts in #{polls} polls"
    assert st.outcome == :refused and st.port == port
    assert bad not in connected(peer, obs)

    # a long backoff now (16 poll intervals after the 5th refusal)
    st = wait_until(fn -> match?(%{k: k} when k >= 6, s = status(peer, obs)[bad]) && s end)
    deadline = now() + st.due_in_ms
    assert st.due_in_ms > 1_000

    # The node restarts with the right cookie: EPMD shows a new port for its name, which
    # ends the streak, so it is reached at the next poll, not when the backoff ends.
    stop_peer(bad_peer)
    {_, ^bad} = start_peer("", name: name, connection: :standard_io, start_app: false)

    wait_until(fn -> bad in connected(peer, obs) end, 30_000, "#{obs} connected to #{bad}")
    assert now() < deadline, "reached only when the backoff ended"
    assert %{outcome: :ok, k: 0} = status(peer, obs)[bad]
    assert status(peer, obs)[bad].port != port
  end

  test "a connected node that runs no registry is marked no_registry, once, and left connected" do
    {plain_peer, plain} = start_peer("displain", connection: :standard_io, start_app: false)
    {peer, obs} = start_peer("disobs", args: poll_args(100))

    st =
      wait_until(
        fn -> match?(%{outcome: :no_registry}, s = status(peer, obs)[plain]) && s end,
        30_000,
        "no_registry"
      )

    assert st.k == 1 and st.attempts == 1
    p0 = polls(peer, obs)
    wait_until(fn -> polls(peer, obs) >= p0 + 5 end)
    assert %{outcome: :no_registry, k: 1, attempts: 1} = status(peer, obs)[plain]
    assert plain in connected(peer, obs)

    # its registry starts: it becomes a member, and discovery calls that an ok
    {:ok, _} = :peer.call(plain_peer, Application, :ensure_all_started, [:pynode])
    wait_until(fn -> plain in members(peer, obs) end)
    wait_until(fn -> match?(%{outcome: :ok, k: 0}, status(peer, obs)[plain]) end)
  end

  test "with discovery false a node connects to nobody, its connect list included" do
    # Nothing else started here runs discovery, so nobody connects to it either.
    {peer, lone} =
      start_peer("dislone",
        connection: :standard_io,
        args: env_args(:discovery, false) ++ poll_args(100) ++ env_args(:connect, "['#{node()}']")
      )

    wait_until(fn -> polls(peer, lone) >= 10 end)
    assert connected(peer, lone) == []
    assert status(peer, lone) == %{}
    refute lone in Node.list(:connected)

    # the environment is read at every poll: switched on, it connects
    :ok = :peer.call(peer, Application, :put_env, [:pynode, :discovery, true])
    wait_until(fn -> node() in connected(peer, lone) end)
    wait_until(fn -> lone in Pynode.Registry.members() end)
  end

  test "a connect-listed node that starts later is tried at every poll until it is reached" do
    late_name = :"dislate#{System.unique_integer([:positive])}"
    late = :"#{late_name}@localhost"

    {peer, early} =
      start_peer("disearly", args: poll_args(100) ++ env_args(:connect, "['#{late}']"))

    # unreachable for now, and retried, not once
    wait_until(
      fn ->
        match?(%{outcome: :unreachable, k: 0, attempts: n} when n >= 3, status(peer, early)[late])
      end,
      30_000,
      "#{late} retried while it does not exist"
    )

    # It starts without discovery of its own (it would find `early` itself otherwise) and
    # not connected to this node: `early` has to reach it.
    {late_peer, ^late} =
      start_peer("",
        name: late_name,
        connection: :standard_io,
        args: env_args(:discovery, false)
      )

    wait_until(fn -> late in connected(peer, early) end, 30_000, "#{early} reached #{late}")
    wait_until(fn -> early in members(late_peer, late) end)
    # (with polls this fast, `early` may have connected before late's registry started and
    # marked it no_registry for a moment: once it is a member the outcome is ok)
    wait_until(fn -> match?(%{outcome: :ok, k: 0}, status(peer, early)[late]) end)
  end
end
