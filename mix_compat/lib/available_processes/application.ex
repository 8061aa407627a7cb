defmodule AvailableProcesses.Application do
  @moduledoc """
  The `:available_processes` OTP application: the BEAM side of a pynode cluster.

  Its supervision tree (`:rest_for_one`, so that everything started after the registry is
  restarted when the registry is):

      AvailableProcesses.Supervisor
      ├── Pynode.Registry.Impl      (locally registered as :pynode_registry)
      └── Pynode.Jobs.Host          (locally registered as :pynode_jobs; hands jobs off on stop)

  After the tree is up, the application connects to the nodes listed in its `connect`
  environment key (see `sys.config` at the repository root), so that
  `iex --erl "-config ../sys.config" -S mix` joins the configured cluster at boot. Nodes
  that are not listed are found anyway: the registry discovers every node that connects,
  hidden (Python) nodes included, and connects to the members other nodes report.
  """

  use Application
  require Logger

  @impl true
  def start(_type, _args) do
    children = [
      Pynode.Registry.Impl,
      # The job host :pynode_jobs, after the registry: it registers in it, and it stops
      # before it (children stop in reverse order), so that its terminate/2 can hand every
      # job off through the registry. :rest_for_one restarts it when the registry restarts.
      Pynode.Jobs.Host
    ]

    opts = [strategy: :rest_for_one, name: AvailableProcesses.Supervisor]

    with {:ok, sup} <- Supervisor.start_link(children, opts) do
      connect_configured_nodes()
      {:ok, sup}
    end
  end

  @doc false
  # Connects to every node of the `connect` key. A node that cannot be reached is logged and
  # skipped: it may start later, and then it connects to us (or the registry finds it).
  def connect_configured_nodes do
    nodes = Application.get_env(:available_processes, :connect, [])

    cond do
      nodes == [] ->
        :ok

      not Node.alive?() ->
        Logger.warning(
          "available_processes: not a distributed node, not connecting to #{inspect(nodes)} " <>
            "(start with --sname or --name)"
        )

      true ->
        Enum.each(List.wrap(nodes), &connect_one/1)
    end
  end

  defp connect_one(node) do
    case to_node(node) do
      nil ->
        Logger.warning("available_processes: ignoring bad node name #{inspect(node)} in :connect")

      name when name == node() ->
        :ok

      name ->
        case Node.connect(name) do
          true -> Logger.info("available_processes: connected to #{name}")
          other -> Logger.warning("available_processes: could not connect to #{name} (#{other})")
        end
    end
  end

  defp to_node(node) when is_atom(node), do: node

  defp to_node(node) when is_binary(node) or is_list(node) do
    String.to_atom(IO.chardata_to_string(node))
  rescue
    _ -> nil
  end

  defp to_node(_), do: nil
end
