r"""Background jobs held in memory across the cluster: the job host ``pynode_jobs``, the job
processes, the kinds ``'Job'`` and ``'Job.Otp'``, and the client API.

The protocol is docs/JOBS_PROTOCOL.md, repeated verbatim between the markers below
(tests/test_jobs_unit.py fails when the two drift apart; scripts/sync_protocol_docs.py
rewrites the copy); the Elixir twin, ``mix_compat/lib/pynode/jobs/host.ex``, repeats it the
same way. Built on the registry (docs/REGISTRY_PROTOCOL.md, :mod:`pynode.registry`).

--- BEGIN docs/JOBS_PROTOCOL.md ---
# The pynode job protocol (version 1)

Background jobs held only in memory across a cluster of Elixir and Python nodes, that move
off a node that shuts down and survive the sudden death of a node. Built on the registry
(`docs/REGISTRY_PROTOCOL.md`). The Elixir side (`mix_compat/lib/job*.ex`,
`mix_compat/lib/pynode/jobs*.ex`) and the Python side (`pynode/jobs.py`) repeat this text
in their headers and must stay in lockstep with it; the rules are also checked in both
languages against the shared vectors `docs/vectors/jobs.terms`.

## Vocabulary

- **Job**: a process with a job **id** (any term; the seed uses strings and integers), a
  **kind** (an atom naming the behaviour, the same in both languages) and a **portable
  state** (a term, the same shape in both languages).
- **Host**: the process `pynode_jobs`, locally registered on every node that hosts jobs
  (a BEAM node running the `:available_processes` application; a Python node unless started
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
- Durations travel as **remaining milliseconds**, never as absolute times: no clock is
  trusted across nodes.

## Registry keys

| key | holder | value |
| --- | --- | --- |
| `{p, g, pynode_job_host}` | each host process | the list of kinds it hosts |
| `{n, g, {pynode_job, Id}}` | the job process | its kind |

A host that starts shutting down unregisters `{p, g, pynode_job_host}` first: no client
places a new job on it after that.

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
  nodes (`{p, g, pynode_job_host}` holders), skipping the owner, wrapping around (vectors:
  `replica_targets`).
- **Replicas follow membership.** Every host looks at the set of host nodes on every
  `nodeup`/`nodedown` and at least every `replica_check` ms (config, default 100). When the
  set differs from the one it last saw, it sends each of its jobs
  `pynode_job_membership`; a job then recomputes its targets and, when they differ from the
  hosts holding its current state, replicates its current state (the same `Seq`) to the
  new targets and casts `drop_replica` to the hosts that are no longer targets. So a job
  that was alone when it started, was adopted, or has not changed since (a `Job.Otp` with
  results) gets its copies as soon as a host joins, and a graceful leave or a death moves
  them to the next host. A replica host accepts a `replicate` with the same `Seq` from the
  same owner (a refresh).
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

## Configuration

Keys of the `available_processes` application environment (`sys.config`), the same in both
languages, with these defaults (vectors: `defaults`):

| key | default | meaning |
| --- | --- | --- |
| `work_ms` | 2000 | `Job.Otp`'s simulated work |
| `result_ttl` | 600000 | how long `Job.Otp` results stay readable |
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

## Graceful shutdown (handoff)

When a host is asked to stop (`Application.stop(:available_processes)`, `:init.stop()`,
SIGTERM/Ctrl-C to `python -m pynode`):

1. It unregisters `{p, g, pynode_job_host}` and answers `{error, stopping}` to `start`.
2. For each job it runs, at most `handoff_concurrency` (config, default 16) at a time: pick a
   target host (round-robin over the other hosts that know the kind); tell the job
   `{pynode_job_handoff, Target}`. The job stops serving, unregisters its name, calls
   `{adopt, Kind, Id, Portable}` on the target (with remaining durations computed now), then
   exits `normal`. Calls that reached the old process and were not answered end with an exit,
   and the client retries them at the new owner. A failed handoff is tried at the next target.
3. Only then does the host (and the node) stop. With no other host, jobs die with the node.

## Client

The client API (`Job.start/1`, `Job.update/2`, `Job.finish/1`, `Job.Otp.start/1`,
`Job.Otp.check_results/1`, and the Python `pynode.jobs` functions of the same names) runs
on any node:

- On a node with a running registry, it reads the registry locally: `start` picks a host by
  round-robin over the sorted hosts that know the kind; operations find the job with
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
- Where the protocol text leaves a detail open, this module fixes it as follows (and the
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
  A host that answers ``{error, {unknown_client_op, op, 3}}`` gets the named operation.
- A stopping host leaves new ``{client, Op, Args}`` calls unanswered (the caller's call ends
  when the node goes and it retries elsewhere, nothing applied here) and, after the handoff,
  waits for the client operations already running (within ``handoff_timeout``).
- The host never blocks: ``start``, ``adopt`` and ``client`` spawn a process that answers
  the caller with :func:`~pynode.genserver.reply`, so two hosts replicating to each other
  cannot deadlock.
- A job also monitors the hosts holding its replicas; when one goes away it replicates its
  current state to the next host, so a second failure does not lose it.
- :meth:`pynode.node.Node.stop` runs the host's handoff first, through ``Node.on_stop``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import itertools
import logging
import re
import time
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Iterable

from erl_interop import decode, encode
from erl_interop.terms import Atom, Pid, Reference

from .errors import CallError
from .genserver import GEN_CALL, NOREPLY as _NOREPLY, From, GenServer, reply as gen_reply
from .process import DOWN_TAG, EXIT_TAG, NORMAL, NOCONNECTION, NOPROC, Exit, Process, ReceiveTimeout, exception_reason
from .registry import key_bytes

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "JobHost",
    "JobKind",
    "JobContext",
    "Reply",
    "JobError",
    "job_kind",
    "kinds",
    "start_host",
    "start",
    "otp_start",
    "update",
    "finish",
    "check_results",
    "get_state",
    "list_jobs",
    "HOST_NAME",
    "HOST_KEY",
    "job_key",
    "replica_targets",
    "adopts",
    "merge_recent",
    "results_binary",
    "DEFAULTS",
]

log = logging.getLogger("pynode.jobs")

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

KIND_JOB = Atom("Job")
KIND_OTP = Atom("Job.Otp")

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
}

#: exit reasons after which the client retries (protocol, "Client")
RETRY_REASONS = frozenset(
    Atom(a) for a in ("noproc", "normal", "shutdown", "noconnection", "nodedown", "killed", "timeout")
)
BACKOFF_FIRST = 0.010  # protocol, "Client": 10 ms doubling to 200 ms
BACKOFF_MAX = 0.200

_TIMER = Atom("$pynode_job_timer")


def wire(term: Any) -> Any:
    """``term`` as a peer would receive it (a ``str`` becomes a binary, a tuple stays a tuple):
    what a job stores is then the same whether the caller was local or remote."""
    return decode(encode(term))


def job_key(job_id: Any) -> tuple[Atom, Atom, Any]:
    """The registry name of job ``job_id``: ``{n, g, {pynode_job, Id}}``."""
    return (N, G, (PYNODE_JOB, job_id))


def _node_order(n: str) -> bytes:
    # Atoms compare by their text, byte-wise on UTF-8 (REGISTRY_PROTOCOL.md, "Conflicts").
    return str(n).encode("utf-8")


def _cfg(node: Any, key: str) -> Any:
    conf = getattr(node, "config", None) or {}
    return conf.get(key, DEFAULTS[key])


def _secs(ms: Any) -> float:
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
    ordered = sorted({Atom(h) for h in hosts if h != owner}, key=_node_order)
    if replicas <= 0 or not ordered:
        return []
    ob = _node_order(owner)
    after = [h for h in ordered if _node_order(h) > ob]
    before = [h for h in ordered if _node_order(h) < ob]
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
        return min(survivors, key=_node_order) == me
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


def format_term(t: Any) -> str:
    """A term as Elixir's ``inspect`` prints it (for CLI output and messages)."""
    if t is None:
        return "nil"
    if t is True:
        return "true"
    if t is False:
        return "false"
    if type(t) is Atom:
        s = str(t)
        if s.startswith("Elixir."):
            return s[len("Elixir."):]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_@]*[?!]?", s):
            return ":" + s
        return ':"' + s.replace('"', '\\"') + '"'
    if isinstance(t, str):
        return '"' + t.replace('"', '\\"') + '"'
    if isinstance(t, (bytes, bytearray)):
        try:
            s = bytes(t).decode("utf-8")
            if s.isprintable():
                return '"' + s.replace('"', '\\"') + '"'
        except UnicodeDecodeError:
            pass
        return "<<" + ", ".join(str(b) for b in bytes(t)) + ">>"
    if isinstance(t, tuple):
        return "{" + ", ".join(format_term(x) for x in t) + "}"
    if isinstance(t, list):
        return "[" + ", ".join(format_term(x) for x in t) + "]"
    if isinstance(t, dict):
        return "%{" + ", ".join(f"{format_term(k)} => {format_term(v)}" for k, v in t.items()) + "}"
    if type(t) is Pid:
        return f"#PID<{t.node}.{t.id}.{t.serial}>"
    if type(t) is Reference:
        return "#Reference<" + ".".join(str(i) for i in t.ids) + ">"
    return repr(t)


# -- kinds ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What a kind's :meth:`JobKind.handle` / :meth:`JobKind.handle_timer` returns.

    ``result`` is answered as ``{ok, Result}``; ``changed`` says the portable state changed
    (the job replicates before answering); ``stop`` ends the job after answering (as
    ``finish`` does). A bare value returned instead of a ``Reply`` is a read:
    ``Reply(value)``."""

    result: Any = OK
    changed: bool = False
    stop: bool = False


class JobError(Exception):
    """Raise from :meth:`JobKind.handle` to answer ``{error, Reason}`` instead of
    ``{ok, Result}`` (the job keeps running, nothing changes)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class JobContext:
    """What a kind instance may use: its ``id``, the ``node``, the host's ``config`` and timers."""

    def __init__(self, runner: "_Job") -> None:
        self._runner = runner

    @property
    def id(self) -> Any:
        return self._runner.id

    @property
    def node(self) -> "Node":
        return self._runner.host.node

    def config(self, key: str) -> Any:
        """A setting of the host (``sys.config``'s ``available_processes`` env, defaults above)."""
        return _cfg(self._runner.host.node, key)

    def start_timer(self, ms: float, tag: Any) -> None:
        """Call :meth:`JobKind.handle_timer` with ``tag`` after ``ms`` milliseconds."""
        self._runner.start_timer(ms, tag)

    def now(self) -> float:
        """A monotonic clock, in seconds (never sent anywhere: durations travel as remaining ms)."""
        return asyncio.get_running_loop().time()


class JobKind:
    """A job kind. Subclass, set the state in :meth:`init`, answer requests in :meth:`handle`,
    and decorate with ``@job_kind("name")``. The portable state (:meth:`portable`) must be a
    term; :meth:`restore` rebuilds the live state from it on the node that adopts the job.

    Example::

        @job_kind("counter")
        class Counter(JobKind):
            def init(self, args):
                self.state = 0

            def handle(self, request):
                if request == Atom("incr"):
                    self.state += 1
                    return Reply(self.state, changed=True)
                raise JobError(Atom("unknown_request"))
    """

    #: the kind's atom, set by :func:`job_kind`
    name: ClassVar[Atom]

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.state: Any = None

    def init(self, args: list[Any]) -> Any:
        """Set the initial state from the ``Args`` of ``{start, Kind, Id, Args}``."""
        self.state = None

    def handle(self, request: Any) -> Any:
        """Answer a kind-specific request; return a :class:`Reply` or a bare result, or raise
        :class:`JobError`."""
        raise JobError((Atom("unknown_request"), request))

    def handle_timer(self, tag: Any) -> Reply | None:
        """A timer set with :meth:`JobContext.start_timer` fired."""
        return None

    def portable(self) -> Any:
        """The portable state, with durations as remaining milliseconds computed now."""
        return self.state

    def restore(self, state: Any) -> None:
        """Rebuild the live state from a portable one (adoption, or a failed handoff)."""
        self.state = state

    @classmethod
    def elapse(cls, state: Any, ms: int) -> Any:
        """A portable ``state`` with ``ms`` milliseconds taken off its remaining durations
        (protocol, "Waited time"). Kinds without durations keep the default."""
        return state

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The state after two copies of one job met (protocol, "Partitions"): ``mine`` is
        the surviving copy's whole ``Portable`` map, ``theirs`` the other's. Return the
        merged portable state, or ``NotImplemented`` to keep ``mine``'s (the default)."""
        return NotImplemented


def merge_recent(mine: dict[Any, Any], theirs: dict[Any, Any]) -> tuple[list[tuple[Any, Any]], int]:
    """``Recent`` and ``Seq`` of a merge (protocol, "Partitions" step 3): the winner's
    entries, then the loser's whose OpId the winner's lack, at most ``RECENT_MAX``; the
    greater ``Seq`` plus one."""
    rw, rl = _recent_of(mine), _recent_of(theirs)
    seen = [o for o, _ in rw]
    out = list(rw) + [(o, r) for o, r in rl if not _has_op(seen, o)]
    sw, sl = mine.get(K_SEQ), theirs.get(K_SEQ)
    seq = max(sw if type(sw) is int else 0, sl if type(sl) is int else 0) + 1
    return out[:RECENT_MAX], seq


def _recent_of(portable: dict[Any, Any]) -> list[tuple[Any, Any]]:
    r = portable.get(K_RECENT)
    if not isinstance(r, list):
        return []
    return [(x[0], x[1]) for x in r if type(x) is tuple and len(x) == 2]


def _has_op(op_ids: list[Any], op: Any) -> bool:
    # exact equality (=:=): 1 and 1.0 are different OpIds, as are a tuple and a list
    kb = encode(op)
    return any(encode(o) == kb for o in op_ids)


_KINDS: dict[Atom, type[JobKind]] = {}


def job_kind(name: str) -> Callable[[type[JobKind]], type[JobKind]]:
    """Class decorator: make ``cls`` the job kind ``name`` on every host started afterwards."""

    def deco(cls: type[JobKind]) -> type[JobKind]:
        if not (isinstance(cls, type) and issubclass(cls, JobKind)):
            raise TypeError("@job_kind decorates a JobKind subclass")
        cls.name = Atom(name)
        _KINDS[cls.name] = cls
        return cls

    return deco


def kinds() -> dict[Atom, type[JobKind]]:
    """Every kind this Python program knows."""
    return dict(_KINDS)


@job_kind("Job")
class SimpleJob(JobKind):
    """``'Job'``: a list of events, newest first, ending with the id."""

    def init(self, args: list[Any]) -> None:
        self.state = [self.ctx.id]

    def handle(self, request: Any) -> Any:
        if type(request) is tuple and len(request) == 2 and request[0] == UPDATE and type(request[0]) is Atom:
            self.state = [request[1], *self.state]
            return Reply(OK, changed=True)
        if request == FINISH and type(request) is Atom:
            return Reply(list(self.state), stop=True)
        return super().handle(request)

    def restore(self, state: Any) -> None:
        if type(state) is not list:
            raise ValueError(f"'Job' state must be a list, got {state!r}")
        self.state = list(state)

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The loser's events that the winner lacks (by the OpId at the same position of its
        ``Recent``), in the loser's order, then the winner's state (protocol, "Partitions")."""
        sw, sl = mine.get(K_STATE), theirs.get(K_STATE)
        if type(sw) is not list or type(sl) is not list:
            raise ValueError("'Job' states must be lists")
        rl = _recent_of(theirs)
        known = [o for o, _ in _recent_of(mine)]
        n = min(len(rl), len(sl) - 1)
        new = [sl[i] for i in range(n) if not _has_op(known, rl[i][0])]
        return new + list(sw)


@job_kind("Job.Otp")
class OtpJob(JobKind):
    """``'Job.Otp'``: simulated work of ``work_ms``, then results kept for ``result_ttl``."""

    results: bytes | None
    work_deadline: float | None
    ttl_deadline: float | None

    def init(self, args: list[Any]) -> None:
        self.results = None
        self.ttl_deadline = None
        self._work(float(self.ctx.config("work_ms")))

    def _work(self, ms: float) -> None:
        self.work_deadline = self.ctx.now() + ms / 1000.0
        self.ctx.start_timer(ms, Atom("work_done"))

    def _keep(self, ms: float) -> None:
        self.ttl_deadline = self.ctx.now() + ms / 1000.0
        self.ctx.start_timer(ms, Atom("ttl"))

    def _left(self, deadline: float | None) -> int | None:
        if deadline is None:
            return None
        return max(0, int(round((deadline - self.ctx.now()) * 1000)))

    def portable(self) -> dict[Atom, Any]:
        return {
            K_ID: self.ctx.id,
            K_RESULTS: self.results,
            K_WORK_LEFT: self._left(self.work_deadline) if self.results is None else None,
            K_TTL_LEFT: self._left(self.ttl_deadline) if self.results is not None else None,
        }

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"'Job.Otp' state must be a map, got {state!r}")
        self.results = state.get(K_RESULTS)
        self.work_deadline = self.ttl_deadline = None
        if self.results is None:
            left = state.get(K_WORK_LEFT)
            self._work(float(left) if isinstance(left, int) else 0.0)
        else:
            left = state.get(K_TTL_LEFT)
            self._keep(float(left) if isinstance(left, int) else float(self.ctx.config("result_ttl")))

    def handle(self, request: Any) -> Any:
        if request == CHECK_RESULTS and type(request) is Atom:
            return Reply(self.results)
        return super().handle(request)

    @classmethod
    def elapse(cls, state: Any, ms: int) -> Any:
        if not isinstance(state, dict):
            return state
        out = dict(state)
        key = K_WORK_LEFT if state.get(K_RESULTS) is None else K_TTL_LEFT
        left = state.get(key)
        if type(left) is int:
            out[key] = max(left - int(ms), 0)
        return out

    @classmethod
    def merge(cls, mine: dict[Any, Any], theirs: dict[Any, Any]) -> Any:
        """The results of either copy (the winner's first); with none, the copy further along."""
        sw, sl = mine.get(K_STATE), theirs.get(K_STATE)
        if not isinstance(sw, dict) or not isinstance(sl, dict):
            raise ValueError("'Job.Otp' states must be maps")
        if sw.get(K_RESULTS) is not None:
            return sw
        if sl.get(K_RESULTS) is not None:
            return sl
        lw, ll = sw.get(K_WORK_LEFT), sl.get(K_WORK_LEFT)
        if type(lw) is int and type(ll) is int and ll < lw:
            return {**sw, K_WORK_LEFT: ll}
        return sw

    def handle_timer(self, tag: Any) -> Reply | None:
        if tag == "work_done" and self.results is None:
            self.results = results_binary(self.ctx.id)
            self.work_deadline = None
            self._keep(float(self.ctx.config("result_ttl")))
            return Reply(changed=True)
        if tag == "ttl" and self.results is not None:
            return Reply(stop=True)
        return None


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


def _reason_of(e: BaseException) -> Any:
    return e.reason if isinstance(e, CallError) else exception_reason(e)


# -- the job process --------------------------------------------------------------------------
class _Job:
    """One job: runs in its own process, serves ``{pynode_job_op, ...}`` calls one at a time,
    replicates every change before acknowledging it, and moves on ``{pynode_job_handoff, T}``."""

    def __init__(self, host: "JobHost", kind: Atom, job_id: Any) -> None:
        self.host = host
        self.kind = kind
        self.id = job_id
        self.key = job_key(job_id)
        self.impl = _KINDS[kind](JobContext(self))
        self.seq = 0
        self.recent: list[tuple[Any, Any]] = []
        self.proc: Process = None  # type: ignore[assignment]
        self.ready = False
        self.replica_nodes: list[Atom] = []
        self._replica_mons: dict[Reference, Atom] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = itertools.count(1)

    # -- timers ---------------------------------------------------------------------------
    def start_timer(self, ms: float, tag: Any) -> None:
        tid = next(self._timer_ids)
        loop = asyncio.get_running_loop()
        self._timers[tid] = loop.call_later(max(0.0, ms / 1000.0), self.proc.deliver, (_TIMER, tid, tag))

    def cancel_timers(self) -> None:
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    # -- portable state -------------------------------------------------------------------
    def portable(self) -> dict[Atom, Any]:
        return {
            K_KIND: self.kind,
            K_ID: self.id,
            K_STATE: self.impl.portable(),
            K_RECENT: [(o, r) for o, r in self.recent],
            K_SEQ: self.seq,
        }

    # -- life -----------------------------------------------------------------------------
    async def run_start(self, proc: Process, args: list[Any], from_: From | None) -> None:
        self.proc = proc
        reg = await self.host.node.registry.reg(proc, self.key, self.kind)
        if reg != OK:
            if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and reg[1][:1] == (ALREADY_REGISTERED,):
                self._answer(from_, (ERROR, JOB_ALREADY_STARTED))
            else:
                self._answer(from_, reg if type(reg) is tuple else (ERROR, reg))
            return
        try:
            await _maybe_await(self.impl.init(list(args) if isinstance(args, (list, tuple)) else [args]))
        except Exception as e:
            log.exception("job %r of kind %s failed to start", self.id, self.kind)
            await self.host.node.registry.unreg(proc, self.key)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        self.seq = 1
        await self.replicate()
        self.ready = True
        self._answer(from_, (OK, proc.pid))
        await self.serve()

    async def run_adopt(
        self,
        proc: Process,
        portable: dict[Any, Any],
        from_: From | None,
        old_owner: Pid | None = None,
        old_replicas: Iterable[Atom] = (),
    ) -> None:
        self.proc = proc
        # The caller of a handoff's adopt is the old job: its unreg may still be on its way.
        stale_holder = old_owner if old_owner is not None else (from_[0] if from_ is not None else None)
        reg = await self._reg_for_adoption(stale_holder)
        if reg != OK:
            log.info("%s: adoption of job %r gave up: %r", self.host.node.name, self.id, reg)
            self._answer(from_, reg)
            return
        try:
            self.impl.restore(portable.get(K_STATE))
        except Exception as e:
            log.exception("job %r of kind %s: bad portable state", self.id, self.kind)
            await self.host.node.registry.unreg(proc, self.key)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        recent = portable.get(K_RECENT)
        self.recent = [tuple(x) for x in recent if type(x) is tuple and len(x) == 2][:RECENT_MAX] if isinstance(recent, list) else []  # type: ignore[misc]
        seq = portable.get(K_SEQ)
        self.seq = (seq if type(seq) is int else 0) + 1
        await self.replicate()
        if old_owner is not None:
            me = self.host.node.name
            for n in old_replicas:
                if n != me and n not in self.replica_nodes:
                    self.proc.cast((Atom(HOST_NAME), Atom(n)), (DROP_REPLICA, self.id, old_owner))
        self.ready = True
        log.info("%s: adopted job %r (%s), seq %d", self.host.node.name, self.id, self.kind, self.seq)
        self._answer(from_, (OK, proc.pid))
        await self.serve()

    async def _reg_for_adoption(self, old_owner: Pid | None) -> Any:
        """Register the name; while the registry still lists a holder on a dead node (the dead
        owner before the nodedown purge), retry, for at most ``adopt_reg_timeout``."""
        node = self.host.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _secs(_cfg(node, "adopt_reg_timeout"))
        delay = BACKOFF_FIRST
        while True:
            reg = await node.registry.reg(self.proc, self.key, self.kind)
            if reg == OK:
                return OK
            holder = reg[1][1] if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and len(reg[1]) == 2 else None
            stale = type(holder) is Pid and (holder == old_owner or (holder.node != node.name and holder.node not in node.connected_nodes))
            if not stale or loop.time() >= deadline:
                return reg
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _answer(self, from_: From | None, value: Any) -> None:
        if from_ is not None:
            gen_reply(self.proc, from_, value)

    async def serve(self) -> None:
        proc = self.proc
        while True:
            msg = await proc.receive()
            if type(msg) is not tuple or not msg:
                continue
            tag = msg[0]
            if tag == GEN_CALL and len(msg) == 3 and type(msg[1]) is tuple:
                await self._call(msg[2], msg[1])
            elif tag == _TIMER and len(msg) == 3:
                if self._timers.pop(msg[1], None) is None:
                    continue  # cancelled meanwhile
                try:
                    r = await _maybe_await(self.impl.handle_timer(msg[2]))
                except Exception:
                    log.exception("job %r: handle_timer(%r) failed", self.id, msg[2])
                    continue
                if isinstance(r, Reply) and r.stop:
                    await self._end()
                    return
                if isinstance(r, Reply) and r.changed:
                    self.seq += 1
                    await self.replicate()
            elif tag == HANDOFF and len(msg) == 2:
                if await self._handoff(msg[1]):
                    return
            elif tag == MEMBERSHIP and len(msg) == 1:
                await self._follow_membership()
            elif tag == EXIT_TAG and len(msg) == 3:
                await self._exit_signal(msg[1], msg[2])
            elif tag == DOWN_TAG and len(msg) == 5 and msg[1] in self._replica_mons:
                gone = self._replica_mons.pop(msg[1])
                log.info("job %r: replica host %s is gone (%s); replicating again", self.id, gone, msg[4])
                if gone in self.replica_nodes:
                    self.replica_nodes.remove(gone)
                await self.replicate()

    async def _call(self, request: Any, from_: From) -> None:
        if type(request) is tuple and len(request) == 2 and request[0] == MERGE and type(request[0]) is Atom:
            self._answer(from_, await self._merge_from(request[1], from_[0]))
            return
        if not (type(request) is tuple and len(request) == 3 and request[0] == JOB_OP):
            self._answer(from_, (ERROR, (Atom("unknown_call"), request)))
            return
        _, op_id, req = wire(request)
        for oid, rep in self.recent:
            if oid == op_id and type(oid) is type(op_id):
                self._answer(from_, rep)
                return
        if req == GET_STATE and type(req) is Atom:
            self._answer(from_, (OK, self.impl.portable()))
            return
        try:
            r = await _maybe_await(self.impl.handle(req))
        except JobError as e:
            self._answer(from_, (ERROR, e.reason))
            return
        except Exception as e:
            log.exception("job %r: handle(%r) failed", self.id, req)
            self._answer(from_, (ERROR, exception_reason(e)))
            return
        if not isinstance(r, Reply):
            r = Reply(r)
        answer = (OK, r.result)
        if r.changed or r.stop:
            self.recent.insert(0, (op_id, answer))
            del self.recent[RECENT_MAX:]
        if r.stop:
            await self._end()
            self._answer(from_, answer)
            raise Exit(NORMAL)
        if r.changed:
            self.seq += 1
            await self.replicate()
        self._answer(from_, answer)

    async def _end(self) -> None:
        """The job is done (finish, TTL): give up the name, tell the replicas, stop timers."""
        self.cancel_timers()
        await self.host.node.registry.unreg(self.proc, self.key)
        for n in self.replica_nodes:
            self.proc.cast((Atom(HOST_NAME), n), (DROP_REPLICA, self.id, self.proc.pid))
        self.replica_nodes = []

    # -- replication ----------------------------------------------------------------------
    def _hosts(self) -> dict[Atom, Pid]:
        out: dict[Atom, Pid] = {}
        for pid in self.host.node.registry.lookup_pids(HOST_KEY):
            out.setdefault(pid.node, pid)
        return out

    async def replicate(self) -> None:
        """Store the portable state on the replica hosts; return once each has acknowledged
        (or when no other host can take it)."""
        node = self.host.node
        me = node.name
        n = int(_cfg(node, "replicas"))
        timeout = _secs(_cfg(node, "call_timeout"))
        failed: set[Atom] = set()
        portable = self.portable()
        targets: list[Atom] = []
        pids: dict[Atom, Pid] = {}
        while True:
            hosts = {h: p for h, p in self._hosts().items() if h not in failed}
            targets = replica_targets(hosts, me, n)
            pids = {t: hosts[t] for t in targets}
            ok = True
            for t in targets:
                req = (REPLICATE, self.id, self.kind, portable, self.seq, self.proc.pid, list(targets))
                try:
                    await self.proc.call(pids[t], req, timeout)
                except CallError as e:
                    log.info("job %r: replicate to %s failed (%s)", self.id, t, e.reason)
                    failed.add(t)
                    ok = False
                    break
            if ok:
                break
        for old in self.replica_nodes:
            if old not in targets:
                self.proc.cast((Atom(HOST_NAME), old), (DROP_REPLICA, self.id, self.proc.pid))
        self.replica_nodes = list(targets)
        for ref in list(self._replica_mons):
            self.proc.demonitor(ref, flush=True)
        self._replica_mons = {self.proc.monitor(pids[t]): t for t in targets}

    async def _follow_membership(self) -> None:
        """The set of hosts changed (protocol, "Replicas follow membership"): replicate the
        current state (same Seq) when the targets are not the hosts holding it."""
        node = self.host.node
        targets = replica_targets(self._hosts(), node.name, int(_cfg(node, "replicas")))
        if targets != self.replica_nodes:
            await self.replicate()

    # -- partitions: two copies of one job --------------------------------------------------
    async def _exit_signal(self, sender: Any, reason: Any) -> None:
        """A trapped exit signal. ``{name_conflict, Key, Winner}`` for this job's key merges
        this copy into the winner (protocol, "Partitions"); any other reason acts as it would
        on a process that does not trap exits."""
        if (type(reason) is tuple and len(reason) == 3 and reason[0] == NAME_CONFLICT
                and type(reason[0]) is Atom and encode(reason[1]) == encode(self.key) and type(reason[2]) is Pid):
            await self._merge_into(reason[2])
            return
        if reason == NORMAL and type(reason) is Atom:
            return
        self.cancel_timers()
        raise Exit(reason)

    async def _merge_into(self, winner: Pid) -> None:
        """Hand this copy's state to ``winner`` and end; take the name back if the winner is
        gone; give up after ``job_timeout``."""
        node = self.host.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _secs(_cfg(node, "job_timeout"))
        timeout = _secs(_cfg(node, "call_timeout"))
        delay = BACKOFF_FIRST
        target: Pid = winner
        while True:
            portable = self.portable()
            try:
                r = await self.proc.call(target, (MERGE, portable), timeout)
            except CallError as e:
                r = (ERROR, e.reason)
            if r == OK and type(r) is Atom:
                log.info("%s: job %r merged into its copy %s; this copy ends", node.name, self.id, format_term(target))
                self.cancel_timers()
                for n in self.replica_nodes:
                    self.proc.cast((Atom(HOST_NAME), n), (DROP_REPLICA, self.id, self.proc.pid))
                self.replica_nodes = []
                raise Exit(NORMAL)
            log.info("%s: job %r could not merge into %s (%r); taking the name back", node.name, self.id, format_term(target), r)
            reg = await node.registry.reg(self.proc, self.key, self.kind)
            if reg == OK:
                log.warning("%s: job %r serves again (its other copy %s is gone)", node.name, self.id, format_term(target))
                return
            holder = reg[1][1] if type(reg) is tuple and len(reg) == 2 and type(reg[1]) is tuple and len(reg[1]) == 2 else None
            if type(holder) is Pid:
                target = holder
            if loop.time() >= deadline:
                log.error("%s: job %r could neither merge nor take its name back; it ends with state %s",
                          node.name, self.id, format_term(portable))
                self.cancel_timers()
                raise Exit(NORMAL)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _merge_from(self, theirs: Any, sender: Pid) -> Any:
        """This copy won: merge the loser's ``Portable`` in, replicate, answer ``ok``."""
        node = self.host.node
        theirs = wire(theirs)
        if (not isinstance(theirs, dict) or theirs.get(K_KIND) != self.kind
                or encode(theirs.get(K_ID)) != encode(wire(self.id))):
            return (ERROR, NOT_THIS_JOB)
        mine = self.portable()
        try:
            merged = type(self.impl).merge(mine, theirs)
        except Exception:
            log.exception("job %r: merge of the copy from %s failed; keeping this copy's state", self.id, sender.node)
            merged = NotImplemented
        recent, seq = merge_recent(mine, theirs)
        if merged is NotImplemented:
            log.warning("pynode jobs: job %s met its copy from %s after a partition; kind %s has no merge: kept this "
                        "copy's state %s, dropped %s", format_term(self.id), sender.node, self.kind,
                        _short(mine.get(K_STATE)), _short(theirs.get(K_STATE)))
        else:
            self.cancel_timers()
            self.impl.restore(merged)
            log.warning("pynode jobs: job %s merged the copy from %s after a partition: %s + %s -> %s",
                        format_term(self.id), sender.node, _short(mine.get(K_STATE)), _short(theirs.get(K_STATE)),
                        _short(merged))
        self.recent = recent
        self.seq = seq
        await self.replicate()
        return OK

    # -- handoff --------------------------------------------------------------------------
    async def _handoff(self, target: Any) -> bool:
        """Move to ``target``; True when the job has moved (the caller then exits normal)."""
        portable = self.portable()  # remaining durations computed now
        self.cancel_timers()
        node = self.host.node
        await node.registry.unreg(self.proc, self.key)
        try:
            r = await self.proc.call((Atom(HOST_NAME), Atom(target)), (ADOPT, self.kind, self.id, portable), _secs(_cfg(node, "adopt_timeout")))
        except CallError as e:
            r = (ERROR, e.reason)
        if type(r) is tuple and len(r) == 2 and r[0] == OK:
            log.info("%s: job %r handed off to %s", node.name, self.id, target)
            return True
        log.warning("%s: handoff of job %r to %s failed: %r", node.name, self.id, target, r)
        again = await node.registry.reg(self.proc, self.key, self.kind)
        if again != OK:
            log.error("%s: job %r could not take its name back (%r); it ends", node.name, self.id, again)
            return True
        self.impl.restore(portable[K_STATE])
        driver = self.host.handoff_driver
        if driver is not None:
            self.proc.send(driver, (Atom("handoff_failed"), self.proc.pid, target))
        return False


# -- the host -----------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _Replica:
    id: Any
    kind: Atom
    portable: Any
    seq: int
    owner: Pid
    replicas: list[Atom]
    #: when it was stored, on this node's monotonic clock (seconds): "Waited time"
    stored_at: float = 0.0


@dataclasses.dataclass(slots=True)
class _Entry:
    job: _Job
    pid: Pid
    ref: Reference


class JobHost(GenServer):
    """The ``pynode_jobs`` process. Start with :func:`start_host` (done by ``Node.start``)."""

    handoff_driver: Pid | None = None

    async def init(self, *args: Any) -> None:
        node = self.process.node
        conf_kinds = _cfg(node, "job_kinds")
        known = kinds()
        if conf_kinds != Atom("all"):
            wanted = {Atom(str(x).removeprefix("Elixir.")) for x in (conf_kinds if isinstance(conf_kinds, list) else [conf_kinds])}
            known = {k: v for k, v in known.items() if k in wanted}
        self.kinds: list[Atom] = sorted(known)
        self.stopping = False
        #: the handoff is over: nothing more is adopted here (the node is about to go)
        self.closed = False
        self.jobs: dict[Pid, _Entry] = {}
        self._job_refs: dict[Reference, Pid] = {}
        self.replicas: dict[bytes, _Replica] = {}
        self._owner_mons: dict[Pid, Reference] = {}
        self._owner_refs: dict[Reference, Pid] = {}
        #: the replica keys held per owner pid (so an owner's DOWN and a forget are O(1))
        self._by_owner: dict[Pid, set[bytes]] = {}
        self.orphans: set[bytes] = set()
        #: processes running a ``{client, Op, Args}`` operation for a caller
        self.client_workers: set[Process] = set()
        self._rr = 0
        node.monitor_nodes(self.process)
        r = await node.registry.reg(self.process, HOST_KEY, list(self.kinds))
        if r != OK:
            raise RuntimeError(f"job host could not register {HOST_KEY}: {r!r}")
        #: the host nodes last seen (protocol, "Replicas follow membership")
        self._hosts_seen: frozenset[Atom] = frozenset()
        self._check_timer: asyncio.TimerHandle | None = None
        self._check_membership()

    @property
    def node(self) -> "Node":
        return self.process.node

    # -- inspection -----------------------------------------------------------------------
    def list(self) -> list[tuple[Any, Atom, Pid]]:
        """``[(Id, Kind, Pid)]`` of the jobs this host runs (the ``list`` call)."""
        return [(e.job.id, e.job.kind, e.pid) for e in self.jobs.values() if e.job.ready]

    # -- calls ----------------------------------------------------------------------------
    async def handle_call(self, request: Any, from_: From) -> Any:
        if request == LIST and type(request) is Atom:
            return self.list()
        if request == REPLICAS and type(request) is Atom:
            return [(r.id, r.kind, r.owner, r.seq) for r in self.replicas.values()]
        if type(request) is not tuple or not request:
            return (ERROR, (Atom("unknown_call"), request))
        tag = request[0]
        if tag == START and len(request) == 4:
            _, kind, job_id, args = wire(request)
            if self.stopping:
                return (ERROR, STOPPING)
            if kind not in self.kinds or type(kind) is not Atom:
                return (ERROR, UNKNOWN_KIND)
            self._spawn_job(kind, job_id, lambda job, proc: job.run_start(proc, args, from_))
            return _NOREPLY
        if tag == ADOPT and len(request) == 4:
            _, kind, job_id, portable = request
            if self.stopping:
                return (ERROR, STOPPING)
            if kind not in self.kinds or type(kind) is not Atom:
                return (ERROR, UNKNOWN_KIND)
            if not isinstance(portable, dict) or K_STATE not in portable:
                return (ERROR, Atom("bad_portable"))
            self._drop_local_replica(job_id)
            self._spawn_job(kind, job_id, lambda job, proc: job.run_adopt(proc, portable, from_))
            return _NOREPLY
        if tag == REPLICATE and len(request) == 7:
            return self._store_replica(*request[1:])
        if tag == CLIENT and len(request) == 3:
            if self.stopping:
                # Left unanswered: the caller's call ends with an exit when this node goes
                # (noconnection / nodedown) and it retries through another host node, with
                # nothing applied here.
                return _NOREPLY
            op, args = request[1], request[2]
            workers = self.client_workers

            async def body(proc: Process) -> None:
                try:
                    try:
                        value = await _client_op(proc, op, args if isinstance(args, list) else [args])
                    except Exception as e:
                        value = (ERROR, exception_reason(e))
                    gen_reply(proc, from_, value)
                finally:
                    workers.discard(proc)

            workers.add(self.node.spawn(body))
            return _NOREPLY
        if tag == _SHUTDOWN and len(request) == 1:
            await self._begin_shutdown(from_)
            return _NOREPLY
        return (ERROR, (Atom("unknown_call"), request))

    async def handle_cast(self, request: Any) -> None:
        if type(request) is tuple and len(request) == 3 and request[0] == DROP_REPLICA:
            kb = _id_bytes(request[1])
            rep = self.replicas.get(kb)
            if rep is not None and rep.owner == request[2]:
                self._forget_replica(kb)

    async def handle_info(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            return
        if msg[0] == DOWN_TAG and len(msg) == 5:
            ref, reason = msg[1], msg[4]
            pid = self._job_refs.pop(ref, None)
            if pid is not None:
                self.jobs.pop(pid, None)
                return
            owner = self._owner_refs.pop(ref, None)
            if owner is not None:
                self._owner_mons.pop(owner, None)
                self._owner_down(owner, reason)
        elif msg[0] == NODEDOWN and len(msg) == 2:
            self._review_orphans()
            self._check_membership()
        elif msg[0] == NODEUP and len(msg) == 2:
            self._check_membership()
        elif msg[0] == _CHECK and len(msg) == 1:
            self._check_timer = None
            self._check_membership()

    def _check_membership(self) -> None:
        """Tell every job when the set of host nodes changed; look again in ``replica_check`` ms."""
        hosts = frozenset(p.node for p in self.node.registry.lookup_pids(HOST_KEY))
        if hosts != self._hosts_seen:
            self._hosts_seen = hosts
            for pid, e in self.jobs.items():
                if e.job.ready:
                    self.process.send(pid, (MEMBERSHIP,))
        if self._check_timer is None:
            loop = asyncio.get_running_loop()
            self._check_timer = loop.call_later(_secs(_cfg(self.node, "replica_check")), self.process.deliver, (_CHECK,))

    async def terminate(self, reason: Any) -> None:
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None

    # -- jobs -----------------------------------------------------------------------------
    def _spawn_job(self, kind: Atom, job_id: Any, run: Callable[[_Job, Process], Awaitable[None]]) -> _Job:
        job = _Job(self, kind, job_id)

        async def body(proc: Process) -> None:
            await run(job, proc)

        # Jobs trap exits: a name_conflict signal merges the copy instead of killing it.
        proc = self.node.spawn(body, trap_exit=True)
        ref = self.process.monitor(proc.pid)
        self.jobs[proc.pid] = _Entry(job, proc.pid, ref)
        self._job_refs[ref] = proc.pid
        return job

    # -- replicas -------------------------------------------------------------------------
    def _store_replica(self, job_id: Any, kind: Any, portable: Any, seq: Any, owner: Any, replicas: Any) -> Any:
        if type(owner) is not Pid or type(seq) is not int or not isinstance(replicas, list):
            return (ERROR, Atom("badarg"))
        kb = _id_bytes(job_id)
        cur = self.replicas.get(kb)
        # A higher Seq or a new OwnerPid replaces; an equal Seq from the same owner is the
        # same change sent again (re-replication), so refreshing it is harmless.
        if cur is None or cur.owner != owner or seq >= cur.seq:
            old_owner = cur.owner if cur is not None else None
            if old_owner is not None and old_owner != owner:
                self._unindex(old_owner, kb)
            self.replicas[kb] = _Replica(job_id, kind, portable, seq, owner, [Atom(n) for n in replicas],
                                         time.monotonic())
            self._by_owner.setdefault(owner, set()).add(kb)
            self.orphans.discard(kb)
            if owner not in self._owner_mons:
                ref = self.process.monitor(owner)
                self._owner_mons[owner] = ref
                self._owner_refs[ref] = owner
            if old_owner is not None and old_owner != owner:
                self._maybe_unmonitor(old_owner)
        return OK

    def _forget_replica(self, kb: bytes) -> None:
        rep = self.replicas.pop(kb, None)
        self.orphans.discard(kb)
        if rep is not None:
            self._unindex(rep.owner, kb)
            self._maybe_unmonitor(rep.owner)

    def _drop_local_replica(self, job_id: Any) -> None:
        self._forget_replica(_id_bytes(job_id))

    def _unindex(self, owner: Pid, kb: bytes) -> None:
        kbs = self._by_owner.get(owner)
        if kbs is not None:
            kbs.discard(kb)
            if not kbs:
                del self._by_owner[owner]

    def _maybe_unmonitor(self, owner: Pid) -> None:
        if self._by_owner.get(owner):
            return
        ref = self._owner_mons.pop(owner, None)
        if ref is not None:
            self._owner_refs.pop(ref, None)
            self.process.demonitor(ref, flush=True)

    def _owner_down(self, owner: Pid, reason: Any) -> None:
        for kb in list(self._by_owner.get(owner, ())):
            if reason == NOCONNECTION and type(reason) is Atom:
                self.orphans.add(kb)
            else:
                self._forget_replica(kb)
        self._review_orphans()

    def _review_orphans(self) -> None:
        """Adopt the orphaned replicas this node is first in line for (protocol, "Replication")."""
        if self.closed:
            return
        node = self.node
        alive = set(node.connected_nodes)
        for kb in list(self.orphans):
            rep = self.replicas[kb]
            if not adopts(node.name, rep.replicas, alive):
                continue
            holder = node.registry.where(job_key(rep.id))
            if type(holder) is Pid and holder != rep.owner and (holder.node == node.name or holder.node in alive):
                continue  # already running elsewhere; keep the replica until told otherwise
            self._forget_replica(kb)
            if rep.kind not in self.kinds or not isinstance(rep.portable, dict):
                log.error("%s: cannot adopt job %r of unknown kind %s", node.name, rep.id, rep.kind)
                continue
            log.info("%s: owner %s of job %r is gone; adopting it from the replica (seq %d)", node.name, rep.owner, rep.id, rep.seq)
            waited = int((time.monotonic() - rep.stored_at) * 1000)
            portable = dict(rep.portable)
            try:
                portable[K_STATE] = _KINDS[rep.kind].elapse(portable.get(K_STATE), max(waited, 0))
            except Exception:
                log.exception("job %r: elapse(%d ms) failed; adopting the state as stored", rep.id, waited)
            owner, olds = rep.owner, rep.replicas
            self._spawn_job(rep.kind, rep.id, lambda job, proc: job.run_adopt(proc, portable, None, owner, olds))

    # -- graceful shutdown ----------------------------------------------------------------
    async def _begin_shutdown(self, from_: From) -> None:
        if self.stopping:
            gen_reply(self.process, from_, OK)
            return
        self.stopping = True
        await self.node.registry.unreg(self.process, HOST_KEY)
        host = self

        loop = asyncio.get_running_loop()
        deadline = loop.time() + _secs(_cfg(self.node, "handoff_timeout"))

        async def driver(proc: Process) -> None:
            try:
                tried: set[Pid] = set()
                await host._hand_off_all(proc, tried, deadline)
                await host._wait_client_workers(deadline)
                await host._hand_off_all(proc, tried, deadline)  # any job adopted from a replica meanwhile
            finally:
                host.handoff_driver = None
                host.closed = True
                gen_reply(proc, from_, OK)

        self.handoff_driver = self.node.spawn(driver).pid

    async def _wait_client_workers(self, deadline: float) -> None:
        """Let the client operations already running here finish (their callers get their
        answers) before the node goes, for at most the rest of the handoff time."""
        loop = asyncio.get_running_loop()
        while self.client_workers:
            left = deadline - loop.time()
            tasks = [p.task for p in self.client_workers if p.task is not None and not p.task.done()]
            if left <= 0 or not tasks:
                if self.client_workers and left <= 0:
                    log.warning("%s: %d client operation(s) still running at shutdown", self.node.name, len(self.client_workers))
                return
            await asyncio.wait(tasks, timeout=left)

    def _handoff_order(self, e: _Entry) -> tuple[Atom, ...]:
        """The targets for one job: the other hosts that know its kind, sorted, rotated by
        the host's round-robin counter (empty when there is none)."""
        node = self.node
        targets = sorted(
            {pid.node for pid, ks in node.registry.lookup_values(HOST_KEY)
             if pid.node != node.name and isinstance(ks, list) and e.job.kind in ks},
            key=_node_order,
        )
        if not targets:
            return ()
        k = self._rr % len(targets)
        self._rr += 1
        return tuple(targets[k:] + targets[:k])

    async def _hand_off_all(self, proc: Process, tried: set[Pid], deadline: float) -> None:
        """Hand every ready job off, at most ``handoff_concurrency`` at a time (protocol,
        "Graceful shutdown"), until ``deadline``. ``proc`` (the driver) monitors the jobs in
        flight and receives their ``DOWN`` (moved) or ``handoff_failed`` (next target)."""
        node = self.node
        loop = asyncio.get_running_loop()
        limit = max(1, int(_cfg(node, "handoff_concurrency")))
        #: monitor ref -> (job entry, the targets not tried yet)
        inflight: dict[Reference, tuple[_Entry, tuple[Atom, ...]]] = {}
        by_pid: dict[Pid, Reference] = {}
        queue: collections.deque[_Entry] = collections.deque()

        def give_up(ref: Reference) -> None:
            e, _ = inflight.pop(ref)
            del by_pid[e.pid]
            proc.demonitor(ref, flush=True)
            log.warning("%s: job %r could not be handed off; it dies with the node", node.name, e.job.id)

        def ours(m: Any) -> bool:
            if type(m) is not tuple:
                return False
            if len(m) == 5 and m[0] == DOWN_TAG:
                return m[1] in inflight
            return len(m) == 3 and m[0] == "handoff_failed" and m[1] in by_pid

        while True:
            while len(inflight) < limit and loop.time() < deadline:
                if not queue:
                    queue.extend(e for e in self.jobs.values() if e.pid not in tried and e.job.ready)
                    if not queue:
                        break
                e = queue.popleft()
                if e.pid in tried or e.pid not in self.jobs:
                    continue
                tried.add(e.pid)
                order = self._handoff_order(e)
                if not order:
                    log.warning("%s: no other host knows %s; job %r dies with the node", node.name, e.job.kind, e.job.id)
                    continue
                mref = proc.monitor(e.pid)
                inflight[mref] = (e, order[1:])
                by_pid[e.pid] = mref
                proc.send(e.pid, (HANDOFF, order[0]))
            left = deadline - loop.time()
            if not inflight:
                if left <= 0 or all(p in tried for p in self.jobs):
                    if left <= 0 and any(p not in tried for p in self.jobs):
                        log.warning("%s: handoff time is up; the remaining jobs die with the node", node.name)
                    return
                await asyncio.sleep(0.01)  # jobs still starting or adopting: let them settle
                continue
            try:
                m = await proc.receive(ours, timeout=max(left, 0))
            except ReceiveTimeout:
                for ref in list(inflight):
                    give_up(ref)
                continue
            if m[0] == DOWN_TAG:
                e, _ = inflight.pop(m[1])
                del by_pid[e.pid]
                continue
            ref = by_pid[m[1]]
            e, rest = inflight[ref]
            if rest:
                inflight[ref] = (e, rest[1:])
                proc.send(e.pid, (HANDOFF, rest[0]))
            else:
                give_up(ref)

    async def shutdown(self) -> None:
        """Graceful handoff (protocol, "Graceful shutdown"): stop taking jobs, move each job
        to another host, return when done. Run by ``Node.stop`` before anything is killed."""
        if not self.process.alive:
            return
        try:
            await self.node.call(self.pid, (_SHUTDOWN,), timeout=_secs(_cfg(self.node, "handoff_timeout")))
        except CallError as e:
            log.error("%s: job handoff did not complete: %s", self.node.name, e.reason)


_SHUTDOWN = Atom("$pynode_jobs_shutdown")
_CHECK = Atom("$pynode_jobs_check")
NODEUP = Atom("nodeup")


def _short(t: Any, limit: int = 200) -> str:
    text = format_term(t)
    return text if len(text) <= limit else text[:limit] + "..."


def _id_bytes(job_id: Any) -> bytes:
    return key_bytes(job_id)


async def start_host(node: "Node") -> JobHost:
    """Start ``pynode_jobs`` on ``node`` (done by ``Node.start`` unless the node's config has
    ``host_jobs`` false), expose it as ``node.jobs`` and hook its handoff into ``Node.stop``."""
    host = await JobHost.start(node, name=HOST_NAME)
    assert isinstance(host, JobHost)
    node.jobs = host  # type: ignore[attr-defined]
    on_stop = getattr(node, "on_stop", None)
    if on_stop is not None:
        on_stop(host.shutdown)
    return host


# -- the client ---------------------------------------------------------------------------------
_rr_counters: "weakref.WeakKeyDictionary[Any, itertools.count[int]]" = weakref.WeakKeyDictionary()


def _next_rr(node: Any) -> int:
    c = _rr_counters.get(node)
    if c is None:
        c = _rr_counters[node] = itertools.count()
    return next(c)


def _has_registry(node: Any) -> bool:
    return getattr(node, "registry", None) is not None


async def _with_proc(target: Any, fn: Callable[[Process], Awaitable[Any]]) -> Any:
    """Run ``fn(proc)`` as ``target`` (a Process) or in a short-lived process of ``target`` (a Node)."""
    if isinstance(target, Process):
        return await fn(target)
    out: list[Any] = []

    async def body(proc: Process) -> None:
        try:
            out.append((True, await fn(proc)))
        except Exception as e:
            out.append((False, e))

    p = target.spawn(body)
    await asyncio.shield(p.task)
    if not out:
        raise CallError(p.exit_reason)
    ok, v = out[0]
    if not ok:
        raise v
    return v


def _limits(node: Any, timeout: float | None) -> tuple[float, float, float]:
    job_timeout = timeout if timeout is not None else _secs(_cfg(node, "job_timeout"))
    return job_timeout, _secs(_cfg(node, "missing_grace")), _secs(_cfg(node, "call_timeout"))


async def _local_start(proc: Process, kind: Atom, job_id: Any, args: list[Any], timeout: float | None = None) -> Any:
    node = proc.node
    job_timeout, grace, call_timeout = _limits(node, timeout)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + job_timeout
    delay = BACKOFF_FIRST
    refused: set[Atom] = set()
    retried = False
    while True:
        values = node.registry.lookup_values(HOST_KEY)
        hosts = sorted(
            {pid.node: pid for pid, ks in values if isinstance(ks, list) and kind in ks and pid.node not in refused}.items(),
            key=lambda kv: _node_order(kv[0]),
        )
        now = loop.time()
        if not hosts:
            if now - t0 >= min(grace, job_timeout):
                return (ERROR, UNKNOWN_KIND if values else NO_HOSTS)
        else:
            host_node, host_pid = hosts[_next_rr(node) % len(hosts)]
            try:
                r = await proc.call(host_pid, (START, kind, job_id, args), min(call_timeout, max(0.001, deadline - now)))
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
                retried = True
                refused.add(host_node)  # it may be gone; the registry will tell
            else:
                if r == (ERROR, STOPPING):
                    refused.add(host_node)
                elif r == (ERROR, JOB_ALREADY_STARTED) and retried:
                    # our own earlier attempt got through before its answer was lost
                    holder = node.registry.where(job_key(job_id))
                    return (OK, holder) if type(holder) is Pid else r
                else:
                    return r
        if loop.time() >= deadline:
            return (ERROR, TIMEOUT)
        if refused and len(refused) >= len({pid.node for pid, _ in values}):
            refused.clear()
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _local_op(proc: Process, job_id: Any, request: Any, op_id: Any = None, timeout: float | None = None) -> Any:
    """Run one operation on a job; ``{ok, Result}``, ``{error, no_such_job}`` or ``{error, R}``."""
    node = proc.node
    job_timeout, grace, call_timeout = _limits(node, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job_timeout
    if op_id is None:
        op_id = node.make_ref()
    key = job_key(job_id)
    missing_since: float | None = None
    delay = BACKOFF_FIRST
    while True:
        now = loop.time()
        pid = node.registry.where(key)
        if type(pid) is not Pid:
            if missing_since is None:
                missing_since = now
            elif now - missing_since >= grace:
                return (ERROR, NO_SUCH_JOB)
        else:
            missing_since = None
            try:
                return await proc.call(pid, (JOB_OP, op_id, request), min(call_timeout, max(0.001, deadline - now)))
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
        if loop.time() >= deadline:
            return (ERROR, TIMEOUT)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _local_list(proc: Process, timeout: float | None = None) -> list[tuple[Any, Atom, Pid]]:
    node = proc.node
    call_timeout = _secs(_cfg(node, "call_timeout")) if timeout is None else timeout
    out: list[tuple[Any, Atom, Pid]] = []
    for pid in sorted(node.registry.lookup_pids(HOST_KEY), key=lambda p: _node_order(p.node)):
        try:
            r = await proc.call(pid, LIST, call_timeout)
        except CallError as e:
            log.info("list on %s failed: %s", pid.node, e.reason)
            continue
        if isinstance(r, list):
            out.extend(tuple(x) for x in r if type(x) is tuple and len(x) == 3)  # type: ignore[misc]
    return out


def _unwrap(r: Any, missing: Any = (ERROR, NO_SUCH_JOB)) -> Any:
    """``{ok, Result}`` -> ``Result``; ``{error, no_such_job}`` -> ``missing``; errors as they are."""
    if type(r) is tuple and len(r) == 2 and r[0] == OK and type(r[0]) is Atom:
        return r[1]
    if r == (ERROR, NO_SUCH_JOB):
        return missing
    return r


async def _client_op(proc: Process, op: Any, args: list[Any], timeout: float | None = None) -> Any:
    """The client operation ``op`` on this node (what ``{client, Op, Args}`` answers)."""
    if type(op) is not Atom:
        return (ERROR, (UNKNOWN_CLIENT_OP, op))
    n = len(args)
    if op == START and n in (1, 2, 3):
        kind, job_id, sargs = (KIND_JOB, args[0], []) if n == 1 else (args[0], args[1], args[2] if n == 3 else [])
        return await _local_start(proc, Atom(kind), job_id, sargs if isinstance(sargs, list) else [sargs], timeout)
    if op == OTP_START and n == 1:
        return await _local_start(proc, KIND_OTP, args[0], [], timeout)
    if op == UPDATE and n == 2:
        return _unwrap(await _local_op(proc, args[0], (UPDATE, args[1]), timeout=timeout))
    if op == FINISH and n == 1:
        return _unwrap(await _local_op(proc, args[0], FINISH, timeout=timeout))
    if op == CHECK_RESULTS and n == 1:
        return _unwrap(await _local_op(proc, args[0], CHECK_RESULTS, timeout=timeout), missing=None)
    if op == GET_STATE and n == 1:
        return _unwrap(await _local_op(proc, args[0], GET_STATE, timeout=timeout))
    if op in (OP, CALL) and n == 2:
        return await _local_op(proc, args[0], args[1], timeout=timeout)
    if op in (OP, CALL) and n == 3:
        # the caller's own OpId: a retry of this operation through another host node is
        # answered from the job's Recent, not applied twice
        return await _local_op(proc, args[0], args[1], op_id=args[2], timeout=timeout)
    if op in (LIST_JOBS, LIST) and n == 0:
        return await _local_list(proc)
    return (ERROR, (UNKNOWN_CLIENT_OP, op, n))


def _remote_form(node: Any, op: Atom, args: list[Any]) -> tuple[list[Any], Callable[[Any], Any]] | None:
    """The ``op [Id, Request, OpId]`` form of a named operation on a job (``None`` for the
    others), with the unwrapping that gives the named operation's answer. The OpId is made
    once here, so every retry of the operation, through any host node, carries it."""
    if op == UPDATE and len(args) == 2:
        return [args[0], (UPDATE, args[1]), node.make_ref()], _unwrap
    if op in (FINISH, GET_STATE) and len(args) == 1:
        return [args[0], op, node.make_ref()], _unwrap
    if op == CHECK_RESULTS and len(args) == 1:
        return [args[0], CHECK_RESULTS, node.make_ref()], lambda r: _unwrap(r, missing=None)
    return None


def _base_reason(reason: Any) -> Any:
    """gen:call's ``{Reason, {gen_server, call, ...}}`` -> ``Reason``."""
    if type(reason) is tuple and len(reason) == 2 and type(reason[1]) is tuple and reason[1][:1] == (Atom("gen_server"),):
        return reason[0]
    return reason


def _start_id(op: Atom, args: list[Any]) -> Any:
    return args[0] if op == OTP_START or len(args) == 1 else args[1]


async def _remote_call(proc: Process, host: tuple[Atom, Atom], op: Atom, args: list[Any],
                       form: tuple[list[Any], Callable[[Any], Any]] | None, retried: bool, timeout: float) -> Any:
    if form is not None:
        op_args, unwrap = form
        r = await proc.call(host, (CLIENT, OP, op_args), timeout)
        if r != (ERROR, (UNKNOWN_CLIENT_OP, OP, 3)):
            return unwrap(r)
        # a host that predates the 3-argument op: the named operation (at-least-once
        # across host nodes)
        return await proc.call(host, (CLIENT, op, args), timeout)
    r = await proc.call(host, (CLIENT, op, args), timeout)
    if r == (ERROR, JOB_ALREADY_STARTED) and retried and op in (START, OTP_START):
        # an earlier attempt through a host node that then went away may have started the
        # job: then it is ours
        job_id = wire(_start_id(op, args))
        listed = await proc.call(host, (CLIENT, LIST_JOBS, []), timeout)
        if isinstance(listed, list):
            for x in listed:
                if type(x) is tuple and len(x) == 3 and key_bytes(x[0]) == key_bytes(job_id) and type(x[2]) is Pid:
                    return (OK, x[2])
    return r


async def _remote_client(proc: Process, op: Atom, args: list[Any], timeout: float | None) -> Any:
    """``{client, Op, Args}`` to ``pynode_jobs`` on a connected node that runs a host.

    Operations on a job go as ``op [Id, Request, OpId]`` with one OpId for all attempts, so
    that an attempt whose host node went away mid-operation (its answer lost) and is retried
    through another one is answered from the job's ``Recent``, not applied twice."""
    node = proc.node
    job_timeout = timeout if timeout is not None else _secs(_cfg(node, "job_timeout"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job_timeout
    delay = BACKOFF_FIRST
    form = _remote_form(node, op, args)
    retried = False
    while True:
        peers = sorted(node.connected_nodes, key=_node_order)
        if peers:
            k = _next_rr(node)
            peers = peers[k % len(peers):] + peers[:k % len(peers)]
        for peer in peers:
            try:
                # the remote side retries for up to job_timeout itself; allow it that, and more
                return await _remote_call(proc, (Atom(HOST_NAME), peer), op, args, form, retried, job_timeout + 5.0)
            except CallError as e:
                if not retryable(e.reason):
                    return (ERROR, e.reason)
                # noproc: no host there; nodedown/timeout: the operation may have run there
                if _base_reason(e.reason) != NOPROC:
                    retried = True
        if loop.time() >= deadline:
            return (ERROR, NO_HOSTS)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _run(target: Any, op: Atom, args: list[Any], via: str | None, timeout: float | None) -> Any:
    node = target.node if isinstance(target, Process) else target
    mode = via or ("local" if _has_registry(node) else "client")
    if mode not in ("local", "client"):
        raise ValueError(f"via must be 'local' or 'client', got {via!r}")

    async def fn(proc: Process) -> Any:
        if mode == "local":
            return await _client_op(proc, op, args, timeout)
        return await _remote_client(proc, op, args, timeout)

    return await _with_proc(target, fn)


async def start(target: "Node | Process", job_id: Any, *, kind: str = "Job", args: list[Any] | None = None,
                via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.start(Id)``: start a job of ``kind`` (default ``'Job'``) on a host chosen by
    round-robin. Returns ``(ok, Pid)``, ``(error, job_already_started)``, ``(error, unknown_kind)``,
    ``(error, no_hosts)`` or ``(error, timeout)``.

    ``target`` is the node to run the client on (or a process of it). ``via="client"`` forces
    the path through a connected host node's ``{client, Op, Args}``; by default a node with a
    registry reads it locally. ``timeout`` (seconds) overrides ``job_timeout``."""
    return await _run(target, START, [Atom(kind), job_id, list(args or [])], via, timeout)


async def otp_start(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.Otp.start(Id)``: start a ``'Job.Otp'`` job."""
    return await _run(target, OTP_START, [job_id], via, timeout)


async def update(target: "Node | Process", job_id: Any, event: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.update(Id, Event)``: ``ok`` or ``(error, no_such_job)``."""
    return await _run(target, UPDATE, [job_id, event], via, timeout)


async def finish(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.finish(Id)``: the state ``[last_event, ..., Id]`` (the job ends), or ``(error, no_such_job)``."""
    return await _run(target, FINISH, [job_id], via, timeout)


async def check_results(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """``Job.Otp.check_results(Id)``: the results binary, or ``None`` (``nil``) until the work
    is done or when the job does not exist."""
    return await _run(target, CHECK_RESULTS, [job_id], via, timeout)


async def get_state(target: "Node | Process", job_id: Any, *, via: str | None = None, timeout: float | None = None) -> Any:
    """The job's portable state (any kind), or ``(error, no_such_job)``."""
    return await _run(target, GET_STATE, [job_id], via, timeout)


async def list_jobs(target: "Node | Process", *, via: str | None = None) -> list[tuple[Any, Atom, Pid]]:
    """Every job in the cluster, ``[(Id, Kind, Pid)]`` (each host's ``list``)."""
    return await _run(target, LIST_JOBS, [], via, None)
