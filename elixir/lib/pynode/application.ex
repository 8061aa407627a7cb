defmodule AvailableProcesses.Application do
  @moduledoc """
  The `:available_processes` OTP application: the BEAM side of a pynode cluster.

  Its supervision tree (`:rest_for_one`, so that everything started after the registry is
  restarted when the registry is):

      AvailableProcesses.Supervisor
      ├── Pynode.Registry.Impl      (locally registered as :pynode_registry)
      ├── Pynode.Jobs.Host          (locally registered as :pynode_jobs; hands jobs off on stop)
      └── Pynode.Discovery          (locally registered as :pynode_discovery)

  `Pynode.Discovery` (`docs/DISCOVERY.md`) finds the other nodes and keeps connecting to
  them: with no configuration, every node registered in the EPMD of this node's host; also
  the nodes of the `connect` key, the EPMD names of the `hosts` (and `.hosts.erlang`) and the
  addresses of the `dns` name (see `sys.config` in this directory, the cluster
  configuration: `iex --sname n1@localhost --erl "-config sys.config" -S mix`). The registry
  then meshes with every reached node, hidden (Python) nodes included.
  """

  use Application

  @impl true
  def start(_type, _args) do
    children = [
      Pynode.Registry.Impl,
      # The job host :pynode_jobs, after the registry: it registers in it, and it stops
      # before it (children stop in reverse order), so that its terminate/2 can hand every
      # job off through the registry. :rest_for_one restarts it when the registry restarts.
      Pynode.Jobs.Host,
      # Discovery last: nothing depends on it, so (with :rest_for_one) its crash restarts
      # nothing else, and it stops first at shutdown (no new connections while the job host
      # hands its jobs off).
      Pynode.Discovery
    ]

    opts = [strategy: :rest_for_one, name: AvailableProcesses.Supervisor]
    Supervisor.start_link(children, opts)
  end
end
