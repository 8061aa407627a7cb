defmodule Pynode.Jobs.Run do
  @moduledoc """
  Run kinds: a job kind whose work is one function, `c:run/1`, with checkpoints
  (docs/JOBS_PROTOCOL.md, "Run kinds"; the Python twin is `pynode.jobs.RunKind`).

      defmodule MyApp.Crawl do
        use Pynode.Jobs.Run, kind: :crawl

        @impl Pynode.Jobs.Run
        def run(ctx) do
          done = ctx.state || []
          Enum.reduce(Enum.drop(ctx.args, length(done)), {ctx, done}, fn url, {ctx, done} ->
            done = done ++ [fetch(url)]
            ctx = Pynode.Jobs.Run.checkpoint(ctx, done)     # returns once replicated
            Pynode.Jobs.Run.progress(ctx, %{done: length(done), total: length(ctx.args)})
            {ctx, done}
          end)
          |> elem(1)                                         # the results, kept for result_ttl
        end
      end

  Start it with `Pynode.Jobs.start(:crawl, id, [url1, url2])` (from any node of the cluster;
  the host must know the kind: `job_kinds: [Job, Job.Otp, MyApp.Crawl]`), watch it with
  `Pynode.Jobs.status/1`, read `Pynode.Jobs.results/1`, stop it with `Pynode.Jobs.cancel/1`.

  `run/1` runs in a process of its own, linked to the job process, which keeps answering
  calls meanwhile. A raise, throw or exit of `run/1` is retried from the last checkpoint
  after a backoff (`retry_backoff` doubling up to `retry_backoff_max`) until `max_attempts`,
  then the job fails with `{:elixir_error, "Module", "message"}` (an exception) or the
  reason as its result. A graceful move kills the run process and runs `run/1` again from
  the last checkpoint on the new host; so does an adoption after a node died.
  """

  alias Pynode.Jobs

  defmodule Ctx do
    @moduledoc "What `c:Pynode.Jobs.Run.run/1` is given (see `Pynode.Jobs.Run`)."
    defstruct [:id, :args, :state, :attempt, :job, :gen]

    @type t :: %__MODULE__{
            id: term,
            args: list,
            state: term,
            attempt: pos_integer,
            job: pid,
            gen: integer
          }
  end

  @doc "The work of the job: return the results; raise, throw or exit to fail this attempt."
  @callback run(Ctx.t()) :: term

  @statuses [:queued, :running, :done, :failed, :cancelled]
  @terminal [:done, :failed, :cancelled]

  defmacro __using__(opts) do
    kind = Keyword.fetch!(opts, :kind)

    quote do
      @behaviour Pynode.Jobs.Kind
      @behaviour Pynode.Jobs.Run

      @impl Pynode.Jobs.Kind
      def kind, do: unquote(kind)

      @impl Pynode.Jobs.Kind
      def init(_id, args), do: Pynode.Jobs.Run.initial(args)

      @impl Pynode.Jobs.Kind
      def restore(_id, state), do: Pynode.Jobs.Run.restore(state)

      @impl Pynode.Jobs.Kind
      def handle_op(request, _id, state), do: Pynode.Jobs.Run.handle_op(request, state)

      @impl Pynode.Jobs.Kind
      def timeout(state), do: Pynode.Jobs.Run.timeout(state)

      @impl Pynode.Jobs.Kind
      def elapse(state, ms), do: Pynode.Jobs.Run.elapse(state, ms)

      @impl Pynode.Jobs.Kind
      def handle_timeout(_id, state), do: Pynode.Jobs.Run.handle_timeout(state)

      @impl Pynode.Jobs.Kind
      def merge(mine, theirs), do: Pynode.Jobs.Run.merge(mine, theirs)
    end
  end

  ## What run/1 calls

  @doc """
  Makes `state` the job's checkpoint and returns once it is stored on the job's replicas
  (a move or a crash after this resumes from it); returns the context with `state` set.
  """
  @spec checkpoint(Ctx.t(), term) :: Ctx.t()
  def checkpoint(%Ctx{} = ctx, state) do
    case GenServer.call(ctx.job, {:pynode_run_checkpoint, ctx.gen, state}, :infinity) do
      :ok -> %{ctx | state: state}
      {:error, reason} -> exit(reason)
    end
  end

  @doc "Reports progress: `map` is merged into the job's `progress` (read by `status`)."
  @spec progress(Ctx.t(), map) :: :ok
  def progress(%Ctx{} = ctx, map) when is_map(map) do
    send(ctx.job, {:pynode_run_progress, ctx.gen, map})
    :ok
  end

  ## The pure rules (vectors: run_*)

  @doc false
  def initial(args),
    do: %{
      args: args,
      checkpoint: nil,
      status: :running,
      progress: %{},
      attempts: 1,
      result: nil,
      retry_left_ms: nil,
      ttl_left_ms: nil
    }

  @doc false
  def backoff(attempt, base, max_ms),
    do: min(base * Integer.pow(2, max(attempt - 1, 0)), max_ms)

  @doc false
  def done(state, result, ttl),
    do: %{state | status: :done, result: result, retry_left_ms: nil, ttl_left_ms: ttl}

  @doc false
  def error(state, error, max_attempts, base, max_ms, ttl) do
    n = if is_integer(state[:attempts]), do: state.attempts, else: 1

    if n < max_attempts,
      do: %{state | retry_left_ms: backoff(n, base, max_ms)},
      else: %{state | status: :failed, result: error, retry_left_ms: nil, ttl_left_ms: ttl}
  end

  @doc false
  # No free slot (docs/JOBS_PROTOCOL.md, "Load"; vectors: run_queue): a job that has not
  # ended waits, queued; an ended one is unchanged.
  def queue(%{status: s} = state) when s in @terminal, do: state
  def queue(state) when is_map(state), do: %{state | status: :queued}

  @doc false
  # A slot (vectors: run_admit): a queued job becomes running; any other is unchanged.
  def admit(%{status: :queued} = state), do: %{state | status: :running}
  def admit(state), do: state

  @doc false
  def retry(state) do
    n = if is_integer(state[:attempts]), do: state.attempts, else: 1
    %{state | attempts: n + 1, retry_left_ms: nil}
  end

  @doc false
  def cancel(%{status: s} = state, _ttl) when s in @terminal, do: state

  def cancel(state, ttl),
    do: %{state | status: :cancelled, retry_left_ms: nil, ttl_left_ms: ttl}

  @doc false
  def status(state, node),
    do: %{
      status: state[:status],
      progress: Map.get(state, :progress, %{}),
      attempts: state[:attempts],
      node: node
    }

  @doc false
  def results(%{status: :done, result: r}), do: {:ok, r}
  def results(%{status: :failed, result: e}), do: {:error, {:failed, e}}
  def results(%{status: :cancelled}), do: {:error, :cancelled}
  def results(_), do: {:error, :not_done}

  @doc false
  def elapse(state, ms) when is_map(state) do
    Enum.reduce([:retry_left_ms, :ttl_left_ms], state, fn key, acc ->
      case acc[key] do
        left when is_integer(left) -> Map.put(acc, key, max(left - ms, 0))
        _ -> acc
      end
    end)
  end

  def elapse(state, _ms), do: state

  @doc false
  def merge(%{state: %{status: s} = mine}, _theirs) when s in @terminal, do: mine
  def merge(_mine, %{state: %{status: s} = theirs}) when s in @terminal, do: theirs

  def merge(%{state: _mine, seq: qw}, %{state: theirs, seq: ql})
      when is_integer(qw) and is_integer(ql) and ql > qw,
      do: theirs

  def merge(%{state: mine}, _theirs), do: mine

  ## The Pynode.Jobs.Kind callbacks of a run kind

  @doc false
  def restore(%{status: s} = state) when s in @statuses, do: Map.merge(initial(nil), state)
  def restore(state), do: {:error, {:bad_state, state}}

  @doc false
  def handle_op(:status, state), do: {:read, status(state, node())}

  def handle_op(:results, state) do
    case results(state) do
      {:ok, r} -> {:read, r}
      error -> error
    end
  end

  def handle_op(:cancel, %{status: s}) when s in @terminal, do: {:read, s}

  def handle_op(:cancel, state) do
    state = cancel(state, Jobs.config(:result_ttl))
    {:changed, state.status, state}
  end

  def handle_op(request, _state), do: {:error, {:unknown_request, request}}

  @doc false
  def timeout(%{status: s, ttl_left_ms: left}) when s in @terminal,
    do: if(is_integer(left), do: left, else: Jobs.config(:result_ttl))

  def timeout(%{status: :running, retry_left_ms: left}) when is_integer(left), do: left
  def timeout(_), do: nil

  @doc false
  def handle_timeout(%{status: s}) when s in @terminal, do: :stop

  def handle_timeout(%{status: :running, retry_left_ms: left} = state) when is_integer(left),
    do: {:changed, retry(state)}

  def handle_timeout(state), do: {:noreply, state}

  ## What the job process uses

  @doc false
  def run_kind?(mod), do: function_exported?(mod, :run, 1)

  @doc false
  # Whether run/1 should be running now: running and not waiting for a retry.
  def wants_run?(%{status: :running, retry_left_ms: nil}), do: true
  def wants_run?(_), do: false

  @doc false
  def ended(state, {:ok, result}), do: done(state, result, Jobs.config(:result_ttl))

  def ended(state, {:error, error}) do
    error(
      state,
      error,
      Jobs.config(:max_attempts),
      Jobs.config(:retry_backoff),
      Jobs.config(:retry_backoff_max),
      Jobs.config(:result_ttl)
    )
  end

  @doc false
  def checkpointed(state, checkpoint), do: %{state | checkpoint: checkpoint}

  @doc false
  def progressed(state, map), do: %{state | progress: Map.merge(state[:progress] || %{}, map)}

  @doc false
  # Starts run/1 in a process linked to the calling job process; it exits with
  # {:pynode_run_end, {:ok, result} | {:error, error}}.
  def spawn_run(mod, id, state, gen) do
    ctx = %Ctx{
      id: id,
      args: state.args,
      state: state.checkpoint,
      attempt: state.attempts,
      job: self(),
      gen: gen
    }

    spawn_link(fn -> exit({:pynode_run_end, outcome(mod, ctx)}) end)
  end

  defp outcome(mod, ctx) do
    {:ok, mod.run(ctx)}
  rescue
    e ->
      require Logger

      Logger.warning(
        "pynode jobs: job #{inspect(ctx.id)}: run failed on attempt #{ctx.attempt}: " <>
          Exception.format(:error, e, __STACKTRACE__)
      )

      {:error, {:elixir_error, inspect(e.__struct__), Exception.message(e)}}
  catch
    :throw, value -> {:error, {:nocatch, value}}
    :exit, reason -> {:error, reason}
  end
end
