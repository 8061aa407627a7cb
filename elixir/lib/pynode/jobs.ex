defmodule Pynode.Jobs do
  @moduledoc """
  Background jobs held in memory across a cluster of Elixir and Python nodes.

  A job is a process with an **id** (any term), a **kind** (an atom that names the same
  behaviour in both languages: `:Job` for `Job`, `:"Job.Otp"` for `Job.Otp`) and a
  **portable state**. Every node that runs the `:pynode` application (`Pynode.Application`)
  runs a job host, the GenServer `:pynode_jobs` (`Pynode.Jobs.Host`), next to the registry
  (`Pynode.Registry`), unless it is configured with `host_jobs: false` (a client only);
  Python nodes run the same host (`pynode/jobs/host.py`). The wire protocol is
  `docs/JOBS_PROTOCOL.md`, repeated at the top of `Pynode.Jobs.Host`.

  The host runs the kinds that the applications of its node provide: each application puts
  a `Pynode.Jobs.Kinds` child, with its kind modules, in its own supervision tree (the seed's
  `:available_processes` provides `Job`, `Job.Otp` and `Job.Steps`). When that child stops
  (its application is stopped), the host stops advertising those kinds and hands their jobs
  off to other hosts, as in a graceful shutdown.

    * **Placement** — a new job goes to the least-loaded host (running + queued run-kind
      jobs, as each host publishes in `{:p, :g, :pynode_job_load}`; round-robin between
      equal loads) among the nodes that hold the property `{:p, :g, :pynode_job_host}` with
      the kind in its value, BEAM and Python alike, hidden nodes included. A host runs at
      most `max_jobs` run-kind jobs; more wait in its queue (status `:queued`) and move to
      a host with room.
    * **Names** — a job registers `{:n, :g, {:pynode_job, id}}` (value: its kind); clients
      find it with `Pynode.Registry.where/1`, so a job that moved is found where it is now.
    * **Sudden death** — before a change is acknowledged, the job's portable state is stored
      on `replicas` other hosts (default 1); when its node dies, the first surviving replica
      holder (in term order) adopts the job with the last acknowledged state, less the time
      the replica waited. The replicas follow the set of hosts (checked on every
      nodeup/nodedown and every `replica_check` ms): a job started or adopted while it was
      alone gets its copies as soon as another host joins.
    * **Partitions** — when two sides of a split cluster meet again with a copy of the same
      job each, the registry keeps the copy on the smaller node name, and the other copy
      merges its state into it (`c:Pynode.Jobs.Kind.merge/2`) before it ends: nothing
      acknowledged on either side is lost.
    * **Graceful shutdown** — `Application.stop(:pynode)` or `:init.stop()` first
      withdraws the host from placement, then hands every job, with its state and
      remaining durations, to another host; callers never see `:no_such_job` meanwhile,
      because the client retries through the registry with the same operation id. Stopping
      an application that provides kinds (`Application.stop(:available_processes)`) does
      the same for the jobs of its kinds only.

  ## Client API

  The seed's `Job.start/1`, `Job.update/2`, `Job.finish/1`, `Job.Otp.start/1` and
  `Job.Otp.check_results/1` run on any node. On a node with a running registry they read it
  locally; on a node that only has the code loaded (`elixir --sname c1@localhost -S mix
  run_job 10`) they send `{:client, op, args}` to `:pynode_jobs` on a connected host node.
  The generic functions below do the same for any kind.

  ## Configuration (`:pynode` application env, e.g. the `pynode` section of `sys.config`)

  | key | default | meaning |
  | --- | --- | --- |
  | `work_ms` | 2000 | `Job.Otp`'s simulated work |
  | `result_ttl` | 600000 | how long `Job.Otp` results stay readable |
  | `replicas` | 1 | other hosts holding each job's state (0: none) |
  | `replica_check` | 100 | a host looks at the set of hosts at least this often (ms) |
  | `job_timeout` | 15000 | a client operation gives up after this long |
  | `missing_grace` | 3000 | a job name missing this long means "no such job" |
  | `call_timeout` | 5000 | one attempt of a call to a job or a host |
  | `adopt_timeout` | 10000 | one `adopt` call during a handoff |
  | `adopt_reg_timeout` | 5000 | an adopting job retries its name while a dead owner still holds it |
  | `handoff_timeout` | 60000 | the whole handoff of one node at shutdown |
  | `handoff_concurrency` | 16 | job handoffs in flight at once at shutdown |
  | `host_jobs` | `true` | `false`: this node runs no job host (a client only) |
  | `job_kinds` | `:all` | the kinds this node's host runs: `:all` (every kind module of `kinds/0`, i.e. provided by a running application) or a list of kind atoms (`:Job`, `:"Job.Otp"`) or kind modules (`Job`, `Job.Otp`, a `Pynode.Jobs.Run` module of yours) |
  | `max_attempts` | 3 | runs of a run kind's `run/1` before the job fails |
  | `retry_backoff` | 1000 | the wait (ms) after the first failed run, doubling after each |
  | `retry_backoff_max` | 30000 | the longest wait between two runs |
  | `max_jobs` | 1000 | run-kind jobs a host runs at once; more wait in its queue (`:infinity`: no limit) |
  """

  require Logger

  alias Pynode.Jobs.Client

  # The same keys and values as the `defaults` vector of docs/vectors/jobs.terms.
  @defaults %{
    work_ms: 2_000,
    result_ttl: 600_000,
    replicas: 1,
    replica_check: 100,
    job_timeout: 15_000,
    missing_grace: 3_000,
    call_timeout: 5_000,
    adopt_timeout: 10_000,
    adopt_reg_timeout: 5_000,
    handoff_timeout: 60_000,
    handoff_concurrency: 16,
    host_jobs: true,
    job_kinds: :all,
    max_attempts: 3,
    retry_backoff: 1_000,
    retry_backoff_max: 30_000,
    max_jobs: 1000
  }

  @doc "A setting of the `:pynode` application environment, with the defaults above."
  @spec config(atom) :: term
  def config(key) when is_map_key(@defaults, key),
    do: Application.get_env(:pynode, key, Map.fetch!(@defaults, key))

  @doc false
  # The defaults of the settings above (tests compare them with the shared vectors).
  def defaults, do: @defaults

  @doc """
  Every kind module this node knows: those provided by the running `Pynode.Jobs.Kinds`
  processes of its applications, in the order they were provided (`job_kinds: :all` means
  these).
  """
  @spec kinds() :: [module]
  def kinds, do: Pynode.Jobs.Kinds.provided()

  @doc """
  The kinds this node's host runs, `%{kind_atom => module}`, from the `job_kinds` setting
  (`:all`, or a list of kind atoms and kind modules). Entries that name no kind this node
  knows (yet: an application may provide it later) are left out.
  """
  @spec host_kinds() :: %{atom => module}
  def host_kinds, do: host_kinds(config(:job_kinds))

  @doc false
  def host_kinds(:all), do: host_kinds(kinds())

  def host_kinds(list) when is_list(list) do
    for entry <- list, reduce: %{} do
      acc ->
        case kind_module(entry) do
          nil ->
            Logger.debug("pynode jobs: job_kinds names no known kind (yet): #{inspect(entry)}")
            acc

          mod ->
            Map.put(acc, mod.kind(), mod)
        end
    end
  end

  def host_kinds(other) do
    Logger.warning("pynode jobs: job_kinds must be :all or a list, not #{inspect(other)}")
    %{}
  end

  @doc """
  The kind module for a kind atom (`:Job`, `:"Job.Otp"`) or a kind module (`Job`), among
  `kinds/0` and any loaded module that implements `Pynode.Jobs.Kind`; `nil` when unknown.
  """
  @spec kind_module(atom) :: module | nil
  def kind_module(kind) when is_atom(kind) do
    cond do
      kind_module?(kind) -> kind
      mod = Enum.find(kinds(), &(&1.kind() == kind)) -> mod
      true -> nil
    end
  end

  def kind_module(_), do: nil

  @doc false
  # A module that implements the kind behaviour (kind/0, handle_op/3), loaded on demand.
  def kind_module?(mod) do
    match?("Elixir." <> _, Atom.to_string(mod)) and Code.ensure_loaded?(mod) and
      function_exported?(mod, :kind, 0) and function_exported?(mod, :handle_op, 3)
  end

  @doc """
  Starts a job of `kind` (an atom such as `:Job`, or a kind module such as `Job`) on a host
  chosen round-robin. Returns `{:ok, pid}`, `{:error, :job_already_started}`,
  `{:error, :unknown_kind}` (no host runs that kind), `{:error, :no_hosts}` or
  `{:error, :timeout}`.
  """
  @spec start(atom | module, term, list) :: {:ok, pid} | {:error, term}
  def start(kind, id, args \\ []) when is_atom(kind) and is_list(args),
    do: Client.run(:start, [kind_atom(kind), id, args])

  @doc """
  Runs `request` on job `id` (`{:update, event}`, `:finish`, `:check_results`, `:get_state`,
  or a request of another kind) and returns the job's raw answer: `{:ok, result}`,
  `{:error, :no_such_job}` or `{:error, reason}`.
  """
  @spec op(term, term) :: {:ok, term} | {:error, term}
  def op(id, request), do: Client.run(:op, [id, request])

  @doc """
  The status of run-kind job `id` (docs/JOBS_PROTOCOL.md, "Run kinds"):
  `{:ok, %{status: :running | :done | :failed | :cancelled, progress: map, attempts: n,
  node: node}}`, or `{:error, :no_such_job}` (never started, or ended after `result_ttl`).
  """
  @spec status(term) :: {:ok, map} | {:error, term}
  def status(id), do: Client.run(:status, [id])

  @doc """
  The results of run-kind job `id`: `{:ok, result}`, `{:error, :not_done}`,
  `{:error, {:failed, error}}` (error: `{:python_error, type, message}` from a Python kind,
  `{:elixir_error, module, message}` from an Elixir one), `{:error, :cancelled}` or
  `{:error, :no_such_job}`.
  """
  @spec results(term) :: {:ok, term} | {:error, term}
  def results(id), do: Client.run(:results, [id])

  @doc """
  Cancels run-kind job `id` from any node: `{:ok, :cancelled}` (or `{:ok, :done | :failed}`
  when it had already ended), or `{:error, :no_such_job}`. Its status stays readable for
  `result_ttl`.
  """
  @spec cancel(term) :: {:ok, atom} | {:error, term}
  def cancel(id), do: Client.run(:cancel, [id])

  @doc "The portable state of job `id`, or `{:error, :no_such_job}`."
  @spec get_state(term) :: term | {:error, term}
  def get_state(id), do: Client.run(:get_state, [id])

  @doc "Every job of the cluster, `[{id, kind, pid}]`, from each host's `list`."
  @spec list() :: [{term, atom, pid}]
  def list, do: Client.run(:list_jobs, [])

  @doc "The registry name of job `id`."
  @spec key(term) :: {:n, :g, {:pynode_job, term}}
  def key(id), do: {:n, :g, {:pynode_job, id}}

  @doc "The registry property every job host holds (value: the list of kinds it runs)."
  @spec host_key() :: {:p, :g, :pynode_job_host}
  def host_key, do: {:p, :g, :pynode_job_host}

  @doc "The registry key of a host's published load `{running, queued, max_jobs}`."
  def load_key, do: {:p, :g, :pynode_job_load}

  @doc false
  # A published load; {0, 0, :infinity} for a host that publishes none.
  def load_of({r, q, m}) when is_integer(r) and is_integer(q), do: {r, q, m}
  def load_of(_), do: {0, 0, :infinity}

  @doc false
  # The placement rule (docs/JOBS_PROTOCOL.md, "Load"; vectors: place): among
  # [{node, running, queued, max_jobs}], the ones with room if any, else all; of those the
  # least-loaded, sorted by node; the one at rem(n, length). :none without candidates.
  # (Term order: an integer is smaller than :infinity.)
  def place([], _n), do: :none

  def place(candidates, n) do
    rows = for {node, r, q, m} <- candidates, do: {node, r + q, m}
    pool = Enum.filter(rows, fn {_, l, m} -> l < m end)
    pool = if pool == [], do: rows, else: pool
    low = pool |> Enum.map(&elem(&1, 1)) |> Enum.min()
    tied = for({node, ^low, _} <- pool, do: node) |> Enum.uniq() |> Enum.sort()
    Enum.at(tied, rem(n, length(tied)))
  end

  @doc false
  # A kind module (Job, Job.Otp) stands for its kind atom; any other atom is a kind atom.
  def kind_atom(kind) when is_atom(kind) do
    with "Elixir." <> _ <- Atom.to_string(kind),
         true <- Code.ensure_loaded?(kind) and function_exported?(kind, :kind, 0) do
      kind.kind()
    else
      _ -> kind
    end
  end

  @doc """
  `<<"results of ", Id/binary>>` (`Job.Otp`): a binary id as it is, an integer in decimal,
  an atom by its text, any other term as `inspect/1` prints it.
  """
  @spec results_binary(term) :: binary
  def results_binary(id) when is_binary(id), do: "results of " <> id
  def results_binary(id) when is_integer(id), do: "results of " <> Integer.to_string(id)
  def results_binary(id) when is_atom(id), do: "results of " <> Atom.to_string(id)
  def results_binary(id), do: "results of " <> inspect(id)
end
