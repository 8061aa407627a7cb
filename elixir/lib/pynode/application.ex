defmodule Pynode.Application do
  @moduledoc """
  The `:pynode` OTP application: the BEAM side of a pynode cluster.

  Its supervision tree (`:rest_for_one`, so that everything started after the registry is
  restarted when the registry is):

      Pynode.Supervisor
      ├── Pynode.Registry.Impl      (locally registered as :pynode_registry)
      ├── Pynode.Jobs.Host          (locally registered as :pynode_jobs; hands jobs off on stop)
      └── Pynode.Discovery          (locally registered as :pynode_discovery)

  `Pynode.Discovery` (`docs/DISCOVERY.md`) finds the other nodes and keeps connecting to
  them: with no configuration, every node registered in the EPMD of this node's host; also
  the nodes of the `connect` key, the EPMD names of the `hosts` (and `.hosts.erlang`) and the
  addresses of the `dns` name (the `pynode` section of a config file, e.g. the repository's
  `mix_compat/sys.config`: `iex --sname n1@localhost --erl "-config sys.config" -S mix`). The
  registry then meshes with every reached node, hidden (Python) nodes included.

  The host runs the job kinds that applications provide to it (`Pynode.Jobs.Kinds`, a child
  of their own supervision trees): an application that depends on `:pynode` and defines kinds
  starts after it and stops before it.
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

    opts = [strategy: :rest_for_one, name: Pynode.Supervisor]
    Supervisor.start_link(children, opts)
  end
end
