defmodule Pynode.MixProject do
  use Mix.Project

  # The BEAM side of pynode as a library: an existing mix project adds
  #
  #     {:pynode, path: "path/to/pynode/elixir"}
  #
  # to its deps and gets the registry, the job host and client, the kind behaviours and
  # discovery, all under the :pynode application (Pynode.Application). No dependencies at
  # all: it compiles offline on Debian's Elixir 1.14 / OTP 25 and on newer releases (hex.pm
  # is not reachable from the build machines, so nothing may trigger a hex install).
  def project do
    [
      app: :pynode,
      version: "0.1.0",
      elixir: "~> 1.14",
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  def application do
    [
      mod: {Pynode.Application, []},
      # :ssl for TLS distribution (-proto_dist inet_tls): Elixir 1.15+ keeps only the
      # applications listed here (and deps) on the code path under mix
      extra_applications: [:logger, :ssl],
      # Defaults (the same as in mix_compat/sys.config, the cluster configuration, whose
      # `pynode` section overrides them: `--erl "-config sys.config"`). The discovery keys
      # are documented in docs/DISCOVERY.md, the job keys in docs/JOBS_PROTOCOL.md.
      env: [
        discovery: true,
        connect: [],
        hosts: [],
        dns: :undefined,
        poll_interval: 5_000,
        result_ttl: 600_000,
        replicas: 1,
        replica_check: 100,
        host_jobs: true,
        job_kinds: :all,
        max_jobs: 1000
      ]
    ]
  end

  # test/support holds helper modules that peer nodes started by the tests must be able to
  # load from the code path, so they are compiled into the test build like lib/ (the
  # mix_compat project's tests compile them too).
  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
