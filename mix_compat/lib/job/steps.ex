defmodule Job.Steps do
  @moduledoc """
  The run kind `'Job.Steps'` (`Pynode.Jobs.Run`): simulated I/O in steps, a checkpoint
  after each — the Elixir twin of the Python kinds the tests and `bench/jobs_bench.py` use.

  Args: `[steps, step_ms]`, `[steps, step_ms, failing_attempts]` or `[steps, step_ms,
  failing_attempts, true]`. The checkpoint is the number of steps done; the result is
  `%{steps: steps, attempt: attempt}` (the attempt that finished), with the 4th argument
  `true` also `checkpoint_us:` the latency of each checkpoint of that attempt in
  microseconds (`bench/jobs_bench.py`). With `failing_attempts`, attempts up to that number raise
  `RuntimeError` ("step failed") at the middle step, after the steps before it were
  checkpointed (retries, then failure, can be watched).

      iex> Pynode.Jobs.start(:"Job.Steps", "s1", [5, 100])
      iex> Pynode.Jobs.status("s1")
      {:ok, %{status: :running, progress: %{done: 2, total: 5}, attempts: 1, node: :"n1@localhost"}}
  """

  use Pynode.Jobs.Run, kind: :"Job.Steps"

  alias Pynode.Jobs.Run

  @impl Pynode.Jobs.Run
  def run(ctx) do
    [steps, step_ms | rest] = ctx.args
    failing = List.first(rest) || 0
    timed = Enum.at(rest, 1) == true
    from = ctx.state || 0

    {ctx, lat} =
      Enum.reduce(from..(steps - 1)//1, {ctx, []}, fn i, {ctx, lat} ->
        if i == div(steps, 2) and ctx.attempt <= failing, do: raise("step failed")
        Process.sleep(step_ms)
        t = System.monotonic_time(:microsecond)
        ctx = Run.checkpoint(ctx, i + 1)
        lat = [System.monotonic_time(:microsecond) - t | lat]
        Run.progress(ctx, %{done: i + 1, total: steps})
        {ctx, lat}
      end)

    if timed,
      do: %{steps: steps, attempt: ctx.attempt, checkpoint_us: Enum.reverse(lat)},
      else: %{steps: steps, attempt: ctx.attempt}
  end
end
