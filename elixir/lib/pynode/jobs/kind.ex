defmodule Pynode.Jobs.Kind do
  @moduledoc """
  The behaviour of a job kind (see `Pynode.Jobs`).

  A kind is a module that names itself with `c:kind/0` (an atom shared with the Python side:
  `Job` is `:Job`, `Job.Otp` is `:"Job.Otp"`, not the Elixir module atoms) and works on a
  **portable state**: a plain term, the same shape in both languages, that travels when the
  job moves. The job process (`Pynode.Jobs.JobServer`) owns everything else: the name in the
  registry, replication, deduplication of retried operations and the handoff.

  Durations in the portable state are remaining milliseconds. The job process remembers when
  it last brought the state up to date; before the state leaves the process (replication,
  handoff, `get_state`) it calls `c:elapse/2` with the milliseconds that have passed since,
  and it schedules `c:handle_timeout/2` after `c:timeout/1` milliseconds. A kind without
  timers leaves the three optional callbacks out.

  When a partition heals with a copy of the job on each side, the copy that keeps the name
  merges the other one's portable map into its own with `c:merge/2` (optional: a kind
  without it keeps the winner's state).
  """

  @typedoc "A portable state: any term."
  @type state :: term

  @doc "The kind's atom, the same in every language (`:Job`, `:\"Job.Otp\"`)."
  @callback kind() :: atom

  @doc "The initial portable state of job `id`, from the `Args` list of `{start, Kind, Id, Args}`."
  @callback init(id :: term, args :: list) :: state

  @doc """
  A portable state received from another node (adoption, handoff), checked and completed.
  Raises (or returns `{:error, reason}`) when the state is not of this kind's shape.
  """
  @callback restore(id :: term, state) :: state | {:error, term}

  @doc """
  Handles a kind-specific request of `{pynode_job_op, OpId, Request}`:

    * `{:read, result}` — answered `{ok, Result}`, nothing changed;
    * `{:changed, result, state}` — the state changed: replicated, then answered;
    * `{:stop, result}` — answered `{ok, Result}`, then the job ends (as `finish` does);
    * `{:error, reason}` — answered `{error, Reason}`, nothing changed.
  """
  @callback handle_op(request :: term, id :: term, state) ::
              {:read, term} | {:changed, term, state} | {:stop, term} | {:error, term}

  @doc "Milliseconds until `c:handle_timeout/2` is due, or `nil` for no timer."
  @callback timeout(state) :: non_neg_integer | nil

  @doc "The state with `ms` milliseconds taken off its remaining durations."
  @callback elapse(state, ms :: non_neg_integer) :: state

  @doc "The timer of `c:timeout/1` ran out: `{:changed, state}` (replicated) or `:stop`."
  @callback handle_timeout(id :: term, state) :: {:changed, state} | {:noreply, state} | :stop

  @typedoc """
  The whole portable map of one copy of a job:
  `%{kind: atom, id: term, state: state, recent: [{op_id, reply}], seq: integer}`.
  """
  @type portable :: %{
          required(:kind) => atom,
          required(:id) => term,
          required(:state) => state,
          required(:recent) => [{term, term}],
          required(:seq) => integer
        }

  @doc """
  Two copies of the job met after a partition (docs/JOBS_PROTOCOL.md, "Partitions"): the
  merged portable state from the copy that keeps running (`mine`, the winner of the name)
  and the copy that ends (`theirs`). Both are whole portable maps, their durations computed
  at the time of the merge. Without this callback the winner's state is kept.
  """
  @callback merge(mine :: portable, theirs :: portable) :: state

  @doc """
  A short text for the WARNING that reports a merge (`mine`, `theirs` as given to
  `c:merge/2`, and what it returned). Without it, the log shows the merged state.
  """
  @callback describe_merge(mine :: portable, theirs :: portable, merged :: state) :: String.t()

  @optional_callbacks timeout: 1, elapse: 2, handle_timeout: 2, merge: 2, describe_merge: 3
end
