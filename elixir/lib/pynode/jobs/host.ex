defmodule Pynode.Jobs.Host do
  @moduledoc false
  # The job host `:pynode_jobs` behind `Pynode.Jobs`. The protocol it speaks is
  # docs/JOBS_PROTOCOL.md, repeated verbatim between the markers below
  # (test/protocol_doc_test.exs fails when the two drift apart).
  #
  # --- BEGIN docs/JOBS_PROTOCOL.md ---
  # # The pynode job protocol (version 1)
  #
  # Background jobs held only in memory across a cluster of Elixir and Python nodes, that move
  # off a node that shuts down and survive the sudden death of a node. Built on the registry
  # (`docs/REGISTRY_PROTOCOL.md`). The Elixir side (`elixir/lib/pynode/jobs*.ex`; the
  # seed's kinds in `mix_compat/lib/job*.ex`) and the Python side (`pynode/jobs/`, in `protocol.py`)
  # repeat this text in their headers and must stay in lockstep with it; the rules are also
  # checked in both languages against the shared vectors `docs/vectors/jobs.terms`.
  #
  # ## Vocabulary
  #
  # - **Job**: a process with a job **id** (any term; the seed uses strings and integers), a
  #   **kind** (an atom naming the behaviour, the same in both languages) and a **portable
  #   state** (a term, the same shape in both languages).
  # - **Host**: the process `pynode_jobs`, locally registered on every node that hosts jobs
  #   (a BEAM node running the `:pynode` application; a Python node unless started
  #   with hosting disabled). It starts, adopts, lists and replicates jobs.
  # - **Kinds** defined in both languages:
  #   - `'Job'` — Elixir `Job`. State: a list, `[Id]` at start; `update(Event)` makes it
  #     `[Event | State]`; `finish` returns the state (`[last_event, ..., Id]`) and ends the job.
  #   - `'Job.Otp'` — Elixir `Job.Otp`. State: a map
  #     `#{id => Id, results => nil | Binary, work_left_ms => Int | nil, ttl_left_ms => Int | nil}`.
  #     At start the simulated work takes `work_ms` (config, default 2000); when it is done,
  #     `results` becomes `<<"results of ", Id/binary>>` (an integer id is written in decimal),
  #     `work_left_ms` becomes `nil`, and the results are kept for `result_ttl` (config,
  #     default 600000 ms), after which the job ends. `check_results` answers `results`
  #     (`nil` until the work is done).
  #   - A Python program can define more kinds (`@job_kind("my_kind")` class); a kind exists
  #     only on the nodes whose host knows it.
  #   - **Run kinds** (see "Run kinds"): a kind whose work is a function `run` in its language
  #     (Python `RunKind`, Elixir `Pynode.Jobs.Run`), with checkpoints; its portable state has
  #     one shape for every run kind, in both languages.
  # - Durations travel as **remaining milliseconds**, never as absolute times: no clock is
  #   trusted across nodes.
  #
  # ## Registry keys
  #
  # | key | holder | value |
  # | --- | --- | --- |
  # | `{p, g, pynode_job_host}` | each host process | the list of kinds it hosts |
  # | `{n, g, {pynode_job, Id}}` | the job process | its kind |
  # | `{p, g, pynode_job_load}` | each host process | `{Running, Queued, MaxJobs}` (see "Load") |
  #
  # A host that starts shutting down unregisters `{p, g, pynode_job_host}` first: no client
  # places a new job on it after that (it also unregisters `{p, g, pynode_job_load}`).
  #
  # ## Calls to a host (`gen_server:call({pynode_jobs, Node}, Request)`)
  #
  # | request | reply |
  # | --- | --- |
  # | `{start, Kind, Id, Args}` | `{ok, Pid}` / `{error, job_already_started}` / `{error, unknown_kind}` / `{error, stopping}` |
  # | `{adopt, Kind, Id, Portable}` | `{ok, Pid}` once the new job process holds the name / `{error, Reason}` |
  # | `{replicate, Id, Kind, Portable, Seq, OwnerPid, Replicas}` | `ok` once stored (the ack a job waits for) |
  # | `{drop_replica, Id, OwnerPid}` (cast) | — |
  # | `{client, Op, Args}` | the result of the client operation `Op` run on that node (see "Client") |
  # | `list` | `[{Id, Kind, Pid}]` for the jobs this host runs |
  # | `replicas` | `[{Id, Kind, OwnerPid, Seq}]` for the replicas this host holds (for operators and tests) |
  #
  # `{client, Op, Args}` operations (each answers what the client function of that name answers
  # on the host's node): `start` `[Kind, Id, StartArgs]` (also `[Id]`, `[Kind, Id]`), `otp_start`
  # `[Id]`, `update` `[Id, Event]`, `finish` `[Id]`, `check_results` `[Id]`, `get_state` `[Id]`,
  # `op` `[Id, Request]` and `op` `[Id, Request, OpId]` (the raw `{ok, Result}`; the 3-argument
  # form carries the client's own `OpId`, so that a retry through another host is recognised as
  # a repeat; a host that does not know it answers `{error, {unknown_client_op, op, 3}}`), and
  # `list_jobs` `[]`. A host that is stopping leaves new `client` calls unanswered (the caller's
  # call ends with the node and it retries elsewhere, with nothing applied) and waits for the ones
  # already running before its node exits.
  #
  # `Portable` is the map `#{kind => Kind, id => Id, state => State, recent => Recent, seq => Seq}`:
  # `State` is the kind's portable state; `Recent` is the bounded list (newest first, at most 64)
  # of `{OpId, Reply}` of the last operations that changed the state (`Reply` is the whole
  # `{ok, Result}`), so a retried operation is answered, not applied twice; `Seq` counts
  # acknowledged changes.
  #
  # ## Calls to a job (`gen_server:call(JobPid, {pynode_job_op, OpId, Request})`)
  #
  # `OpId` is a term unique to one client operation (a ref, or `{Node, Counter}`); retries of
  # the same operation reuse it. `Request` is kind-specific: `'Job'`: `{update, Event}`,
  # `finish`; `'Job.Otp'`: `check_results`; every kind: `get_state`. The reply is
  # `{ok, Result}`. Before replying to anything that changed the portable state, the job
  # replicates it (below).
  #
  # One more call reaches a job from another copy of itself (see "Partitions"):
  # `gen_server:call(JobPid, {pynode_job_merge, Portable})` answers `ok` once the receiver has
  # merged `Portable` into its own state and replicated the result, or `{error, Reason}`
  # (`{error, not_this_job}` when `Portable` holds another id or kind).
  #
  # ## Replication (sudden death)
  #
  # - Each job keeps its portable state on `replicas` other hosts (config `replicas`, default 1):
  #   the replica hosts are the next ones after the owner's node in the sorted list of host
  #   nodes (`{p, g, pynode_job_host}` holders) whose value lists the job's kind (a host that
  #   cannot run the kind could not adopt it), skipping the owner, wrapping around (vectors:
  #   `replica_targets`, given that list).
  # - **Replicas follow membership.** Every host looks at the set of host nodes, with the kinds
  #   each one's `{p, g, pynode_job_host}` value lists, on every `nodeup`/`nodedown` and at least
  #   every `replica_check` ms (config, default 100). When the set differs from the one it last
  #   saw (a host joined or left, or a host's kinds changed), it sends each of its jobs
  #   `pynode_job_membership`; a job then recomputes its targets and, when they differ from the
  #   hosts holding its current state, replicates its current state (the same `Seq`) to the
  #   new targets and casts `drop_replica` to the hosts that are no longer targets. So a job
  #   that was alone when it started, was adopted, or has not changed since (a `Job.Otp` with
  #   results) gets its copies as soon as a host joins, and a graceful leave or a death moves
  #   them to the next host; so does a host that withdraws a kind (the application providing it
  #   stopped): the jobs of that kind replicate elsewhere and their owners tell it to drop its
  #   copies, so it is never the named holder of a job it could not adopt. A replica host accepts
  #   a `replicate` with the same `Seq` from the same owner (a refresh).
  # - On every change (start, update, finish's removal, results produced, adoption) the job
  #   calls `{replicate, ...}` on each replica host and only then acknowledges. With no other
  #   host available it acknowledges at once (nothing can be replicated).
  # - A replica host stores `{Id, Kind, Portable, Seq, OwnerPid, Replicas}` (a higher `Seq`
  #   or a new `OwnerPid` replaces an older one) and monitors `OwnerPid`.
  # - When the job finishes, the owner casts `drop_replica` to its replica hosts.
  # - When `OwnerPid` goes `DOWN`:
  #   - reason `noconnection` (its node died or was cut off): the replica holder whose node
  #     comes first in term order among the surviving nodes of `Replicas` adopts the job from
  #     its replica (`adopt` on itself). A holder that is not named in `Replicas` holds a stale
  #     copy (the owner moved its replicas and the drop was lost): it adopts only when no node
  #     of `Replicas` survives (vectors: `adopts`). A holder adopts only when the registry
  #     shows no live holder of the job's name. The other holders keep their replica until the
  #     new owner replicates to them or tells them to drop it. Registration retries while the
  #     registry still lists the dead owner (until the nodedown purge, `adopt_reg_timeout`).
  #   - **Waited time**: before adopting, the holder takes the milliseconds its replica waited
  #     (from when it was stored to now, on the holder's own monotonic clock) off the remaining
  #     durations of the state, through the kind's `elapse` (vectors: `elapse`): the owner's
  #     clocks stopped when it died, the work did not.
  #   - any other reason (finished, handed off, crashed): the replica is dropped, unless a newer
  #     replicate with another `OwnerPid` already replaced it.
  # - A job that was cut off but is alive keeps running; if the adopted copy registers the name
  #   too, the registry's conflict rule keeps one (see "Partitions").
  #
  # ## Partitions (two copies of one job)
  #
  # While the cluster is split, each side may run a copy of the same job (availability first):
  # the owner's side keeps the original, the other side adopts from its replica. Both accept
  # and acknowledge operations. When the sides meet again the registry sees two holders of
  # `{n, g, {pynode_job, Id}}` and keeps the one on the smaller node name; the loser's registry
  # sends the loser the exit signal `{name_conflict, Key, WinnerPid}`. Nothing acknowledged is
  # lost:
  #
  # 1. A job process traps exits. On `{'EXIT', _, {name_conflict, Key, WinnerPid}}` for its own
  #    key, it stops serving, and calls `{pynode_job_merge, Portable}` on `WinnerPid` (its
  #    portable with remaining durations computed now; `call_timeout`). Any other exit signal
  #    acts as it would on a process that does not trap exits (`normal` is ignored, anything
  #    else ends the job with that reason).
  # 2. On `ok`, the loser casts `drop_replica` to its replica hosts and exits `normal`; calls
  #    that reached it unanswered end with that exit and the client retries them at the winner.
  #    On `{error, _}` or an exit (`noproc`, `noconnection`, `timeout`), the loser registers its
  #    name again: when that succeeds it serves again as the job (the winner is gone); when the
  #    registry names another holder it merges into that one. It gives up after `job_timeout`
  #    and ends, logging its state at ERROR.
  # 3. The winner merges: `State = Kind:merge(Mine, Theirs)` (both whole `Portable` maps, the
  #    winner's first); `Recent` = the winner's entries followed by the loser's entries whose
  #    `OpId` the winner's do not hold, at most 64; `Seq = max(SeqW, SeqL) + 1`. It replicates,
  #    then answers `ok`, and logs at WARNING `pynode jobs: job <Id> merged the copy from <Node>
  #    after a partition: <what the kind reports>`. A kind without `merge` keeps the winner's
  #    state and says so in the same WARNING.
  #
  # Kinds' merges (vectors: `merge`):
  #
  # - `'Job'`: the loser's new events are its first `min(length(RecentL), length(StateL) - 1)`
  #   events whose `OpId` (the `OpId` of `RecentL` at the same position: each acknowledged
  #   `update` adds one event and one `Recent` entry) is not among the winner's `Recent`; the
  #   merged state is those events (in the loser's order) followed by the winner's state. So
  #   every event acknowledged on either side is kept, in each side's order, and an operation
  #   retried on both sides (same `OpId`) is kept once. Exact while each side acknowledged at
  #   most 64 operations of the job during the split (the `Recent` bound).
  # - `'Job.Otp'`: the winner's state when it has results; else the loser's when it has;
  #   else the winner's with `work_left_ms` the smaller of the two.
  #
  # ## Run kinds
  #
  # A run kind writes its work as one function, `run(Ctx)` (Python: `async def run(self, ctx)`
  # of a `RunKind`; Elixir: `c:Pynode.Jobs.Run.run/1`). The job process runs it beside itself
  # (an asyncio task; an Elixir process linked to nobody and monitored by the job) and keeps
  # serving calls meanwhile. `Ctx` gives `args` (the `Args` list of `{start, Kind, Id, Args}`),
  # `state` (the last acknowledged checkpoint, `nil` before the first), `attempt`, and:
  #
  # - `checkpoint(S)`: the job makes `S` its checkpoint, adds one to `Seq`, replicates (as for
  #   any change, "Replication"), and only then returns to `run`. A checkpoint asked for by a
  #   run that has been cancelled meanwhile is ignored.
  # - `progress(P)`: a map merged into `progress` at once (read by `status`); it is not
  #   replicated on its own and travels with the next replication.
  #
  # **Portable state** of every run-kind job (the `state` of `Portable`; vectors: `run_*`):
  #
  # ```
  # #{args => Args, checkpoint => nil | Checkpoint, status => Status, progress => Map,
  #   attempts => Int, result => nil | Term, retry_left_ms => nil | Int, ttl_left_ms => nil | Int}
  # ```
  #
  # `Status` is `queued`, `running`, `done`, `failed` or `cancelled` (`queued`: waiting for a
  # slot of its host, see "Load"; `run` does not run). At `start`: `#{args => Args, checkpoint => nil,
  # status => running, progress => #{}, attempts => 1, result => nil, retry_left_ms => nil,
  # ttl_left_ms => nil}` (vectors: `run_initial`), replicated, then acknowledged; `run` then
  # begins.
  #
  # Rules, each a change (replicated before anything is acknowledged):
  #
  # 1. `run` returns `R`: `status => done, result => R, retry_left_ms => nil,
  #    ttl_left_ms => result_ttl` (vectors: `run_done`).
  # 2. `run` raises (Python: an exception; Elixir: a raise, throw or exit of the run process)
  #    with the error term `E` — Python `{python_error, <<"Type">>, <<"Message">>}` as rpc shapes
  #    it, Elixir `{elixir_error, <<"Module">>, <<"Message">>}` for an exception, the exit
  #    reason otherwise: while `attempts < max_attempts`, `retry_left_ms` becomes the backoff
  #    `min(retry_backoff * 2^(attempts - 1), retry_backoff_max)` (vectors: `run_backoff`,
  #    `run_error`); when it runs out, `attempts` grows by one, `retry_left_ms => nil`, and
  #    `run` starts again from the checkpoint (vectors: `run_retry`). At `max_attempts`:
  #    `status => failed, result => E, ttl_left_ms => result_ttl`.
  # 3. `cancel`: a `running` (or `queued`) job becomes `status => cancelled, retry_left_ms =>
  #    nil, ttl_left_ms => result_ttl` and its `run` is cancelled; an ended job is unchanged
  #    (vectors: `run_cancel`).
  # 4. When `ttl_left_ms` runs out (`done`, `failed`, `cancelled`), the job ends as `finish`
  #    does: its name is unregistered and its replicas dropped. Until then its status and
  #    results are readable from every node; after, every request answers `{error, no_such_job}`.
  # 5. **Moves and crashes resume.** A handoff cancels `run` (at its next await, Python; the run
  #    process is killed, Elixir) before the portable state is taken; the adopting host (one
  #    that knows the kind) starts `run` again from `checkpoint`, so checkpointed work is never
  #    done again. The same after an adoption from a replica (`kill -9`): the last replicated
  #    checkpoint. A move is not an attempt: `attempts` is unchanged.
  # 6. `elapse` takes the waited time off `retry_left_ms` and `ttl_left_ms` (vectors:
  #    `run_elapse`); `merge` keeps the winner's state when it has ended, else the loser's when
  #    it has, else the state of the copy with the higher `Seq` (the later checkpoint; the
  #    winner's on a tie) (vectors: `run_merge`).
  #
  # **Requests** (`{pynode_job_op, OpId, Request}`, and the client operations of the same names,
  # `[Id]`, answering the raw reply):
  #
  # | request | reply |
  # | --- | --- |
  # | `status` | `{ok, #{status => Status, progress => Map, attempts => Int, node => Node}}` (`node`: where the job runs now; vectors: `run_status`) |
  # | `results` | `{ok, Result}` when `done`; `{error, {failed, E}}`; `{error, cancelled}`; `{error, not_done}` while `queued` or `running` (vectors: `run_results`) |
  # | `cancel` | `{ok, Status}`: the status after the request (`cancelled`, or `done`/`failed` when it had already ended) |
  # | `get_state` | `{ok, State}`, the portable state above |
  #
  # ## Load
  #
  # A host runs at most `max_jobs` (config, default 1000) run-kind jobs at once. A **slot** is
  # held by each run-kind job of the host whose status is `running` (waiting for a retry
  # included); jobs of other kinds and ended jobs hold none.
  #
  # - **Admission.** When the host creates a run-kind job (`start`, `adopt`, an adoption from a
  #   replica) it decides at once: a job that has not ended takes a free slot (status
  #   `running`; a `queued` state becomes `running`, vectors: `run_admit`) or, with none free,
  #   waits in the host's queue, first in first out (status `queued`, vectors: `run_queue`). An
  #   ended job neither takes a slot nor waits. The change is the job's own (`Seq` + 1,
  #   replicated before the job acknowledges its start or adoption).
  # - When a slot frees (a job ends its run, is cancelled, ends, moves or dies), the oldest
  #   queued job takes it: `queued` becomes `running` (replicated), then `run` starts. A queued
  #   job that is cancelled leaves the queue (rule 3 of "Run kinds"). While a job is queued its
  #   durations (`retry_left_ms`) stand still: no timer runs until it is admitted (the waited
  #   time of an adoption is still taken off, rule 6).
  # - **Load** of a host = `Running + Queued`: the number of slots held plus the number of jobs
  #   queued. Each host publishes `{Running, Queued, MaxJobs}` as the value of
  #   `{p, g, pynode_job_load}` (`MaxJobs`: an integer, or `infinity`) at start and then, when
  #   it changed, at most every `replica_check` ms, so a burst of jobs costs no registry write
  #   per job. A host that publishes no load counts as `{0, 0, infinity}`.
  # - **Placement** (`place`, vectors: `place`): given the candidate hosts (the nodes whose
  #   `{p, g, pynode_job_host}` value lists the kind), each with its load `{Node, Running,
  #   Queued, MaxJobs}`, and the placer's counter `N`: the hosts with room (`Running + Queued <
  #   MaxJobs`) if any, else all; among those, the ones of the smallest `Running + Queued`,
  #   sorted by node in term order; the one at position `N rem length` (0-based). No candidate:
  #   `none`. Equal loads (a burst between two publications) thus fall back to round-robin. A
  #   placer that places several jobs between two publications (a handoff) adds one to its own
  #   copy of the target's `Queued` after each.
  # - **Overflow.** At every membership look (at least every `replica_check` ms) a host with
  #   queued jobs places its oldest queued jobs on the other hosts that know their kind and have
  #   room by the published loads (`place` with only the hosts that have room; one more to the
  #   target's `Queued` after each, so no more jobs are sent to a host than its room), and moves
  #   each there as a handoff does (`{pynode_job_handoff, Target}`, "Graceful shutdown"); the
  #   target admits it by its own slots. A failed move leaves the job queued where it was.
  # - On a graceful stop the queue moves with the running jobs (every job is handed off).
  #
  # ## Configuration
  #
  # Keys of the `pynode` application environment (`sys.config`), the same in both
  # languages, with these defaults (vectors: `defaults`):
  #
  # | key | default | meaning |
  # | --- | --- | --- |
  # | `work_ms` | 2000 | `Job.Otp`'s simulated work |
  # | `result_ttl` | 600000 | how long `Job.Otp` and run-kind results stay readable |
  # | `replicas` | 1 | other hosts holding each job's state (0: none) |
  # | `replica_check` | 100 | a host looks at the set of hosts at least this often (ms) |
  # | `job_timeout` | 15000 | a client operation gives up after this long |
  # | `missing_grace` | 3000 | a job name missing this long means "no such job" |
  # | `call_timeout` | 5000 | one attempt of a call to a job or a host |
  # | `adopt_timeout` | 10000 | one `adopt` call during a handoff |
  # | `adopt_reg_timeout` | 5000 | an adopting job retries its name while a dead owner still holds it |
  # | `handoff_timeout` | 60000 | the whole handoff of one node at shutdown |
  # | `handoff_concurrency` | 16 | job handoffs in flight at once at shutdown |
  # | `host_jobs` | `true` | `false`: this node runs no job host (a client only) |
  # | `job_kinds` | `all` | the kinds this node's host runs: `all` (every kind the node knows) or a list of kind atoms (`'Job'`, `'Job.Otp'`; Elixir also accepts the modules `Job`, `Job.Otp`) |
  # | `max_attempts` | 3 | runs of a run kind's `run` before the job fails |
  # | `retry_backoff` | 1000 | the wait (ms) after the first failed run, doubling after each |
  # | `retry_backoff_max` | 30000 | the longest wait between two runs |
  # | `max_jobs` | 1000 | run-kind jobs a host runs at once; more wait in its queue (`infinity`: no limit) |
  #
  # ## Graceful shutdown (handoff)
  #
  # When a host is asked to stop (`Application.stop(:pynode)`, `:init.stop()`,
  # SIGTERM/Ctrl-C to `python -m pynode`):
  #
  # 1. It unregisters `{p, g, pynode_job_host}` and answers `{error, stopping}` to `start`.
  # 2. For each job it runs, at most `handoff_concurrency` (config, default 16) at a time: pick a
  #    target host (`place` over the other hosts that know the kind, by their published loads,
  #    the host's own counter as `N`, "Load"); tell the job
  #    `{pynode_job_handoff, Target}`. The job stops serving, unregisters its name, calls
  #    `{adopt, Kind, Id, Portable}` on the target (with remaining durations computed now), then
  #    exits `normal`. Calls that reached the old process and were not answered end with an exit,
  #    and the client retries them at the new owner. A failed handoff is tried at the next target.
  # 3. Only then does the host (and the node) stop. With no other host, jobs die with the node.
  #
  # A host may also stop running some kinds while it keeps running (on the BEAM: the application
  # that provides them is stopped, `Application.stop(:available_processes)` for the seed's
  # kinds; `Pynode.Jobs.Kinds`). It registers `{p, g, pynode_job_host}` again with the shorter
  # list first (the value of a host's property can change at any time; clients and handoffs read
  # it when they place a job), answers `{error, unknown_kind}` to `start` and `adopt` of those
  # kinds, and hands their jobs off as in step 2; a job that no other host takes ends. Other
  # kinds, replicas and the load are not affected. A kind provided later is advertised the same
  # way (the list grows).
  #
  # ## Client
  #
  # The client API (`Job.start/1`, `Job.update/2`, `Job.finish/1`, `Job.Otp.start/1`,
  # `Job.Otp.check_results/1`, and the Python `pynode.jobs` functions of the same names) runs
  # on any node:
  #
  # - On a node with a running registry, it reads the registry locally: `start` picks a host by
  #   `place` over the hosts that know the kind (their published loads, a counter of the client
  #   node as `N`, "Load"); a host answering `{error, stopping}`, or `{error, unknown_kind}` (it
  #   withdrew the kind after the client's registry last heard of it), is left out and `start`
  #   tries another (`unknown_kind` is the answer only when no host lists the kind for
  #   `missing_grace`); operations find the job with
  #   `where({n, g, {pynode_job, Id}})`.
  # - On a node without one (only the code loaded, like the seed's `c1`), it sends
  #   `{client, Op, Args}` to `pynode_jobs` on a connected node that runs a host (visible and
  #   hidden nodes) and returns what that node answers.
  # - Retries: while the job's name is missing, or the call ends with an exit (`noproc`,
  #   `normal`, `shutdown`, `noconnection`, `nodedown`, `killed`, `timeout`,
  #   `{name_conflict, ...}`, `{nodedown, Node}`), it retries with the same `OpId` (backoff
  #   10 ms doubling to 200 ms) until `job_timeout` (default 15 s); any other exit reason is
  #   the answer (vectors: `retryable`). A name missing for longer than
  #   `missing_grace` (default 3 s) means the job does not exist: `start`-less operations then
  #   answer `{error, no_such_job}` (`Job.Otp.check_results/1` answers `nil`).
  # --- END docs/JOBS_PROTOCOL.md ---
  #
  # Theory of operation (this module)
  #
  # The host is started after the registry in the application's :rest_for_one tree, so it
  # stops before the registry does: the handoff needs the registry. It traps exits, so the
  # supervisor's shutdown runs terminate/2 (child spec `shutdown` = handoff_timeout + 5 s).
  # With `host_jobs: false` init/1 answers :ignore: no host on this node (a client only).
  # The kinds it runs come from `job_kinds` (Pynode.Jobs.host_kinds/0).
  #
  # The host never blocks on another node. `start` and `adopt` start a job process
  # (Pynode.Jobs.JobServer, linked) whose handle_continue registers, replicates and answers
  # the caller itself; `client` runs the client operation in a process of its own that
  # answers the caller. So two hosts replicating to each other cannot deadlock.
  #
  # State:
  #   kinds        %{kind_atom => module}               the kinds this host runs
  #   jobs         %{pid => {id, kind, ready?}}         job processes (linked)
  #   clients      %{pid => true}                       running client operations (monitored)
  #   replicas     %{id => %Replica{}}                  replica store (a map: keys compare exactly)
  #   owner_mons   %{owner_pid => ref}, owner_refs %{ref => owner_pid}  one monitor per owner
  #   by_owner     %{owner_pid => MapSet of ids}        the replicas held per owner
  #   orphans      MapSet of ids whose owner went DOWN with noconnection, not adopted yet
  #   members      MapSet of {host pid, kinds} ({p, g, pynode_job_host} holders) last seen
  #
  # Replica store. `replicate` stores when there is no replica, the owner is new, or Seq is
  # not lower (an equal Seq is the same change sent again). Owner DOWN `noconnection`: the
  # replica becomes an orphan; orphans are reviewed at once and on every nodedown: the
  # holder whose node comes first in term order among the surviving nodes of Replicas
  # adopts it, unless a live process already holds the job's name (a holder that Replicas
  # does not name has a stale copy and adopts only if no named holder survives).
  # Any other DOWN reason drops the replica (a newer replicate from another owner has
  # already moved it to that owner's monitor). On adoption from a replica, the time the
  # replica waited here is taken off its remaining durations (measured on this node's
  # monotonic clock, so no clock is compared across nodes). The rules are adopts?/3 and
  # elapse/3 (vectors: adopts, elapse).
  #
  # Membership. The host reads the holders of {p, g, pynode_job_host} on every nodeup and
  # nodedown and every replica_check ms; when the set of host pids differs from the one it
  # last saw (a host joined or left, or a node's host restarted), it sends each of its jobs
  # `pynode_job_membership`, and each job moves its replicas to its new targets
  # (Pynode.Jobs.JobServer). The registry may learn of a new host a moment after the
  # nodeup: the periodic look catches it.
  #
  # Shutdown (terminate/2): unreg {p, g, pynode_job_host}; then hand the jobs off, at most
  # handoff_concurrency at a time: for each, pick a target host (round-robin over the other
  # hosts whose kinds include the job's), monitor the job, send it
  # {pynode_job_handoff, Target}, and count it in flight until it exits (moved) or has
  # reported {pynode_job_handoff_failed, Pid, Target} for every target (each failure sends
  # it to the next one). A freed slot takes the next job. Past handoff_timeout the jobs
  # still in flight or not started are given up (they die with the node). While waiting,
  # the host keeps answering calls: start/adopt/replicate -> {error, stopping}, list -> the
  # jobs, replicas -> the replica store; client calls are left unanswered (the caller gets
  # `shutdown` when the host exits and retries elsewhere, having changed nothing). Client
  # operations already running are given the rest of the handoff time to finish, then the
  # host returns.
  #
  # Kinds (Pynode.Jobs.Kinds): the host runs the kinds its node's applications provide,
  # filtered by job_kinds. A provider tells it {provide, Pid} when it starts and
  # {withdraw, Pid} when it stops; the host monitors each one (a provider killed without
  # withdrawing is withdrawn on its DOWN) and finds them again in :persistent_term when it
  # restarts. On a change it registers {p, g, pynode_job_host} again with the new list, first;
  # a withdrawal then hands the jobs of the kinds no longer run off as the shutdown does
  # (same targets, concurrency and deadline) while the host keeps running: calls are served
  # meanwhile (start/adopt of a withdrawn kind answer {error, unknown_kind}), and a job that
  # could not be handed off is stopped (exit shutdown). The provider's withdraw call returns
  # after that, so its application stops only once its jobs have moved.

  use GenServer
  require Logger

  alias Pynode.Jobs
  alias Pynode.Jobs.{Client, JobServer}
  alias Pynode.Registry

  @name :pynode_jobs

  defmodule Replica do
    @moduledoc false
    defstruct [:id, :kind, :portable, :seq, :owner, :replicas, :stored_at]
  end

  defstruct kinds: %{},
            jobs: %{},
            clients: %{},
            replicas: %{},
            owner_mons: %{},
            owner_refs: %{},
            by_owner: %{},
            orphans: MapSet.new(),
            members: MapSet.new(),
            stopping: false,
            rr: 0,
            max_jobs: :infinity,
            slots: MapSet.new(),
            queue: [],
            moving: %{},
            published: nil,
            placed: %{},
            providers: %{}

  def name, do: @name

  def child_spec(opts) do
    %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      shutdown: Jobs.config(:handoff_timeout) + 5_000
    }
  end

  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: @name)

  @doc false
  # From a Pynode.Jobs.Kinds process that has put its kinds: run them too. Without a host
  # (host_jobs: false, or it is restarting: its init reads them), there is nothing to tell.
  def provide(provider) do
    GenServer.call(@name, {:provide, provider}, Jobs.config(:call_timeout))
  catch
    :exit, _ -> :ok
  end

  @doc false
  # From a Pynode.Jobs.Kinds process that has erased its kinds: stop running them, hand
  # their jobs off, and return when that is done (or its time is up).
  def withdraw(provider) do
    GenServer.call(@name, {:withdraw, provider}, Jobs.config(:handoff_timeout) + 2_000)
  catch
    :exit, _ -> :ok
  end

  ## Server

  @impl true
  def init(_opts) do
    if Jobs.config(:host_jobs) == false do
      :ignore
    else
      Process.flag(:trap_exit, true)
      providers = Map.new(Pynode.Jobs.Kinds.providers(), fn {p, _} -> {p, Process.monitor(p)} end)
      kinds = Jobs.host_kinds()
      :ok = :net_kernel.monitor_nodes(true, node_type: :all)

      case Registry.reg(Jobs.host_key(), kinds |> Map.keys() |> Enum.sort()) do
        :ok ->
          schedule_check()

          max_jobs =
            if is_integer(Jobs.config(:max_jobs)), do: Jobs.config(:max_jobs), else: :infinity

          s = %__MODULE__{
            kinds: kinds,
            members: host_members(),
            max_jobs: max_jobs,
            providers: providers
          }

          {:ok, publish_load(s)}

        other ->
          {:stop, {:cannot_register_host, other}}
      end
    end
  end

  @impl true
  def handle_call(:list, _from, s), do: {:reply, list(s), s}

  def handle_call({:provide, pid}, _from, s) when is_pid(pid) do
    s =
      if is_map_key(s.providers, pid),
        do: s,
        else: %{s | providers: Map.put(s.providers, pid, Process.monitor(pid))}

    {s, _removed} = refresh_kinds(s)
    {:reply, :ok, s}
  end

  def handle_call({:withdraw, pid}, _from, s) when is_pid(pid) do
    {:reply, :ok, withdraw_provider(s, pid)}
  end

  def handle_call(:replicas, _from, s), do: {:reply, replica_list(s), s}

  def handle_call({:start, _kind, _id, _args}, _from, %{stopping: true} = s),
    do: {:reply, {:error, :stopping}, s}

  def handle_call({:start, kind, id, args}, from, s) do
    case s.kinds do
      %{^kind => mod} when is_atom(kind) ->
        args = if is_list(args), do: args, else: [args]
        {:noreply, spawn_job(s, mod, id, {:start, args, from})}

      _ ->
        {:reply, {:error, :unknown_kind}, s}
    end
  end

  def handle_call({:adopt, kind, id, portable}, {caller, _} = from, s) do
    cond do
      s.stopping ->
        {:reply, {:error, :stopping}, s}

      not (is_atom(kind) and is_map_key(s.kinds, kind)) ->
        {:reply, {:error, :unknown_kind}, s}

      not (is_map(portable) and is_map_key(portable, :state)) ->
        {:reply, {:error, :bad_portable}, s}

      true ->
        s = forget_replica(s, id)
        exclude = if node(caller) != node(), do: node(caller)
        mode = {:adopt, portable, from, [exclude: exclude]}
        {:noreply, spawn_job(s, Map.fetch!(s.kinds, kind), id, mode)}
    end
  end

  def handle_call({:replicate, id, kind, portable, seq, owner, replicas}, _from, s)
      when is_pid(owner) and is_integer(seq) and is_list(replicas) do
    {:reply, :ok, store_replica(s, id, kind, portable, seq, owner, replicas)}
  end

  def handle_call({:client, op, args}, from, s) do
    {pid, _ref} =
      spawn_monitor(fn ->
        args = if is_list(args), do: args, else: [args]

        result =
          try do
            Client.local(op, args)
          rescue
            e -> {:error, {:exception, Exception.message(e)}}
          end

        GenServer.reply(from, result)
      end)

    {:noreply, %{s | clients: Map.put(s.clients, pid, true)}}
  end

  def handle_call(request, _from, s), do: {:reply, {:error, {:unknown_call, request}}, s}

  @impl true
  def handle_cast({:drop_replica, id, owner}, s) do
    case s.replicas do
      %{^id => %Replica{owner: ^owner}} -> {:noreply, forget_replica(s, id)}
      _ -> {:noreply, s}
    end
  end

  def handle_cast(_msg, s), do: {:noreply, s}

  @impl true
  def handle_info({:pynode_job_ready, pid}, s) do
    case s.jobs do
      %{^pid => {id, kind, _}} -> {:noreply, %{s | jobs: Map.put(s.jobs, pid, {id, kind, true})}}
      _ -> {:noreply, s}
    end
  end

  def handle_info({:EXIT, pid, _reason}, s) when is_map_key(s.jobs, pid),
    do: {:noreply, leave(%{s | jobs: Map.delete(s.jobs, pid)}, pid)}

  def handle_info({:pynode_job_load, pid, status}, s) do
    if status in [:done, :failed, :cancelled], do: {:noreply, leave(s, pid)}, else: {:noreply, s}
  end

  def handle_info({:EXIT, _pid, _reason}, s), do: {:noreply, s}

  def handle_info({:DOWN, _ref, :process, pid, _reason}, s) when is_map_key(s.clients, pid),
    do: {:noreply, %{s | clients: Map.delete(s.clients, pid)}}

  def handle_info({:DOWN, _ref, :process, pid, _reason}, s) when is_map_key(s.providers, pid) do
    Pynode.Jobs.Kinds.forget(pid)
    {:noreply, withdraw_provider(s, pid)}
  end

  def handle_info({:DOWN, ref, :process, owner, reason}, s) when is_map_key(s.owner_refs, ref) do
    s = %{
      s
      | owner_refs: Map.delete(s.owner_refs, ref),
        owner_mons: Map.delete(s.owner_mons, owner)
    }

    ids = s.by_owner |> Map.get(owner, MapSet.new()) |> MapSet.to_list()

    s =
      if reason == :noconnection do
        %{s | orphans: Enum.into(ids, s.orphans)}
      else
        Enum.reduce(ids, s, &forget_replica(&2, &1))
      end

    {:noreply, review_orphans(s)}
  end

  def handle_info({:nodedown, _node, _info}, s),
    do: {:noreply, s |> review_orphans() |> check_members()}

  def handle_info({:nodeup, _node, _info}, s), do: {:noreply, check_members(s)}

  def handle_info(:pynode_replica_check, s) do
    schedule_check()
    {:noreply, s |> check_members() |> overflow() |> publish_load()}
  end

  def handle_info(_msg, s), do: {:noreply, s}

  ## Kinds: provided by the applications (Pynode.Jobs.Kinds), withdrawn when they stop

  # The kinds run now, from the providers and job_kinds; a change is advertised (the host
  # property's value) before anything else. Returns the kind atoms no longer run.
  defp refresh_kinds(%{stopping: true} = s), do: {s, []}

  defp refresh_kinds(s) do
    kinds = Jobs.host_kinds()
    old = s.kinds |> Map.keys() |> Enum.sort()
    new = kinds |> Map.keys() |> Enum.sort()

    if old != new do
      case Registry.reg(Jobs.host_key(), new) do
        :ok ->
          :ok

        other ->
          Logger.warning(
            "pynode jobs: could not advertise the kinds #{inspect(new)}: #{inspect(other)}"
          )
      end
    end

    removed = for {kind, mod} <- s.kinds, Map.get(kinds, kind) != mod, do: kind
    {%{s | kinds: kinds}, removed}
  end

  defp withdraw_provider(s, pid) do
    s =
      case Map.pop(s.providers, pid) do
        {nil, _} ->
          s

        {ref, providers} ->
          Process.demonitor(ref, [:flush])
          %{s | providers: providers}
      end

    case refresh_kinds(s) do
      {s, []} ->
        s

      {s, removed} ->
        pids = for {pid, {_id, kind, _}} <- s.jobs, kind in removed, do: pid

        if pids != [] do
          Logger.info(
            "pynode jobs: kinds #{inspect(removed)} withdrawn; handing #{length(pids)} job(s) off"
          )
        end

        deadline = System.monotonic_time(:millisecond) + Jobs.config(:handoff_timeout)
        limit = max(Jobs.config(:handoff_concurrency), 1)
        s = hand_off_all(%{s | placed: %{}}, pids, %{}, limit, deadline)

        # what could not move ends here: its kind is gone from this node
        for pid <- pids, is_map_key(s.jobs, pid), do: Process.exit(pid, :shutdown)
        s
    end
  end

  ## Membership: replicas follow the set of hosts

  defp schedule_check do
    ms =
      case Jobs.config(:replica_check) do
        ms when is_integer(ms) and ms > 0 -> ms
        _ -> 500
      end

    Process.send_after(self(), :pynode_replica_check, ms)
  end

  # The host processes with the kinds each advertises: a host that withdraws a kind (its
  # application stopped) is a change of membership for the jobs of that kind.
  defp host_members, do: MapSet.new(Registry.lookup_values(Jobs.host_key()))

  defp check_members(s) do
    members = host_members()

    if MapSet.equal?(members, s.members) do
      s
    else
      for pid <- Map.keys(s.jobs), do: send(pid, :pynode_job_membership)
      %{s | members: members}
    end
  end

  ## Load (docs/JOBS_PROTOCOL.md, "Load")

  @doc false
  # {running, queued, max_jobs} of this host.
  def load(s), do: {MapSet.size(s.slots), length(s.queue), s.max_jobs}

  defp free_slot?(s), do: MapSet.size(s.slots) < s.max_jobs

  # true: a slot; false: the queue; nil: neither (not a run kind, or an ended state).
  defp admission(s, mod, mode) do
    cond do
      not Pynode.Jobs.Run.run_kind?(mod) ->
        nil

      match?({:start, _, _}, mode) ->
        free_slot?(s)

      match?(
        {:adopt, %{state: %{status: st}}, _, _} when st in [:done, :failed, :cancelled],
        mode
      ) ->
        nil

      match?({:adopt, %{state: %{}}, _, _}, mode) ->
        free_slot?(s)

      true ->
        nil
    end
  end

  # `pid` holds no slot and waits no more: the oldest queued jobs take the freed slots.
  defp leave(s, pid) do
    s = %{
      s
      | slots: MapSet.delete(s.slots, pid),
        queue: List.delete(s.queue, pid),
        moving: Map.delete(s.moving, pid)
    }

    promote(s)
  end

  defp promote(s) do
    with true <- s.queue != [] and free_slot?(s),
         next when is_pid(next) <- Enum.find(s.queue, &(not is_map_key(s.moving, &1))) do
      send(next, :pynode_job_admit)
      promote(%{s | queue: List.delete(s.queue, next), slots: MapSet.put(s.slots, next)})
    else
      _ -> s
    end
  end

  # {p, g, pynode_job_load} when it changed (at most once per look).
  defp publish_load(s) do
    value = load(s)

    if value == s.published do
      s
    else
      case Registry.reg(Jobs.load_key(), value) do
        :ok -> :ok
        other -> Logger.warning("pynode jobs: could not publish the job load: #{inspect(other)}")
      end

      %{s | published: value}
    end
  end

  # [{node, running, queued, max_jobs}] of the other hosts that know `kind` (queued plus
  # what this host placed there since it last looked).
  defp host_loads(s, kind) do
    loads = Map.new(Registry.lookup_values(Jobs.load_key()), fn {p, v} -> {node(p), v} end)

    for {hpid, kinds} <- Registry.lookup_values(Jobs.host_key()),
        node(hpid) != node(),
        is_list(kinds) and kind in kinds,
        uniq: true do
      n = node(hpid)
      {r, q, m} = Jobs.load_of(Map.get(loads, n))
      {n, r, q + Map.get(s.placed, n, 0), m}
    end
  end

  # Overflow: queued jobs go to the other hosts with room, at most their room each.
  defp overflow(%{stopping: true} = s), do: s
  defp overflow(%{queue: []} = s), do: %{s | placed: %{}}

  defp overflow(s) do
    t = System.monotonic_time(:millisecond)
    again = Jobs.config(:adopt_timeout)

    Enum.reduce(s.queue, %{s | placed: %{}}, fn pid, s ->
      sent = Map.get(s.moving, pid)

      case s.jobs do
        %{^pid => {id, kind, true}} when sent == nil or t - sent >= again ->
          room = for {_, r, q, m} = c <- host_loads(s, kind), r + q < m, do: c

          case Jobs.place(room, s.rr) do
            :none ->
              s

            target ->
              Logger.info(
                "pynode jobs: job #{inspect(id)} waits here; moving it to #{target}, which has room"
              )

              send(pid, {:pynode_job_handoff, target})

              %{
                s
                | rr: s.rr + 1,
                  placed: Map.update(s.placed, target, 1, &(&1 + 1)),
                  moving: Map.put(s.moving, pid, t)
              }
          end

        _ ->
          s
      end
    end)
  end

  ## Jobs

  defp spawn_job(s, mod, id, mode) do
    admitted = admission(s, mod, mode)
    {:ok, pid} = JobServer.start_link(mod, id, mode, admitted)
    s = %{s | jobs: Map.put(s.jobs, pid, {id, mod.kind(), false})}

    case admitted do
      true -> %{s | slots: MapSet.put(s.slots, pid)}
      false -> %{s | queue: s.queue ++ [pid]}
      nil -> s
    end
  end

  defp list(s), do: for({pid, {id, kind, true}} <- s.jobs, do: {id, kind, pid})

  defp replica_list(s),
    do: for({id, %Replica{} = r} <- s.replicas, do: {id, r.kind, r.owner, r.seq})

  ## Replica store

  defp store_replica(s, id, kind, portable, seq, owner, replicas) do
    case s.replicas do
      %{^id => %Replica{owner: ^owner, seq: cur}} when seq < cur ->
        s

      current ->
        old_owner =
          case current do
            %{^id => %Replica{owner: o}} -> o
            _ -> nil
          end

        rep = %Replica{
          id: id,
          kind: kind,
          portable: portable,
          seq: seq,
          owner: owner,
          replicas: replicas,
          stored_at: System.monotonic_time(:millisecond)
        }

        s = %{s | replicas: Map.put(s.replicas, id, rep), orphans: MapSet.delete(s.orphans, id)}
        s = if old_owner && old_owner != owner, do: unindex(s, old_owner, id), else: s
        s = %{s | by_owner: Map.update(s.by_owner, owner, MapSet.new([id]), &MapSet.put(&1, id))}

        s =
          if is_map_key(s.owner_mons, owner) do
            s
          else
            ref = Process.monitor(owner)

            %{
              s
              | owner_mons: Map.put(s.owner_mons, owner, ref),
                owner_refs: Map.put(s.owner_refs, ref, owner)
            }
          end

        if old_owner && old_owner != owner, do: maybe_unmonitor(s, old_owner), else: s
    end
  end

  defp forget_replica(s, id) do
    case Map.pop(s.replicas, id) do
      {nil, _} ->
        s

      {rep, replicas} ->
        s = %{s | replicas: replicas, orphans: MapSet.delete(s.orphans, id)}
        maybe_unmonitor(unindex(s, rep.owner, id), rep.owner)
    end
  end

  # by_owner: owner pid => the ids of its replicas here, so that an owner's DOWN and a
  # forget do not scan the whole replica store.
  defp unindex(s, owner, id) do
    case s.by_owner do
      %{^owner => ids} ->
        ids = MapSet.delete(ids, id)

        if MapSet.size(ids) == 0,
          do: %{s | by_owner: Map.delete(s.by_owner, owner)},
          else: %{s | by_owner: Map.put(s.by_owner, owner, ids)}

      _ ->
        s
    end
  end

  defp maybe_unmonitor(s, owner) do
    if is_map_key(s.by_owner, owner) do
      s
    else
      case Map.pop(s.owner_mons, owner) do
        {nil, _} ->
          s

        {ref, mons} ->
          Process.demonitor(ref, [:flush])
          %{s | owner_mons: mons, owner_refs: Map.delete(s.owner_refs, ref)}
      end
    end
  end

  defp review_orphans(%{stopping: true} = s), do: s

  defp review_orphans(s) do
    alive = Node.list(:connected)

    Enum.reduce(s.orphans, s, fn id, s ->
      rep = Map.fetch!(s.replicas, id)
      holder = Registry.where(Jobs.key(id))

      live_holder? =
        is_pid(holder) and holder != rep.owner and
          (node(holder) == node() or node(holder) in alive)

      first? = adopts?(node(), rep.replicas, alive)

      cond do
        not first? ->
          s

        live_holder? ->
          s

        true ->
          s = forget_replica(s, id)

          case {s.kinds, rep.portable} do
            {%{} = kinds, %{} = portable} when is_map_key(kinds, rep.kind) ->
              mod = Map.fetch!(kinds, rep.kind)
              waited = System.monotonic_time(:millisecond) - rep.stored_at
              portable = Map.update(portable, :state, nil, &elapse(mod, &1, waited))

              Logger.info(
                "pynode jobs: owner #{inspect(rep.owner)} of job #{inspect(id)} is gone; " <>
                  "adopting it from the replica (seq #{rep.seq})"
              )

              opts = [old_owner: rep.owner, old_replicas: rep.replicas]
              spawn_job(s, mod, id, {:adopt, portable, nil, opts})

            _ ->
              Logger.error(
                "pynode jobs: cannot adopt job #{inspect(id)} of kind #{inspect(rep.kind)}"
              )

              s
          end
      end
    end)
  end

  @doc false
  # Whether the replica holder `me` adopts an orphan whose owner listed `replicas` as its
  # replica hosts, `alive` being the nodes `me` is connected to (vectors: adopts). The first
  # surviving holder named in Replicas adopts; a holder that is not named there keeps a
  # stale copy (the owner moved its replicas and the drop was lost) and adopts only when no
  # named holder survives.
  def adopts?(me, replicas, alive) do
    survivors = for n <- replicas, n == me or n in alive, do: n
    if me in replicas, do: Enum.min(survivors) == me, else: survivors == []
  end

  @doc false
  # Waited time (vectors: elapse): `ms` taken off the remaining durations of `state` through
  # the kind's elapse/2; a kind without it (or whose elapse fails) keeps the state as it is.
  def elapse(mod, state, ms) do
    if Code.ensure_loaded?(mod) and function_exported?(mod, :elapse, 2) do
      try do
        mod.elapse(state, max(ms, 0))
      rescue
        _ -> state
      end
    else
      state
    end
  end

  ## Shutdown: hand every job off

  @impl true
  def terminate(reason, s) do
    s = %{s | stopping: true, placed: %{}}
    deadline = System.monotonic_time(:millisecond) + Jobs.config(:handoff_timeout)
    limit = max(Jobs.config(:handoff_concurrency), 1)

    try do
      Registry.unreg(Jobs.host_key())
      Registry.unreg(Jobs.load_key())
      s = hand_off_all(s, Map.keys(s.jobs), %{}, limit, deadline)
      wait_clients(s, deadline)
    catch
      # The registry is gone (it crashed, and :rest_for_one is restarting us): no handoff
      # is possible without it; the jobs die with this host.
      :exit, why ->
        Logger.error(
          "pynode jobs: host stopping (#{inspect(reason)}) without handoff: #{inspect(why)}"
        )
    end

    :ok
  end

  # `queue`: the jobs not handed off yet; `inflight`: %{pid => {id, ref, targets_left}}.
  defp hand_off_all(s, queue, inflight, limit, deadline) do
    {s, queue, inflight} = fill(s, queue, inflight, limit, deadline)

    if map_size(inflight) == 0 do
      if queue != [] do
        Logger.warning(
          "pynode jobs: handoff time is up; #{length(queue)} job(s) die with the node"
        )
      end

      s
    else
      {s, inflight} = await_handoff(s, inflight, deadline)
      hand_off_all(s, queue, inflight, limit, deadline)
    end
  end

  # Starts handoffs until `limit` are in flight, the queue is empty or the time is up.
  defp fill(s, [pid | queue] = all, inflight, limit, deadline) do
    cond do
      map_size(inflight) >= limit or System.monotonic_time(:millisecond) >= deadline ->
        {s, all, inflight}

      true ->
        {s, inflight} = start_handoff(s, pid, inflight)
        fill(s, queue, inflight, limit, deadline)
    end
  end

  defp fill(s, [], inflight, _limit, _deadline), do: {s, [], inflight}

  defp start_handoff(s, pid, inflight) do
    case s.jobs do
      %{^pid => {id, kind, _}} ->
        # the least-loaded target (place, counting what this handoff sent), then the others
        cands = host_loads(s, kind)

        case Jobs.place(cands, s.rr) do
          :none ->
            Logger.warning(
              "pynode jobs: no other host runs #{kind}; job #{inspect(id)} dies with the node"
            )

            {s, inflight}

          target ->
            rest = for({n, _, _, _} <- cands, n != target, do: n) |> Enum.sort()
            ref = Process.monitor(pid)
            send(pid, {:pynode_job_handoff, target})
            placed = Map.update(s.placed, target, 1, &(&1 + 1))
            {%{s | rr: s.rr + 1, placed: placed}, Map.put(inflight, pid, {id, ref, rest})}
        end

      _ ->
        {s, inflight}
    end
  end

  defp give_up(inflight, pid) do
    {{id, ref, _}, inflight} = Map.pop(inflight, pid)
    Process.demonitor(ref, [:flush])

    Logger.warning(
      "pynode jobs: job #{inspect(id)} could not be handed off; it dies with the node"
    )

    inflight
  end

  # Waits for one job in flight to exit or report a failed handoff, answering calls
  # meanwhile; at the deadline every job still in flight is given up.
  defp await_handoff(s, inflight, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:DOWN, ref, :process, pid, _reason} when is_map_key(inflight, pid) ->
        case inflight do
          %{^pid => {_, ^ref, _}} ->
            s = %{s | jobs: Map.delete(s.jobs, pid)}
            # a withdrawal (the host keeps running) frees the job's slot
            s = if s.stopping, do: s, else: leave(s, pid)
            {s, Map.delete(inflight, pid)}

          _ ->
            await_handoff(s, inflight, deadline)
        end

      {:pynode_job_handoff_failed, pid, _target} when is_map_key(inflight, pid) ->
        case inflight do
          %{^pid => {id, ref, [next | rest]}} ->
            send(pid, {:pynode_job_handoff, next})
            {s, Map.put(inflight, pid, {id, ref, rest})}

          _ ->
            {s, give_up(inflight, pid)}
        end

      # a withdrawal of kinds while the host keeps running: every call is served as usual
      {:"$gen_call", from, request} when not s.stopping ->
        s =
          case handle_call(request, from, s) do
            {:reply, reply, s} ->
              GenServer.reply(from, reply)
              s

            {:noreply, s} ->
              s
          end

        await_handoff(s, inflight, deadline)

      {:"$gen_call", from, request}
      when is_tuple(request) and tuple_size(request) > 0 and
             elem(request, 0) in [:start, :adopt, :replicate] ->
        GenServer.reply(from, {:error, :stopping})
        await_handoff(s, inflight, deadline)

      {:"$gen_call", from, :list} ->
        GenServer.reply(from, list(s))
        await_handoff(s, inflight, deadline)

      {:"$gen_call", from, :replicas} ->
        GenServer.reply(from, replica_list(s))
        await_handoff(s, inflight, deadline)

      {:DOWN, _, :process, cpid, _} when is_map_key(s.clients, cpid) ->
        await_handoff(%{s | clients: Map.delete(s.clients, cpid)}, inflight, deadline)

      # a job's exit while a withdrawal waits (a job the withdrawal does not move)
      {:EXIT, pid, _reason}
      when not s.stopping and is_map_key(s.jobs, pid) and
             not is_map_key(inflight, pid) ->
        s = leave(%{s | jobs: Map.delete(s.jobs, pid)}, pid)
        await_handoff(s, inflight, deadline)
    after
      left -> {s, Enum.reduce(Map.keys(inflight), inflight, &give_up(&2, &1))}
    end
  end

  defp wait_clients(s, deadline) do
    if map_size(s.clients) > 0 do
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:DOWN, _, :process, cpid, _} when is_map_key(s.clients, cpid) ->
          wait_clients(%{s | clients: Map.delete(s.clients, cpid)}, deadline)
      after
        left -> :ok
      end
    end
  end
end
