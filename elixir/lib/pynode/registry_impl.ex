defmodule Pynode.Registry.Impl do
  @moduledoc false
  # The registry process behind `Pynode.Registry`. The protocol it speaks is
  # docs/REGISTRY_PROTOCOL.md, repeated verbatim between the markers below
  # (test/protocol_doc_test.exs fails when the two drift apart).
  #
  # --- BEGIN docs/REGISTRY_PROTOCOL.md ---
  # # The pynode registry protocol (version 1)
  #
  # One registry process runs on every node of the cluster, BEAM or Python, locally registered
  # as `pynode_registry`. It owns the registrations of its node's local processes and holds a
  # full mirror of everyone else's. Reads are answered from the local mirror; writes are made
  # by the owning node and broadcast. This text is the contract; the Elixir module
  # (`elixir/lib/pynode/registry_impl.ex`) and the Python package (`pynode/registry/`, in
  # `protocol.py`) repeat it in their headers and must stay in lockstep with it.
  #
  # ## Keys
  #
  # gproc-style, global scope only:
  #
  # - `{n, g, Name}` — a unique name: at most one holder in the cluster.
  # - `{p, g, Name}` — a property: any number of holders, each pid at most once.
  #
  # `Name` is any term. Keys compare with Erlang's exact equality (`=:=`): `1` and `1.0` are
  # different names. (Python keeps mirror dicts keyed by `erl_interop.encode(Key)`, which is
  # exact.) Each entry is `{Key, Pid, Value}`; `Value` is any term (default `undefined`).
  #
  # ## Messages
  #
  # Every message between registries is a plain message (`!`) to `{pynode_registry, Node}`
  # or to a registry pid, a tuple whose first element is the atom `'$pynode_reg'` and whose
  # second is the protocol version `1`:
  #
  # | message | meaning |
  # | --- | --- |
  # | `{'$pynode_reg', 1, discover, From}` | "I am the registry `From`; send me your snapshot." |
  # | `{'$pynode_reg', 1, sync, From, Entries, Members}` | A snapshot of `From`'s node's own entries (`[{Key, Pid, Value}]`, local pids only) and the list of nodes whose registries `From` knows (`Members`, atoms, `From`'s own node included). |
  # | `{'$pynode_reg', 1, reg, From, Key, Pid, Value}` | `From`'s node registered `Key` for its local `Pid`. Also sent to update a value. |
  # | `{'$pynode_reg', 1, unreg, From, Key, Pid}` | `From`'s node removed `Key` for its local `Pid` (unregistered, process died, or lost a conflict). |
  #
  # Messages with another version, or not of these shapes, are ignored (logged once per
  # sender); they never crash a registry.
  #
  # ## Membership and discovery
  #
  # - A registry subscribes to node up/down events for all node types (hidden nodes included:
  #   `:net_kernel.monitor_nodes(true, node_type: :all)` on the BEAM, `Node.monitor_nodes` in
  #   Python).
  # - At start, and on every `nodeup` of node `N`, it sends `discover` to `{pynode_registry, N}`.
  #   A node that runs no registry simply never answers: it is not a member.
  # - On `discover` from `From` (a peer registry pid): the receiver monitors `From` if it does
  #   not know it yet (and then also sends its own `discover` to `From`), and answers with
  #   `sync` carrying its own entries and its member list, **once per peer registry**: it
  #   records that `From` has its snapshot, and a later `discover` from that same `From` is not
  #   answered (every change made after the snapshot reaches `From` after it, on the same
  #   ordered link, as `reg`/`unreg`). The record is cleared whenever `From` is (re)learnt:
  #   after its `DOWN` (after a lost connection `From` has purged the receiver's entries too, so
  #   its next `discover` gets a fresh `sync`), and when a new pid becomes the registry of
  #   `node(From)`.
  # - On `sync` from `From`: the receiver records `From` as the registry of `node(From)`
  #   (monitoring it if new), **replaces** every mirrored entry owned by `node(From)` with
  #   `Entries` (applying the conflict rule below to unique names), and sends `discover` to
  #   `{pynode_registry, M}` for every `M` in `Members` that it does not know yet. That send
  #   sets up the connection if there is none, so every member ends up connected to every other:
  #   hidden Python nodes that only know one BEAM node still join the full mesh.
  # - `members()` is this node plus every node whose registry it knows and that is up.
  # - When a peer registry goes `DOWN` (its process died, or the connection to its node was
  #   lost — reason `noconnection`), every entry owned by that node is purged from the mirror,
  #   and the node stops being a member. It becomes a member again on its next `sync`.
  #
  # ## Writes
  #
  # Only the owning node writes its own processes' entries.
  #
  # - `reg(Key, Value)` from a local process `Pid` goes through the local registry (a
  #   `gen_server:call` / Python call) so that writes from one node are serialized. For a unique
  #   name it fails with `{error, {already_registered, Holder}}` when the local mirror already has
  #   another holder; registering the same key again for the same pid updates its value. On success
  #   the registry stores the entry, monitors `Pid` (once per pid), and sends `reg` to every member.
  # - `unreg(Key)` removes the caller's entry and sends `unreg` to every member.
  # - When a local registered process dies, the registry removes all its entries and sends one
  #   `unreg` per entry.
  # - Receiving `reg` from a member whose node is not `node(Pid)` is a protocol violation:
  #   ignored. A `reg` from a registry not known yet (impossible between correct peers, whose
  #   `discover`/`sync` come first on the ordered link) may be applied or dropped; either way the
  #   receiver sends `discover` to it and the `sync` that answers converges (that registry has
  #   not answered a `discover` from this receiver since it last learnt it, or the receiver would
  #   know it). Receiving `unreg` for an entry that is not the current one (another holder,
  #   another pid) changes nothing.
  #
  # ## Conflicts (unique names)
  #
  # Two nodes may register the same unique name concurrently, or meet after a partition with the
  # same name held on both sides. Every registry that sees two holders for one name keeps the
  # same **winner**, chosen without clocks:
  #
  # > the holder whose **node name** is smaller in Erlang term order (atoms compare by their
  # > text, byte-wise on UTF-8); for two holders on one node (cannot happen with correct peers),
  # > the smaller pid.
  #
  # So a mirror that learns of a second holder, by `reg` or by `sync`, answers reads with the
  # winner only. It keeps the losing claim hidden (it is not a holder) until that claim's owner
  # sends `unreg` for it or its node is purged; if the winner goes away first, the best remaining
  # claim becomes the holder. That way every mirror agrees even when nodes learnt of the claims in
  # different orders. When the **loser is local**, its owning registry also:
  #
  # 1. removes the loser's entry and sends `unreg` for it to every member;
  # 2. sends the losing process the exit signal `{name_conflict, Key, WinnerPid}`, where
  #    `WinnerPid` is the holder that beat it in this registry (with three or more claims, not
  #    necessarily the final winner) (as
  #    `exit(LoserPid, {name_conflict, Key, WinnerPid})`): a process that does not trap exits dies
  #    with that reason; one that traps exits receives `{'EXIT', RegistryPid, {name_conflict, Key,
  #    WinnerPid}}` and keeps running without the name.
  #
  # Every registry applies the same rule to the same pair, whatever the arrival order, so all
  # mirrors converge on one holder per name once the messages have been delivered.
  #
  # ## Waiting for a name
  #
  # `await(Key, Timeout)` returns `{Pid, Value}` at once when the mirror has the name; otherwise
  # the registry records the caller as a waiter for `Key` and answers as soon as any `reg` or
  # `sync` brings the name in, or `timeout` when `Timeout` (milliseconds, default 5000) runs out.
  #
  # ## API (both languages)
  #
  # | call | result |
  # | --- | --- |
  # | `reg(Key, Value \\ undefined)` | `:ok` / `{:error, reason}` for the calling process |
  # | `unreg(Key)` | `:ok` |
  # | `where(Key)` | pid or `:undefined` (unique names; for a property, the first holder) |
  # | `lookup_pids(Key)` | list of pids (one for a name, all holders for a property) |
  # | `lookup_values(Key)` | list of `{Pid, Value}` |
  # | `send(Key, Msg)` | sends to the holder (to every holder of a property); returns `Msg`; a name with no holder raises `badarg`, as `gproc:send/2` does |
  # | `await(Key, Timeout \\ 5000)` | `{Pid, Value}`; on timeout Elixir returns `{:error, :timeout}`, Python raises `TimeoutError` |
  # | `members()` | sorted list of member nodes, this node included |
  # --- END docs/REGISTRY_PROTOCOL.md ---
  #
  # Theory of operation (this module)
  #
  # State lives in two places. The mirror is in three named, protected ETS tables owned by
  # this process, so that readers (`lookup/1`, `members/0`) never message it:
  #
  #   :pynode_registry_names    set  {Key, Pid, Value}   one row per unique name
  #   :pynode_registry_props    bag  {Key, Pid, Value}   one row per (property, pid)
  #   :pynode_registry_members  set  {Node, RegistryPid} every known peer registry
  #
  # Hash tables (set/bag) match keys exactly, as the protocol requires (an ordered_set would
  # fold 1 and 1.0 into one name). User terms are never put into match patterns (a name may
  # well be the atom :_): rows are found with :ets.lookup and removed with
  # :ets.delete_object; only the per-node purge uses a match spec, with the node as a
  # {:const, Node} guard.
  #
  # The process state keeps what only the writer needs:
  #
  #   peers    %{node => {registry_pid, monitor_ref}}  the members (also in the ETS table)
  #   synced   %{node => registry_pid}   peers that have our snapshot: a `discover` is answered
  #            once per peer registry; cleared when the peer is (re)learnt or goes DOWN
  #   locals   %{pid => {monitor_ref, %{key => true}}}  local registered pids and their keys
  #   refs     %{monitor_ref => {:peer, node} | {:local, pid} | {:waiter, key}}
  #   waiters  %{key => %{monitor_ref => {from, timer_ref | nil}}}   callers of await/2
  #   shadows  %{name_key => %{remote_pid => value}}   losers of a conflict, see below
  #   logged   senders already logged for a bad message (log once per sender)
  #
  # Shadows. The protocol says a mirror that sees two holders keeps the winner and drops the
  # loser; the loser's own registry then unregisters it when it learns of the winner. If the
  # winner goes away before that (unregistered, died, its node lost) the loser's node may
  # never learn of it, and keeps its holder, while a mirror that had dropped the loser for
  # good would stay without it forever: a permanent divergence (e.g. B connected to A and C
  # while A and C do not see each other yet, or a non-transitive partition). So a dropped
  # remote loser is kept aside as a shadow, invisible to readers, and the best shadow is
  # promoted when the holder is removed. The loser's registry's `unreg` removes the shadow
  # as it would have removed the entry. Invariant: a name has shadows only while it has a
  # holder. Local losers are never shadowed: they are unregistered and signalled at once.
  #
  # Every message is validated in the function heads of `handle_info/2`; anything else falls
  # through to one clause that logs (once per sender) and ignores it, so a peer can never
  # crash the registry with a malformed message.

  use GenServer
  require Logger

  @name :pynode_registry
  @tag :"$pynode_reg"
  @version 1

  @names :pynode_registry_names
  @props :pynode_registry_props
  @members :pynode_registry_members

  # Bound on the set of senders already logged, so a flood of distinct bad senders cannot
  # grow the registry's memory without limit (after it, every sender is logged again).
  @max_logged 1_024

  defmodule State do
    @moduledoc false
    defstruct peers: %{},
              synced: %{},
              locals: %{},
              refs: %{},
              waiters: %{},
              shadows: %{},
              logged: MapSet.new()
  end

  defguardp is_key(k)
            when is_tuple(k) and tuple_size(k) == 3 and
                   (elem(k, 0) == :n or elem(k, 0) == :p) and elem(k, 1) == :g

  # A peer registry: a pid on another node.
  defguardp is_peer(from) when is_pid(from) and node(from) != node()

  ## Client side (runs in the caller; reads only)

  def name, do: @name

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: @name)

  @doc false
  # [{pid, value}] for `key`, from the mirror.
  def lookup({:n, :g, _} = key), do: for({_, pid, value} <- read(@names, key), do: {pid, value})
  def lookup({:p, :g, _} = key), do: for({_, pid, value} <- read(@props, key), do: {pid, value})

  @doc false
  def members do
    peers =
      try do
        :ets.select(@members, [{{:"$1", :_}, [], [:"$1"]}])
      rescue
        ArgumentError -> exit({:noproc, {Pynode.Registry, :members, []}})
      end

    Enum.sort([node() | peers])
  end

  defp read(table, key) do
    :ets.lookup(table, key)
  rescue
    ArgumentError -> exit({:noproc, {Pynode.Registry, :lookup, [key]}})
  end

  ## Server

  @impl true
  def init(_opts) do
    :ets.new(@names, [:set, :protected, :named_table, read_concurrency: true])
    :ets.new(@props, [:bag, :protected, :named_table, read_concurrency: true])
    :ets.new(@members, [:set, :protected, :named_table, read_concurrency: true])
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    Enum.each(Node.list(:connected), &send_discover/1)
    {:ok, %State{}}
  end

  # -- local writes (serialized by this process) --

  @impl true
  def handle_call({:reg, _key, _value}, {pid, _tag}, state) when node(pid) != node() do
    # Only the owning node writes its processes' entries: a process on another node
    # registers through its own node's registry.
    {:reply, {:error, :not_local}, state}
  end

  def handle_call({:reg, key, value}, {pid, _tag}, state) when is_key(key) do
    case key do
      {:n, :g, _} ->
        case :ets.lookup(@names, key) do
          [{_, holder, _}] when holder != pid ->
            {:reply, {:error, {:already_registered, holder}}, state}

          _ ->
            {:reply, :ok, store_local(key, pid, value, state)}
        end

      {:p, :g, _} ->
        {:reply, :ok, store_local(key, pid, value, state)}
    end
  end

  def handle_call({:unreg, key}, {pid, _tag}, state) when is_key(key) do
    if holds?(key, pid) do
      broadcast(state, {@tag, @version, :unreg, self(), key, pid})
      state = remove_entry(state, key, pid)
      {:reply, :ok, forget_local_key(state, pid, key)}
    else
      {:reply, :ok, state}
    end
  end

  def handle_call({:await, key, timeout}, {caller, _tag} = from, state)
      when is_key(key) and (timeout == :infinity or (is_integer(timeout) and timeout >= 0)) do
    case lookup(key) do
      [{pid, value} | _] ->
        {:reply, {pid, value}, state}

      [] ->
        ref = Process.monitor(caller)

        timer =
          if timeout == :infinity,
            do: nil,
            else: Process.send_after(self(), {:await_timeout, ref}, timeout)

        waiters =
          Map.update(
            state.waiters,
            key,
            %{ref => {from, timer}},
            &Map.put(&1, ref, {from, timer})
          )

        {:noreply, %{state | waiters: waiters, refs: Map.put(state.refs, ref, {:waiter, key})}}
    end
  end

  def handle_call(request, {pid, _}, state) do
    {:reply, {:error, :badarg}, log_ignored(pid, {:call, request}, state)}
  end

  @impl true
  def handle_cast(request, state), do: {:noreply, log_ignored(:unknown, {:cast, request}, state)}

  # -- protocol messages from peer registries --

  @impl true
  def handle_info({@tag, @version, :discover, from}, state) when is_peer(from) do
    state = know_peer(state, from, true)
    node = node(from)

    case state.synced do
      %{^node => ^from} ->
        # It has our snapshot already, and every change since went to it after that
        # snapshot on the same ordered link: another one would only repeat it.
        {:noreply, state}

      _ ->
        send(from, {@tag, @version, :sync, self(), local_entries(state), members()})
        {:noreply, %{state | synced: Map.put(state.synced, node, from)}}
    end
  end

  def handle_info({@tag, @version, :sync, from, entries, members} = msg, state)
      when is_peer(from) and is_list(entries) and is_list(members) do
    with {:ok, entries} <- proper_list(entries),
         {:ok, members} <- proper_list(members) do
      # Entries that break the protocol (bad shape, pid not on the sender's node) are
      # skipped; the rest of the snapshot is still applied.
      {good, bad} = Enum.split_with(entries, &valid_entry?(&1, node(from)))
      state = if bad == [], do: state, else: log_ignored(from, {:bad_entries, bad}, state)
      state = know_peer(state, from, false)
      state = replace_node_entries(state, node(from), good)

      for m <- members, is_atom(m), m != node(), not Map.has_key?(state.peers, m) do
        send_discover(m)
      end

      {:noreply, state}
    else
      _ -> {:noreply, log_ignored(from, msg, state)}
    end
  end

  def handle_info({@tag, @version, :reg, from, key, pid, value}, state)
      when is_peer(from) and is_key(key) and is_pid(pid) and node(pid) == node(from) do
    # A reg from a registry we do not know yet cannot happen with FIFO delivery between
    # correct peers (their discover/sync comes first); if it does, we adopt the sender
    # (monitor it, ask it for a snapshot) so that its entries get purged when it goes away.
    state = know_peer(state, from, true)
    {:noreply, apply_remote_reg(state, key, pid, value)}
  end

  def handle_info({@tag, @version, :unreg, from, key, pid}, state)
      when is_peer(from) and is_key(key) and is_pid(pid) and node(pid) == node(from) do
    {:noreply, remove_entry(state, key, pid)}
  end

  # -- node and process events --

  def handle_info({:nodeup, node, _info}, state) do
    if node != node(), do: send_discover(node)
    {:noreply, state}
  end

  def handle_info({:nodedown, _node, _info}, state) do
    # Nothing to do: the monitor of that node's registry reports DOWN (noconnection).
    {:noreply, state}
  end

  def handle_info({:DOWN, ref, :process, pid, reason}, state) do
    case Map.pop(state.refs, ref) do
      {{:peer, node}, refs} ->
        if reason != :noconnection do
          Logger.info(
            "pynode registry: registry #{inspect(pid)} on #{node} went down (#{inspect(reason)})"
          )
        end

        :ets.delete(@members, node)

        # It purged our entries too (or is gone): when relearnt it gets a fresh snapshot.
        state = %{
          state
          | refs: refs,
            peers: Map.delete(state.peers, node),
            synced: Map.delete(state.synced, node)
        }

        {:noreply, purge_node(state, node)}

      {{:local, local}, refs} ->
        {{_ref, keys}, locals} = Map.pop(state.locals, local)
        state = %{state | refs: refs, locals: locals}

        state =
          Enum.reduce(Map.keys(keys), state, fn key, acc ->
            broadcast(acc, {@tag, @version, :unreg, self(), key, local})
            remove_entry(acc, key, local)
          end)

        {:noreply, state}

      {{:waiter, key}, refs} ->
        {_from, timer} = get_in(state.waiters, [key, ref])
        if timer, do: Process.cancel_timer(timer)
        {:noreply, %{state | refs: refs, waiters: drop_waiter(state.waiters, key, ref)}}

      {nil, _} ->
        {:noreply, state}
    end
  end

  def handle_info({:await_timeout, ref}, state) do
    case Map.pop(state.refs, ref) do
      {{:waiter, key}, refs} ->
        {from, _timer} = get_in(state.waiters, [key, ref])
        Process.demonitor(ref, [:flush])
        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{state | refs: refs, waiters: drop_waiter(state.waiters, key, ref)}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(msg, state) do
    sender =
      if is_tuple(msg) and tuple_size(msg) >= 4 and is_pid(elem(msg, 3)),
        do: elem(msg, 3),
        else: :unknown

    {:noreply, log_ignored(sender, msg, state)}
  end

  ## Writes to the mirror

  defp store_local(key, pid, value, state) do
    put_entry(key, pid, value)
    broadcast(state, {@tag, @version, :reg, self(), key, pid, value})
    state |> remember_local_key(pid, key) |> wake_waiters(key, pid, value)
  end

  # A `reg` from the owner of `pid` (from a `reg` message or a `sync` snapshot).
  defp apply_remote_reg(state, {:p, :g, _} = key, pid, value) do
    put_entry(key, pid, value)
    wake_waiters(state, key, pid, value)
  end

  defp apply_remote_reg(state, {:n, :g, _} = key, pid, value) do
    case :ets.lookup(@names, key) do
      [] ->
        put_entry(key, pid, value)
        state |> drop_shadow(key, pid) |> wake_waiters(key, pid, value)

      [{_, ^pid, _}] ->
        put_entry(key, pid, value)
        state

      [{_, holder, holder_value}] ->
        if wins?(pid, holder) do
          put_entry(key, pid, value)
          state = drop_shadow(state, key, pid)

          if node(holder) == node(),
            do: lose_local(state, key, holder, pid),
            else: add_shadow(state, key, holder, holder_value)
        else
          # The newcomer loses: keep the holder. The newcomer's own registry drops it (and
          # signals it) when it learns of the holder, from our reg or our sync.
          add_shadow(state, key, pid, value)
        end
    end
  end

  # The conflict rule: the holder on the smaller node name wins; on one node, the smaller pid.
  defp wins?(a, b), do: {node(a), a} < {node(b), b}

  # Our `loser` lost `key` to `winner`: the mirror already holds the winner.
  defp lose_local(state, key, loser, winner) do
    Logger.info(
      "pynode registry: #{inspect(loser)} loses #{inspect(key)} to #{inspect(winner)} on #{node(winner)}"
    )

    broadcast(state, {@tag, @version, :unreg, self(), key, loser})
    Process.exit(loser, {:name_conflict, key, winner})
    forget_local_key(state, loser, key)
  end

  # `sync`: make the mirror's entries of `node` exactly `entries`, without a moment where an
  # entry present before and after is missing for readers.
  defp replace_node_entries(state, node, entries) do
    new = MapSet.new(entries, fn {key, pid, _} -> {key, pid} end)

    state =
      Enum.reduce(node_entries(state, node), state, fn {key, pid}, acc ->
        if MapSet.member?(new, {key, pid}), do: acc, else: remove_entry(acc, key, pid)
      end)

    Enum.reduce(entries, state, fn {key, pid, value}, acc ->
      apply_remote_reg(acc, key, pid, value)
    end)
  end

  defp put_entry({:n, :g, _} = key, pid, value), do: :ets.insert(@names, {key, pid, value})

  defp put_entry({:p, :g, _} = key, pid, value) do
    for {_, ^pid, _} = old <- :ets.lookup(@props, key), do: :ets.delete_object(@props, old)
    :ets.insert(@props, {key, pid, value})
  end

  # Removes `key` for `pid` only: another holder of the name is left alone, a shadow is
  # dropped, and removing the holder promotes the best shadow.
  defp remove_entry(state, {:n, :g, _} = key, pid) do
    case :ets.lookup(@names, key) do
      [{_, ^pid, _} = entry] ->
        :ets.delete_object(@names, entry)
        promote_shadow(state, key)

      _ ->
        drop_shadow(state, key, pid)
    end
  end

  defp remove_entry(state, {:p, :g, _} = key, pid) do
    for {_, ^pid, _} = old <- :ets.lookup(@props, key), do: :ets.delete_object(@props, old)
    state
  end

  defp holds?({:n, :g, _} = key, pid), do: match?([{_, ^pid, _}], :ets.lookup(@names, key))

  defp holds?({:p, :g, _} = key, pid),
    do: Enum.any?(:ets.lookup(@props, key), &match?({_, ^pid, _}, &1))

  # Match spec: the {Key, Pid} of every row whose pid lives on `node`.
  defp node_spec(node),
    do: [{{:"$1", :"$2", :_}, [{:==, {:node, :"$2"}, {:const, node}}], [{{:"$1", :"$2"}}]}]

  # Every {key, pid} owned by `node`: its names, properties and shadows.
  defp node_entries(state, node) do
    shadowed =
      for {key, pids} <- state.shadows, pid <- Map.keys(pids), node(pid) == node, do: {key, pid}

    :ets.select(@names, node_spec(node)) ++ :ets.select(@props, node_spec(node)) ++ shadowed
  end

  # `node`'s registry is gone: drop everything it owned (promoting shadows where it held names).
  defp purge_node(state, node) do
    Enum.reduce(node_entries(state, node), state, fn {key, pid}, acc ->
      remove_entry(acc, key, pid)
    end)
  end

  ## Shadows (see the theory of operation)

  defp add_shadow(state, key, pid, value) do
    %{state | shadows: Map.update(state.shadows, key, %{pid => value}, &Map.put(&1, pid, value))}
  end

  defp drop_shadow(state, key, pid) do
    case state.shadows do
      %{^key => pids} when is_map_key(pids, pid) ->
        pids = Map.delete(pids, pid)

        shadows =
          if map_size(pids) == 0,
            do: Map.delete(state.shadows, key),
            else: Map.put(state.shadows, key, pids)

        %{state | shadows: shadows}

      _ ->
        state
    end
  end

  # The name's holder was removed: the best shadow (by the conflict rule) becomes the holder.
  defp promote_shadow(state, key) do
    case Map.pop(state.shadows, key) do
      {nil, _} ->
        state

      {pids, shadows} ->
        {pid, value} = Enum.min_by(pids, fn {pid, _} -> {node(pid), pid} end)
        put_entry(key, pid, value)
        rest = Map.delete(pids, pid)
        shadows = if map_size(rest) == 0, do: shadows, else: Map.put(shadows, key, rest)
        wake_waiters(%{state | shadows: shadows}, key, pid, value)
    end
  end

  defp local_entries(state) do
    for {pid, {_ref, keys}} <- state.locals,
        key <- Map.keys(keys),
        {_, ^pid, value} <- entries_of(key) do
      {key, pid, value}
    end
  end

  defp entries_of({:n, :g, _} = key), do: :ets.lookup(@names, key)
  defp entries_of({:p, :g, _} = key), do: :ets.lookup(@props, key)

  ## Local pids

  defp remember_local_key(state, pid, key) do
    case state.locals do
      %{^pid => {ref, keys}} ->
        %{state | locals: Map.put(state.locals, pid, {ref, Map.put(keys, key, true)})}

      _ ->
        ref = Process.monitor(pid)

        %{
          state
          | locals: Map.put(state.locals, pid, {ref, %{key => true}}),
            refs: Map.put(state.refs, ref, {:local, pid})
        }
    end
  end

  defp forget_local_key(state, pid, key) do
    case state.locals do
      %{^pid => {ref, keys}} ->
        keys = Map.delete(keys, key)

        if map_size(keys) == 0 do
          Process.demonitor(ref, [:flush])
          %{state | locals: Map.delete(state.locals, pid), refs: Map.delete(state.refs, ref)}
        else
          %{state | locals: Map.put(state.locals, pid, {ref, keys})}
        end

      _ ->
        state
    end
  end

  ## Peers

  # Records `from` as the registry of its node, monitoring it if new; `discover?` also sends
  # it our `discover` when it is new. A new registry pid for a node we knew under another pid
  # (its registry restarted) replaces the old one, whose entries are purged.
  defp know_peer(state, from, discover?) do
    node = node(from)

    case state.peers do
      %{^node => {^from, _ref}} ->
        state

      %{^node => {_old, old_ref}} ->
        Process.demonitor(old_ref, [:flush])
        state = purge_node(%{state | refs: Map.delete(state.refs, old_ref)}, node)
        add_peer(state, from, discover?)

      _ ->
        add_peer(state, from, discover?)
    end
  end

  defp add_peer(state, from, discover?) do
    node = node(from)
    ref = Process.monitor(from)
    :ets.insert(@members, {node, from})
    if discover?, do: send(from, {@tag, @version, :discover, self()})

    %{
      state
      | peers: Map.put(state.peers, node, {from, ref}),
        synced: Map.delete(state.synced, node),
        refs: Map.put(state.refs, ref, {:peer, node})
    }
  end

  defp send_discover(node) do
    # A plain send to {name, node}: it sets up the connection if there is none (OTP queues
    # the message while connecting; the sender is not blocked).
    send({@name, node}, {@tag, @version, :discover, self()})
  rescue
    ArgumentError -> :ok
  end

  defp broadcast(state, msg) do
    for {_node, {pid, _ref}} <- state.peers, do: send(pid, msg)
    :ok
  end

  ## Waiters

  defp wake_waiters(state, key, pid, value) do
    case Map.pop(state.waiters, key) do
      {nil, _} ->
        state

      {waiting, waiters} ->
        refs =
          Enum.reduce(waiting, state.refs, fn {ref, {from, timer}}, refs ->
            if timer, do: Process.cancel_timer(timer)
            Process.demonitor(ref, [:flush])
            GenServer.reply(from, {pid, value})
            Map.delete(refs, ref)
          end)

        %{state | waiters: waiters, refs: refs}
    end
  end

  defp drop_waiter(waiters, key, ref) do
    case Map.delete(Map.get(waiters, key, %{}), ref) do
      empty when map_size(empty) == 0 -> Map.delete(waiters, key)
      rest -> Map.put(waiters, key, rest)
    end
  end

  ## Validation and logging

  defp proper_list(list), do: proper_list(list, [])
  defp proper_list([], acc), do: {:ok, Enum.reverse(acc)}
  defp proper_list([h | t], acc), do: proper_list(t, [h | acc])
  defp proper_list(_improper_tail, _acc), do: :error

  defp valid_entry?({key, pid, _value}, node) when is_key(key) and is_pid(pid),
    do: node(pid) == node

  defp valid_entry?(_, _), do: false

  defp log_ignored(sender, msg, state) do
    if MapSet.member?(state.logged, sender) do
      state
    else
      Logger.warning(
        "pynode registry: ignoring a message it does not understand from #{inspect(sender)} " <>
          "(further ones from this sender are not logged): #{inspect(msg, limit: 20, printable_limit: 200)}"
      )

      logged = if MapSet.size(state.logged) >= @max_logged, do: MapSet.new(), else: state.logged
      %{state | logged: MapSet.put(logged, sender)}
    end
  end
end
