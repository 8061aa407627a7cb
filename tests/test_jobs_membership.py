"""Replicas follow membership (docs/JOBS_PROTOCOL.md, "Replicas follow membership"), as an
operator runs a redeploy: two servers A and B started from the command line with no
configuration; stop A (its jobs move to B), start A again, ``kill -9`` B: nothing is lost,
with Elixir and Python owners, for ``Job`` and ``Job.Otp``.

The driver is an in-process Python client node (no job host) with the test's cookie.
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

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

OK = Atom("ok")
JOB_IDS = list(range(1, 7))
OTP_IDS = [b"otp-%d" % i for i in range(1, 5)]


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


def _server(lang: str, name: str, cookie: str) -> Any:
    if lang == "e":
        return Iex(["--sname", name, "--cookie", cookie])
    return PyServer(["--sname", name, "--cookie", cookie])


async def _until(cond: Any, timeout: float, what: str) -> Any:
    return await await_until(cond, timeout=timeout, interval=0.05, what=what)


@pytest.mark.parametrize("langs", ["ep", "pe", "pp", "ee"], ids=lambda s: f"A{s[0]}-B{s[1]}")
def test_stop_a_start_a_kill_b_loses_nothing(langs: str, mix_compiled: None) -> None:
    cookie = test_cookie()
    a_name, b_name = unique_name("a") + "@localhost", unique_name("b") + "@localhost"
    started: list[Any] = []

    async def main() -> None:
        a = await asyncio.to_thread(_server, langs[0], a_name, cookie)
        started.append(a)
        b = await asyncio.to_thread(_server, langs[1], b_name, cookie)
        started.append(b)
        client = Node(unique_name("q") + "@localhost", cookie, config={"host_jobs": False})
        await client.start()
        try:
            async def both_hosts() -> bool:
                hosts = {p.node for p in client.registry.lookup_pids(jobs.HOST_KEY)}
                return hosts == {Atom(a_name), Atom(b_name)}

            await _until(both_hosts, 30, "both hosts in the client's registry (discovery)")
            for i in JOB_IDS:
                assert (await jobs.start(client, i))[0] == OK
                assert await jobs.update(client, i, Atom("one")) == OK
                assert await jobs.update(client, i, (Atom("two"), i)) == OK
            for i in OTP_IDS:
                assert (await jobs.otp_start(client, i))[0] == OK
            for i in OTP_IDS:
                await _until(lambda i=i: jobs.check_results(client, i), 30, f"results of {i!r}")

            # stop A: every job moves to B
            assert await asyncio.to_thread(a.stop) == 0
            rows = await jobs.list_jobs(client)
            assert {r[2].node for r in rows} == {Atom(b_name)}
            assert len(rows) == len(JOB_IDS) + len(OTP_IDS)

            # start A again: B's jobs get their replica on A (membership changed), in bounded time
            a2 = await asyncio.to_thread(_server, langs[0], a_name, cookie)
            started.append(a2)

            async def replicated() -> bool:
                try:
                    held = await client.call((Atom(jobs.HOST_NAME), Atom(a_name)), Atom("replicas"), timeout=5)
                except Exception:
                    return False
                ids = {r[0] for r in held if type(r[2]) is Pid and r[2].node == Atom(b_name)}
                return ids == set(JOB_IDS) | set(OTP_IDS)

            await _until(replicated, 15, "a replica of every job on the restarted A")

            # kill -9 B: A adopts every job with its last acknowledged state
            b.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(b.proc.wait, 10)
            for i in JOB_IDS:
                assert await jobs.get_state(client, i) == [(Atom("two"), i), Atom("one"), i]
            for i in OTP_IDS:
                assert await jobs.check_results(client, i) == b"results of " + i
            rows = await jobs.list_jobs(client)
            assert {r[2].node for r in rows} == {Atom(a_name)}
            assert sorted(map(repr, (r[0] for r in rows))) == sorted(map(repr, JOB_IDS + OTP_IDS))
            for i in JOB_IDS:
                assert await jobs.finish(client, i) == [(Atom("two"), i), Atom("one"), i]
        finally:
            await client.stop()

    try:
        asyncio.run(main())
    finally:
        stop_all(started)
