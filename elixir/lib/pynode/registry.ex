defmodule Pynode.Registry do
  @moduledoc """
  A cluster-wide registry of unique names and properties, shared by BEAM and Python nodes.

  Every node of a pynode cluster, Elixir or Python, runs one registry process (locally
  registered as `:pynode_registry`, started by the `:pynode` application). It
  owns the registrations of its node's processes and keeps a full mirror of every other
  node's, so reads (`where/1`, `lookup_pids/1`, `lookup_values/1`, `send/2`, `members/0`)
  are answered from local ETS tables without a message to anyone, and writes (`reg/2`,
  `unreg/1`) go through the local registry, which broadcasts them to the other members.
  The wire protocol is `docs/REGISTRY_PROTOCOL.md`, repeated at the top of
  `Pynode.Registry.Impl`; the Python twin is `pynode/registry/`.

  ## Keys

  Keys are gproc-style, global scope only:

    * `{:n, :g, name}` — a unique name: at most one holder in the cluster;
    * `{:p, :g, name}` — a property: any number of holders, each pid at most once.

  `name` is any term, compared exactly (`===`): `{:n, :g, 1}` and `{:n, :g, 1.0}` are two
  names. Each registration carries a value (any term, `:undefined` by default). Other key
  shapes raise `ArgumentError`.

  ## Membership

  A node is a member once its registry has been discovered: at start, on every `nodeup`
  (hidden nodes included, so Python nodes are found), and through the member lists that
  registries exchange, which also connects every member to every other. A member whose
  node goes down, or whose registry dies, is dropped and its entries are purged.

  ## Conflicts

  When two nodes register the same unique name concurrently, or meet after a partition with
  the name held on both sides, every registry keeps the holder whose node name is smaller
  (in Erlang term order); the loser is unregistered and receives the exit signal
  `{:name_conflict, key, winner_pid}` from its registry: it dies with that reason unless it
  traps exits, in which case it gets `{:EXIT, registry_pid, {:name_conflict, key, winner_pid}}`
  and keeps running without the name.

  ## Example

      iex> Pynode.Registry.reg({:n, :g, :billing}, %{version: 2})
      :ok
      iex> Pynode.Registry.where({:n, :g, :billing}) == self()
      true
      iex> Pynode.Registry.lookup_values({:n, :g, :billing})
      [{self(), %{version: 2}}]
      iex> Pynode.Registry.reg({:p, :g, :workers})
      :ok
      iex> Pynode.Registry.send({:p, :g, :workers}, :ping)
      :ping
  """

  alias Pynode.Registry.Impl

  @typedoc "A global unique name or a global property, as in gproc."
  @type key :: {:n, :g, term} | {:p, :g, term}

  @default_await_timeout 5_000

  @doc """
  Registers `key` for the calling process with `value` (default `:undefined`).

  Returns `:ok`, or `{:error, {:already_registered, holder_pid}}` when another process
  holds the unique name in this node's mirror. Registering a key the caller already holds
  updates its value (and broadcasts the new value). The registration lasts until `unreg/1`,
  the caller's death, or the loss of a name conflict.
  """
  @spec reg(key, term) :: :ok | {:error, {:already_registered, pid}}
  def reg(key, value \\ :undefined) do
    check_key!(key)
    GenServer.call(Impl.name(), {:reg, key, value})
  end

  @doc "Removes the calling process's registration of `key` (if any). Always returns `:ok`."
  @spec unreg(key) :: :ok
  def unreg(key) do
    check_key!(key)
    GenServer.call(Impl.name(), {:unreg, key})
  end

  @doc """
  The holder of a unique name, or `:undefined`. For a property, the first holder (in the
  order this node's mirror learnt them), or `:undefined` when there is none.
  """
  @spec where(key) :: pid | :undefined
  def where(key) do
    case Impl.lookup(check_key!(key)) do
      [{pid, _value} | _] -> pid
      [] -> :undefined
    end
  end

  @doc "The pids registered under `key`: at most one for a name, every holder for a property."
  @spec lookup_pids(key) :: [pid]
  def lookup_pids(key), do: for({pid, _} <- Impl.lookup(check_key!(key)), do: pid)

  @doc "The `{pid, value}` pairs registered under `key`."
  @spec lookup_values(key) :: [{pid, term}]
  def lookup_values(key), do: Impl.lookup(check_key!(key))

  @doc """
  Sends `msg` to the holder of `key` (to every holder of a property) and returns `msg`.

  A unique name with no holder raises `ArgumentError` (`badarg`), as `gproc:send/2` does; a
  property with no holder sends nothing.
  """
  @spec send(key, msg) :: msg when msg: term
  def send(key, msg) do
    case {check_key!(key), Impl.lookup(key)} do
      {{:n, :g, _}, []} ->
        :erlang.error(:badarg, [key, msg])

      {_, holders} ->
        Enum.each(holders, fn {pid, _} -> Kernel.send(pid, msg) end)
        msg
    end
  end

  @doc """
  Waits until `key` has a holder and returns `{pid, value}` (the first holder for a
  property). Returns at once when the mirror already has it; otherwise returns as soon as a
  registration anywhere in the cluster brings it in, or `{:error, :timeout}` after `timeout`
  milliseconds (default #{@default_await_timeout}; `:infinity` waits forever).
  """
  @spec await(key, timeout) :: {pid, term} | {:error, :timeout}
  def await(key, timeout \\ @default_await_timeout)
      when timeout == :infinity or (is_integer(timeout) and timeout >= 0) do
    case Impl.lookup(check_key!(key)) do
      [{pid, value} | _] ->
        {pid, value}

      [] ->
        # The registry answers {:error, :timeout} itself when `timeout` runs out; the call's
        # own timeout is a backstop in case the registry is too busy to do so in time.
        call_timeout = if timeout == :infinity, do: :infinity, else: timeout + 5_000

        try do
          GenServer.call(Impl.name(), {:await, key, timeout}, call_timeout)
        catch
          :exit, {:timeout, {GenServer, :call, _}} -> {:error, :timeout}
        end
    end
  end

  @doc """
  The member nodes, sorted: this node and every node whose registry this node knows and
  that is up (BEAM and Python, visible and hidden).
  """
  @spec members() :: [node]
  def members, do: Impl.members()

  defp check_key!({:n, :g, _} = key), do: key
  defp check_key!({:p, :g, _} = key), do: key

  defp check_key!(key) do
    raise ArgumentError,
          "expected a registry key {:n, :g, name} or {:p, :g, name}, got: #{inspect(key)}"
  end
end
