"""Load (docs/JOBS_PROTOCOL.md, "Load") on Python-only clusters of in-process nodes: a host
runs at most ``max_jobs`` run-kind jobs, more wait in its queue (status ``queued``) and take
a freed slot in order; new jobs go to the least-loaded host by the published loads, not
round-robin; a queued job moves to a host that has room; a stopping host's queue moves with
its running jobs. Every wait is on a condition."""

from __future__ import annotations

import asyncio
from typing import Any

from erl_interop.terms import Atom
from pynode import jobs
from pynode.jobs.client import _with_proc
from pynode.jobs.protocol import HOST_NAME, LOAD_KEY, START

from node_helpers import run, wait_for
from test_jobs_py_cluster import cluster, owners
from test_jobs_run import GATES, RUNCFG, _executed, _status

A = Atom
OK = A("ok")
STATUS = A("status")

CFG = dict(RUNCFG, max_jobs=2)


def _gate(jid: str) -> asyncio.Event:
    return GATES.setdefault(jid, asyncio.Event())


def loads(node: Any) -> dict[str, Any]:
    """The published ``{Running, Queued, MaxJobs}`` of every host, as ``node`` sees them."""
    return {str(pid.node): v for pid, v in node.registry.lookup_values(LOAD_KEY)}


async def statuses(node: Any, ids: list[str]) -> dict[str, str]:
    return {j: str((await _status(node, j))[STATUS]) for j in ids}


async def host_start(node: Any, target: str, jid: str, args: list[Any]) -> Any:
    """``{start, test_steps, Id, Args}`` on the host of ``target`` itself (no placement)."""
    return await _with_proc(node, lambda p: p.call((A(HOST_NAME), A(target)), (START, A("test_steps"), jid, args), 5.0))


async def until(pred: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


def test_a_full_host_queues_jobs_and_admits_them_in_order() -> None:
    async def main() -> None:
        async with cluster("lqa", config=CFG) as (a,):
            ids = [f"lq{i}" for i in range(5)]
            for j in ids:
                assert (await jobs.start(a, j, kind="test_steps", args=[2, 0]))[0] == OK
            assert await statuses(a, ids) == {"lq0": "running", "lq1": "running", "lq2": "queued", "lq3": "queued",
                                              "lq4": "queued"}
            assert a.jobs.load() == (2, 3, 2)
            await wait_for(lambda: loads(a) == {a.name: (2, 3, 2)}, what="load published")
            # a queued job does not run: no step of it was executed
            assert _executed("lq2") == [] and (await _status(a, "lq2"))[A("progress")] == {}
            # cancelling a queued job takes it out of the queue
            assert await jobs.cancel(a, "lq3") == (OK, A("cancelled"))
            await wait_for(lambda: a.jobs.load() == (2, 2, 2), what="q3 left the queue")
            # a slot frees: the oldest queued job takes it, then the next
            _gate("lq0").set()
            await until(lambda: _is(a, "lq2", "running"), "q2 admitted")
            assert (await _status(a, "lq4"))[STATUS] == A("queued")
            _gate("lq1").set()
            await until(lambda: _is(a, "lq4", "running"), "q4 admitted")
            for j in ("lq2", "lq4"):
                _gate(j).set()
            for j in ("lq0", "lq1", "lq2", "lq4"):
                await until(lambda j=j: _is(a, j, "done"), f"{j} done")
            assert _executed("lq2") == [0, 1]
            await wait_for(lambda: loads(a) == {a.name: (0, 0, 2)}, what="idle load published")

    run(main, 40)


async def _is(node: Any, jid: str, status: str) -> bool:
    st = await _status(node, jid)
    return isinstance(st, dict) and st[STATUS] == A(status)


def test_placement_picks_the_least_loaded_host_and_a_queued_job_moves_to_room() -> None:
    async def main() -> None:
        async with cluster("lpa", "lpb", config=CFG) as (a, b):
            # two jobs on a, by its own host (no placement): loads a 2, b 0
            for j in ("lp0", "lp1"):
                assert (await host_start(a, a.name, j, [2, 0]))[0] == OK
            await wait_for(lambda: loads(a).get(a.name) == (2, 0, 2), what="a's load seen")
            # round-robin would put one of the next two on a; least-loaded puts both on b
            for j in ("lp2", "lp3"):
                assert (await jobs.start(a, j, kind="test_steps", args=[2, 0]))[0] == OK
                await wait_for(lambda: sum(loads(a)[b.name][:2]) == int(j[2]) - 1, what=f"{j} counted on b")
            assert owners([a, b], "lp2") == [b.name] and owners([a, b], "lp3") == [b.name]
            # both full now: a fifth job waits in a queue
            assert (await host_start(a, a.name, "lp4", [2, 0]))[0] == OK
            assert (await _status(a, "lp4"))[STATUS] == A("queued")
            # b gets room: a's queued job moves there and runs
            _gate("lp2").set()
            await until(lambda: _is(a, "lp4", "running"), "p4 running", 15)
            st = await _status(a, "lp4")
            assert st[A("node")] == b.name, st
            assert a.jobs.load() == (2, 0, 2)
            for j in ("lp0", "lp1", "lp3", "lp4"):
                _gate(j).set()
            for j in ("lp0", "lp1", "lp3", "lp4"):
                await until(lambda j=j: _is(a, j, "done"), f"{j} done")

    run(main, 40)


def test_a_stopping_host_hands_its_queue_off_with_its_running_jobs() -> None:
    async def main() -> None:
        async with cluster("lsa", "lsb", config=dict(CFG, max_jobs=1)) as (a, b):
            for j in ("ls0", "ls1", "ls2"):
                assert (await host_start(a, a.name, j, [3, 1]))[0] == OK
            await until(lambda: _is(b, "ls0", "running"), "s0 running")
            assert await statuses(b, ["ls1", "ls2"]) == {"ls1": "queued", "ls2": "queued"}
            await wait_for(lambda: _executed("ls0") == [0], what="s0 checkpointed step 0")
            await a.stop()  # graceful: the running job and the queue move to b
            for j in ("ls0", "ls1", "ls2"):
                assert owners([b], j) == [b.name], j
            assert b.jobs.load() == (1, 2, 1)
            st = await statuses(b, ["ls0", "ls1", "ls2"])
            assert sorted(st.values()) == ["queued", "queued", "running"], st
            for j in ("ls0", "ls1", "ls2"):
                _gate(j).set()
            for j in ("ls0", "ls1", "ls2"):
                await until(lambda j=j: _is(b, j, "done"), f"{j} done", 15)
            assert _executed("ls0") == [0, 1, 2]  # resumed from its checkpoint, nothing redone
            assert _executed("ls1") == [0, 1, 2] and _executed("ls2") == [0, 1, 2]

    run(main, 40)
