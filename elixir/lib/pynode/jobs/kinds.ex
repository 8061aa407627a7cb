defmodule Pynode.Jobs.Kinds do
  @moduledoc """
  Provides job kinds to this node's job host for as long as it runs: the way an application
  that depends on `:pynode` makes its kinds known.

  Put it in the application's own supervision tree with the application's kind modules
  (modules that implement `Pynode.Jobs.Kind`, e.g. with `use Pynode.Jobs.Run`):

      children = [{Pynode.Jobs.Kinds, [MyApp.Resize, MyApp.Report]}]
      Supervisor.start_link(children, strategy: :one_for_one, name: MyApp.Supervisor)

  Put it last among the children: children stop in reverse order, so the kinds are withdrawn
  and their jobs handed off first, while what the jobs use (a Repo, a pool) still runs.

  While it runs, the host (`:pynode_jobs`) counts these modules among the kinds this node
  knows (`Pynode.Jobs.kinds/0`, what `job_kinds: :all` means; a `job_kinds` list keeps
  filtering them) and advertises their kind atoms in `{:p, :g, :pynode_job_host}`. When it
  stops — its application is stopped (`Application.stop(:my_app)`), or the node stops
  (`:init.stop()` stops the applications in the reverse order of their start, so this one
  before `:pynode`) — the host withdraws the kinds: it stops advertising them at once (no new
  job of theirs is placed here, and `adopt` calls for them are refused), then hands every
  running or queued job of those kinds to another host that runs the kind, exactly as in a
  graceful shutdown (docs/JOBS_PROTOCOL.md, "Graceful shutdown"), and only then lets the
  application stop. A job that no other host can take ends. The registry, the host and the
  jobs of the other kinds keep running.

  The provided modules are kept in `:persistent_term` under `{Pynode.Jobs.Kinds, pid}`, so
  that a host restarted by its supervisor finds them again. Several applications may provide
  kinds; two of them providing the same kind atom is a mistake (the first one provided wins).
  """

  use GenServer

  alias Pynode.Jobs
  alias Pynode.Jobs.Host

  @doc """
  The child specification for the kind modules `kinds` (a list). The shutdown time covers a
  whole handoff (`handoff_timeout`).
  """
  @spec child_spec([module]) :: Supervisor.child_spec()
  def child_spec(kinds) when is_list(kinds) do
    %{
      id: {__MODULE__, kinds},
      start: {__MODULE__, :start_link, [kinds]},
      shutdown: Jobs.config(:handoff_timeout) + 5_000
    }
  end

  @doc """
  Starts a process that provides `kinds` (kind modules) to the host until it stops. Fails
  with `{:not_a_kind, module}` for a module that does not implement `Pynode.Jobs.Kind`.
  """
  @spec start_link([module]) :: GenServer.on_start()
  def start_link(kinds) when is_list(kinds), do: GenServer.start_link(__MODULE__, kinds)

  @doc """
  Every kind module provided by a running `Pynode.Jobs.Kinds` process of this node, without
  repetitions, in the order they were provided.
  """
  @spec provided() :: [module]
  def provided do
    providers()
    |> Enum.flat_map(fn {_pid, kinds} -> kinds end)
    |> Enum.uniq()
  end

  @doc false
  # [{pid, kinds}] of the running providers, oldest first (the order their keys were put).
  def providers do
    for {{__MODULE__, pid}, {seq, kinds}} <- :persistent_term.get(),
        is_pid(pid) and Process.alive?(pid) do
      {seq, pid, kinds}
    end
    |> Enum.sort()
    |> Enum.map(fn {_seq, pid, kinds} -> {pid, kinds} end)
  end

  @doc false
  # A provider that died without withdrawing (killed): the host removes what it left.
  def forget(pid), do: :persistent_term.erase({__MODULE__, pid})

  @impl true
  def init(kinds) do
    case Enum.find(kinds, &(not Jobs.kind_module?(&1))) do
      nil ->
        # terminate/2 must run when the supervisor stops this process
        Process.flag(:trap_exit, true)
        :persistent_term.put({__MODULE__, self()}, {System.unique_integer([:monotonic]), kinds})
        Host.provide(self())
        {:ok, kinds}

      mod ->
        {:stop, {:not_a_kind, mod}}
    end
  end

  @impl true
  def handle_info(_msg, kinds), do: {:noreply, kinds}

  @impl true
  def terminate(_reason, _kinds) do
    forget(self())
    Host.withdraw(self())
    :ok
  end
end
