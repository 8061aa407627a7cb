# `mix test` starts the node without distribution (and has already started the
# :available_processes application, whose registry follows the change of node name).
# The cluster tests need a distributed node, and EPMD for it: start EPMD if nothing runs one
# (`epmd -daemon` exits at once when one is already listening, pynode's own EPMD included).
epmd =
  System.find_executable("epmd") ||
    Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "bin", "epmd"])

{_, 0} = System.cmd(epmd, ["-daemon"])

unless Node.alive?() do
  name = :"mixtest#{System.unique_integer([:positive])}@localhost"

  case :net_kernel.start([name, :shortnames]) do
    {:ok, _} -> :ok
    {:error, reason} -> raise "could not start distribution as #{name}: #{inspect(reason)}"
  end
end

# capture_log: a passing test stays quiet (the registry logs what it ignores, on purpose here).
ExUnit.start(capture_log: true)
