defmodule Pynode.Discovery do
  @moduledoc """
  Finds the other nodes of a pynode cluster and keeps connecting to them
  (`docs/DISCOVERY.md`, shared with the Python twin `pynode/discovery.py`).

  One process per node, locally registered as `:pynode_discovery` and started by the
  `:pynode` application (`Pynode.Application`) after the registry. It only *connects*: the registry
  sends `discover` on every `nodeup` and exchanges member lists, so one reached member
  brings in the whole mesh. It never disconnects anyone.

  ## Configuration

  Keys of the `:pynode` application environment (`sys.config`), read again at
  every poll, so a changed environment takes effect at the next poll:

    * `discovery` (default `true`) — `false`: this node connects to nobody by itself (the
      `connect` list included); the registry still meshes with the nodes that connect to it.
    * `connect` (default `[]`) — nodes (atoms or strings) tried at every poll until each is
      reached, and again whenever it is lost.
    * `hosts` (default `[]`) — hosts (atoms or strings) whose EPMD is asked for its names;
      each name `N` there is the candidate `N@Host`. The hosts of a `.hosts.erlang` file (in
      the current directory, else the home directory, as `:net_adm.world/0` reads it) are
      added, and the node's own host (the part after `@` of its name) is always asked first.
    * `dns` (default `:undefined`) — `{basename, name}`: `name` is resolved at every poll to
      its A and AAAA records, and each address `ip` gives the candidate `basename@ip`.
    * `poll_interval` (default `5000`) — milliseconds between the starts of two polls.

  ## A poll

  The first poll runs at start, each next one `poll_interval` after the previous one began.
  It asks EPMD `NAMES` on every host (each host bounded by the kernel's `net_setuptime`),
  resolves `dns`, computes the candidates (`candidates/1`: the `connect` list, the EPMD
  names and the DNS nodes, minus this node and every connected node), and starts one
  concurrent connection attempt (`:net_kernel.connect_node/1`, in a task) for each candidate
  that is due and has no attempt in flight. Connected nodes that are still not registry
  members after a full poll interval get the `no_registry` outcome (the connection is left
  alone). A poll does nothing while the node is not distributed, or when `discovery` is
  `false`.

  ## Outcomes and retries

  Each attempt ends in `:ok` (connected), `:unreachable` (the name is not registered in its
  host's EPMD, or that EPMD cannot be reached), or `:refused` (the name is registered, but
  the handshake failed: another cookie, the other naming mode, a name mismatch, not
  allowed). `record/4` applies an outcome, or a port seen in EPMD, to a candidate's retry
  record, and `due/1` tells when the candidate is due again: unreachable candidates at every
  poll, refusing ones (and nodes without a registry) after 1, 2, 4 … poll intervals, at
  most 5 minutes; a new EPMD port for the name (the node restarted) ends the backoff.

  `status/0` shows what discovery knows of every candidate.
  """

  use GenServer
  require Logger

  @name :pynode_discovery
  @max_backoff 300_000
  @defaults [discovery: true, connect: [], hosts: [], dns: :undefined, poll_interval: 5_000]
  @hosts_file ~c".hosts.erlang"
  # A record of a node that has been neither a candidate nor connected for this long (and
  # whose backoff is over) is forgotten, so that churning names (DNS pods) do not pile up.
  @forget_after @max_backoff

  @typedoc "An outcome of a connection attempt (or of step 4 of a poll: `:no_registry`)."
  @type outcome :: :ok | :unreachable | :refused | :no_registry

  @typedoc "An event applied to a candidate's retry record by `record/4`."
  @type event :: outcome | {:epmd_port, non_neg_integer}

  @typedoc """
  A candidate's retry record: `k` consecutive `refused`/`no_registry` outcomes, the time
  (milliseconds, the clock of the events) when it is `due` again, and the last EPMD `port`
  seen for its name (`nil` when none was seen).
  """
  @type retry :: %{k: non_neg_integer, due: integer, port: non_neg_integer | nil}

  @typedoc "A host or a name: an Erlang string (charlist), an Elixir string or an atom."
  @type text :: charlist | String.t() | atom

  ## ------------------------------------------------------------------------------------
  ## The pure rules (docs/DISCOVERY.md, checked against docs/vectors/discovery.terms)
  ## ------------------------------------------------------------------------------------

  @doc """
  The hosts asked at a poll (step 1): the own host, then `hosts`, then the hosts of the
  `.hosts.erlang` file, as Erlang strings (charlists), duplicates removed with the first
  occurrence kept. Entries may be atoms, charlists or strings; other terms are skipped.

      iex> Pynode.Discovery.host_list(~c"localhost", [~c"a", :b, "localhost"], [])
      [~c"localhost", ~c"a", ~c"b"]
  """
  @spec host_list(text, [text], [text]) :: [charlist]
  def host_list(own, hosts, file) do
    [own | List.wrap(hosts) ++ List.wrap(file)]
    |> Enum.map(&to_text/1)
    |> Enum.reject(&is_nil/1)
    |> Enum.uniq()
  end

  @doc """
  The candidates of a poll (step 2), sorted in term order, without duplicates.

  `input` is the map of the `candidates` test vectors: `:self` (this node), `:connected`
  (the connected nodes, visible and hidden), `:connect` (the `connect` list: atoms or
  strings), `:hosts` (the host list of step 1; informational: the names come from `:epmd`),
  `:epmd` (`[{host, [name]}]` for the hosts that answered), `:dns` (`:undefined` or
  `{basename, [address]}`). The result is the union of `connect`, `name@host` for every
  EPMD name and `basename@address` for every address, minus `self` and `connected`.

      iex> Pynode.Discovery.candidates(%{
      ...>   self: :"n1@localhost", connected: [], connect: [], hosts: [~c"localhost"],
      ...>   epmd: [{~c"localhost", [~c"n1", ~c"n2"]}], dns: :undefined})
      [:"n2@localhost"]
  """
  @spec candidates(map) :: [node]
  def candidates(%{self: me} = input) do
    excluded = MapSet.new([me | Map.get(input, :connected, [])])

    from_connect = Enum.flat_map(List.wrap(Map.get(input, :connect, [])), &List.wrap(to_node(&1)))

    from_epmd =
      for {host, names} <- Map.get(input, :epmd, []), name <- names, do: node_name(name, host)

    from_dns =
      case Map.get(input, :dns, :undefined) do
        {basename, addresses} when is_list(addresses) ->
          for address <- addresses, do: node_name(basename, address)

        _ ->
          []
      end

    (from_connect ++ from_epmd ++ from_dns)
    |> Enum.reject(&MapSet.member?(excluded, &1))
    |> Enum.uniq()
    |> Enum.sort()
  end

  @doc """
  Applies `event`, which happened at `time` (milliseconds), to a candidate's retry record
  (`nil` for a candidate with no record) and returns the new record. `poll_interval` is the
  poll interval in milliseconds.

    * `:ok` — the streak ends (`k` = 0), due at once (`time`); the port is kept.
    * `:unreachable` — the streak ends, due at the next poll (`time + poll_interval`).
    * `:refused`, `:no_registry` — `k` grows by one; due at
      `time + min(poll_interval * 2^(k-1), 300000)`.
    * `{:epmd_port, port}` — a poll saw `port` for the candidate's name: recorded with it.
      When the record already holds another port, the record is cleared first (the node
      restarted: `k` = 0, due at once); the same port changes nothing.

  ## Example

      iex> r = Pynode.Discovery.record(nil, 0, :refused, 5000)
      iex> Pynode.Discovery.due(r)
      5000
      iex> r = Pynode.Discovery.record(r, 5000, :refused, 5000)
      iex> Pynode.Discovery.due(r)
      15000
  """
  @spec record(retry | nil, integer, event, pos_integer) :: retry
  def record(rec, time, {:epmd_port, port}, _poll_interval) do
    case rec do
      nil -> %{k: 0, due: time, port: port}
      %{port: ^port} -> rec
      %{port: nil} -> %{rec | port: port}
      %{} -> %{k: 0, due: time, port: port}
    end
  end

  def record(rec, time, :ok, _poll_interval), do: %{k: 0, due: time, port: port_of(rec)}

  def record(rec, time, :unreachable, poll_interval),
    do: %{k: 0, due: time + poll_interval, port: port_of(rec)}

  def record(rec, time, outcome, poll_interval) when outcome in [:refused, :no_registry] do
    k = if(rec, do: rec.k, else: 0) + 1
    %{k: k, due: time + backoff(k, poll_interval), port: port_of(rec)}
  end

  @doc "When a candidate with this retry record is due again (`nil`: no record, due at once)."
  @spec due(retry | nil) :: integer | nil
  def due(nil), do: nil
  def due(%{due: due}), do: due

  @doc "Whether a candidate with this retry record (or none: `nil`) is due at `now`."
  @spec due?(retry | nil, integer) :: boolean
  def due?(nil, _now), do: true
  def due?(%{due: due}, now), do: now >= due

  @doc "The backoff after the `k`-th refusal in a row: `min(poll_interval * 2^(k-1), 300000)`."
  @spec backoff(pos_integer, pos_integer) :: non_neg_integer
  def backoff(k, poll_interval) when k >= 1 do
    # past 2^40 the cap has long won: do not build huge integers for a long streak
    min(poll_interval * Bitwise.bsl(1, min(k - 1, 40)), @max_backoff)
  end

  defp port_of(nil), do: nil
  defp port_of(%{port: port}), do: port

  # host or name -> charlist (nil for anything else)
  defp to_text(t) when is_atom(t) and t not in [nil, true, false], do: Atom.to_charlist(t)
  defp to_text(t) when is_binary(t) and t != "", do: String.to_charlist(t)

  defp to_text([_ | _] = t) do
    if :io_lib.char_list(t), do: t, else: nil
  end

  defp to_text(_), do: nil

  # a `connect` entry -> node atom (nil when it cannot be a node name)
  defp to_node(entry) do
    case to_text(entry) do
      nil ->
        nil

      text ->
        case :string.split(text, ~c"@") do
          [[_ | _], [_ | _] = host] -> if(:lists.member(?@, host), do: nil, else: to_atom(text))
          _ -> nil
        end
    end
  end

  defp node_name(name, host), do: to_atom(to_text(name) ++ ~c"@" ++ to_text(host))

  defp to_atom(chars), do: :unicode.characters_to_binary(chars) |> String.to_atom()

  ## ------------------------------------------------------------------------------------
  ## The process
  ## ------------------------------------------------------------------------------------

  @doc "Starts the discovery process, locally registered as `:pynode_discovery`."
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: @name)

  @doc """
  What discovery knows of each node it dealt with: a map of node → `%{outcome, k,
  due_in_ms, port, attempts, in_flight}`: the last `outcome` (`nil` before the first one),
  the streak `k` of `refused`/`no_registry` outcomes, how long until the node is due again
  (0: due now), the last EPMD `port` seen for its name (`nil` if none), how many connection
  attempts were started, and whether one is running now.
  """
  @spec status(timeout) :: %{
          node => %{
            outcome: outcome | nil,
            k: non_neg_integer,
            due_in_ms: non_neg_integer,
            port: non_neg_integer | nil,
            attempts: non_neg_integer,
            in_flight: boolean
          }
        }
  def status(timeout \\ 5_000), do: GenServer.call(@name, :status, timeout)

  defmodule State do
    @moduledoc false
    # polls: how many poll ticks ran (those that did nothing included)
    defstruct polls: 0,
              records: %{},
              # node => %{outcome, attempts, seen, streak_logged, unreachable_logged, noisy}
              info: %{},
              # attempt task ref => {node, poll_time, connect_listed?}
              attempts: %{},
              # node => attempt task ref
              in_flight: %{},
              # gather task ref => {poll_time, config, hosts}
              gathers: %{},
              # start time of the last poll whose answers were used
              last_poll: nil,
              # connected node => when its connection came up
              since: %{},
              # connected nodes given `no_registry` during their current connection
              flagged: MapSet.new(),
              # configuration problems already logged
              warned: MapSet.new()
  end

  @impl true
  def init(_opts) do
    :ok = :net_kernel.monitor_nodes(true, node_type: :all)
    t = now()
    since = Map.new(Node.list(:connected), &{&1, t})
    send(self(), :poll)
    {:ok, %State{since: since}}
  end

  @impl true
  def handle_call(:status, _from, state) do
    t = now()
    nodes = Enum.uniq(Map.keys(state.records) ++ Map.keys(state.in_flight))

    status =
      Map.new(nodes, fn node ->
        rec = Map.get(state.records, node)
        info = Map.get(state.info, node, %{})

        {node,
         %{
           outcome: Map.get(info, :outcome),
           k: if(rec, do: rec.k, else: 0),
           due_in_ms: if(rec, do: max(rec.due - t, 0), else: 0),
           port: port_of(rec),
           attempts: Map.get(info, :attempts, 0),
           in_flight: Map.has_key?(state.in_flight, node)
         }}
      end)

    {:reply, status, state}
  end

  @impl true
  def handle_info(:poll, state) do
    t = now()
    {config, state} = config(%{state | polls: state.polls + 1})
    :erlang.send_after(t + config.poll_interval, self(), :poll, abs: true)

    if config.discovery and Node.alive?() do
      {file_hosts, state} = hosts_file(state)
      hosts = host_list(own_host(), config.hosts, file_hosts)
      {dns, state} = dns_name(config.dns, state)
      timeout = setup_time()
      task = Task.async(fn -> gather(hosts, dns, timeout) end)
      {:noreply, %{state | gathers: Map.put(state.gathers, task.ref, {t, config, hosts})}}
    else
      {:noreply, state}
    end
  end

  def handle_info({ref, {:gathered, epmd, dns}}, state) when is_map_key(state.gathers, ref) do
    Process.demonitor(ref, [:flush])
    {{t, config, hosts}, gathers} = Map.pop(state.gathers, ref)
    state = %{state | gathers: gathers}

    if (state.last_poll == nil or t > state.last_poll) and config.discovery and Node.alive?() do
      {:noreply, poll(%{state | last_poll: t}, t, config, hosts, epmd, dns)}
    else
      # a slow answer overtaken by a later poll, or discovery switched off meanwhile
      {:noreply, state}
    end
  end

  def handle_info({ref, result}, state) when is_map_key(state.attempts, ref) do
    Process.demonitor(ref, [:flush])
    {{node, t, listed?}, attempts} = Map.pop(state.attempts, ref)
    state = %{state | attempts: attempts, in_flight: Map.delete(state.in_flight, node)}
    {:noreply, attempt_done(state, node, t, listed?, result)}
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, state) do
    # A task that died without answering (it catches everything, so this is a kill).
    cond do
      Map.has_key?(state.gathers, ref) ->
        Logger.debug("pynode discovery: a poll's EPMD queries died (#{inspect(reason)})")
        {:noreply, %{state | gathers: Map.delete(state.gathers, ref)}}

      Map.has_key?(state.attempts, ref) ->
        {{node, _t, _listed?}, attempts} = Map.pop(state.attempts, ref)
        {:noreply, %{state | attempts: attempts, in_flight: Map.delete(state.in_flight, node)}}

      true ->
        {:noreply, state}
    end
  end

  def handle_info({:nodeup, node, _info}, state) do
    {:noreply, %{state | since: Map.put_new(state.since, node, now())}}
  end

  def handle_info({:nodedown, node, _info}, state) do
    {:noreply,
     %{state | since: Map.delete(state.since, node), flagged: MapSet.delete(state.flagged, node)}}
  end

  def handle_info(msg, state) do
    Logger.debug("pynode discovery: ignoring #{inspect(msg)}")
    {:noreply, state}
  end

  ## A poll, once the EPMD and DNS answers are in (steps 2 to 4)

  defp poll(state, t, config, hosts, epmd, dns) do
    connected = Node.list(:connected)

    input = %{
      self: node(),
      connected: connected,
      connect: config.connect,
      hosts: hosts,
      epmd: for({host, names} <- epmd, do: {host, for({name, _port} <- names, do: name)}),
      dns: dns
    }

    candidates = candidates(input)
    candidate_set = MapSet.new(candidates)
    pi = config.poll_interval

    # the EPMD ports of the candidates found through EPMD
    state =
      for {host, names} <- epmd,
          {name, port} <- names,
          node = node_name(name, host),
          MapSet.member?(candidate_set, node),
          reduce: state do
        state -> port_seen(state, node, t, port, pi)
      end

    listed = MapSet.new(Enum.flat_map(config.connect, &List.wrap(to_node(&1))))

    state =
      Enum.reduce(candidates, state, fn node, state ->
        if not Map.has_key?(state.in_flight, node) and due?(Map.get(state.records, node), t),
          do: start_attempt(state, node, t, MapSet.member?(listed, node)),
          else: state
      end)

    state
    |> check_registry(connected, t, pi)
    |> mark_seen(candidates ++ connected, t)
    |> forget_old(t)
  end

  defp port_seen(state, node, t, port, pi) do
    old = Map.get(state.records, node)
    new = record(old, t, {:epmd_port, port}, pi)

    state = put_record(state, node, new)

    if old != nil and old.port != nil and old.port != port do
      Logger.debug("pynode discovery: #{node} has a new EPMD port (#{port}): due again now")
      update_info(state, node, &%{&1 | streak_logged: MapSet.new()})
    else
      state
    end
  end

  defp start_attempt(state, node, t, listed?) do
    timeout = setup_time()
    task = Task.async(fn -> attempt(node, timeout) end)
    Logger.debug("pynode discovery: connecting to #{node}")

    state = update_info(state, node, &%{&1 | attempts: &1.attempts + 1})

    %{
      state
      | attempts: Map.put(state.attempts, task.ref, {node, t, listed?}),
        in_flight: Map.put(state.in_flight, node, task.ref)
    }
  end

  # Step 4: connected nodes that are not registry members after a full poll interval.
  defp check_registry(state, connected, t, pi) do
    case members() do
      nil ->
        state

      members ->
        members = MapSet.new(members)

        Enum.reduce(connected, state, fn node, state ->
          member? = MapSet.member?(members, node)
          flagged? = MapSet.member?(state.flagged, node)
          since = Map.get(state.since, node, t)

          cond do
            member? and info(state, node).outcome == :no_registry ->
              # its registry came up after all: that is an ok (logged here, once)
              Logger.info("pynode discovery: #{node} now runs a registry")
              state = %{state | flagged: MapSet.delete(state.flagged, node)}
              state = update_info(state, node, &%{&1 | noisy: false})
              outcome(state, node, t, pi, :ok, nil, false)

            not member? and not flagged? and t - since >= pi ->
              state = %{state | flagged: MapSet.put(state.flagged, node)}
              outcome(state, node, t, pi, :no_registry, nil, false)

            true ->
              state
          end
        end)
    end
  end

  defp members do
    Pynode.Registry.members()
  catch
    :exit, _ -> nil
  end

  defp attempt_done(state, _node, _t, _listed?, :ignored), do: state

  defp attempt_done(state, node, t, listed?, {outcome, why}) do
    {config, state} = config(state)
    outcome(state, node, t, config.poll_interval, outcome, why, listed?)
  end

  # Records `outcome` for `node` at `t` and logs it as DISCOVERY.md says: the first refused
  # of a streak at WARNING, the first no_registry at INFO, the first unreachable of a
  # `connect` node at INFO, the rest at DEBUG; an ok after something was logged at INFO.
  defp outcome(state, node, t, pi, outcome, why, listed?) do
    old = Map.get(state.records, node)
    info = info(state, node)
    # a new refused/no_registry streak starts when the record holds none
    info = if old == nil or old.k == 0, do: %{info | streak_logged: MapSet.new()}, else: info

    level =
      case outcome do
        :ok ->
          if info.noisy, do: :info, else: :debug

        :unreachable ->
          if listed? and not info.unreachable_logged, do: :info, else: :debug

        kind ->
          cond do
            MapSet.member?(info.streak_logged, kind) -> :debug
            kind == :refused -> :warning
            true -> :info
          end
      end

    Logger.log(level, fn -> message(node, outcome, why, level) end)
    logged? = level in [:info, :warning]

    info =
      case outcome do
        :ok ->
          %{info | noisy: false, unreachable_logged: false}

        :unreachable ->
          %{
            info
            | noisy: info.noisy or logged?,
              unreachable_logged: info.unreachable_logged or logged?
          }

        kind ->
          %{
            info
            | noisy: info.noisy or logged?,
              unreachable_logged: false,
              streak_logged: MapSet.put(info.streak_logged, kind)
          }
      end

    state
    |> put_record(node, record(old, t, outcome, pi))
    |> Map.update!(:info, &Map.put(&1, node, %{info | outcome: outcome}))
  end

  defp message(node, :ok, _why, :info),
    do: "pynode discovery: #{node} is reachable (again); connected"

  defp message(node, :ok, _why, _), do: "pynode discovery: connected to #{node}"

  defp message(node, :refused, why, _),
    do: "pynode discovery: #{node} refused the connection (#{why}); retrying with backoff"

  defp message(node, :no_registry, _why, _),
    do:
      "pynode discovery: #{node} runs no registry (connected for a poll interval, not a " <>
        "member); the connection is left alone"

  defp message(node, :unreachable, why, _),
    do: "pynode discovery: #{node} is unreachable (#{why}); retrying at every poll"

  defp info(state, node) do
    Map.get(state.info, node, %{
      outcome: nil,
      attempts: 0,
      seen: nil,
      streak_logged: MapSet.new(),
      unreachable_logged: false,
      noisy: false
    })
  end

  defp update_info(state, node, fun),
    do: %{state | info: Map.put(state.info, node, fun.(info(state, node)))}

  defp put_record(state, node, rec), do: %{state | records: Map.put(state.records, node, rec)}

  defp mark_seen(state, nodes, t) do
    Enum.reduce(nodes, state, fn node, state ->
      if Map.has_key?(state.records, node) or Map.has_key?(state.info, node),
        do: update_info(state, node, &%{&1 | seen: t}),
        else: state
    end)
  end

  defp forget_old(state, t) do
    old =
      for {node, info} <- state.info,
          info.seen != nil and t - info.seen > @forget_after,
          not Map.has_key?(state.in_flight, node),
          due?(Map.get(state.records, node), t),
          do: node

    %{
      state
      | info: Map.drop(state.info, old),
        records: Map.drop(state.records, old)
    }
  end

  ## Work done in tasks (never in the GenServer: each may block up to the setup time)

  # Step 1: EPMD NAMES on every host (concurrently, each bounded by `timeout`) and the DNS
  # name. Returns {:gathered, [{host, [{name, port}]}] for the hosts that answered, dns}.
  defp gather(hosts, dns, timeout) do
    host_tasks = for host <- hosts, do: {host, Task.async(fn -> epmd_names(host) end)}

    dns_task =
      case dns do
        {basename, name} -> {basename, Task.async(fn -> resolve(name) end)}
        :undefined -> nil
      end

    tasks = Enum.map(host_tasks, &elem(&1, 1)) ++ if(dns_task, do: [elem(dns_task, 1)], else: [])

    results =
      for {task, result} <- Task.yield_many(tasks, timeout), into: %{} do
        if result == nil, do: Task.shutdown(task, :brutal_kill)

        case result do
          {:ok, value} -> {task.ref, value}
          _ -> {task.ref, nil}
        end
      end

    epmd =
      for {host, task} <- host_tasks,
          names = Map.get(results, task.ref),
          is_list(names),
          do: {host, names}

    dns =
      case dns_task do
        nil -> :undefined
        {basename, task} -> {basename, Map.get(results, task.ref) || []}
      end

    {:gathered, epmd, dns}
  end

  defp epmd_names(host) do
    case :erl_epmd.names(host) do
      {:ok, names} ->
        for {name, port} <- names, is_list(name) and is_integer(port), do: {name, port}

      other ->
        Logger.debug("pynode discovery: EPMD of #{host} did not answer (#{inspect(other)})")
        nil
    end
  catch
    kind, reason ->
      Logger.debug("pynode discovery: EPMD of #{host}: #{inspect({kind, reason})}")
      nil
  end

  defp resolve(name) do
    for family <- [:inet, :inet6],
        {:ok, ips} <- [:inet.getaddrs(name, family)],
        ip <- ips,
        uniq: true,
        do: :inet.ntoa(ip)
  catch
    _, _ -> []
  end

  # One connection attempt, classified.
  defp attempt(node, timeout) do
    case :net_kernel.connect_node(node) do
      true -> {:ok, nil}
      :ignored -> :ignored
      false -> classify(node, timeout)
    end
  catch
    kind, reason -> {:unreachable, "#{inspect(kind)}: #{inspect(reason)}"}
  end

  # A failed attempt: `unreachable` when the name is not registered in its host's EPMD (or
  # that EPMD cannot be asked), `refused` when it is (the node answered; the handshake failed).
  defp classify(node, timeout) do
    [name, host] = node |> Atom.to_charlist() |> :string.split(~c"@")

    case :erl_epmd.port_please(name, host, timeout) do
      {:port, _port, _version} -> {:refused, refusal_reason(host)}
      :noport -> {:unreachable, "not registered in the EPMD of #{host}"}
      other -> {:unreachable, "the EPMD of #{host} did not answer: #{inspect(other)}"}
    end
  catch
    kind, reason -> {:unreachable, "#{inspect(kind)}: #{inspect(reason)}"}
  end

  # What the handshake failure most likely was: the naming mode can be told from here.
  defp refusal_reason(host) do
    dotted? = :lists.member(?., host)

    case :net_kernel.longnames() do
      true when not dotted? -> "this node uses long names, #{host} is a short host name"
      false when dotted? -> "this node uses short names, #{host} is a long host name"
      _ -> "handshake failed: another cookie, a name mismatch or not allowed"
    end
  end

  ## Configuration and environment

  defp config(state) do
    get = fn key -> Application.get_env(:pynode, key, @defaults[key]) end

    {poll_interval, state} =
      case get.(:poll_interval) do
        pi when is_integer(pi) and pi > 0 -> {pi, state}
        bad -> {@defaults[:poll_interval], warn_once(state, {:poll_interval, bad})}
      end

    hosts =
      case get.(:hosts) do
        hosts when is_list(hosts) -> hosts
        host -> [host]
      end

    connect =
      case get.(:connect) do
        nodes when is_list(nodes) -> nodes
        node -> [node]
      end

    {%{
       discovery: get.(:discovery) != false,
       connect: connect,
       hosts: hosts,
       dns: get.(:dns),
       poll_interval: poll_interval
     }, state}
  end

  defp dns_name(:undefined, state), do: {:undefined, state}
  defp dns_name(nil, state), do: {:undefined, state}

  defp dns_name({basename, name} = dns, state) do
    case {to_text(basename), to_text(name)} do
      {[_ | _] = b, [_ | _] = n} -> {{b, n}, state}
      _ -> {:undefined, warn_once(state, {:dns, dns})}
    end
  end

  defp dns_name(bad, state), do: {:undefined, warn_once(state, {:dns, bad})}

  # The hosts of `.hosts.erlang` in the current directory, else in the home directory.
  defp hosts_file(state) do
    home =
      case :init.get_argument(:home) do
        {:ok, [[home | _] | _]} -> home
        _ -> String.to_charlist(System.user_home() || ".")
      end

    paths = [@hosts_file, :filename.join(home, @hosts_file)]

    case Enum.find(paths, &:filelib.is_regular/1) do
      nil ->
        {[], state}

      path ->
        case :file.consult(path) do
          {:ok, hosts} -> {hosts, state}
          {:error, reason} -> {[], warn_once(state, {:hosts_file, path, reason})}
        end
    end
  end

  defp warn_once(state, problem) do
    if MapSet.member?(state.warned, problem) do
      state
    else
      Logger.warning("pynode discovery: ignoring bad configuration #{inspect(problem)}")
      %{state | warned: MapSet.put(state.warned, problem)}
    end
  end

  defp own_host do
    [_, host] = node() |> Atom.to_charlist() |> :string.split(~c"@")
    host
  end

  defp setup_time do
    case :application.get_env(:kernel, :net_setuptime) do
      {:ok, s} when is_number(s) and s > 0 -> round(s * 1000)
      _ -> 7_000
    end
  end

  defp now, do: System.monotonic_time(:millisecond)
end
