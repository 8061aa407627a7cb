# `mix test` starts the node without distribution (and has already started the :pynode
# application, and in mix_compat/ the seed's :available_processes, whose test_helper.exs runs
# this file; the registry follows the change of node name).
# The cluster tests need a distributed node, and EPMD for it: start EPMD if nothing runs one
# (`epmd -daemon` exits at once when one is already listening, pynode's own EPMD included).
epmd =
  System.find_executable("epmd") ||
    Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "bin", "epmd"])

{_, 0} = System.cmd(epmd, ["-daemon"])

# This node's own discovery stays off (before distribution starts, so that no poll of it
# ever runs): with it on, this node would connect to every peer a test starts, including
# peers that a test means to keep apart (`connection: :standard_io`), and OTP's global would
# then mesh them all through this node. The peers run discovery (the default); a test that
# needs an isolated peer starts it with `-pynode discovery false`.
Application.put_env(:pynode, :discovery, false)

unless Node.alive?() do
  name = :"mixtest#{System.unique_integer([:positive])}@localhost"

  case :net_kernel.start([name, :shortnames]) do
    {:ok, _} -> :ok
    {:error, reason} -> raise "could not start distribution as #{name}: #{inspect(reason)}"
  end

  # A cookie of this run's own (the peers get it from Pynode.Test.Cluster.start_peer): the
  # peers discover every node in this host's EPMD, and with the shared ~/.erlang.cookie they
  # would join the clusters of other test runs on the same machine (and theirs ours).
  Node.set_cookie(:"mixtest#{System.unique_integer([:positive])}_#{:rand.uniform(1_000_000_000)}")
end

# capture_log: a passing test stays quiet (the registry logs what it ignores, on purpose here).
ExUnit.start(capture_log: true)
