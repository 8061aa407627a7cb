"""A host that withdraws a kind is a change of membership (docs/JOBS_PROTOCOL.md, "Replicas
follow membership"): when an Elixir node runs `Application.stop(:available_processes)`, the
jobs of its kinds owned by *other* nodes move their replicas away from it. Otherwise it would
stay the named replica holder of jobs it can no longer adopt, and the owner's death would lose
them.

Three servers as a user starts them, names chosen so that the Elixir node comes right after
the Python owner in the sorted host list (its replica target): owner `a` (Python), `b`
(Elixir), `c` (Python); `replicas` is 1.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from erl_interop.terms import Atom, Pid
from pynode import jobs
from pynode.node import Node
from pynode.testing import await_until, compile_mix_project, test_cookie, unique_name

from use_case import MIX_PROJECT, Iex, PyServer, stop_all

pytestmark = pytest.mark.interop

OK = Atom("ok")


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


async def _replicas(client: Node, host: str) -> set[Any]:
    try:
        held = await client.call((Atom(jobs.HOST_NAME), Atom(host)), Atom("replicas"), timeout=5)
    except Exception:
        return set()
    return {r[0] for r in held}


def test_an_elixir_app_stop_moves_the_replicas_it_held_for_python_owners(mix_compiled: None) -> None:
    cookie = test_cookie()
    tag = unique_name("w")
    a_name, b_name, c_name = (f"{tag}{x}@localhost" for x in ("a", "b", "c"))
    started: list[Any] = []

    async def main() -> None:
        a = await asyncio.to_thread(PyServer, ["--sname", a_name, "--cookie", cookie])
        started.append(a)
        b = await asyncio.to_thread(Iex, ["--sname", b_name, "--cookie", cookie])
        started.append(b)
        c = await asyncio.to_thread(PyServer, ["--sname", c_name, "--cookie", cookie])
        started.append(c)
        client = Node(unique_name("q") + "@localhost", cookie, config={"host_jobs": False})
        await client.start()
        try:
            async def three_hosts() -> bool:
                kinds = dict((str(p.node), v) for p, v in client.registry.lookup_values(jobs.HOST_KEY))
                return set(kinds) == {a_name, b_name, c_name} and all(Atom("Job") in v for v in kinds.values())

            await await_until(three_hosts, 30, "three hosts of 'Job'", interval=0.05)
            ids = [f"{tag}-{i}".encode() for i in range(4)]
            for i in ids:  # on a, the Python owner: its replica target is b
                r = await client.call((Atom(jobs.HOST_NAME), Atom(a_name)), (Atom("start"), Atom("Job"), i, []), 10)
                assert r[0] == OK and type(r[1]) is Pid and r[1].node == Atom(a_name), r
                assert await jobs.update(client, i, Atom("kept")) == OK
            await await_until(lambda: _has(client, b_name, ids), 15, "b holds the replicas", interval=0.05)

            # the seed's application stops on b: its kinds are withdrawn, b keeps running
            b.ev("Application.stop(:available_processes)")
            await await_until(lambda: _has(client, c_name, ids), 15, "the replicas moved to c", interval=0.05)
            await await_until(lambda: _has_none(client, b_name, ids), 15, "b dropped its copies", interval=0.05)

            # the owner dies: c adopts every job with its acknowledged state
            a.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(a.proc.wait, 10)
            for i in ids:
                assert await jobs.get_state(client, i) == [Atom("kept"), i]
            rows = await jobs.list_jobs(client)
            assert {r[2].node for r in rows if r[0] in ids} == {Atom(c_name)}
        finally:
            await client.stop()

    try:
        asyncio.run(main())
    finally:
        stop_all(started)


async def _has(client: Node, host: str, ids: list[bytes]) -> bool:
    return set(ids) <= await _replicas(client, host)


async def _has_none(client: Node, host: str, ids: list[bytes]) -> bool:
    return not (set(ids) & await _replicas(client, host))
