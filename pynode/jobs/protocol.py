r"""The job protocol's vocabulary and its pure rules: atoms, registry keys, the configuration
defaults, and the placement, adoption, retry and merge rules that both languages check
against the shared vectors (docs/vectors/jobs.terms). No processes and no I/O here.

Owns: the atoms and message tags, :data:`HOST_NAME`, :data:`HOST_KEY`, :func:`job_key`,
:data:`DEFAULTS` and config access (:func:`cfg`, :func:`secs`), :func:`wire`,
:func:`replica_targets`, :func:`adopts`, :func:`retryable`, :func:`merge_recent`,
:func:`results_binary`. May import: :mod:`erl_interop` and :mod:`pynode.jobs.format`.

The protocol is docs/JOBS_PROTOCOL.md, repeated verbatim between the markers below
(tests/test_jobs_vectors.py fails when the two drift apart; scripts/sync_protocol_docs.py
rewrites the copy); the Elixir twin, ``elixir/lib/pynode/jobs/host.ex``, repeats it the
same way. Built on the registry (docs/REGISTRY_PROTOCOL.md, :mod:`pynode.registry`).

--- BEGIN docs/JOBS_PROTOCOL.md ---
# The pynode job protocol (version 1)

Background jobs held only in memory across a cluster of Elixir and Python nodes, that move
off a node that shuts down and survive the sudden death of a node. Built on the registry
(`docs/REGISTRY_PROTOCOL.md`). The Elixir side (`elixir/lib/pynode/jobs*.ex`; the
seed's kinds in `mix_compat/lib/job*.ex`) and the Python side (`pynode/jobs/`, in `protocol.py`)
repeat this text in their headers and must stay in lockstep with it; the rules are also
checked in both languages against the shared vectors `docs/vectors/jobs.terms`.

## Vocabulary

- **Job**: a process with a job **id** (any term; the seed uses strings and integers), a
  **kind** (an atom naming the behaviour, the same in both languages) and a **portable
  state** (a term, the same shape in both languages).
- **Host**: the process `pynode_jobs`, locally registered on every node that hosts jobs
  (a BEAM node running the `:pynode` application; a Python node unless started
  with hosting disabled). It starts, adopts, lists and replicates jobs.
- **Kinds** defined in both languages:
  - `'Job'` — Elixir `Job`. State: a list, `[Id]` at start; `update(Event)` makes it
    `[Event | State]`; `finish` returns the state (`[last_event, ..., Id]`) and ends the job.
  - `'Job.Otp'` — Elixir `Job.Otp`. State: a map
    `#{id => Id, results => nil | Binary, work_left_ms => Int | nil, ttl_left_ms => Int | nil}`.
    At start the simulated work takes `work_ms` (config, default 2000); when it is done,
    `results` becomes `<<"results of ", Id/binary>>` (an integer id is written in decimal),
    `work_left_ms` becomes `nil`, and the results are kept for `result_ttl` (config,
    default 600000 ms), after which the job ends. `check_results` answers `results`
    (`nil` until the work is done).
  - A Python program can define more kinds (`@job_kind("my_kind")` class); a kind exists
    only on the nodes whose host knows it.
  - **Run kinds** (see "Run kinds"): a kind whose work is a function `run` in its language
    (Python `RunKind`, Elixir `Pynode.Jobs.Run`), with checkpoints; its portable state has
    one shape for every run kind, in both languages.
- Durations travel as **remaining milliseconds**, never as absolute times: no clock is
  trusted across nodes.

## Registry keys

| key | holder | value |
| --- | --- | --- |
| `{p, g, pynode_job_host}` | each host process | the list of kinds it hosts |
| `{n, g, {pynode_job, Id}}` | the job process | its kind |
| `{p, g, pynode_job_load}` | each host process | `{Running, Queued, MaxJobs}` (see "Load") |

A host that starts shutting down unregisters `{p, g, pynode_job_host}` first: no client
places a new job on it after that (it also unregisters `{p, g, pynode_job_load}`).

## Calls to a host (`gen_server:call({pynode_jobs, Node}, Request)`)

| request | reply |
| --- | --- |
| `{start, Kind, Id, Args}` | `{ok, Pid}` / `{error, job_already_started}` / `{error, unknown_kind}` / `{error, stopping}` |
| `{adopt, Kind, Id, Portable}` | `{ok, Pid}` once the new job process holds the name / `{error, Reason}` |
| `{replicate, Id, Kind, Portable, Seq, OwnerPid, Replicas}` | `ok` once stored (the ack a job waits for) |
| `{drop_replica, Id, OwnerPid}` (cast) | — |
| `{client, Op, Args}` | the result of the client operation `Op` run on that node (see "Client") |
| `list` | `[{Id, Kind, Pid}]` for the jobs this host runs |
| `replicas` | `[{Id, Kind, OwnerPid, Seq}]` for the replicas this host holds (for operators and tests) |

`{client, Op, Args}` operations (each answers what the client function of that name answers
on the host's node): `start` `[Kind, Id, StartArgs]` (also `[Id]`, `[Kind, Id]`), `otp_start`
`[Id]`, `update` `[Id, Event]`, `finish` `[Id]`, `check_results` `[Id]`, `get_state` `[Id]`,
`op` `[Id, Request]` and `op` `[Id, Request, OpId]` (the raw `{ok, Result}`; the 3-argument
form carries the client's own `OpId`, so that a retry through another host is recognised as
a repeat; a host that does not know it answers `{error, {unknown_client_op, op, 3}}`), and
`list_jobs` `[]`. A host that is stopping leaves new `client` calls unanswered (the caller's
call ends with the node and it retries elsewhere, with nothing applied) and waits for the ones
already running before its node exits.

`Portable` is the map `#{kind => Kind, id => Id, state => State, recent => Recent, seq => Seq}`:
`State` is the kind's portable state; `Recent` is the bounded list (newest first, at most 64)
of `{OpId, Reply}` of the last operations that changed the state (`Reply` is the whole
`{ok, Result}`), so a retried operation is answered, not applied twice; `Seq` counts
acknowledged changes.

## Calls to a job (`gen_server:call(JobPid, {pynode_job_op, OpId, Request})`)

`OpId` is a term unique to one client operation (a ref, or `{Node, Counter}`); retries of
the same operation reuse it. `Request` is kind-specific: `'Job'`: `{update, Event}`,
`finish`; `'Job.Otp'`: `check_results`; every kind: `get_state`. The reply is
`{ok, Result}`. Before replying to anything that changed the portable state, the job
replicates it (below).

One more call reaches a job from another copy of itself (see "Partitions"):
`gen_server:call(JobPid, {pynode_job_merge, Portable})` answers `ok` once the receiver has
merged `Portable` into its own state and replicated the result, or `{error, Reason}`
(`{error, not_this_job}` when `Portable` holds another id or kind).

## Replication (sudden death)

- Each job keeps its portable state on `replicas` other hosts (config `replicas`, default 1):
  the replica hosts are the next ones after the owner's node in the sorted list of host
  nodes (`{p, g, pynode_job_host}` holders) whose value lists the job's kind (a host that
  cannot run the kind could not adopt it), skipping the owner, wrapping around (vectors:
  `replica_targets`, given that list).
- **Replicas follow membership.** Every host looks at the set of host nodes, with the kinds
  each one's `{p, g, pynode_job_host}` value lists, on every `nodeup`/`nodedown` and at least
  every `replica_check` ms (config, default 100). When the set differs from the one it last
  saw (a host joined or left, or a host's kinds changed), it sends each of its jobs
  `pynode_job_membership`; a job then recomputes its targets and, when they differ from the
  hosts holding its current state, replicates its current state (the same `Seq`) to the
  new targets and casts `drop_replica` to the hosts that are no longer targets. So a job
  that was alone when it started, was adopted, or has not changed since (a `Job.Otp` with
  results) gets its copies as soon as a host joins, and a graceful leave or a death moves
  them to the next host; so does a host that withdraws a kind (the application providing it
  stopped): the jobs of that kind replicate elsewhere and their owners tell it to drop its
  copies, so it is never the named holder of a job it could not adopt. A replica host accepts
  a `replicate` with the same `Seq` from the same owner (a refresh).
- On every change (start, update, finish's removal, results produced, adoption) the job
  calls `{replicate, ...}` on each replica host and only then acknowledges. With no other
  host available it acknowledges at once (nothing can be replicated).
- A replica host stores `{Id, Kind, Portable, Seq, OwnerPid, Replicas}` (a higher `Seq`
  or a new `OwnerPid` replaces an older one) and monitors `OwnerPid`.
- When the job finishes, the owner casts `drop_replica` to its replica hosts.
- When `OwnerPid` goes `DOWN`:
  - reason `noconnection` (its node died or was cut off): the replica holder whose node
    comes first in term order among the surviving nodes of `Replicas` adopts the job from
    its replica (`adopt` on itself). A holder that is not named in `Replicas` holds a stale
    copy (the owner moved its replicas and the drop was lost): it adopts only when no node
    of `Replicas` survives (vectors: `adopts`). A holder adopts only when the registry
    shows no live holder of the job's name. The other holders keep their replica until the
    new owner replicates to them or tells them to drop it. Registration retries while the
    registry still lists the dead owner (until the nodedown purge, `adopt_reg_timeout`).
  - **Waited time**: before adopting, the holder takes the milliseconds its replica waited
    (from when it was stored to now, on the holder's own monotonic clock) off the remaining
    durations of the state, through the kind's `elapse` (vectors: `elapse`): the owner's
    clocks stopped when it died, the work did not.
  - any other reason (finished, handed off, crashed): the replica is dropped, unless a newer
    replicate with another `OwnerPid` already replaced it.
- A job that was cut off but is alive keeps running; if the adopted copy registers the name
  too, the registry's conflict rule keeps one (see "Partitions").

## Partitions (two copies of one job)

While the cluster is split, each side may run a copy of the same job (availability first):
the owner's side keeps the original, the other side adopts from its replica. Both accept
and acknowledge operations. When the sides meet again the registry sees two holders of
`{n, g, {pynode_job, Id}}` and keeps the one on the smaller node name; the loser's registry
sends the loser the exit signal `{name_conflict, Key, WinnerPid}`. Nothing acknowledged is
lost:

1. A job process traps exits. On `{'EXIT', _, {name_conflict, Key, WinnerPid}}` for its own
   key, it stops serving, and calls `{pynode_job_merge, Portable}` on `WinnerPid` (its
   portable with remaining durations computed now; `call_timeout`). Any other exit signal
   acts as it would on a process that does not trap exits (`normal` is ignored, anything
   else ends the job with that reason).
2. On `ok`, the loser casts `drop_replica` to its replica hosts and exits `normal`; calls
   that reached it unanswered end with that exit and the client retries them at the winner.
   On `{error, _}` or an exit (`noproc`, `noconnection`, `timeout`), the loser registers its
   name again: when that succeeds it serves again as the job (the winner is gone); when the
   registry names another holder it merges into that one. It gives up after `job_timeout`
   and ends, logging its state at ERROR.
3. The winner merges: `State = Kind:merge(Mine, Theirs)` (both whole `Portable` maps, the
   winner's first); `Recent` = the winner's entries followed by the loser's entries whose
   `OpId` the winner's do not hold, at most 64; `Seq = max(SeqW, SeqL) + 1`. It replicates,
   then answers `ok`, and logs at WARNING `pynode jobs: job <Id> merged the copy from <Node>
   after a partition: <what the kind reports>`. A kind without `merge` keeps the winner's
   state and says so in the same WARNING.

Kinds' merges (vectors: `merge`):

- `'Job'`: the loser's new events are its first `min(length(RecentL), length(StateL) - 1)`
  events whose `OpId` (the `OpId` of `RecentL` at the same position: each acknowledged
  `update` adds one event and one `Recent` entry) is not among the winner's `Recent`; the
  merged state is those events (in the loser's order) followed by the winner's state. So
  every event acknowledged on either side is kept, in each side's order, and an operation
  retried on both sides (same `OpId`) is kept once. Exact while each side acknowledged at
  most 64 operations of the job during the split (the `Recent` bound).
- `'Job.Otp'`: the winner's state when it has results; else the loser's when it has;
  else the winner's with `work_left_ms` the smaller of the two.

## Run kinds

A run kind writes its work as one function, `run(Ctx)` (Python: `async def run(self, ctx)`
of a `RunKind`; Elixir: `c:Pynode.Jobs.Run.run/1`). The job process runs it beside itself
(an asyncio task; an Elixir process linked to nobody and monitored by the job) and keeps
serving calls meanwhile. `Ctx` gives `args` (the `Args` list of `{start, Kind, Id, Args}`),
`state` (the last acknowledged checkpoint, `nil` before the first), `attempt`, and:

- `checkpoint(S)`: the job makes `S` its checkpoint, adds one to `Seq`, replicates (as for
  any change, "Replication"), and only then returns to `run`. A checkpoint asked for by a
  run that has been cancelled meanwhile is ignored.
- `progress(P)`: a map merged into `progress` at once (read by `status`); it is not
  replicated on its own and travels with the next replication.

**Portable state** of every run-kind job (the `state` of `Portable`; vectors: `run_*`):

```
#{args => Args, checkpoint => nil | Checkpoint, status => Status, progress => Map,
  attempts => Int, result => nil | Term, retry_left_ms => nil | Int, ttl_left_ms => nil | Int}
```

`Status` is `queued`, `running`, `done`, `failed` or `cancelled` (`queued`: waiting for a
slot of its host, see "Load"; `run` does not run). At `start`: `#{args => Args, checkpoint => nil,
status => running, progress => #{}, attempts => 1, result => nil, retry_left_ms => nil,
ttl_left_ms => nil}` (vectors: `run_initial`), replicated, then acknowledged; `run` then
begins.

Rules, each a change (replicated before anything is acknowledged):

1. `run` returns `R`: `status => done, result => R, retry_left_ms => nil,
   ttl_left_ms => result_ttl` (vectors: `run_done`).
2. `run` raises (Python: an exception; Elixir: a raise, throw or exit of the run process)
   with the error term `E` — Python `{python_error, <<"Type">>, <<"Message">>}` as rpc shapes
   it, Elixir `{elixir_error, <<"Module">>, <<"Message">>}` for an exception, the exit
   reason otherwise: while `attempts < max_attempts`, `retry_left_ms` becomes the backoff
   `min(retry_backoff * 2^(attempts - 1), retry_backoff_max)` (vectors: `run_backoff`,
   `run_error`); when it runs out, `attempts` grows by one, `retry_left_ms => nil`, and
   `run` starts again from the checkpoint (vectors: `run_retry`). At `max_attempts`:
   `status => failed, result => E, ttl_left_ms => result_ttl`.
3. `cancel`: a `running` (or `queued`) job becomes `status => cancelled, retry_left_ms =>
   nil, ttl_left_ms => result_ttl` and its `run` is cancelled; an ended job is unchanged
   (vectors: `run_cancel`).
4. When `ttl_left_ms` runs out (`done`, `failed`, `cancelled`), the job ends as `finish`
   does: its name is unregistered and its replicas dropped. Until then its status and
   results are readable from every node; after, every request answers `{error, no_such_job}`.
5. **Moves and crashes resume.** A handoff cancels `run` (at its next await, Python; the run
   process is killed, Elixir) before the portable state is taken; the adopting host (one
   that knows the kind) starts `run` again from `checkpoint`, so checkpointed work is never
   done again. The same after an adoption from a replica (`kill -9`): the last replicated
   checkpoint. A move is not an attempt: `attempts` is unchanged.
6. `elapse` takes the waited time off `retry_left_ms` and `ttl_left_ms` (vectors:
   `run_elapse`); `merge` keeps the winner's state when it has ended, else the loser's when
   it has, else the state of the copy with the higher `Seq` (the later checkpoint; the
   winner's on a tie) (vectors: `run_merge`).

**Requests** (`{pynode_job_op, OpId, Request}`, and the client operations of the same names,
`[Id]`, answering the raw reply):

| request | reply |
| --- | --- |
| `status` | `{ok, #{status => Status, progress => Map, attempts => Int, node => Node}}` (`node`: where the job runs now; vectors: `run_status`) |
| `results` | `{ok, Result}` when `done`; `{error, {failed, E}}`; `{error, cancelled}`; `{error, not_done}` while `queued` or `running` (vectors: `run_results`) |
| `cancel` | `{ok, Status}`: the status after the request (`cancelled`, or `done`/`failed` when it had already ended) |
| `get_state` | `{ok, State}`, the portable state above |

## Load

A host runs at most `max_jobs` (config, default 1000) run-kind jobs at once. A **slot** is
held by each run-kind job of the host whose status is `running` (waiting for a retry
included); jobs of other kinds and ended jobs hold none.

- **Admission.** When the host creates a run-kind job (`start`, `adopt`, an adoption from a
  replica) it decides at once: a job that has not ended takes a free slot (status
  `running`; a `queued` state becomes `running`, vectors: `run_admit`) or, with none free,
  waits in the host's queue, first in first out (status `queued`, vectors: `run_queue`). An
  ended job neither takes a slot nor waits. The change is the job's own (`Seq` + 1,
  replicated before the job acknowledges its start or adoption).
- When a slot frees (a job ends its run, is cancelled, ends, moves or dies), the oldest
  queued job takes it: `queued` becomes `running` (replicated), then `run` starts. A queued
  job that is cancelled leaves the queue (rule 3 of "Run kinds"). While a job is queued its
  durations (`retry_left_ms`) stand still: no timer runs until it is admitted (the waited
  time of an adoption is still taken off, rule 6).
- **Load** of a host = `Running + Queued`: the number of slots held plus the number of jobs
  queued. Each host publishes `{Running, Queued, MaxJobs}` as the value of
  `{p, g, pynode_job_load}` (`MaxJobs`: an integer, or `infinity`) at start and then, when
  it changed, at most every `replica_check` ms, so a burst of jobs costs no registry write
  per job. A host that publishes no load counts as `{0, 0, infinity}`.
- **Placement** (`place`, vectors: `place`): given the candidate hosts (the nodes whose
  `{p, g, pynode_job_host}` value lists the kind), each with its load `{Node, Running,
  Queued, MaxJobs}`, and the placer's counter `N`: the hosts with room (`Running + Queued <
  MaxJobs`) if any, else all; among those, the ones of the smallest `Running + Queued`,
  sorted by node in term order; the one at position `N rem length` (0-based). No candidate:
  `none`. Equal loads (a burst between two publications) thus fall back to round-robin. A
  placer that places several jobs between two publications (a handoff) adds one to its own
  copy of the target's `Queued` after each.
- **Overflow.** At every membership look (at least every `replica_check` ms) a host with
  queued jobs places its oldest queued jobs on the other hosts that know their kind and have
  room by the published loads (`place` with only the hosts that have room; one more to the
  target's `Queued` after each, so no more jobs are sent to a host than its room), and moves
  each there as a handoff does (`{pynode_job_handoff, Target}`, "Graceful shutdown"); the
  target admits it by its own slots. A failed move leaves the job queued where it was.
- On a graceful stop the queue moves with the running jobs (every job is handed off).

## Configuration

Keys of the `pynode` application environment (`sys.config`), the same in both
languages, with these defaults (vectors: `defaults`):

| key | default | meaning |
| --- | --- | --- |
| `work_ms` | 2000 | `Job.Otp`'s simulated work |
| `result_ttl` | 600000 | how long `Job.Otp` and run-kind results stay readable |
| `replicas` | 1 | other hosts holding each job's state (0: none) |
| `replica_check` | 100 | a host looks at the set of hosts at least this often (ms) |
| `job_timeout` | 15000 | a client operation gives up after this long |
| `missing_grace` | 3000 | a job name missing this long means "no such job" |
| `call_timeout` | 5000 | one attempt of a call to a job or a host |
| `adopt_timeout` | 10000 | one `adopt` call during a handoff |
| `adopt_reg_timeout` | 5000 | an adopting job retries its name while a dead owner still holds it |
| `handoff_timeout` | 60000 | the whole handoff of one node at shutdown |
| `handoff_concurrency` | 16 | job handoffs in flight at once at shutdown |
| `host_jobs` | `true` | `false`: this node runs no job host (a client only) |
| `job_kinds` | `all` | the kinds this node's host runs: `all` (every kind the node knows) or a list of kind atoms (`'Job'`, `'Job.Otp'`; Elixir also accepts the modules `Job`, `Job.Otp`) |
| `max_attempts` | 3 | runs of a run kind's `run` before the job fails |
| `retry_backoff` | 1000 | the wait (ms) after the first failed run, doubling after each |
| `retry_backoff_max` | 30000 | the longest wait between two runs |
| `max_jobs` | 1000 | run-kind jobs a host runs at once; more wait in its queue (`infinity`: no limit) |

## Graceful shutdown (handoff)

When a host is asked to stop (`Application.stop(:pynode)`, `:init.stop()`,
SIGTERM/Ctrl-C to `python -m pynode`):

1. It unregisters `{p, g, pynode_job_host}` and answers `{error, stopping}` to `start`.
2. For each job it runs, at most `handoff_concurrency` (config, default 16) at a time: pick a
   target host (`place` over the other hosts that know the kind, by their published loads,
   the host's own counter as `N`, "Load"); tell the job
   `{pynode_job_handoff, Target}`. The job stops serving, unregisters its name, calls
   `{adopt, Kind, Id, Portable}` on the target (with remaining durations computed now), then
   exits `normal`. Calls that reached the old process and were not answered end with an exit,
   and the client retries them at the new owner. A failed handoff is tried at the next target.
3. Only then does the host (and the node) stop. With no other host, jobs die with the node.

A host may also stop running some kinds while it keeps running (on the BEAM: the application
that provides them is stopped, `Application.stop(:available_processes)` for the seed's
kinds; `Pynode.Jobs.Kinds`). It registers `{p, g, pynode_job_host}` again with the shorter
list first (the value of a host's property can change at any time; clients and handoffs read
it when they place a job), answers `{error, unknown_kind}` to `start` and `adopt` of those
kinds, and hands their jobs off as in step 2; a job that no other host takes ends. Other
kinds, replicas and the load are not affected. A kind provided later is advertised the same
way (the list grows).

## Client

The client API (`Job.start/1`, `Job.update/2`, `Job.finish/1`, `Job.Otp.start/1`,
`Job.Otp.check_results/1`, and the Python `pynode.jobs` functions of the same names) runs
on any node:

- On a node with a running registry, it reads the registry locally: `start` picks a host by
  `place` over the hosts that know the kind (their published loads, a counter of the client
  node as `N`, "Load"); a host answering `{error, stopping}`, or `{error, unknown_kind}` (it
  withdrew the kind after the client's registry last heard of it), is left out and `start`
  tries another (`unknown_kind` is the answer only when no host lists the kind for
  `missing_grace`); operations find the job with
  `where({n, g, {pynode_job, Id}})`.
- On a node without one (only the code loaded, like the seed's `c1`), it sends
  `{client, Op, Args}` to `pynode_jobs` on a connected node that runs a host (visible and
  hidden nodes) and returns what that node answers.
- Retries: while the job's name is missing, or the call ends with an exit (`noproc`,
  `normal`, `shutdown`, `noconnection`, `nodedown`, `killed`, `timeout`,
  `{name_conflict, ...}`, `{nodedown, Node}`), it retries with the same `OpId` (backoff
  10 ms doubling to 200 ms) until `job_timeout` (default 15 s); any other exit reason is
  the answer (vectors: `retryable`). A name missing for longer than
  `missing_grace` (default 3 s) means the job does not exist: `start`-less operations then
  answer `{error, no_such_job}` (`Job.Otp.check_results/1` answers `nil`).
--- END docs/JOBS_PROTOCOL.md ---

Python implementation notes
---------------------------
- Where the protocol text leaves a detail open, this package fixes it as follows (and the
  Elixir side must do the same): ``Reply`` in ``Recent`` is the whole reply ``{ok, Result}``;
  only operations that changed the state enter ``Recent``; ``{update, E}`` answers
  ``{ok, ok}``; ``Args`` of ``start`` is a list (``[]`` for the built-in kinds).
  ``{client, Op, Args}``: ``start [Kind, Id, StartArgs]`` (also ``[Id]``, ``[Kind, Id]``),
  ``otp_start [Id]``, ``update [Id, Event]``, ``finish [Id]``, ``check_results [Id]``,
  ``get_state [Id]``, ``list_jobs []``; each answers what the function of that name answers.
  ``op [Id, Request]`` answers the job's raw reply; ``op [Id, Request, OpId]`` (an extension
  both sides implement) does the same with the caller's own OpId: the client-only path
  (``via="client"``) sends its operations on a job this way, with one OpId for every attempt,
  so that a retry through another host node is answered from ``Recent``, not applied twice.
  A host that answers ``{error, {unknown_client_op, op, 3}}`` gets the named operation
  (:mod:`pynode.jobs.client`).
- A stopping host leaves new ``{client, Op, Args}`` calls unanswered (the caller's call ends
  when the node goes and it retries elsewhere, nothing applied here) and, after the handoff,
  waits for the client operations already running (within ``handoff_timeout``)
  (:mod:`pynode.jobs.host`).
- The host never blocks: ``start``, ``adopt`` and ``client`` spawn a process that answers
  the caller with :func:`~pynode.otp.gen_server.reply`, so two hosts replicating to each other
  cannot deadlock.
- A job also monitors the hosts holding its replicas; when one goes away it replicates its
  current state to the next host, so a second failure does not lose it (:mod:`pynode.jobs.job`).
- :meth:`pynode.node.Node.stop` runs the host's handoff first, through ``Node.on_stop``.
"""

from __future__ import annotations

from typing import Any, Iterable

from erl_interop import decode, encode
from erl_interop.terms import Atom

from .format import format_term

#: the locally registered name of the host on every node that hosts jobs (protocol, "Vocabulary")
HOST_NAME = "pynode_jobs"

OK = Atom("ok")
ERROR = Atom("error")
UNDEFINED = Atom("undefined")
N, P, G = Atom("n"), Atom("p"), Atom("g")
PYNODE_JOB = Atom("pynode_job")
PYNODE_JOB_HOST = Atom("pynode_job_host")
#: ``{p, g, pynode_job_host}`` (protocol, "Registry keys")
HOST_KEY = (P, G, PYNODE_JOB_HOST)
#: ``{p, g, pynode_job_load}``: ``{Running, Queued, MaxJobs}`` of a host (protocol, "Load")
LOAD_KEY = (P, G, Atom("pynode_job_load"))
INFINITY = Atom("infinity")
NONE = Atom("none")

START = Atom("start")
ADOPT = Atom("adopt")
REPLICATE = Atom("replicate")
DROP_REPLICA = Atom("drop_replica")
CLIENT = Atom("client")
LIST = Atom("list")
REPLICAS = Atom("replicas")
JOB_OP = Atom("pynode_job_op")
HANDOFF = Atom("pynode_job_handoff")
MERGE = Atom("pynode_job_merge")
MEMBERSHIP = Atom("pynode_job_membership")
NOT_THIS_JOB = Atom("not_this_job")
UPDATE = Atom("update")
FINISH = Atom("finish")
CHECK_RESULTS = Atom("check_results")
GET_STATE = Atom("get_state")
OTP_START = Atom("otp_start")
OP = Atom("op")
CALL = Atom("call")
UNKNOWN_CLIENT_OP = Atom("unknown_client_op")
LIST_JOBS = Atom("list_jobs")

JOB_ALREADY_STARTED = Atom("job_already_started")
UNKNOWN_KIND = Atom("unknown_kind")
STOPPING = Atom("stopping")
NO_SUCH_JOB = Atom("no_such_job")
NO_HOSTS = Atom("no_hosts")
TIMEOUT = Atom("timeout")
ALREADY_REGISTERED = Atom("already_registered")
NAME_CONFLICT = Atom("name_conflict")
NODEDOWN = Atom("nodedown")
NODEUP = Atom("nodeup")

KIND_JOB = Atom("Job")
KIND_OTP = Atom("Job.Otp")

# Run kinds (protocol, "Run kinds"): requests, statuses and the keys of their state
STATUS, RESULTS, CANCEL = Atom("status"), Atom("results"), Atom("cancel")
QUEUED, RUNNING, DONE, FAILED, CANCELLED = (Atom("queued"), Atom("running"), Atom("done"), Atom("failed"),
                                            Atom("cancelled"))
NOT_DONE = Atom("not_done")
RUN_STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
TERMINAL = (DONE, FAILED, CANCELLED)
K_ARGS, K_CHECKPOINT, K_STATUS, K_PROGRESS, K_ATTEMPTS, K_RESULT = (
    Atom("args"), Atom("checkpoint"), Atom("status"), Atom("progress"), Atom("attempts"), Atom("result"))
K_RETRY_LEFT, K_NODE = Atom("retry_left_ms"), Atom("node")

# Portable map keys (protocol, "Calls to a host")
K_KIND, K_ID, K_STATE, K_RECENT, K_SEQ = Atom("kind"), Atom("id"), Atom("state"), Atom("recent"), Atom("seq")
# Job.Otp state keys (protocol, "Vocabulary")
K_RESULTS, K_WORK_LEFT, K_TTL_LEFT = Atom("results"), Atom("work_left_ms"), Atom("ttl_left_ms")

#: ``Recent`` holds at most this many operations (protocol, "Calls to a host")
RECENT_MAX = 64

#: The configuration keys and their defaults (protocol, "Configuration"; the vector
#: ``defaults`` of docs/vectors/jobs.terms), in milliseconds where they are durations.
DEFAULTS: dict[str, Any] = {
    "work_ms": 2000,
    "result_ttl": 600_000,
    "replicas": 1,
    "replica_check": 100,
    "job_timeout": 15_000,
    "missing_grace": 3_000,
    "call_timeout": 5_000,
    "adopt_timeout": 10_000,
    "adopt_reg_timeout": 5_000,
    "handoff_timeout": 60_000,
    "handoff_concurrency": 16,
    "host_jobs": True,
    "job_kinds": Atom("all"),
    "max_attempts": 3,
    "retry_backoff": 1_000,
    "retry_backoff_max": 30_000,
    "max_jobs": 1000,
}

#: exit reasons after which the client retries (protocol, "Client")
RETRY_REASONS = frozenset(
    Atom(a) for a in ("noproc", "normal", "shutdown", "noconnection", "nodedown", "killed", "timeout")
)
BACKOFF_FIRST = 0.010  # protocol, "Client": 10 ms doubling to 200 ms
BACKOFF_MAX = 0.200


def wire(term: Any) -> Any:
    """``term`` as a peer would receive it (a ``str`` becomes a binary, a tuple stays a tuple):
    what a job stores is then the same whether the caller was local or remote."""
    return decode(encode(term))


def job_key(job_id: Any) -> tuple[Atom, Atom, Any]:
    """The registry name of job ``job_id``: ``{n, g, {pynode_job, Id}}``."""
    return (N, G, (PYNODE_JOB, job_id))


def node_order(n: str) -> bytes:
    """The sort key of a node name: atoms compare by their text, byte-wise on UTF-8
    (REGISTRY_PROTOCOL.md, "Conflicts")."""
    return str(n).encode("utf-8")


def cfg(node: Any, key: str) -> Any:
    """Setting ``key`` of ``node`` (its ``config``, else :data:`DEFAULTS`)."""
    conf = getattr(node, "config", None) or {}
    return conf.get(key, DEFAULTS[key])


def secs(ms: Any) -> float:
    """Milliseconds (as the settings give them) in seconds (as asyncio counts)."""
    return float(ms) / 1000.0


def retryable(reason: Any) -> bool:
    """True for the exit reasons after which a client operation is retried."""
    if type(reason) is Atom and reason in RETRY_REASONS:
        return True
    if type(reason) is tuple and reason and reason[0] in (NAME_CONFLICT, NODEDOWN) and type(reason[0]) is Atom:
        return True  # {name_conflict, Key, Winner}; gen's {nodedown, Node}
    if type(reason) is tuple and len(reason) == 2 and reason[0] == NODEDOWN and type(reason[0]) is Atom:
        return True  # gen.erl's {nodedown, Node} (CallError.reason for a lost node)
    # gen:call's {Reason, {gen_server, call, ...}} shape, should one reach us wrapped
    if type(reason) is tuple and len(reason) == 2 and type(reason[1]) is tuple and reason[1][:1] == (Atom("gen_server"),):
        return retryable(reason[0])
    return False


# -- pure placement rules ---------------------------------------------------------------------
def replica_targets(hosts: Iterable[str], owner: str, replicas: int) -> list[Atom]:
    """The replica hosts of a job owned on ``owner``: the next ``replicas`` nodes after the
    owner's node in the sorted list of host nodes, skipping the owner (protocol, "Replication")."""
    ordered = sorted({Atom(h) for h in hosts if h != owner}, key=node_order)
    if replicas <= 0 or not ordered:
        return []
    ob = node_order(owner)
    after = [h for h in ordered if node_order(h) > ob]
    before = [h for h in ordered if node_order(h) < ob]
    return (after + before)[:replicas]


def adopts(me: str, replicas: Iterable[str], alive: Iterable[str]) -> bool:
    """Whether the replica holder ``me`` adopts a job whose owner went ``DOWN`` with
    ``noconnection`` (protocol, "Replication"): the first in term order among the surviving
    nodes of ``Replicas`` adopts; a holder not named there (a stale copy) adopts only when
    no named holder survives. ``alive``: the nodes ``me`` is connected to."""
    named = [Atom(n) for n in replicas]
    alive_s = {Atom(n) for n in alive}
    survivors = [n for n in named if n == me or n in alive_s]
    if Atom(me) in named:
        return min(survivors, key=node_order) == me
    return not survivors


def results_binary(job_id: Any) -> bytes:
    """``<<"results of ", Id/binary>>``; an integer id is written in decimal."""
    if isinstance(job_id, (bytes, bytearray)):
        text = bytes(job_id)
    elif isinstance(job_id, bool):
        text = b"true" if job_id else b"false"
    elif isinstance(job_id, int):
        text = str(job_id).encode()
    elif isinstance(job_id, str):  # Atom or str: their text
        text = job_id.encode("utf-8")
    else:
        text = format_term(job_id).encode("utf-8")
    return b"results of " + text


# -- load (protocol, "Load") -------------------------------------------------------------------
def _below(load: int, max_jobs: Any) -> bool:
    """``Load < MaxJobs`` in term order (an integer is smaller than any atom: ``infinity``)."""
    return type(max_jobs) is not int or load < max_jobs


def place(candidates: Iterable[tuple[Any, Any, Any, Any]], n: int) -> Any:
    """The host for a job (protocol, "Load"): among ``[{Node, Running, Queued, MaxJobs}]``, the
    ones with room if any, else all; of those the least-loaded (``Running + Queued``), sorted by
    node; the one at ``n rem length``. ``none`` without candidates."""
    rows = [(Atom(c[0]), int(c[1]) + int(c[2]), c[3]) for c in candidates]
    if not rows:
        return NONE
    room = [r for r in rows if _below(r[1], r[2])]
    pool = room or rows
    low = min(r[1] for r in pool)
    tied = sorted({r[0] for r in pool if r[1] == low}, key=node_order)
    return tied[n % len(tied)]


def load_of(value: Any) -> tuple[int, int, Any]:
    """A published ``{Running, Queued, MaxJobs}``; ``{0, 0, infinity}`` for anything else."""
    if type(value) is tuple and len(value) == 3 and type(value[0]) is int and type(value[1]) is int:
        return value[0], value[1], value[2]
    return 0, 0, INFINITY


def has_room(value: Any) -> bool:
    r, q, m = load_of(value)
    return _below(r + q, m)


def run_queue(state: dict[Any, Any]) -> dict[Any, Any]:
    """No free slot: a job that has not ended waits (``queued``); an ended one is unchanged."""
    if state.get(K_STATUS) in TERMINAL:
        return state
    return {**state, K_STATUS: QUEUED}


def run_admit(state: dict[Any, Any]) -> dict[Any, Any]:
    """A slot: a ``queued`` job becomes ``running``; any other is unchanged."""
    if _is(state.get(K_STATUS), QUEUED):
        return {**state, K_STATUS: RUNNING}
    return state


# -- merging two copies of one job ------------------------------------------------------------
def merge_recent(mine: dict[Any, Any], theirs: dict[Any, Any]) -> tuple[list[tuple[Any, Any]], int]:
    """``Recent`` and ``Seq`` of a merge (protocol, "Partitions" step 3): the winner's
    entries, then the loser's whose OpId the winner's lack, at most ``RECENT_MAX``; the
    greater ``Seq`` plus one."""
    rw, rl = recent_of(mine), recent_of(theirs)
    seen = [o for o, _ in rw]
    out = list(rw) + [(o, r) for o, r in rl if not has_op(seen, o)]
    sw, sl = mine.get(K_SEQ), theirs.get(K_SEQ)
    seq = max(sw if type(sw) is int else 0, sl if type(sl) is int else 0) + 1
    return out[:RECENT_MAX], seq


def recent_of(portable: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """The well-formed ``{OpId, Reply}`` entries of a ``Portable``'s ``Recent``."""
    r = portable.get(K_RECENT)
    if not isinstance(r, list):
        return []
    return [(x[0], x[1]) for x in r if type(x) is tuple and len(x) == 2]


def has_op(op_ids: list[Any], op: Any) -> bool:
    """Whether ``op`` is among ``op_ids``, by exact equality (``=:=``): 1 and 1.0 are
    different OpIds, as are a tuple and a list."""
    kb = encode(op)
    return any(encode(o) == kb for o in op_ids)


# -- run kinds: the state of a job whose kind writes ``run`` (protocol, "Run kinds") ----------
def _is(term: Any, atom: Atom) -> bool:
    return type(term) is Atom and term == atom


def run_initial(args: Any) -> dict[Atom, Any]:
    """The state of a run-kind job at ``start``: running, first attempt, no checkpoint."""
    return {K_ARGS: args, K_CHECKPOINT: None, K_STATUS: RUNNING, K_PROGRESS: {}, K_ATTEMPTS: 1,
            K_RESULT: None, K_RETRY_LEFT: None, K_TTL_LEFT: None}


def run_backoff(attempt: int, base_ms: int, max_ms: int) -> int:
    """The wait (ms) before the attempt after failed attempt number ``attempt`` (1-based):
    ``base * 2^(attempt-1)``, at most ``max``."""
    return int(min(base_ms * (2 ** max(attempt - 1, 0)), max_ms))


def run_done(state: dict[Any, Any], result: Any, ttl_ms: int) -> dict[Any, Any]:
    """``run`` returned ``result``: done, the result kept for ``ttl_ms``."""
    return {**state, K_STATUS: DONE, K_RESULT: result, K_RETRY_LEFT: None, K_TTL_LEFT: ttl_ms}


def run_error(state: dict[Any, Any], error: Any, max_attempts: int, base_ms: int, max_ms: int,
              ttl_ms: int) -> dict[Any, Any]:
    """``run`` raised ``error`` (``{python_error, Type, Message}``): another attempt after the
    backoff while ``attempts < max_attempts``, else failed with the error as the result."""
    attempts = state.get(K_ATTEMPTS)
    n = attempts if type(attempts) is int else 1
    if n < max_attempts:
        return {**state, K_RETRY_LEFT: run_backoff(n, base_ms, max_ms)}
    return {**state, K_STATUS: FAILED, K_RESULT: error, K_RETRY_LEFT: None, K_TTL_LEFT: ttl_ms}


def run_retry(state: dict[Any, Any]) -> dict[Any, Any]:
    """The backoff ran out: the next attempt starts (from the checkpoint)."""
    attempts = state.get(K_ATTEMPTS)
    return {**state, K_ATTEMPTS: (attempts if type(attempts) is int else 1) + 1, K_RETRY_LEFT: None}


def run_cancel(state: dict[Any, Any], ttl_ms: int) -> dict[Any, Any]:
    """``cancel``: a queued or running job becomes cancelled (kept for ``ttl_ms``); a job
    that has ended stays as it is."""
    if state.get(K_STATUS) in TERMINAL:
        return state
    return {**state, K_STATUS: CANCELLED, K_RETRY_LEFT: None, K_TTL_LEFT: ttl_ms}


def run_status(state: dict[Any, Any], node: str) -> dict[Atom, Any]:
    """The answer to ``status``: ``#{status, progress, attempts, node}``."""
    return {K_STATUS: state.get(K_STATUS), K_PROGRESS: state.get(K_PROGRESS, {}),
            K_ATTEMPTS: state.get(K_ATTEMPTS), K_NODE: Atom(node)}


def run_results(state: dict[Any, Any]) -> tuple[Atom, Any]:
    """The answer to ``results``: ``{ok, Result}`` when done, ``{error, {failed, Error}}``,
    ``{error, cancelled}``, or ``{error, not_done}`` while queued or running."""
    st = state.get(K_STATUS)
    if _is(st, DONE):
        return (OK, state.get(K_RESULT))
    if _is(st, FAILED):
        return (ERROR, (FAILED, state.get(K_RESULT)))
    if _is(st, CANCELLED):
        return (ERROR, CANCELLED)
    return (ERROR, NOT_DONE)


def run_elapse(state: Any, ms: int) -> Any:
    """``elapse`` of a run-kind state: ``ms`` off ``retry_left_ms`` and ``ttl_left_ms``."""
    if not isinstance(state, dict):
        return state
    out = dict(state)
    for key in (K_RETRY_LEFT, K_TTL_LEFT):
        left = state.get(key)
        if type(left) is int:
            out[key] = max(left - int(ms), 0)
    return out


def run_merge(mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
    """``merge`` of two copies of a run-kind job: the winner's state when it has ended; else
    the loser's when that has; else the one of the higher ``Seq`` (it has the later
    checkpoint), the winner's on a tie."""
    sw, sl = mine.get(K_STATE), theirs.get(K_STATE)
    if not isinstance(sw, dict) or not isinstance(sl, dict):
        raise ValueError("run-kind states must be maps")
    if sw.get(K_STATUS) in TERMINAL:
        return sw
    if sl.get(K_STATUS) in TERMINAL:
        return sl
    qw, ql = mine.get(K_SEQ), theirs.get(K_SEQ)
    if type(qw) is int and type(ql) is int and ql > qw:
        return sl
    return sw
