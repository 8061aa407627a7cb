defmodule Pynode.Test.Cluster do
  @moduledoc false
  # Helpers for tests that run several BEAM nodes. Peer nodes are started with :peer on
  # localhost, with this node's cookie and code path (so they can load the project and
  # test/support, which mix compiles into the test build).

  import ExUnit.Assertions

  @doc """
  Starts a peer named `<prefix><unique>@localhost` and the application of the mix project
  under test on it (`:pynode` in elixir/, `:available_processes`, which starts `:pynode`
  first, in mix_compat/). `opts`: `:connection` (`:standard_io` for a peer not connected to
  this node), `:args` (extra `erl` arguments, e.g. `[~c"-hidden"]`), `:start_app` (default true),
  `:name` (the exact name before `@`, instead of `prefix` and a unique number), `:cookie`
  (default: this node's), `:log_level` (the peer's Logger level, default `:warning`).
  Returns `{peer_pid, node}`; the peer is stopped when the test ends.
  """
  def start_peer(prefix, opts \\ []) do
    name = opts[:name] || :"#{prefix}#{System.unique_integer([:positive])}"
    cookie = Atom.to_charlist(opts[:cookie] || :erlang.get_cookie())
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    peer_opts =
      %{
        name: name,
        host: ~c"localhost",
        # prevent_overlapping_partitions: stop OTP's global from cutting connections when a
        # test kills a node; the registry copes with that, but the tests' rpc calls would not.
        args:
          [~c"-setcookie", cookie, ~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"] ++
            log_level_args(Keyword.get(opts, :log_level, :warning)) ++
            Keyword.get(opts, :args, []) ++ paths
      }
      |> then(fn o ->
        if c = opts[:connection], do: Map.put(o, :connection, c), else: o
      end)

    {:ok, peer, node} = :peer.start(peer_opts)
    ExUnit.Callbacks.on_exit(fn -> stop_peer(peer) end)

    if Keyword.get(opts, :start_app, true) do
      assert {:ok, _} = call(peer, node, Application, :ensure_all_started, [app()])
    end

    {peer, node}
  end

  @doc "The application of the mix project under test (what `start_peer/2` starts)."
  def app, do: Mix.Project.config()[:app]

  # Peers print their logs on this node's output, which ExUnit does not capture: a passing
  # run stays quiet with warnings and errors only (the discovery of every peer logs each
  # connection at debug level). `log_level: :debug` in a test that needs a peer's logs.
  defp log_level_args(level), do: [~c"-logger", ~c"level", Atom.to_charlist(level)]

  @doc "Stops a peer (already dead peers are fine)."
  def stop_peer(peer) do
    :peer.stop(peer)
  catch
    _, _ -> :ok
  end

  @doc "Calls M.F(A) on the peer: over distribution, or over its control channel when not connected."
  def call(peer, node, m, f, a) do
    if node in Node.list(:connected) do
      :erpc.call(node, m, f, a, 10_000)
    else
      :peer.call(peer, m, f, a, 10_000)
    end
  end

  @doc "Polls `fun` until it returns a truthy value (returned), failing after `timeout` ms."
  def wait_until(fun, timeout \\ 30_000, what \\ "condition") do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(fun, deadline, what)
  end

  defp do_wait(fun, deadline, what) do
    # A remote call may fail while a connection is being re-established (OTP's global can
    # drop a connection when another node dies): that is "not yet", not a failure.
    result =
      try do
        fun.()
      catch
        :error, {:erpc, _} -> false
        :exit, {reason, _} when reason in [:noconnection, :nodedown] -> false
      end

    case result do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          flunk("timed out waiting for #{what}")
        else
          Process.sleep(20)
          do_wait(fun, deadline, what)
        end
    end
  end
end

defmodule Pynode.Test.Holder do
  @moduledoc false
  # A process that registers a key and then reports what happens to it. Started on peer
  # nodes by MFA (Node.spawn/4, :peer.call/5), so it lives in test/support.
  #
  # start/3 spawns a watcher, which spawns the holder with a monitor and keeps:
  #   - the result of the holder's reg,
  #   - the messages the holder received (including {:EXIT, ...} when it traps exits),
  #   - the holder's exit reason once it died.
  # status/1 returns {holder_pid, reg_result, messages, :alive | {:dead, reason}}.
  # A holder created with go?: true waits for `go/1` before registering.

  def start(key, value, opts \\ []) do
    caller = self()

    watcher =
      spawn(fn ->
        trap? = Keyword.get(opts, :trap_exit, false)
        wait? = Keyword.get(opts, :go?, false)
        watcher = self()

        {holder, _ref} =
          spawn_monitor(fn ->
            Process.flag(:trap_exit, trap?)
            if wait?, do: receive(do: (:go -> :ok))
            send(watcher, {:reg_result, Pynode.Registry.reg(key, value)})
            holder_loop(watcher)
          end)

        send(caller, {:holder, self(), holder})
        watch(%{holder: holder, reg: if(wait?, do: :waiting, else: nil), msgs: [], fate: :alive})
      end)

    receive do
      {:holder, ^watcher, holder} -> {watcher, holder}
    after
      5_000 -> exit(:holder_start_timeout)
    end
  end

  def go(watcher), do: send(watcher, :go)

  def status(watcher) do
    ref = make_ref()
    send(watcher, {:status, self(), ref})

    receive do
      {^ref, status} -> status
    after
      5_000 -> exit(:holder_status_timeout)
    end
  end

  def stop(watcher), do: send(watcher, :stop_holder)

  defp holder_loop(watcher) do
    receive do
      :stop ->
        :ok

      {:unreg, key} ->
        send(watcher, {:unreg_result, Pynode.Registry.unreg(key)})
        holder_loop(watcher)

      msg ->
        send(watcher, {:got, msg})
        holder_loop(watcher)
    end
  end

  defp watch(st) do
    receive do
      :go ->
        send(st.holder, :go)
        watch(st)

      {:reg_result, r} ->
        watch(%{st | reg: r})

      {:got, msg} ->
        watch(%{st | msgs: st.msgs ++ [msg]})

      {:unreg_result, _} ->
        watch(st)

      {:unreg, key} ->
        send(st.holder, {:unreg, key})
        watch(st)

      :stop_holder ->
        send(st.holder, :stop)
        watch(st)

      {:DOWN, _, :process, _, reason} ->
        watch(%{st | fate: {:dead, reason}})

      {:status, from, ref} ->
        send(from, {ref, {st.holder, st.reg, st.msgs, st.fate}})
        watch(st)
    end
  end
end

defmodule Pynode.Test.Relay do
  @moduledoc false
  # A process on a peer node that plays a registry by hand: it sends what the test tells it
  # to ({:relay_send, dest, msg}) and forwards whatever it receives to the test as
  # {:relayed, relay_pid, msg}. Lets a test speak the raw protocol from another node.

  def start(owner), do: spawn(fn -> loop(owner) end)

  defp loop(owner) do
    receive do
      {:relay_send, dest, msg} ->
        send(dest, msg)
        loop(owner)

      :relay_stop ->
        :ok

      other ->
        send(owner, {:relayed, self(), other})
        loop(owner)
    end
  end
end
