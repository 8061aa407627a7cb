"""The registry as seen from Python: :class:`RegistryAPI`, which ``Node.start`` sets as
``node.registry``. Reads come straight from this node's mirror (same event loop, so each
read is a consistent snapshot); ``reg``/``unreg`` still go through the registry process's
mailbox (that is what orders a node's writes), but as a
:class:`~pynode.registry.server.LocalWrite` carrying the already checked and encoded key
and a future for the reply, not as a ``$gen_call`` with its monitor, alias and selective
receive.

Owns: :class:`RegistryAPI`. May import: :mod:`erl_interop`, :mod:`pynode.errors`,
:mod:`pynode.otp.gen_server`, :mod:`pynode.core.process` and the other modules of
:mod:`pynode.registry`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from erl_interop.errors import EncodeError
from erl_interop.terms import Atom, Pid

from ..errors import BadArg, CallError, ErlangError
from ..otp.gen_server import TIMEOUT
from ..core.process import Process
from .protocol import BADARG, DEFAULT_AWAIT_TIMEOUT, N, REG, UNDEFINED, UNREG, check_key, key_bytes
from .server import LocalWrite, Registry

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["RegistryAPI"]


def _expire(fut: "asyncio.Future[Any]", w: LocalWrite, dest: Pid) -> None:
    if not fut.done():
        fut.set_exception(CallError(TIMEOUT, dest, w.plain(), w.timeout))


class RegistryAPI:
    """The registry as seen from Python: ``node.registry``.

    Methods that act for a process take it first, where Erlang uses ``self()``. Reads are
    answered from this node's mirror. Keys are ``(Atom('n'|'p'), Atom('g'), Name)``; plain
    ``"n"``, ``"p"``, ``"g"`` strings are accepted for the first two elements.
    """

    def __init__(self, node: "Node", server: Registry) -> None:
        self.node = node
        self.server = server

    @property
    def pid(self) -> Pid:
        """The registry process's pid."""
        return self.server.pid

    async def reg(self, proc: Process, key: Any, value: Any = UNDEFINED, timeout: float | None = 5.0) -> Any:
        """Register ``key`` for ``proc`` (``Value`` defaults to ``undefined``).

        Returns ``Atom('ok')`` or ``(Atom('error'), Reason)``, e.g.
        ``(error, (already_registered, HolderPid))`` for a name someone else holds.
        Raises :class:`ValueError` for a malformed key."""
        key = check_key(key)
        kb = key_bytes(key)  # raises EncodeError here, in the caller, for an unencodable key
        return await self._call(proc, False, key, kb, value, timeout)

    async def unreg(self, proc: Process, key: Any, timeout: float | None = 5.0) -> Any:
        """Remove ``proc``'s entry for ``key``; returns ``Atom('ok')``."""
        key = check_key(key)
        try:
            kb: bytes | None = key_bytes(key)
        except EncodeError:
            kb = None  # the server answers {error, badarg}, as for the plain request
        return await self._call(proc, True, key, kb, None, timeout)

    async def _call(self, proc: Process, unreg: bool, key: Any, kb: bytes | None, value: Any,
                    timeout: float | None) -> Any:
        """The registry call for ``proc``: through the registry's mailbox, as a
        :class:`LocalWrite` when ``proc`` is a process of this node and the registry is
        running, else as a plain ``gen_server:call`` (which reports ``noproc`` etc.)."""
        server = self.server
        sp = server.process
        task = sp.task
        if (proc.node is not self.node or sp.exit_reason is not None or task is None or task.done()
                or (timeout is not None and timeout <= 0)):
            return await proc.call(server.pid, (UNREG, key) if unreg else (REG, key, value), timeout)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        w = LocalWrite(unreg, key, kb, value, proc.pid, fut, timeout)
        pending = server._pending
        pending[fut] = w
        sp.deliver(w)
        h = None if timeout is None else loop.call_later(timeout, _expire, fut, w, server.pid)
        try:
            return await fut
        finally:
            if h is not None:
                h.cancel()
            pending.pop(fut, None)

    def where(self, key: Any) -> Pid | Atom:
        """The holder of a name (the first holder of a property), or ``Atom('undefined')``."""
        h = self.server.mirror.holder(key_bytes(check_key(key)))
        return UNDEFINED if h is None else h[0]

    def lookup_pids(self, key: Any) -> list[Pid]:
        """All holders: one for a name, every holder for a property."""
        return [p for p, _v in self.server.mirror.visible(key_bytes(check_key(key)))]

    def lookup_values(self, key: Any) -> list[tuple[Pid, Any]]:
        """``[(Pid, Value)]`` for every holder."""
        return self.server.mirror.visible(key_bytes(check_key(key)))

    def send(self, key: Any, msg: Any, sender: Process | None = None) -> Any:
        """Send ``msg`` to the holder (every holder of a property); return ``msg``.

        A unique name with no holder raises :class:`~pynode.errors.BadArg` (an
        ``ErlangError(badarg)``), as ``gproc:send/2``."""
        key = check_key(key)
        pids = self.lookup_pids(key)
        if not pids and key[0] == N:
            raise BadArg(f"no holder of {key!r}")
        for pid in pids:
            if sender is not None:
                sender.send(pid, msg)
            else:
                self.node.send(pid, msg)
        return msg

    async def wait_for(self, key: Any, timeout: float | None = DEFAULT_AWAIT_TIMEOUT) -> tuple[Pid, Any]:
        """``await(Key, Timeout)``: ``(Pid, Value)`` as soon as the key has a holder.

        ``timeout`` in seconds (default 5, as the protocol's 5000 ms); raises
        :class:`TimeoutError` when it runs out."""
        key = check_key(key)
        kb = key_bytes(key)
        h = self.server.mirror.holder(kb)
        if h is not None:
            return (h[0], h[2])
        fut: asyncio.Future[tuple[Pid, Any]] = asyncio.get_running_loop().create_future()
        self.server.add_waiter(kb, fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no holder for {key!r} after {timeout}s") from None
        finally:
            self.server.drop_waiter(kb, fut)

    await_ = wait_for

    def members(self) -> list[Atom]:
        """This node and every node whose registry is known and up, sorted."""
        return self.server.members()

    def synced_members(self) -> list[Atom]:
        """This node and every member whose snapshot this node has applied, sorted: the
        members whose entries this node's mirror holds in full."""
        return self.server.synced_members()

    def claimed_members(self) -> list[Atom]:
        """Every member this node knows, plus every node a member's snapshot named as a
        member (those it is still connecting to), sorted."""
        return self.server.claimed_members()

    async def wait_synced(self, nodes: Any, timeout: float | None = DEFAULT_AWAIT_TIMEOUT) -> bool:
        """Wait until every node in ``nodes`` (names, or a callable returning them, asked
        again after each snapshot) is a member whose snapshot this node has applied.
        Returns False when ``timeout`` seconds run out first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            want = nodes() if callable(nodes) else nodes
            have = set(self.server.synced_members())
            if all(Atom(n) in have for n in want):
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            fut = self.server.next_sync()
            try:
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                return False
            finally:
                self.server.drop_sync_waiter(fut)

    def entries(self) -> list[tuple[Any, Pid, Any]]:
        """Every visible entry of the mirror, ``(Key, Pid, Value)`` (for inspection)."""
        return self.server.mirror.entries()
