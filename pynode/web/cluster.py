"""The cluster as the operator's page shows it: :class:`ClusterView`, a snapshot of nodes,
registry sizes and jobs, made from existing APIs only.

Theory of operation
-------------------
A view belongs to one node (the one serving the page) and reads:

- **nodes**: a watcher process (``net_kernel:monitor_nodes``, hidden nodes included) notes
  when each node comes up and goes down, as this node sees it; a node seen up once stays
  listed, as down and since when, until ``max_down`` down nodes are kept (the oldest go
  first); a node never up here (a failed dial: another cookie) is not listed. Each
  refresh also reconciles with the connected nodes. Whether a node is Python or BEAM: Python
  nodes run the locally registered ``pynode`` info server, a BEAM node has none, so
  ``gen_server:call({pynode, Node}, info)`` answers a map with ``runtime => python`` on one
  and exits ``noproc`` on the other; the answer is kept per node *and creation* (a restarted
  node is asked again); a node that did not answer in time is asked again later.
- **registry sizes**: this node's mirror (``node.registry.entries()``), counted by the node
  of each holder pid. Job hosts are the holders of ``{p, g, pynode_job_host}`` (their value:
  the kinds), loads those of ``{p, g, pynode_job_load}``.
- **jobs**: the holders of ``{n, g, {pynode_job, Id}}`` in the mirror (owner pid, kind), the
  ``list`` of every job host (a job a host runs that the registry does not show yet is listed
  too, ``registered: false``), the ``replicas`` of every host (who holds a copy, at which
  ``Seq``), and each job's ``get_state`` (``{pynode_job_op, OpId, get_state}``, a read that
  every kind answers): a run kind's portable state carries ``status``, ``progress`` and
  ``attempts``; ``'Job'`` is ``running`` with its event count, ``'Job.Otp'`` ``working`` or
  ``results ready``.

**Bounds.** A refresh runs only when a snapshot is asked for and the last one is older than
``refresh_interval``, or ten times the last refresh's duration when that is longer (so the
page costs its node at most about a tenth of its loop; the JSON's ``refresh_ms`` tells the
page how often to poll); an idle view costs nothing but the watcher; concurrent askers share
one refresh. Every call has ``call_timeout``; at most ``concurrency`` calls are in flight; at
most ``state_cap`` jobs are asked for their state per refresh (those never asked or moved
first, then the oldest answers, none younger than ``state_max_age``), so a page open on a
cluster of thousands of jobs asks each job about once every ``jobs / state_cap`` refreshes.
The whole refresh is cut off after ``refresh_budget`` seconds: what has not answered keeps
its previous answer. Term texts are bounded (:func:`plain`, :func:`brief`).

**Moves.** The view remembers each job's last owner node; when a refresh finds another one
it records ``moved_from`` and ``moved_at`` (kept until the job moves again; remembered for
``OWNER_KEEP`` seconds after the job is last seen, so that a job missing from one refresh in
the middle of its handoff still shows where it came from), which the page highlights.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Coroutine

from erl_interop.bounded import bounded_logger, bounded_repr
from erl_interop.terms import Atom, Map, Pid

from ..core.process import Process
from ..jobs.format import format_term
from ..jobs.protocol import (
    GET_STATE,
    HOST_KEY,
    HOST_NAME,
    JOB_OP,
    KIND_JOB,
    KIND_OTP,
    LIST,
    LOAD_KEY,
    OK,
    PYNODE_JOB,
    REPLICAS,
    RUN_STATUSES,
    node_order,
)
from ..registry import key_bytes

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["ClusterView", "plain", "brief", "summarize_state"]

log = bounded_logger(logging.getLogger("pynode.web"))

NODEUP = Atom("nodeup")
NODEDOWN = Atom("nodedown")
INFO = Atom("info")
RUNTIME = Atom("runtime")
PYTHON = Atom("python")
NOPROC = Atom("noproc")
_N, _G = Atom("n"), Atom("g")
K_STATUS, K_PROGRESS, K_ATTEMPTS = Atom("status"), Atom("progress"), Atom("attempts")
K_RESULT, K_RETRY_LEFT, K_TTL_LEFT = Atom("result"), Atom("retry_left_ms"), Atom("ttl_left_ms")
K_RESULTS, K_WORK_LEFT = Atom("results"), Atom("work_left_ms")

#: seconds before a node that did not answer ``info`` is asked again
INFO_RETRY = 5.0
#: seconds a job's last owner is remembered after refreshes stop showing it
OWNER_KEEP = 120.0


def _ms(t: float) -> int:
    return int(t * 1000)


def _small(t: Any, budget: int) -> bool:
    """Whether ``t`` has fewer than ``budget`` parts, nested at most 32 deep (bounded walk)."""
    stack: list[tuple[Any, int]] = [(t, 0)]
    seen = 0
    while stack:
        x, depth = stack.pop()
        seen += 1
        if seen >= budget or depth > 32:
            return False
        if isinstance(x, (bytes, bytearray, str)):
            seen += len(x) // 64
        elif isinstance(x, (list, tuple)):
            stack.extend((y, depth + 1) for y in x[:budget])
            seen += max(0, len(x) - budget)
        elif isinstance(x, (dict, Map)):
            items = list(x.items())[:budget]
            for k, v in items:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(x, int) and x.bit_length() > 256:
            return False
    return seen < budget


def brief(t: Any, limit: int = 120) -> str:
    """A term as Elixir writes it (:func:`pynode.jobs.format_term`), at most ``limit``
    characters; a big or deep term is written by :func:`erl_interop.bounded.bounded_repr`."""
    text = format_term(t) if _small(t, 400) else bounded_repr(t, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_text(k: Any) -> str:
    if type(k) is Atom:
        return str(k)
    if isinstance(k, (bytes, bytearray)):
        try:
            return bytes(k).decode("utf-8")
        except UnicodeDecodeError:
            pass
    if isinstance(k, str):
        return k
    return brief(k, 60)


def plain(t: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A term as JSON values, bounded: atoms and UTF-8 binaries as strings (at most 200
    characters), ``nil`` as null, maps as objects (keys as text), lists and tuples as arrays,
    at most 50 items each, 4 levels and 400 values in all; what does not fit is written as
    text (:func:`brief`)."""
    if budget is None:
        budget = [400]
    budget[0] -= 1
    if t is None or t is True or t is False:
        return t
    if type(t) is Atom:
        return str(t)[:200]
    if isinstance(t, int):
        return t if abs(t) < 2**53 else brief(t, 60)
    if isinstance(t, float):
        return t if math.isfinite(t) else str(t)
    if isinstance(t, (bytes, bytearray)):
        try:
            s = bytes(t[:800]).decode("utf-8")
            return s[:200] if s.isprintable() else brief(t, 80)
        except UnicodeDecodeError:
            return brief(t, 80)
    if isinstance(t, str):
        return t[:200]
    if depth >= 4 or budget[0] <= 0:
        return brief(t, 80)
    if isinstance(t, (dict, Map)):
        out: dict[str, Any] = {}
        for k, v in list(t.items())[:50]:
            if budget[0] <= 0:
                break
            out[_key_text(k)] = plain(v, depth + 1, budget)
        return out
    if isinstance(t, (list, tuple)):
        return [plain(x, depth + 1, budget) for x in t[:50] if budget[0] > 0]
    return brief(t, 80)


def _get(state: Any, key: Atom) -> Any:
    return state.get(key) if isinstance(state, (dict, Map)) else None


def _is_run_state(state: Any) -> bool:
    return (isinstance(state, (dict, Map)) and _get(state, K_STATUS) in RUN_STATUSES
            and K_PROGRESS in state and K_ATTEMPTS in state)


def _secs_text(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "?"
    if ms < 10000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 1000} s"


def summarize_state(kind: str, state: Any) -> dict[str, Any]:
    """What the page says about a job from its portable state: ``status`` (a word),
    ``progress`` (a JSON object or null), ``attempts`` (run kinds) and ``detail`` (a line)."""
    if _is_run_state(state):
        st = str(_get(state, K_STATUS))
        progress = plain(_get(state, K_PROGRESS))
        detail = ""
        retry, ttl = _get(state, K_RETRY_LEFT), _get(state, K_TTL_LEFT)
        if st == "running" and retry is not None:
            detail = f"retry in {_secs_text(retry)}"
        elif st == "queued":
            detail = "waiting for a slot of its host"
        elif st == "done":
            detail = "results ready" + (f", kept {_secs_text(ttl)} more" if ttl is not None else "")
        elif st == "failed":
            detail = "failed: " + brief(_get(state, K_RESULT), 100)
        elif st == "cancelled":
            detail = "cancelled" + (f", kept {_secs_text(ttl)} more" if ttl is not None else "")
        attempts = _get(state, K_ATTEMPTS)
        return {"status": st, "progress": progress if isinstance(progress, dict) else None,
                "attempts": attempts if isinstance(attempts, int) else None, "detail": detail}
    if kind == str(KIND_OTP) and isinstance(state, (dict, Map)):
        if _get(state, K_RESULTS) is None:
            left = _get(state, K_WORK_LEFT)
            return {"status": "working", "progress": None, "attempts": None,
                    "detail": "results not ready" + (f", work left {_secs_text(left)}" if left is not None else "")}
        ttl = _get(state, K_TTL_LEFT)
        return {"status": "results ready", "progress": None, "attempts": None,
                "detail": brief(_get(state, K_RESULTS), 60) + (f", kept {_secs_text(ttl)} more" if ttl is not None else "")}
    if kind == str(KIND_JOB) and isinstance(state, list) and state:
        n = len(state) - 1
        detail = f"{n} event{'s' if n != 1 else ''}" + (f", last {brief(state[0], 60)}" if n else "")
        return {"status": "running", "progress": {"events": n}, "attempts": None, "detail": detail}
    return {"status": "running", "progress": None, "attempts": None, "detail": "state " + brief(state, 80)}


@dataclass(slots=True)
class NodeSeen:
    """What the view knows of one node."""

    name: str
    up: bool
    #: wall-clock seconds when it last came up or went down, as this node saw it
    since: float
    #: the node's creation while it is connected (0: unknown)
    creation: int = 0
    #: ``python``, ``beam`` or ``unknown``
    runtime: str = "unknown"
    #: the creation the runtime answer is for
    runtime_creation: int | None = None
    #: loop time when ``info`` was last asked
    asked_at: float = -math.inf
    #: the node's uptime from its info map, ms, when it is a Python node
    uptime_ms: int | None = None
    #: it ran a job host at some snapshot (a server, not a passing client)
    was_host: bool = False


@dataclass(slots=True)
class _StateSeen:
    pid: Pid
    at: float  # loop time of the answer (or of the failed ask)
    summary: dict[str, Any] | None
    error: str | None = None


@dataclass(slots=True)
class _Owner:
    node: str
    moved_from: str | None = None
    moved_at: float | None = None
    #: wall-clock seconds since when no refresh has shown the job (a handoff's gap, or its end)
    gone_at: float | None = None


@dataclass(slots=True)
class _Job:
    job_id: Any
    kind: str
    pid: Pid
    registered: bool
    listed_by: list[str] = field(default_factory=list)


class ClusterView:
    """The snapshot behind the operator's page, for ``node``. :meth:`start` it (it spawns the
    node watcher), ask :meth:`snapshot` / :meth:`snapshot_json`, :meth:`close` it."""

    def __init__(self, node: "Node", *, refresh_interval: float = 1.0, call_timeout: float = 1.0,
                 state_cap: int = 64, state_max_age: float = 2.0, concurrency: int = 16,
                 refresh_budget: float = 3.0, max_down: int = 256, max_jobs_shown: int = 5000) -> None:
        self.node = node
        self.refresh_interval = refresh_interval
        self.call_timeout = call_timeout
        self.state_cap = state_cap
        self.state_max_age = state_max_age
        self.concurrency = concurrency
        self.refresh_budget = refresh_budget
        self.max_down = max_down
        self.max_jobs_shown = max_jobs_shown
        self.nodes: dict[str, NodeSeen] = {}
        self._states: dict[bytes, _StateSeen] = {}
        self._owners: dict[bytes, _Owner] = {}
        self._snapshot: dict[str, Any] | None = None
        self._json = b""
        self._at = -math.inf
        self._inflight: asyncio.Task[None] | None = None
        #: the interval in use: ``refresh_interval``, or ten times the last refresh's
        #: duration when that is longer (a big cluster is refreshed less often)
        self.interval = refresh_interval
        self._watcher: Process | None = None
        #: refreshes done (for tests and the page's footer)
        self.refreshes = 0

    # -- lifetime ---------------------------------------------------------------------------
    def start(self) -> "ClusterView":
        """Start watching nodes (a process of the node)."""
        if self._watcher is None:
            self._watcher = self.node.spawn(self._watch)
        return self

    def close(self) -> None:
        """Stop the watcher and any refresh in flight."""
        if self._watcher is not None and self._watcher.alive:
            self._watcher.kill(Atom("shutdown"))
        if self._inflight is not None:
            self._inflight.cancel()

    async def _watch(self, proc: Process) -> None:
        self.node.monitor_nodes(proc)
        now = time.time()
        self._mark(str(self.node.name), True, now)
        for n in self.node.connected_nodes:
            self._mark(str(n), True, now)
        while True:
            msg = await proc.receive()
            if type(msg) is tuple and len(msg) == 2 and msg[0] in (NODEUP, NODEDOWN) and type(msg[0]) is Atom:
                self._mark(str(msg[1]), msg[0] == NODEUP, time.time())

    def _mark(self, name: str, up: bool, now: float) -> None:
        rec = self.nodes.get(name)
        if rec is None:
            if up:  # a nodedown of a node never up here is a failed dial (another cookie...)
                self.nodes[name] = NodeSeen(name, up, now)
        elif rec.up != up:
            if not up and not rec.was_host and rec.runtime != "beam":
                # a Python node that never hosted jobs (the `pynode rpc` / `members` / `jobs`
                # clients, a script): it leaves the list when it leaves the cluster
                del self.nodes[name]
                return
            rec.up = up
            rec.since = now
        if not up:
            down = [r for r in self.nodes.values() if not r.up]
            if len(down) > self.max_down:
                for r in sorted(down, key=lambda r: r.since)[: len(down) - self.max_down]:
                    del self.nodes[r.name]

    # -- snapshots --------------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        """The current snapshot (a JSON-ready dict); refreshed when older than
        ``refresh_interval``, one refresh shared by every caller."""
        await self._fresh()
        assert self._snapshot is not None
        return self._snapshot

    async def snapshot_json(self) -> bytes:
        """:meth:`snapshot` as JSON bytes (encoded once per refresh)."""
        await self._fresh()
        return self._json

    async def _fresh(self) -> None:
        loop = asyncio.get_running_loop()
        if self._snapshot is not None and loop.time() - self._at < self.interval:
            return
        if self._inflight is None or self._inflight.done():
            self._inflight = loop.create_task(self._refresh(), name="pynode web refresh")
        await asyncio.shield(self._inflight)

    async def _call(self, dest: Any, request: Any) -> tuple[bool, Any]:
        """``gen_server:call`` with ``call_timeout``: ``(True, Reply)`` or ``(False, Reason)``."""
        try:
            return True, await self.node.call(dest, request, timeout=self.call_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return False, getattr(e, "reason", e)

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        node = self.node
        me = str(node.name)
        now = time.time()
        mono = loop.time()
        live = {str(n) for n in node.connected_nodes} | {me}
        for n in live:
            self._mark(n, True, now)
        for rec in list(self.nodes.values()):
            if rec.up and rec.name not in live:
                self._mark(rec.name, False, now)

        # -- the registry mirror: a consistent snapshot (same event loop) -------------------
        reg = node.registry
        entries = reg.entries()
        per_node: collections.Counter[str] = collections.Counter()
        jobs: dict[bytes, _Job] = {}
        for key, pid, value in entries:
            per_node[str(pid.node)] += 1
            if (type(key) is tuple and len(key) == 3 and key[0] == _N and key[1] == _G
                    and type(key[2]) is tuple and len(key[2]) == 2 and key[2][0] == PYNODE_JOB):
                jid = key[2][1]
                jobs[key_bytes(jid)] = _Job(jid, str(value)[:120], pid, True)
        hosts: dict[str, list[str]] = {}
        for pid, kinds in reg.lookup_values(HOST_KEY):
            hosts[str(pid.node)] = [str(k)[:120] for k in kinds[:64]] if isinstance(kinds, list) else []
        loads: dict[str, Any] = {str(pid.node): v for pid, v in reg.lookup_values(LOAD_KEY)}

        # -- calls: hosts' list and replicas, info of nodes not yet known, job states --------
        sem = asyncio.Semaphore(self.concurrency)
        errors: list[str] = []

        async def bounded(what: str, dest: Any, request: Any) -> tuple[bool, Any]:
            async with sem:
                ok, r = await self._call(dest, request)
            if not ok and len(errors) < 20:
                errors.append(f"{what}: {brief(r, 100)}")
            return ok, r

        callees = sorted((set(hosts) | {str(j.pid.node) for j in jobs.values()}) & live, key=node_order)
        lists: dict[str, Any] = {}
        replicas: dict[str, Any] = {}

        async def host_calls(n: str) -> None:
            dest = (Atom(HOST_NAME), Atom(n))
            ok, r = await bounded(f"list on {n}", dest, LIST)
            if ok and isinstance(r, list):
                lists[n] = r
            ok, r = await bounded(f"replicas on {n}", dest, REPLICAS)
            if ok and isinstance(r, list):
                replicas[n] = r

        async def info_call(rec: NodeSeen, creation: int) -> None:
            rec.asked_at = loop.time()
            async with sem:
                ok, r = await self._call((Atom("pynode"), Atom(rec.name)), INFO)
            if ok and isinstance(r, (dict, Map)) and _get(r, RUNTIME) == PYTHON:
                rec.runtime, rec.runtime_creation = "python", creation
                up_ms = _get(r, Atom("uptime_ms"))
                rec.uptime_ms = up_ms if isinstance(up_ms, int) else None
            elif ok or (type(r) is tuple and r[:1] == (NOPROC,)) or r == NOPROC:
                # no pynode info server there (or one that is not pynode's): a BEAM node
                rec.runtime, rec.runtime_creation = "beam", creation
            # else: no answer in time (or the node went away): asked again later

        coros: list[Coroutine[Any, Any, None]] = [host_calls(n) for n in callees]
        me_rec = self.nodes[me]
        me_rec.runtime, me_rec.runtime_creation, me_rec.creation = "python", node.creation, node.creation
        me_rec.since = node.started_at
        for name in sorted(live - {me}):
            rec = self.nodes[name]
            conn = node.network.conns.get(Atom(name))
            creation = conn.peer_creation if conn is not None else 0
            rec.creation = creation
            if rec.runtime_creation != creation and rec.runtime != "unknown":
                # another incarnation of the node (a restart): ask again at once
                rec.runtime, rec.runtime_creation, rec.asked_at = "unknown", None, -math.inf
            if rec.runtime == "unknown" and loop.time() - rec.asked_at >= INFO_RETRY:
                coros.append(info_call(rec, creation))
        coros.extend(self._ask_state(kb, j, sem) for kb, j in self._to_ask(jobs, mono))
        tasks = [loop.create_task(c) for c in coros]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.refresh_budget)
            for t in pending:
                t.cancel()
            if pending:
                errors.append(f"{len(pending)} call(s) still unanswered after {self.refresh_budget} s")
                await asyncio.wait(pending, timeout=1.0)

        # -- jobs listed by hosts that the registry does not show ----------------------------
        for host, rows in lists.items():
            for row in rows:
                if not (type(row) is tuple and len(row) == 3 and type(row[2]) is Pid):
                    continue
                kb = key_bytes(row[0])
                j = jobs.get(kb)
                if j is None:
                    j = jobs[kb] = _Job(row[0], str(row[1]), row[2], False)
                j.listed_by.append(host)
        holders: dict[bytes, list[dict[str, Any]]] = collections.defaultdict(list)
        held_per_node: collections.Counter[str] = collections.Counter()
        for host, rows in replicas.items():
            for row in rows:
                if type(row) is tuple and len(row) == 4:
                    kb = key_bytes(row[0])
                    owner = row[2]
                    holders[kb].append({"node": host, "seq": row[3] if isinstance(row[3], int) else None,
                                        "owner": str(owner.node) if type(owner) is Pid else None})
                    held_per_node[host] += 1

        snap = self._build(now, me, live, per_node, hosts, loads, jobs, holders, held_per_node, errors)
        self.interval = max(self.refresh_interval, 10 * (loop.time() - mono))
        snap["refresh_ms"] = _ms(self.interval)
        self._snapshot = snap
        self._json = json.dumps(self._snapshot, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._at = loop.time()
        self.refreshes += 1

    def _to_ask(self, jobs: dict[bytes, _Job], mono: float) -> list[tuple[bytes, _Job]]:
        """The jobs to ask for their state in this refresh: those never asked (or moved) first,
        then the oldest answers older than ``state_max_age``; at most ``state_cap``."""
        order: list[tuple[float, bytes]] = []
        for kb, j in jobs.items():
            st = self._states.get(kb)
            if st is None or st.pid != j.pid:
                order.append((-math.inf, kb))
            elif mono - st.at >= self.state_max_age:
                order.append((st.at, kb))
        order.sort(key=lambda x: x[0])
        return [(kb, jobs[kb]) for _, kb in order[: self.state_cap]]

    async def _ask_state(self, kb: bytes, j: _Job, sem: asyncio.Semaphore) -> None:
        """``{pynode_job_op, OpId, get_state}`` to the job (one attempt, ``call_timeout``)."""
        async with sem:
            ok, r = await self._call(j.pid, (JOB_OP, self.node.make_ref(), GET_STATE))
        at = asyncio.get_running_loop().time()
        if ok and type(r) is tuple and len(r) == 2 and r[0] == OK:
            self._states[kb] = _StateSeen(j.pid, at, summarize_state(j.kind, r[1]))
        else:
            prev = self._states.get(kb)
            # a job that moved keeps what its previous owner said until the new one answers
            self._states[kb] = _StateSeen(prev.pid if prev is not None else j.pid, at,
                                          prev.summary if prev is not None else None, brief(r, 100))

    def _build(self, now: float, me: str, live: set[str], per_node: Mapping[str, int], hosts: Mapping[str, list[str]],
               loads: Mapping[str, Any], jobs: dict[bytes, _Job], holders: Mapping[bytes, list[dict[str, Any]]],
               held_per_node: Mapping[str, int], errors: list[str]) -> dict[str, Any]:
        for kb in [kb for kb in self._states if kb not in jobs]:
            del self._states[kb]  # ended jobs
        for kb, seen in list(self._owners.items()):
            if kb in jobs:
                seen.gone_at = None
            elif seen.gone_at is None:
                seen.gone_at = now  # kept a while: a job may be missing for a moment while it moves
            elif now - seen.gone_at > OWNER_KEEP or len(self._owners) > 2 * self.max_jobs_shown:
                del self._owners[kb]
        mono = asyncio.get_running_loop().time()
        jobs_per_node: collections.Counter[str] = collections.Counter(str(j.pid.node) for j in jobs.values())
        out_jobs: list[dict[str, Any]] = []
        stale = 0
        for kb, j in jobs.items():
            owner = str(j.pid.node)
            o = self._owners.get(kb)
            if o is None:
                o = self._owners[kb] = _Owner(owner)
            elif o.node != owner:
                o.moved_from, o.moved_at, o.node = o.node, now, owner
            st = self._states.get(kb)
            summary = st.summary if st is not None else None
            if st is None or st.pid != j.pid:
                stale += 1
            row: dict[str, Any] = {
                "id": brief(j.job_id, 120),
                "kind": j.kind,
                "node": owner,
                "pid": brief(j.pid, 80),
                "registered": j.registered,
                "listed_by": sorted(j.listed_by),
                "replicas": sorted(holders.get(kb, []), key=lambda h: str(h["node"])),
                "status": summary["status"] if summary else None,
                "progress": summary["progress"] if summary else None,
                "attempts": summary["attempts"] if summary else None,
                "detail": summary["detail"] if summary else "",
                "state_age_ms": _ms(mono - st.at) if st is not None else None,
                "state_error": st.error if st is not None else None,
                "moved_from": o.moved_from,
                "moved_at": _ms(o.moved_at) if o.moved_at is not None else None,
            }
            out_jobs.append(row)
        out_jobs.sort(key=lambda r: (r["node"], r["id"]))
        truncated = max(0, len(out_jobs) - self.max_jobs_shown)
        nodes_out = []
        for rec in sorted(self.nodes.values(), key=lambda r: (not r.up, r.name)):
            load = loads.get(rec.name)
            if rec.name in hosts:
                rec.was_host = True
            nodes_out.append({
                "name": rec.name,
                "self": rec.name == me,
                "runtime": rec.runtime,
                "up": rec.up,
                "since": _ms(rec.since),
                "creation": rec.creation or None,
                "uptime_ms": rec.uptime_ms,
                "job_host": rec.name in hosts,
                "kinds": hosts.get(rec.name, []),
                "load": ({"running": load[0], "queued": load[1], "max_jobs": plain(load[2])}
                         if type(load) is tuple and len(load) == 3 and type(load[0]) is int and type(load[1]) is int
                         else None),
                "registry_entries": per_node.get(rec.name, 0),
                "jobs": jobs_per_node.get(rec.name, 0),
                "replicas_held": held_per_node.get(rec.name, 0),
            })
        return {
            "node": me,
            "generated_at": _ms(now),
            "refresh_ms": _ms(self.interval),
            "nodes": nodes_out,
            "jobs": out_jobs[: self.max_jobs_shown],
            "totals": {
                "nodes_up": sum(1 for r in self.nodes.values() if r.up),
                "nodes_down": sum(1 for r in self.nodes.values() if not r.up),
                "job_hosts": len(hosts),
                "jobs": len(out_jobs),
                "registry_entries": sum(per_node.values()),
            },
            "limits": {"state_cap": self.state_cap, "jobs_without_state": stale, "jobs_truncated": truncated,
                       "call_timeout_ms": _ms(self.call_timeout)},
            "errors": errors,
        }
