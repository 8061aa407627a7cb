"""Shared helpers for the tests/test_node_*.py interop suite.

Each test runs its own event loop (``run``) with one or more Python :class:`Node` objects
started inside it, and talks to real BEAM peers started by the ``beam_node`` fixtures.
Blocking ``BeamNode.eval`` calls go through ``asyncio.to_thread`` (``ev``) so that the
Python nodes keep serving while the BEAM side works.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from erl_interop.terms import Atom
from pynode import jobs
from pynode.node import Node
from pynode.testing import BeamNode, await_until, test_cookie, unique_name

A = Atom


def run(fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run ``fn()`` in a fresh event loop, with an overall time limit."""

    async def main() -> Any:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(main())


async def ev(beam: BeamNode, src: str, timeout: float = 20.0) -> Any:
    """Evaluate ``src`` on ``beam`` without blocking the loop."""
    return await asyncio.to_thread(beam.eval, src, timeout)


#: the async wait of pynode.testing, under the name these tests have always used
wait_for = await_until


@contextlib.asynccontextmanager
async def py_node(cookie: str | None = None, prefix: str = "py", **kw: Any) -> AsyncIterator[Node]:
    """A started Python node with a unique name, stopped on exit."""
    node = Node(unique_name(prefix) + "@localhost", cookie if cookie is not None else test_cookie(), **kw)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def erl_recv(timeout_ms: int = 5000, pattern: str = "M", guard: str = "") -> str:
    """Erlang source receiving one message matching ``pattern`` in the eval process."""
    g = f" when {guard}" if guard else ""
    return f"receive {pattern}{g} -> {pattern} after {timeout_ms} -> timeout end."


class Mailbox:
    """A Python process that just collects messages, for tests to inspect."""

    def __init__(self, node: Node, trap_exit: bool = False, name: str | None = None) -> None:
        self.stop = asyncio.Event()

        async def body(proc: Any) -> None:
            await self.stop.wait()

        self.proc = node.spawn(body, trap_exit=trap_exit, name=name)

    @property
    def pid(self) -> Any:
        return self.proc.pid

    async def get(self, match: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        return await self.proc.receive(match, timeout)


class NodeGroup:
    """The nodes a multi-node test started (``started``: BeamNodes and CLI wrappers with
    ``kill`` and ``tail``), for the test cluster classes."""

    started: list[Any]

    def kill_all(self) -> None:
        for n in self.started:
            with contextlib.suppress(Exception):
                n.kill()

    def tails(self) -> str:
        return "\n".join(f"--- {getattr(n, 'name', '?')}:\n{n.tail(60)}" for n in self.started)


async def holdings(obs: Node, names: list[str]) -> dict[Any, list[str]]:
    """``{job id: [nodes whose host lists it]}``, asking each named host for its ``list``
    directly (not through the registry, so that a job running twice would show)."""
    out: dict[Any, list[str]] = {}
    for name in names:
        try:
            rows = await obs.call((A(jobs.HOST_NAME), A(name)), jobs.LIST, 5.0)
        except Exception:
            continue
        for job_id, _kind, pid in rows:
            out.setdefault(job_id, []).append(str(pid.node))
    return out


async def beam_wait(beam: BeamNode, src: str, expected: Any = True, timeout: float = 10.0) -> Any:
    """Evaluate ``src`` on ``beam`` until it returns ``expected`` (e.g. a link has arrived)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await ev(beam, src)
        if v == expected:
            return v
        if loop.time() > deadline:
            raise TimeoutError(f"{beam.name}: {src!r} was {v!r}, not {expected!r}, after {timeout}s")
        await asyncio.sleep(0.01)


def _halt_all(nodes: list[BeamNode]) -> None:
    """``erlang:halt()`` every node at once (init:stop's orderly shutdown costs ~1 s each),
    then reap them; a node that does not go within 5 s is killed by its pid."""
    import base64
    import subprocess

    for n in nodes:
        if n.proc.poll() is None:
            src = "erlang:halt()." if n.lang == "erlang" else ":erlang.halt()"
            try:
                assert n.proc.stdin is not None
                n.proc.stdin.write(base64.b64encode(src.encode()) + b"\n")
                n.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
    for n in nodes:
        try:
            n.proc.wait(5)
        except subprocess.TimeoutExpired:
            n.kill()


@pytest.fixture
def beam(beam_node: Callable[..., BeamNode]) -> Iterator[Callable[..., BeamNode]]:
    """``beam_node`` (from pynode.pytest_plugin), with a fast teardown: the nodes are halted
    together before the plugin's own stop() reaps them."""
    started: list[BeamNode] = []

    def start(*args: Any, **kw: Any) -> BeamNode:
        n = beam_node(*args, **kw)
        started.append(n)
        return n

    yield start
    _halt_all(started)
