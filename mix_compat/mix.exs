defmodule AvailableProcesses.MixProject do
  use Mix.Project

  # The seed application: its job kinds (Job, Job.Otp, Job.Steps) and `mix run_job`, on top
  # of the pynode library (../elixir: the registry, the job host, discovery), its only
  # dependency, a path one: the project compiles offline on Debian's Elixir 1.14 / OTP 25
  # (hex.pm is not reachable from the build machines, so nothing may trigger a hex install).
  def project do
    [
      app: :available_processes,
      version: "0.1.0",
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: [{:pynode, path: "../elixir"}]
    ]
  end

  def application do
    [
      mod: {AvailableProcesses.Application, []},
      # :ssl for TLS distribution (-proto_dist inet_tls): Elixir 1.15+ keeps only the
      # applications listed here (and deps) on the code path under mix
      extra_applications: [:logger, :ssl]
      # No env of its own: the cluster configuration is the :pynode application's (defaults
      # in ../elixir/mix.exs; sys.config in this directory overrides them).
    ]
  end

  # The test helpers of the library (peer nodes, app env, log keeper) are compiled into this
  # project's test build too: its cluster tests start peers the same way.
  defp elixirc_paths(:test), do: ["lib", Path.expand("../elixir/test/support", __DIR__)]
  defp elixirc_paths(_), do: ["lib"]
end
