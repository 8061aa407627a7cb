defmodule AvailableProcesses.Application do
  @moduledoc """
  The seed's `:available_processes` OTP application: the job kinds `Job`, `Job.Otp` and
  `Job.Steps`, provided to the job host of the `:pynode` library (`Pynode.Application`, which
  runs the registry, the host and discovery and is started before this application, as its
  dependency).

      AvailableProcesses.Supervisor
      └── Pynode.Jobs.Kinds   (provides Job, Job.Otp, Job.Steps to :pynode_jobs)

  Stopping this application (`Application.stop(:available_processes)`) withdraws the three
  kinds from the host: it stops advertising them and hands their jobs off to other hosts, as
  in a graceful shutdown, while the registry and the host keep running. `:init.stop()` stops
  this application first and then `:pynode`: every job moves as well.
  """

  use Application

  @impl true
  def start(_type, _args) do
    children = [{Pynode.Jobs.Kinds, [Job, Job.Otp, Job.Steps]}]
    Supervisor.start_link(children, strategy: :one_for_one, name: AvailableProcesses.Supervisor)
  end
end
