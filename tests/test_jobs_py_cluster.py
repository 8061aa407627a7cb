"""Jobs on Python-only clusters: several Nodes in one process, and ``python -m pynode``
subprocesses. Every wait is on a condition; every node has a unique name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from typing import Any, AsyncIterator

import pytest

from erl_interop.terms import Atom, Pid
from pynode import jobs
from pynode.jobs import HOST_KEY, JobKind, Reply, job_key, job_kind
from pynode.node import Node
from pynode.otp.gen_server import GenServer
from pynode.core.process import KILLED
from pynode.testing import read_until, test_cookie, unique_name

from node_helpers import run, wait_for

A = Atom
OK = A("ok")
ERROR = A("error")
UPDATE = A("update")
NO_SUCH_JOB = (ERROR, A("no_such_job"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: fast settings for tests (ms); the protocol's defaults are in jobs.DEFAULTS
FAST = {"work_ms": 50, "result_ttl": 60_000}


@job_kind("test_counter")
class Counter(JobKind):
    """A Python-defined kind: an integer; ``incr`` adds one and answers the new value."""

    def init(self, args: list[Any]) -> None:
        self.state = args[0] if args else 0

    def handle(self, request: Any) -> Any:
        if request == A("incr"):
            self.state += 1
            return Reply(self.state, changed=True)
        if request == A("stop"):
            return Reply(self.state, stop=True)
        return super().handle(request)


async def _start_node(prefix: str, config: dict[str, Any] | None = None) -> Node:
    node = Node(unique_name(prefix) + "@localhost", test_cookie())
    node.config = dict(FAST, **(config or {}))
    return await node.start()


@contextlib.asynccontextmanager
async def cluster(*prefixes: str, config: dict[str, Any] | None = None, hosts: int | None = None) -> AsyncIterator[list[Node]]:
    """Started, meshed Python nodes (names start with ``prefix``, so prefixes order them).
    ``hosts``: how many host processes every node must see (default: one per node)."""
    nodes: list[Node] = []
    try:
        for pre in prefixes:
            nodes.append(await _start_node(pre, config))
        for nd in nodes[1:]:
            assert await nd.ping(nodes[0].name) == A("pong")
        want = sorted(nd.name for nd in nodes)
        n_hosts = len(nodes) if hosts is None else hosts
        await wait_for(
            lambda: all(nd.registry.members() == want and len(nd.registry.lookup_pids(HOST_KEY)) == n_hosts for nd in nodes),
            what="registry mesh with every host",
        )
        yield nodes
    finally:
        for nd in nodes:
            await nd.stop()


def crash(node: Node) -> None:
    """Sudden death of an in-process node: its sockets are aborted (peers see the link drop,
    as when the OS kills a process) and its processes vanish, with no stop protocol, no
    handoff and nothing more sent. A later ``node.stop()`` does nothing."""
    d = node.dist
    d.stopped = True
    node._stopping = True
    for c in list(d.conns.values()):
        if c.link is not None:
            c.link.writer.transport.abort()
    if d.server is not None:
        d.server.close()
    for p in node.processes:
        p.kill(KILLED)
    for t in list(node._tasks):
        t.cancel()
    if d.registration is not None:
        d.registration.close()


def owners(nodes: list[Node], job_id: Any) -> list[Atom]:
    """The nodes whose host runs job ``job_id``."""
    kb = jobs.key_bytes(job_id)
    return [nd.name for nd in nodes for (i, _k, _p) in nd.jobs.list() if jobs.key_bytes(i) == kb]


def where(node: Node, job_id: Any) -> Any:
    return node.registry.where(job_key(job_id))


# -- basics -------------------------------------------------------------------------------------
def test_start_update_finish_and_otp_results():
    async def main():
        async with cluster("a", "b", "c") as (a, b, c):
            r = await jobs.start(a, "j1")
            assert r[0] == OK and type(r[1]) is Pid
            assert where(b, "j1") == r[1] or await wait_for(lambda: where(b, "j1") == r[1], what="name on b")
            assert await jobs.update(b, "j1", UPDATE) == OK
            assert await jobs.update(c, "j1", A("second")) == OK
            assert await jobs.get_state(a, "j1") == [A("second"), UPDATE, b"j1"]
            assert await jobs.finish(c, "j1") == [A("second"), UPDATE, b"j1"]
            await wait_for(lambda: all(where(nd, "j1") == A("undefined") for nd in (a, b, c)), what="name gone")
            assert await jobs.start(a, "j1") == (OK, where(a, "j1"))  # the id is free again
            assert await jobs.finish(a, "j1") == [b"j1"]

            # Job.Otp: nil until work_ms has passed, then the results; integer ids in decimal
            r = await jobs.otp_start(b, 42)
            assert r[0] == OK
            st = await jobs.get_state(a, 42)
            assert set(st) == {A("id"), A("results"), A("work_left_ms"), A("ttl_left_ms")}
            assert st[A("id")] == 42
            if st[A("results")] is None:  # still working (work_ms is 50 ms: it may be done already)
                assert st[A("ttl_left_ms")] is None and 0 <= st[A("work_left_ms")] <= 50
            res: list[Any] = []

            async def done() -> bool:
                res.append(await jobs.check_results(c, 42))
                return res[-1] is not None

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not await done():
                assert loop.time() < deadline, "no results"
            assert res[-1] == b"results of 42"
            st = await jobs.get_state(a, 42)
            assert st[A("results")] == b"results of 42" and st[A("work_left_ms")] is None
            assert 0 < st[A("ttl_left_ms")] <= 60_000

    run(main)


def test_errors_already_started_unknown_kind_no_such_job():
    async def main():
        async with cluster("a", "b", config={"missing_grace": 300}) as (a, b):
            assert (await jobs.start(a, 7))[0] == OK
            assert await jobs.start(b, 7) == (ERROR, A("job_already_started"))
            assert await jobs.start(a, 8, kind="no_such_kind") == (ERROR, A("unknown_kind"))
            assert await jobs.update(b, 99, UPDATE) == NO_SUCH_JOB
            assert await jobs.finish(b, 99) == NO_SUCH_JOB
            assert await jobs.check_results(a, 99) is None
            # a host answers unknown kinds and bad calls itself
            host = (A("pynode_jobs"), b.name)
            assert await a.call(host, (A("start"), A("nope"), 1, [])) == (ERROR, A("unknown_kind"))
            assert (await a.call(host, A("garbage")))[0] == ERROR
            # a request the kind does not know is an error answer, and the job lives on
            pid = where(a, 7)
            r = await a.call(pid, (A("pynode_job_op"), a.make_ref(), A("check_results")))
            assert r[0] == ERROR
            assert await jobs.finish(a, 7) == [7]

    run(main)


def test_retry_with_same_op_id_is_answered_not_applied_twice():
    async def main():
        async with cluster("a", "b") as (a, b):
            _, pid = await jobs.start(a, "dedupe")
            op = a.make_ref()
            req = (A("pynode_job_op"), op, (UPDATE, A("once")))
            assert await a.call(pid, req) == (OK, OK)
            assert await b.call(pid, req) == (OK, OK)  # the retry, from anywhere
            assert await jobs.get_state(a, "dedupe") == [A("once"), b"dedupe"]
            portable_recent_len = None

            # Recent is bounded at 64 entries, newest first, and travels with the portable state
            for i in range(70):
                assert await jobs.update(a, "dedupe", i) == OK
            holder = next(nd for nd in (a, b) if nd.name == pid.node)
            other = b if holder is a else a
            rep = other.jobs.replicas[jobs.key_bytes("dedupe")]
            recent = rep.portable[A("recent")]
            portable_recent_len = len(recent)
            assert portable_recent_len == 64
            assert recent[0][1] == (OK, OK) and rep.portable[A("seq")] == 1 + 1 + 70
            assert rep.owner == pid and rep.replicas == [other.name]

    run(main)


def test_placement_spreads_over_all_hosts_round_robin():
    async def main():
        async with cluster("a", "b", "c") as nodes:
            for i in range(9):
                assert (await jobs.start(nodes[0], i))[0] == OK
            counts = [len(nd.jobs.list()) for nd in nodes]
            assert counts == [3, 3, 3]
            listed = await jobs.list_jobs(nodes[1])
            assert sorted(i for i, _k, _p in listed) == list(range(9))
            assert {k for _i, k, _p in listed} == {A("Job")}

    run(main)


def test_custom_kind_and_kind_known_only_where_hosted():
    async def main():
        async with cluster("a", "b", "c", config=None) as (a, b, c):
            r = await jobs.start(a, "ctr", kind="test_counter", args=[10])
            assert r[0] == OK
            op = (A("pynode_job_op"), a.make_ref(), A("incr"))
            assert await b.call(where(b, "ctr"), op) == (OK, 11)
            assert await jobs.get_state(c, "ctr") == 11
            # every host announces the kinds it knows
            for pid, ks in a.registry.lookup_values(HOST_KEY):
                assert A("Job") in ks and A("Job.Otp") in ks and A("test_counter") in ks

        # a node whose host knows only 'Job' never gets another kind
        async with cluster("d", "e", config={"job_kinds": ["Job"]}) as (d, e):
            assert await jobs.start(d, "x", kind="Job.Otp", timeout=1) == (ERROR, A("unknown_kind"))

    run(main)


def test_client_path_through_a_host_node():
    """A node with no host and no registry use goes through {client, Op, Args}."""

    async def main():
        async with cluster("a", "b") as (a, b):
            c = await _start_node("c", {"host_jobs": False})
            try:
                assert await c.ping(a.name) == A("pong")
                assert c.whereis("pynode_jobs") is None
                r = await jobs.start(c, "via", via="client")
                assert r[0] == OK and r[1].node in (a.name, b.name)
                assert await jobs.update(c, "via", UPDATE, via="client") == OK
                assert await jobs.otp_start(c, "votp", via="client") == (OK, where(a, "votp"))
                assert await jobs.finish(c, "via", via="client") == [UPDATE, b"via"]
                assert await jobs.check_results(c, "nope", via="client", timeout=5) is None
                assert len(await jobs.list_jobs(c, via="client")) == 1
                # the wire form the Elixir client sends
                host = (A("pynode_jobs"), a.name)
                assert (await c.call(host, (A("client"), A("start"), [A("Job"), "w", []]), 20))[0] == OK
                assert await c.call(host, (A("client"), A("update"), ["w", UPDATE]), 20) == OK
                assert await c.call(host, (A("client"), A("finish"), ["w"]), 20) == [UPDATE, b"w"]
                assert (await c.call(host, (A("client"), A("bogus"), []), 20))[0] == ERROR
                # and the local path on a host-less node that has a registry
                assert (await jobs.start(c, "loc"))[0] == OK
                assert await jobs.finish(c, "loc") == [b"loc"]
            finally:
                await c.stop()

    run(main)


def test_host_stopping_refuses_start_and_leaves_the_host_list():
    async def main():
        async with cluster("a", "b") as (a, b):
            host_b = b.jobs
            # b's host unregisters itself and refuses starts while it hands off (no jobs here)
            await host_b.shutdown()
            assert host_b.stopping
            assert await a.call((A("pynode_jobs"), b.name), (A("start"), A("Job"), 1, [])) == (ERROR, A("stopping"))
            await wait_for(lambda: [p.node for p in a.registry.lookup_pids(HOST_KEY)] == [a.name], what="b off the host list")
            for i in range(4):  # placement now skips b
                assert (await jobs.start(b, i))[1].node == a.name

    run(main)


def test_a_host_that_withdrew_the_kind_is_skipped_not_the_answer():
    """A host whose registry entry still lists the kind (the client's mirror has not heard of
    the withdrawal yet) answers {error, unknown_kind}: start tries another host (JOBS_PROTOCOL.md,
    "Client"), as for {error, stopping}."""

    class Withdrawn(GenServer):
        async def handle_call(self, request, from_):
            return (ERROR, A("unknown_kind"))

    async def main():
        async with cluster("a", "b") as (a, b):
            # b's real host stops advertising; a stand-in on b advertises 'Job' and refuses it
            await b.jobs.shutdown()
            fake = await Withdrawn.start(b)
            assert await b.registry.reg(fake, HOST_KEY, [A("Job")]) == OK
            await wait_for(lambda: sorted(p.node for p in a.registry.lookup_pids(HOST_KEY)) == sorted([a.name, b.name]),
                           what="the stand-in in a's host list")
            for i in range(4):  # round-robin reaches b every other time
                r = await jobs.start(a, f"wd{i}")
                assert r[0] == OK and r[1].node == a.name, r

    run(main)


# -- graceful stop ------------------------------------------------------------------------------
def test_graceful_stop_moves_jobs_with_state_and_no_no_such_job():
    async def main():
        async with cluster("a", "b", "c") as (a, b, c):
            for i in range(6):
                assert (await jobs.start(a, f"s{i}"))[0] == OK
                assert await jobs.update(a, f"s{i}", A("u1")) == OK
            for i in range(3):
                assert (await jobs.otp_start(a, f"o{i}"))[0] == OK
            await wait_for(lambda: all(
                nd.jobs.replicas or True for nd in (a, b, c)), what="noop")
            for i in range(3):
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while await jobs.check_results(a, f"o{i}") is None:
                    assert loop.time() < deadline
            on_b = sorted(i for i, _k, _p in b.jobs.list())
            assert len(on_b) == 3
            ttl_before = {i: (await jobs.get_state(a, i))[A("ttl_left_ms")] for i in on_b if i.startswith(b"o")}

            # clients hammer every job during the move; none may see no_such_job / nil
            bad: list[Any] = []
            counts: dict[Any, int] = {}
            stop = asyncio.Event()

            async def hammer(job_id: str) -> None:
                while not stop.is_set():
                    if job_id.startswith("o"):
                        r = await jobs.check_results(c, job_id)
                        if r != f"results of {job_id}".encode():
                            bad.append((job_id, r))
                    else:
                        r = await jobs.update(c, job_id, A("x"))
                        if r != OK:
                            bad.append((job_id, r))
                        else:
                            counts[job_id] = counts.get(job_id, 0) + 1

            tasks = [asyncio.create_task(hammer(f"s{i}")) for i in range(6)] + [
                asyncio.create_task(hammer(f"o{i}")) for i in range(3)]
            await wait_for(lambda: len(counts) == 6, what="hammering started")
            await b.stop()
            moved_at = {i: owners([a, c], i) for i in on_b}
            await wait_for(lambda: sum(counts.values()) > 60, what="more updates after the move")
            stop.set()
            await asyncio.gather(*tasks)
            assert bad == []
            for i in on_b:
                assert len(owners([a, c], i)) == 1, (i, moved_at)
            # state kept: every acknowledged update is there exactly once
            for i in range(6):
                st = await jobs.finish(a, f"s{i}")
                assert st == [A("x")] * counts[f"s{i}"] + [A("u1"), f"s{i}".encode()]
            # remaining TTL travelled as remaining ms: smaller than before, not reset
            for i, before in ttl_before.items():
                st = await jobs.get_state(c, i)
                assert st[A("results")] == b"results of " + i
                assert 0 < st[A("ttl_left_ms")] <= before < 60_000

    run(main, timeout=90)


def test_graceful_stop_of_the_only_host_lets_jobs_die():
    async def main():
        a = await _start_node("a")
        assert (await jobs.start(a, "alone"))[0] == OK
        await a.stop()  # no other host: must not hang
        assert not a.jobs.process.alive

    run(main)


# -- sudden death -------------------------------------------------------------------------------
def test_kill_every_job_runs_again_on_exactly_one_node_with_last_acked_state():
    async def main():
        async with cluster("a", "b", "c", "d") as nodes:
            a, b, c, d = nodes
            ids = [f"k{i}" for i in range(12)]
            for i in ids:
                assert (await jobs.start(a, i))[0] == OK
                assert await jobs.update(b, i, A("u1")) == OK
                assert await jobs.update(c, i, i.encode()) == OK
            for i in range(4):
                assert (await jobs.otp_start(a, f"ko{i}"))[0] == OK
            for i in range(4):
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while await jobs.check_results(a, f"ko{i}") is None:
                    assert loop.time() < deadline
            # Otp results are produced by a timer: wait until they are replicated too
            await wait_for(lambda: all(
                any(r.portable[A("state")][A("results")] is not None
                    for nd in nodes for r in nd.jobs.replicas.values() if r.id == f"ko{i}".encode() or r.id == f"ko{i}")
                for i in range(4)), what="otp results replicated")
            victim = c
            on_victim = sorted(i for i, _k, _p in victim.jobs.list())
            assert on_victim
            crash(victim)
            survivors = [a, b, d]
            every = ids + [f"ko{i}" for i in range(4)]

            def settled() -> bool:
                return all(len(owners(survivors, i)) == 1 for i in every) and all(
                    type(where(nd, i)) is Pid and where(nd, i).node != victim.name for nd in survivors for i in every)

            await wait_for(settled, timeout=15, what="every job running once on a survivor")
            for i in ids:
                assert await jobs.get_state(d, i) == [i.encode(), A("u1"), i.encode()]
            for i in range(4):
                assert await jobs.check_results(b, f"ko{i}") == f"results of ko{i}".encode()
            # the adopted jobs are replicated again: a second death loses nothing
            await wait_for(lambda: all(
                sum(1 for nd in survivors for r in nd.jobs.replicas.values() if jobs.key_bytes(r.id) == jobs.key_bytes(i)) >= 1
                for i in every), what="replicas re-established")
            second = next(nd for nd in survivors if nd.jobs.list())
            crash(second)
            rest = [nd for nd in survivors if nd is not second]
            await wait_for(lambda: all(len(owners(rest, i)) == 1 for i in every), timeout=15, what="after a second death")
            for i in ids:
                assert await jobs.finish(rest[0], i) == [i.encode(), A("u1"), i.encode()]

    run(main, timeout=90)


# -- CLI subprocesses ---------------------------------------------------------------------------
class PyNodeProc:
    """``python -m pynode --sname NAME --cookie test`` as a subprocess (stopped by its pid)."""

    def __init__(self, name: str, *extra: str, config: str | None = None) -> None:
        self.name = name
        args = [sys.executable, "-m", "pynode", "--sname", name, "--cookie", test_cookie(), *extra]
        if config:
            args += ["--config", config]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            read_until(self.proc.stdout, " up: ")
        except BaseException:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def py_nodes(tmp_path):
    started: list[PyNodeProc] = []
    cfg = tmp_path / "sys.config"
    cfg.write_text("[{pynode, [{work_ms, 50}, {result_ttl, 60000}, {replicas, 1}]}].\n")

    def make(n: int) -> list[PyNodeProc]:
        out = [PyNodeProc(unique_name(f"n{i}") + "@localhost", config=str(cfg)) for i in range(n)]
        started.extend(out)
        return out

    yield make
    for p in started:
        p.stop()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pynode", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_run_job_and_jobs_against_three_python_nodes(py_nodes):
    ns = py_nodes(3)
    connect = [x for p in ns for x in ("--connect", p.name)]
    r = _cli("run_job", "10", "--cookie", test_cookie(), *connect)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines == [f"job {i}: ok" for i in range(1, 11)] + ["run_job: 10 ok, 0 failed"]
    # through a host's {client, Op, Args}, from a node that only knows one host
    r = _cli("run_job", "4", "--cookie", test_cookie(), "--via", "client", "--connect", ns[1].name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "run_job: 4 ok, 0 failed"
    # unreachable cluster: exit 2
    r = _cli("run_job", "1", "--cookie", test_cookie(), "--connect", unique_name("nobody") + "@localhost")
    assert r.returncode == 2


def test_cli_sigterm_hands_off_and_sigkill_takes_over(py_nodes):
    ns = py_nodes(3)

    async def main():
        c = await _start_node("client", {"host_jobs": False})
        try:
            for p in ns:
                assert await c.dist.connect(p.name)
            await wait_for(lambda: len(c.registry.lookup_pids(HOST_KEY)) == 3, what="3 hosts")
            for i in range(9):
                assert (await jobs.start(c, i))[0] == OK
                assert await jobs.update(c, i, A("before")) == OK
            r = await asyncio.to_thread(_cli, "jobs", "--node", ns[0].name, "--cookie", test_cookie())
            assert r.returncode == 0, r.stderr
            assert r.stdout.splitlines()[-1].startswith("9 job(s) on 3 host(s)")
            rows = [ln.split() for ln in r.stdout.splitlines()[1:-1]]
            assert r.stdout.splitlines()[0].split() == ["ID", "KIND", "NODE", "PID"]
            assert sorted(int(row[0]) for row in rows) == list(range(9)) and {row[1] for row in rows} == {"Job"}
            assert {row[2] for row in rows} == {p.name for p in ns}

            # SIGTERM: graceful, every job moves with its state, exit code 0
            term = ns[0]
            term.signal(signal.SIGTERM)
            assert await asyncio.to_thread(term.wait) == 0
            await wait_for(lambda: all(type(where(c, i)) is Pid and where(c, i).node != term.name for i in range(9)),
                           what="jobs off the stopped node")
            for i in range(9):
                assert await jobs.get_state(c, i) == [A("before"), i]
                assert await jobs.update(c, i, A("after")) == OK

            # SIGKILL: the replica holders take over with the last acknowledged state
            kill = ns[1]
            kill.signal(signal.SIGKILL)
            await asyncio.to_thread(kill.wait)
            await wait_for(lambda: all(type(where(c, i)) is Pid and where(c, i).node == ns[2].name for i in range(9)),
                           timeout=15, what="every job on the last node")
            for i in range(9):
                assert await jobs.finish(c, i) == [A("after"), A("before"), i]
        finally:
            await c.stop()

    run(main, timeout=120)
