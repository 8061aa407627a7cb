"""Run kinds (docs/JOBS_PROTOCOL.md, "Run kinds") on Python-only clusters of in-process nodes:
``async def run(self, ctx)`` with checkpoints acknowledged after replication, status and
results answered while ``run`` runs, retries with backoff then failure, cancel from any node,
results readable everywhere until ``result_ttl``, and moves / crashes resuming from the last
checkpoint without redoing checkpointed work. Every wait is on a condition."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from erl_interop.terms import Atom
from pynode import jobs
from pynode.jobs import Reply, RunContext, RunKind, job_kind

from node_helpers import run, wait_for
from test_jobs_py_cluster import cluster, crash, owners

A = Atom
OK, ERROR = A("ok"), A("error")
STATUS = A("status")
NO_SUCH_JOB = (ERROR, A("no_such_job"))

#: fast settings for these tests (ms)
RUNCFG = {"result_ttl": 60_000, "retry_backoff": 30, "retry_backoff_max": 200, "max_attempts": 3,
          "missing_grace": 300}

#: every step each job executed, in order, across every node of the process: (job id, step)
EXECUTED: list[tuple[Any, int]] = []
#: per job id, an event that lets its run go past step ``gate`` (tests open it)
GATES: dict[Any, asyncio.Event] = {}
CANCELLED_RUNS: collections.Counter[Any] = collections.Counter()


def _id(job_id: Any) -> Any:
    return job_id.decode() if isinstance(job_id, bytes) else job_id


@job_kind("test_steps")
class Steps(RunKind):
    """``args``: ``[N, Gate]``: N steps of a short sleep, a checkpoint after each (the list of
    step results so far); waits at step ``Gate`` for the test's event."""

    async def run(self, ctx: RunContext) -> Any:
        n, gate = ctx.args
        done = list(ctx.state or [])
        jid = _id(ctx.id)
        try:
            for step in range(len(done), n):
                if step == gate:
                    await GATES.setdefault(jid, asyncio.Event()).wait()
                await asyncio.sleep(0.005)
                EXECUTED.append((jid, step))
                done.append(step * 10)
                await ctx.checkpoint(done)
                ctx.progress(done=len(done), total=n)
        except asyncio.CancelledError:
            CANCELLED_RUNS[jid] += 1
            raise
        return done


@job_kind("test_failing")
class Failing(RunKind):
    async def run(self, ctx: RunContext) -> Any:
        EXECUTED.append((_id(ctx.id), ctx.attempt))
        raise ValueError("boom")


@job_kind("test_fail_while_busy")
class FailWhileBusy(RunKind):
    """Raises 30 ms into each attempt; its ``slow`` request keeps the job busy for 150 ms, so
    an attempt ends while the job is handling it (the end is handled after)."""

    async def run(self, ctx: RunContext) -> Any:
        EXECUTED.append((_id(ctx.id), ctx.attempt))
        await asyncio.sleep(0.03)
        raise ValueError("boom")

    async def handle(self, request: Any) -> Any:  # type: ignore[override]
        if request == A("slow"):
            await asyncio.sleep(0.15)
            return Reply(A("done"))
        return super().handle(request)


@job_kind("test_flaky")
class Flaky(RunKind):
    """Checkpoints 2 steps, fails on its first attempt, then finishes: attempt 2 starts from
    the checkpoint."""

    async def run(self, ctx: RunContext) -> Any:
        done = list(ctx.state or [])
        for step in range(len(done), 4):
            EXECUTED.append((_id(ctx.id), step))
            done.append(step)
            await ctx.checkpoint(done)
            if step == 1 and ctx.attempt == 1:
                raise RuntimeError("flaky")
        return (A("attempt"), ctx.attempt, done)


def _executed(jid: str) -> list[int]:
    return [s for j, s in EXECUTED if j == jid]


async def _status(node: Any, jid: str) -> Any:
    r = await jobs.status(node, jid)
    return r[1] if type(r) is tuple and r[0] == OK else r


def test_run_results_everywhere_until_ttl() -> None:
    async def main() -> None:
        async with cluster("ra", "rb", config=dict(RUNCFG, result_ttl=1500)) as (a, b):
            r = await jobs.start(a, "r1", kind="test_steps", args=[3, -1])
            assert r[0] == OK
            await jobs_wait_status(a, "r1", "done")
            for nd in (a, b):
                assert await jobs.results(nd, "r1") == (OK, [0, 10, 20])
                st = await _status(nd, "r1")
                assert st[STATUS] == A("done") and st[A("attempts")] == 1
                assert st[A("progress")] == {A("done"): 3, A("total"): 3}
                assert st[A("node")] in (a.name, b.name)
            # the job ends after result_ttl: then it is gone from every node
            await jobs_wait_result(a, "r1", NO_SUCH_JOB, timeout=10)
            assert await jobs.results(b, "r1") == NO_SUCH_JOB
            assert await jobs.status(b, "r1") == NO_SUCH_JOB

    run(main, 40)


async def jobs_wait_status(node: Any, jid: str, status: str, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        st = await _status(node, jid)
        if isinstance(st, dict) and st.get(STATUS) == A(status):
            return st
        if loop.time() > deadline:
            raise TimeoutError(f"{jid}: status {st!r}, not {status}")
        await asyncio.sleep(0.02)


async def jobs_wait_result(node: Any, jid: str, expected: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await jobs.results(node, jid)
        if r == expected:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{jid}: results {r!r}, not {expected!r}")
        await asyncio.sleep(0.05)


def test_status_progress_and_results_while_running() -> None:
    async def main() -> None:
        async with cluster("sa", "sb", config=RUNCFG) as (a, b):
            GATES["s1"] = asyncio.Event()
            assert (await jobs.start(b, "s1", kind="test_steps", args=[4, 2]))[0] == OK
            await wait_for(lambda: len(_executed("s1")) == 2, what="two steps")
            await jobs_wait_status(a, "s1", "running")
            assert await jobs.results(a, "s1") == (ERROR, A("not_done"))
            st = await _status(b, "s1")
            assert st[A("progress")] == {A("done"): 2, A("total"): 4}
            GATES["s1"].set()
            await jobs_wait_status(a, "s1", "done")
            assert await jobs.results(b, "s1") == (OK, [0, 10, 20, 30])
            assert _executed("s1") == [0, 1, 2, 3]

    run(main, 30)


def test_failing_run_retries_then_fails_with_its_error() -> None:
    async def main() -> None:
        async with cluster("fa", "fb", config=RUNCFG) as (a, b):
            assert (await jobs.start(a, "f1", kind="test_failing", args=[]))[0] == OK
            st = await jobs_wait_status(b, "f1", "failed")
            assert st[A("attempts")] == 3
            assert _executed("f1") == [1, 2, 3]
            err = (A("failed"), (A("python_error"), b"ValueError", b"boom"))
            assert await jobs.results(a, "f1") == (ERROR, err)
            assert await jobs.results(b, "f1") == (ERROR, err)

    run(main, 30)


def test_each_attempt_runs_once_when_a_message_comes_between_its_end_and_the_job() -> None:
    async def main() -> None:
        async with cluster("ra", "rb", config=RUNCFG) as (a, b):
            r = await jobs.start(a, "busy1", kind="test_fail_while_busy", args=[])
            assert r[0] == OK
            assert await a.call(r[1], (A("pynode_job_op"), A("op1"), A("slow")), 5) == (OK, A("done"))
            st = await jobs_wait_status(b, "busy1", "failed")
            assert st[A("attempts")] == 3
            assert _executed("busy1") == [1, 2, 3]

    run(main, 30)


def test_retry_resumes_from_the_last_checkpoint() -> None:
    async def main() -> None:
        async with cluster("ka", "kb", config=RUNCFG) as (a, b):
            assert (await jobs.start(a, "k1", kind="test_flaky", args=[]))[0] == OK
            await jobs_wait_status(b, "k1", "done")
            assert await jobs.results(b, "k1") == (OK, (A("attempt"), 2, [0, 1, 2, 3]))
            assert _executed("k1") == [0, 1, 2, 3]  # steps 0 and 1 were checkpointed: not redone

    run(main, 30)


def test_cancel_from_another_node() -> None:
    async def main() -> None:
        async with cluster("ca", "cb", config=RUNCFG) as (a, b):
            GATES["c1"] = asyncio.Event()
            assert (await jobs.start(a, "c1", kind="test_steps", args=[5, 1]))[0] == OK
            await wait_for(lambda: len(_executed("c1")) == 1, what="first step")
            other = b if owners([a, b], "c1") == [a.name] else a
            assert await jobs.cancel(other, "c1") == (OK, A("cancelled"))
            await wait_for(lambda: CANCELLED_RUNS["c1"] == 1, what="run cancelled")
            st = await _status(a, "c1")
            assert st[STATUS] == A("cancelled")
            assert await jobs.results(b, "c1") == (ERROR, A("cancelled"))
            assert await jobs.cancel(a, "c1") == (OK, A("cancelled"))  # again: nothing changes
            GATES["c1"].set()
            assert _executed("c1") == [0]

    run(main, 30)


def test_graceful_stop_resumes_elsewhere_from_the_checkpoint() -> None:
    async def main() -> None:
        async with cluster("ga", "gb", config=RUNCFG) as (a, b):
            GATES["g1"] = asyncio.Event()
            assert (await jobs.start(a, "g1", kind="test_steps", args=[5, 3]))[0] == OK
            await wait_for(lambda: len(_executed("g1")) == 3, what="three steps")
            (owner_name,) = owners([a, b], "g1")
            owner, other = (a, b) if owner_name == a.name else (b, a)
            await wait_for(lambda: _replica_seq(other, "g1") >= 4, what="checkpoint 3 replicated")
            await owner.stop()  # graceful: run is cancelled, the job moves with its checkpoint
            assert CANCELLED_RUNS["g1"] == 1
            await wait_for(lambda: owners([other], "g1") == [other.name], what="job moved")
            GATES["g1"].set()
            st = await jobs_wait_status(other, "g1", "done")
            assert st[A("node")] == other.name and st[A("attempts")] == 1
            assert await jobs.results(other, "g1") == (OK, [0, 10, 20, 30, 40])
            assert _executed("g1") == [0, 1, 2, 3, 4]

    run(main, 40)


def _replica_seq(node: Any, jid: str) -> int:
    host = node.jobs
    rep = host.replicas.get(jobs.key_bytes(jid.encode()))
    return rep.seq if rep is not None else -1


def test_crash_resumes_on_the_replica_holder_from_the_last_replicated_checkpoint() -> None:
    async def main() -> None:
        async with cluster("xa", "xb", config=RUNCFG) as (a, b):
            GATES["x1"] = asyncio.Event()
            assert (await jobs.start(a, "x1", kind="test_steps", args=[5, 2]))[0] == OK
            await wait_for(lambda: len(_executed("x1")) == 2, what="two steps")
            (owner_name,) = owners([a, b], "x1")
            owner, other = (a, b) if owner_name == a.name else (b, a)
            # seq 1 at start, one more per checkpoint: both checkpoints are on the replica
            await wait_for(lambda: _replica_seq(other, "x1") == 3, what="checkpoint 2 replicated")
            crash(owner)
            await wait_for(lambda: owners([other], "x1") == [other.name], what="adopted", timeout=15)
            GATES["x1"].set()
            await jobs_wait_status(other, "x1", "done", timeout=15)
            assert await jobs.results(other, "x1") == (OK, [0, 10, 20, 30, 40])
            assert _executed("x1") == [0, 1, 2, 3, 4]

    run(main, 40)
