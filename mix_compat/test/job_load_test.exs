defmodule JobLoadTest do
  # Load (docs/JOBS_PROTOCOL.md, "Load") on one node: a host runs at most max_jobs run-kind
  # jobs; more wait in its queue (status :queued, run/1 not started) and take a freed slot
  # in order; a cancelled queued job leaves the queue; the host publishes its load in
  # {p, g, pynode_job_load}. Moves between hosts (overflow, a stopping host's queue) are in
  # the mixed-cluster test (tests/test_jobs_run_mixed.py).
  use ExUnit.Case, async: false

  alias Pynode.Jobs

  import Pynode.Test.Cluster, only: [wait_until: 3]

  @keys [:max_jobs, :missing_grace, :result_ttl]

  setup do
    Pynode.Test.AppEnv.keep(@keys, missing_grace: 300)
  end

  defp uniq(prefix), do: "#{prefix}-#{System.unique_integer([:positive])}"

  defp status!(id) do
    {:ok, st} = Jobs.status(id)
    st.status
  end

  defp host_load, do: Pynode.Jobs.Host.load(:sys.get_state(:pynode_jobs))

  defp published do
    for {pid, v} <- Pynode.Registry.lookup_values(Jobs.load_key()), node(pid) == node(), do: v
  end

  test "a full host queues run-kind jobs and admits them in order as slots free" do
    # the host reads max_jobs once, at its start: restart it with a limit of 2
    Application.put_env(:pynode, :max_jobs, 2)
    :ok = Supervisor.terminate_child(Pynode.Supervisor, Pynode.Jobs.Host)
    {:ok, _} = Supervisor.restart_child(Pynode.Supervisor, Pynode.Jobs.Host)

    on_exit(fn ->
      Application.delete_env(:pynode, :max_jobs)
      Supervisor.terminate_child(Pynode.Supervisor, Pynode.Jobs.Host)
      Supervisor.restart_child(Pynode.Supervisor, Pynode.Jobs.Host)
    end)

    wait_until(fn -> published() == [{0, 0, 2}] end, 5_000, "idle load published")

    # two long jobs take the slots; three more wait
    [a, b, c, d, e] = ids = for i <- 1..5, do: uniq("load#{i}")
    for id <- [a, b], do: assert({:ok, _} = Jobs.start(:"Job.Steps", id, [1000, 20]))
    for id <- [c, d, e], do: assert({:ok, _} = Jobs.start(:"Job.Steps", id, [2, 1]))
    assert Enum.map(ids, &status!/1) == [:running, :running, :queued, :queued, :queued]
    assert host_load() == {2, 3, 2}
    wait_until(fn -> published() == [{2, 3, 2}] end, 5_000, "load published")
    # a queued job does not run
    assert {:ok, %{checkpoint: nil, status: :queued}} = Jobs.op(c, :get_state)

    # cancelling a queued job takes it out of the queue
    assert Jobs.cancel(d) == {:ok, :cancelled}
    wait_until(fn -> host_load() == {2, 2, 2} end, 5_000, "d left the queue")

    # a slot frees: the oldest queued job takes it, runs and finishes; then the next
    assert Jobs.cancel(a) == {:ok, :cancelled}
    wait_until(fn -> status!(c) == :done end, 5_000, "c ran in a's slot")
    wait_until(fn -> status!(e) == :done end, 5_000, "e ran after c")
    assert Jobs.results(c) == {:ok, %{steps: 2, attempt: 1}}
    assert status!(b) == :running
    wait_until(fn -> host_load() == {1, 0, 2} end, 5_000, "only b holds a slot")
    assert Jobs.cancel(b) == {:ok, :cancelled}
    wait_until(fn -> published() == [{0, 0, 2}] end, 5_000, "idle again")
  end
end
