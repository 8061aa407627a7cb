defmodule JobRunTest do
  # Run kinds (Pynode.Jobs.Run, docs/JOBS_PROTOCOL.md "Run kinds") on one node: the Elixir
  # kind Job.Steps run, watched, retried, failed, cancelled and expired. The moves between
  # nodes are in the mixed-cluster tests (tests/test_jobs_run_mixed.py).
  use ExUnit.Case, async: false

  alias Pynode.Jobs

  import Pynode.Test.Cluster, only: [wait_until: 3]

  @keys [:missing_grace, :result_ttl, :retry_backoff, :retry_backoff_max, :max_attempts]

  setup do
    Pynode.Test.AppEnv.keep(@keys, missing_grace: 300, retry_backoff: 20, retry_backoff_max: 100)
  end

  defp uniq(prefix), do: "#{prefix}-#{System.unique_integer([:positive])}"

  defp status!(id) do
    {:ok, st} = Jobs.status(id)
    st
  end

  test "a run kind answers status and progress while it runs, then its results" do
    id = uniq("steps")
    assert {:ok, pid} = Jobs.start(Job.Steps, id, [6, 40])
    wait_until(fn -> status!(id).progress[:done] == 2 end, 5_000, "two steps")
    st = status!(id)
    assert st.status == :running and st.attempts == 1 and st.node == node()
    assert st.progress.total == 6
    assert Jobs.results(id) == {:error, :not_done}
    # the checkpoint is in the replicated portable state
    assert {:ok, %{checkpoint: n}} = Jobs.op(id, :get_state)
    assert n >= 2
    wait_until(fn -> status!(id).status == :done end, 5_000, "done")
    assert Jobs.results(id) == {:ok, %{steps: 6, attempt: 1}}
    assert Process.alive?(pid)
  end

  test "a failing run is retried from its checkpoint, then fails with its error" do
    Application.put_env(:pynode, :max_attempts, 3)
    ok = uniq("retry")
    assert {:ok, _} = Jobs.start(:"Job.Steps", ok, [4, 1, 1])
    wait_until(fn -> status!(ok).status == :done end, 5_000, "done after a retry")
    assert Jobs.results(ok) == {:ok, %{steps: 4, attempt: 2}}
    assert status!(ok).attempts == 2

    bad = uniq("fail")
    assert {:ok, _} = Jobs.start(:"Job.Steps", bad, [4, 1, 99])
    wait_until(fn -> status!(bad).status == :failed end, 5_000, "failed")
    assert status!(bad).attempts == 3

    assert Jobs.results(bad) ==
             {:error, {:failed, {:elixir_error, "RuntimeError", "step failed"}}}

    # the steps before the failing one were checkpointed once, not redone
    assert {:ok, %{checkpoint: 2}} = Jobs.op(bad, :get_state)
  end

  test "cancel stops the run; the status stays readable until result_ttl, then the job ends" do
    Application.put_env(:pynode, :result_ttl, 400)
    id = uniq("cancel")
    assert {:ok, pid} = Jobs.start(:"Job.Steps", id, [1000, 20])
    wait_until(fn -> status!(id).progress[:done] == 1 end, 5_000, "one step")
    ref = Process.monitor(pid)
    assert Jobs.cancel(id) == {:ok, :cancelled}
    assert Jobs.cancel(id) == {:ok, :cancelled}
    assert status!(id).status == :cancelled
    assert Jobs.results(id) == {:error, :cancelled}
    # the run process is gone: no more steps, no more checkpoints
    assert :sys.get_state(pid).run_pid == nil
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 3_000
    assert Jobs.status(id) == {:error, :no_such_job}
    assert Jobs.results(id) == {:error, :no_such_job}
  end
end
