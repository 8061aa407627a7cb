"""asyncio EPMD client: register a node, look nodes up, list them, start an EPMD if none runs.

Theory of operation
-------------------
Each call opens one TCP connection to EPMD, writes one request built by :mod:`.proto`, gives
what comes back to the matching response parser (``receive_data``, ``b""`` at EOF) until
``next_event()`` yields the reply instead of ``NEED_DATA``, and closes — except
:func:`register`, whose connection *is* the registration: EPMD frees the name when that
socket closes (docs/WIRE.md §1.3). The returned :class:`Registration` owns the socket and one
watcher task that reads it; EPMD never sends anything after the ALIVE2 reply, so the watcher
only ever learns that the socket closed, and then sets :attr:`Registration.closed`.

:func:`ensure_epmd` gives a node an EPMD when none answers: it starts this package's server
(``python -m erl_interop.epmd --daemon``) in its own session with stdio on ``/dev/null``, so it
outlives the caller as ``epmd -daemon`` does for ``erl``, then waits until it answers.

Errors (:mod:`erl_interop.errors`): :class:`EpmdError` when the EPMD at the other end refuses
(the name is taken), cannot be reached, or answers something malformed;
:class:`EpmdLocalError` for what is wrong on this side: a name EPMD cannot carry, an
``$ERL_EPMD_PORT`` that is not a port number, an EPMD server that :func:`ensure_epmd` started
but that exited or never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

from erl_interop.errors import EpmdError, EpmdLocalError

from .proto import (
    EPMD_PORT,
    NEED_DATA,
    NODE_TYPE_HIDDEN,
    Alive2ResponseParser,
    EpmdParser,
    NamesResponseParser,
    NodeInfo,
    Port2ResponseParser,
    encode_alive2_req,
    encode_names_req,
    encode_port_please2_req,
)

__all__ = ["Registration", "register", "port_please", "names", "ensure_epmd", "epmd_port_from_env"]

_READ_SIZE = 4096
_ENSURE_TIMEOUT = 5.0  # how long a freshly started EPMD gets to answer

E = TypeVar("E")


def epmd_port_from_env(epmd_port: int | None = None) -> int:
    """``epmd_port`` if given, else ``$ERL_EPMD_PORT``, else 4369 (docs/WIRE.md §1.1).
    Raises :class:`EpmdLocalError` when ``$ERL_EPMD_PORT`` is not a number."""
    if epmd_port is not None:
        return epmd_port
    env = os.environ.get("ERL_EPMD_PORT")
    if env:
        try:
            return int(env)
        except ValueError:
            raise EpmdLocalError(f"ERL_EPMD_PORT is not a port number: {env!r}") from None
    return EPMD_PORT


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(host, port)
    except OSError as e:
        raise EpmdError(f"cannot connect to epmd at {host}:{port}: {e.strerror or e}") from e


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _read_reply(reader: asyncio.StreamReader, parser: EpmdParser[E]) -> E:
    """Give ``parser`` what ``reader`` reads (``b""`` at EOF) until it yields its reply."""
    while True:
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        try:
            data = await reader.read(_READ_SIZE)
        except OSError as e:
            raise EpmdError(f"epmd connection failed while reading the reply: {e}") from e
        parser.receive_data(data)


async def _one_shot(host: str, port: int, packet: bytes, parser: EpmdParser[E], timeout: float) -> E:
    async with asyncio.timeout(timeout):
        reader, writer = await _connect(host, port)
        try:
            writer.write(packet)
            await writer.drain()
            return await _read_reply(reader, parser)
        finally:
            await _close(writer)


class Registration:
    """A live EPMD registration: the open ALIVE2 connection.

    ``creation`` is what EPMD assigned (32-bit when the reply was ALIVE2_X_RESP). :attr:`closed`
    is set when the registration ends, either by :meth:`close` or because EPMD dropped the
    socket (then :attr:`dropped` is true). Use as ``async with await register(...) as reg:``.
    """

    def __init__(
        self,
        node: NodeInfo,
        creation: int,
        extended: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.node = node
        self.creation = creation
        self.extended = extended
        self.closed = asyncio.Event()
        self.dropped = False
        self._reader = reader
        self._writer = writer
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"epmd-registration-{node.name}")

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def port(self) -> int:
        return self.node.port

    async def _watch(self) -> None:
        try:
            # EPMD sends nothing after ALIVE2; any read completing means the socket is gone.
            await self._reader.read(_READ_SIZE)
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not self.closed.is_set():
            self.dropped = True
        self._writer.close()
        self.closed.set()

    def close(self) -> None:
        """Unregister: close the socket. Idempotent; :attr:`closed` is set at once."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._writer.close()
        self._watcher.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the socket and watcher are gone."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the registration ends (closed by us or dropped by EPMD)."""
        await self.closed.wait()

    async def __aenter__(self) -> "Registration":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else ("closed" if self.closed.is_set() else "live")
        return f"<Registration {self.node.name!r} port={self.node.port} creation={self.creation} {state}>"


async def register(
    name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    epmd_port: int | None = None,
    node_type: int = NODE_TYPE_HIDDEN,
    protocol: int = 0,
    high: int = 6,
    low: int = 5,
    extra: bytes = b"",
    timeout: float = 5.0,
) -> Registration:
    """Register alive name ``name`` listening on ``port``; the registration lives as long as
    the returned :class:`Registration` stays open. Raises :class:`EpmdError` when EPMD refuses
    (the name is taken) or cannot be reached, :class:`EpmdLocalError` for a name EPMD cannot
    carry or a bad ``$ERL_EPMD_PORT``."""
    node = NodeInfo(name, port, node_type, protocol, high, low, bytes(extra))
    packet = encode_alive2_req(node)
    epmd = epmd_port_from_env(epmd_port)
    async with asyncio.timeout(timeout):
        reader, writer = await _connect(host, epmd)
        try:
            writer.write(packet)
            await writer.drain()
            reply = await _read_reply(reader, Alive2ResponseParser())
        except BaseException:
            await _close(writer)
            raise
    if not reply.ok:
        await _close(writer)
        raise EpmdError(f"epmd at {host}:{epmd} refused to register {name!r} (result {reply.result}; name in use?)")
    return Registration(node, reply.creation, reply.extended, reader, writer)


async def port_please(
    name: str, host: str = "127.0.0.1", epmd_port: int | None = None, timeout: float = 5.0
) -> NodeInfo | None:
    """Look up alive name ``name`` at the EPMD on ``host``; ``None`` if it is not registered."""
    reply = await _one_shot(
        host, epmd_port_from_env(epmd_port), encode_port_please2_req(name), Port2ResponseParser(), timeout
    )
    return reply.node


async def names(host: str = "127.0.0.1", epmd_port: int | None = None, timeout: float = 5.0) -> list[tuple[str, int]]:
    """``(alive name, port)`` of every node registered at the EPMD on ``host``."""
    reply = await _one_shot(host, epmd_port_from_env(epmd_port), encode_names_req(), NamesResponseParser(), timeout)
    return list(reply.nodes)


async def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    await _close(writer)
    return True


async def ensure_epmd(
    epmd_port: int | None = None,
    host: str = "127.0.0.1",
    *,
    pidfile: str | os.PathLike[str] | None = None,
    listen: str | None = None,
) -> bool:
    """Make sure an EPMD answers on ``host``:``epmd_port``.

    If nothing does, start ``python -m erl_interop.epmd --daemon`` detached (new session, stdio on
    ``/dev/null``) so it outlives the caller, and wait up to ~5 s until it answers. Returns
    ``True`` if it started one. ``pidfile``, if given, is where the daemon writes its pid.
    Raises :class:`EpmdLocalError` if the server it started exits or does not answer in time.
    ``listen``: the addresses it binds (comma-separated); by default ``$ERL_EPMD_ADDRESS``
    when set, else every IPv4 interface, as OTP's ``epmd`` does, so that nodes on other
    hosts can look names up here (discovery's ``hosts``, ``net_adm:names/1``).
    """
    port = epmd_port_from_env(epmd_port)
    if listen is None:
        listen = os.environ.get("ERL_EPMD_ADDRESS") or "0.0.0.0"
    addrs = [a.strip() for a in listen.split(",") if a.strip()]
    if "0.0.0.0" not in addrs and host not in addrs:
        addrs.append(host)  # epmd always listens on the loopback too
    listen = ",".join(addrs)
    if await _answers(host, port):
        return False
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "erl_interop.epmd", "--port", str(port), "--address", listen, "--daemon"]
    if pidfile is not None:
        cmd += ["--pidfile", os.fspath(pidfile)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
        env=env,
    )
    deadline = time.monotonic() + _ENSURE_TIMEOUT
    delay = 0.01
    while True:
        if await _answers(host, port):
            return True
        if proc.poll() is not None:
            # Lost a race with another starter? Then someone answers now; else it failed.
            if await _answers(host, port):
                return False
            raise EpmdLocalError(f"the epmd server started on {host}:{port} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise EpmdLocalError(f"the epmd server started on {host}:{port} (pid {proc.pid}) did not answer in time")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
