"""Discovery: find the other nodes and keep connecting to them (docs/DISCOVERY.md).

Theory of operation
-------------------
One process per node, ``pynode_discovery``, started by :meth:`pynode.node.Node.start`
after the registry. It only *connects*: a connection is enough, because the registry sends
``discover`` on every ``nodeup`` and exchanges member lists (docs/REGISTRY_PROTOCOL.md).

Every ``poll_interval`` ms (the first poll at once) it asks EPMD on each host of
``[own host | hosts ++ .hosts.erlang]`` for its names, resolves the ``dns`` name, and
computes the candidates (:func:`candidates`): the ``connect`` list, ``Name@Host`` for every
EPMD name and ``Basename@IP`` for every address, minus this node and the nodes it is
connected to. Each candidate that is due (:class:`Retry`) and has no attempt in flight gets
one attempt, run as its own task so that a silent host never delays a poll. The outcome
(``ok``, ``unreachable``, ``refused``, ``no_registry``) decides when it is due again:
unreachable nodes every poll (so a healed partition or a restarted node is back within
one poll), refusing nodes and nodes without a registry with exponential backoff up to five
minutes, logged once per streak.

The rules are the pure functions :func:`host_list`, :func:`candidates` and :meth:`Retry.record`,
checked against ``docs/vectors/discovery.terms`` by tests/test_discovery_unit.py; the
Elixir twin (``elixir/lib/pynode/discovery.ex``) reads the same vectors.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from erl_interop.bounded import bounded_logger
from erl_interop.aio import resolve_host
from erl_interop.epmd.client import names
from erl_interop.errors import EpmdError, HandshakeError, LocalProtocolError
from erl_interop.terms import Atom

from .config import ConfigError, parse_terms
from .core import Process, ReceiveTimeout

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "Discovery",
    "Retry",
    "host_list",
    "candidates",
    "classify",
    "DEFAULTS",
    "MAX_BACKOFF_MS",
    "OK",
    "UNREACHABLE",
    "REFUSED",
    "NO_REGISTRY",
]

log = bounded_logger(logging.getLogger("pynode.discovery"))

#: docs/DISCOVERY.md "Configuration": the keys, with their defaults
DEFAULTS: dict[str, Any] = {
    "discovery": True,
    "connect": [],
    "hosts": [],
    "dns": Atom("undefined"),
    "poll_interval": 5000,
}
#: docs/DISCOVERY.md "Outcomes and retries": the backoff cap, 5 minutes
MAX_BACKOFF_MS = 300_000

OK = Atom("ok")
UNREACHABLE = Atom("unreachable")
REFUSED = Atom("refused")
NO_REGISTRY = Atom("no_registry")
POLL_NOW = Atom("poll_now")
UNDEFINED = Atom("undefined")
HOSTS_FILE = ".hosts.erlang"
#: a poll may wake a little before its due time (the event loop's clock resolution): a
#: candidate due within this many ms of a poll's start is due at that poll
_SLACK_MS = 20.0


def text(x: Any) -> str:
    """A config value that names something (atom, str, binary or charlist) as ``str``."""
    if isinstance(x, str):
        return str(x)
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("utf-8")
    if isinstance(x, list) and all(type(c) is int for c in x):
        return "".join(map(chr, x))
    raise ValueError(f"not a name: {x!r}")


def _dedup(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def host_list(own: Any, hosts: Iterable[Any], file: Iterable[Any]) -> list[str]:
    """Step 1: the hosts whose EPMD a poll asks, own host first, duplicates removed."""
    return _dedup([text(own), *map(text, hosts), *map(text, file)])


def _node_sort_key(a: str) -> bytes:
    return a.encode("utf-8")  # atoms compare by their text, byte-wise on UTF-8


def format_address(addr: str) -> str:
    """An address as ``inet:ntoa/1`` writes it (IPv6 compressed, lower case)."""
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).compressed
    except ValueError:
        return addr


def candidates(
    self_name: Any,
    connected: Iterable[Any],
    connect: Iterable[Any],
    hosts: Iterable[Any],
    epmd: Iterable[tuple[Any, Iterable[Any]]],
    dns: tuple[Any, Iterable[Any]] | None,
) -> list[Atom]:
    """Step 2: the nodes to try, sorted by term order, without this node or connected ones.

    ``epmd`` pairs each host that answered with the names its EPMD listed; ``hosts`` is the
    full host list (kept for the vectors' shape: a host absent from ``epmd`` gave nothing).
    """
    del hosts
    found = set(map(text, connect))
    for host, names in epmd:
        h = text(host)
        found.update(f"{text(n)}@{h}" for n in names)
    if dns is not None:
        base, addrs = dns
        b = text(base)
        found.update(f"{b}@{format_address(text(a))}" for a in addrs)
    found.discard(text(self_name))
    found.difference_update(map(text, connected))
    return [Atom(n) for n in sorted(found, key=_node_sort_key)]


@dataclass(slots=True)
class Retry:
    """One candidate's record: the refusal streak ``k``, when it is next ``due`` (ms), the
    last EPMD ``port`` seen for its name (docs/DISCOVERY.md "Outcomes and retries")."""

    k: int = 0
    due: float = 0.0
    port: int | None = None
    #: the streak has been logged (logging only; not part of the rule)
    logged: bool = False
    #: the last outcome (for :meth:`Discovery.status`; not part of the rule)
    last: Atom | None = None

    @staticmethod
    def record(rec: "Retry | None", time: float, event: Any, poll_interval: float) -> "Retry":
        """The record after ``event`` (an outcome atom, or ``(epmd_port, Port)``) at ``time``."""
        r = rec if rec is not None else Retry(due=time)
        if isinstance(event, tuple):
            _, port = event
            if r.port is not None and r.port != port:
                r.k, r.due, r.logged = 0, time, False
            r.port = port
            return r
        r.last = event
        if event == OK:
            r.k, r.due, r.logged = 0, time, False
        elif event == UNREACHABLE:
            if r.k:
                r.logged = False
            r.k, r.due = 0, time + poll_interval
        elif event in (REFUSED, NO_REGISTRY):
            r.k += 1
            r.due = time + min(poll_interval * 2 ** (r.k - 1), MAX_BACKOFF_MS)
        else:
            raise ValueError(f"unknown discovery event {event!r}")
        return r


def classify(failure: BaseException | None) -> Atom:
    """The outcome of an attempt that did not connect, from the error that ended it."""
    if isinstance(failure, HandshakeError):
        if failure.step in ("port_please", "connect") or failure.reason == "timeout":
            return UNREACHABLE
        return REFUSED
    return UNREACHABLE  # OSError, EPMD trouble, timeouts, a yielded dial that never came


def read_hosts_file() -> list[str]:
    """The hosts of ``.hosts.erlang`` in the current directory, else the home directory."""
    for d in (Path.cwd(), Path.home()):
        p = d / HOSTS_FILE
        try:
            terms = parse_terms(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ConfigError, UnicodeDecodeError) as e:
            log.warning("pynode discovery: ignoring %s: %s", p, e)
            return []
        return [text(t) for t in terms if isinstance(t, (str, list, bytes))]
    return []


class Discovery:
    """The ``pynode_discovery`` process of one node. :meth:`status` is for operators and tests."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.records: dict[Atom, Retry] = {}
        self.inflight: dict[Atom, asyncio.Task[Any]] = {}
        #: when each connected non-member was first seen connected (step 4)
        self._seen: dict[Atom, float] = {}
        self._no_registry_logged: set[Atom] = set()
        self.polls = 0
        self.proc: Process | None = None

    # -- configuration ----------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        return self.node.config.get(key, DEFAULTS[key])

    def _interval_ms(self) -> float:
        v = self.setting("poll_interval")
        return float(v) if isinstance(v, (int, float)) and v > 0 else float(DEFAULTS["poll_interval"])

    def _now_ms(self) -> float:
        return asyncio.get_running_loop().time() * 1000.0

    # -- the process ------------------------------------------------------------------------
    @classmethod
    def start_for(cls, node: "Node") -> "Discovery":
        d = cls(node)
        d.proc = node.spawn(d._run, name="pynode_discovery")
        return d

    def poll_now(self) -> None:
        """Poll at once instead of at the next interval (the message ``poll_now`` does the same)."""
        if self.proc is not None:
            self.node.send(self.proc.pid, POLL_NOW)

    async def _run(self, proc: Process) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            if self.setting("discovery") is not False:
                try:
                    await self.poll()
                except Exception:
                    log.exception("pynode discovery: a poll failed")
            wait = max(0.0, began + self._interval_ms() / 1000.0 - loop.time())
            try:
                await proc.receive(lambda m: m == POLL_NOW, timeout=wait)
            except ReceiveTimeout:
                pass

    async def poll(self) -> None:
        """One poll (docs/DISCOVERY.md "A poll")."""
        node = self.node
        if node.dist is None or node.dist.stopped:
            return
        self.polls += 1
        began = self._now_ms()
        interval = self._interval_ms()
        own = node.name.split("@", 1)[1]
        hosts = host_list(own, self._list("hosts"), read_hosts_file())
        dns = self._dns_setting()
        timeout = node.setup_timeout
        resolved = asyncio.gather(*[self._names(h, timeout) for h in hosts])
        addrs = self._resolve(dns[1], timeout) if dns is not None else None
        answers = await resolved
        epmd = [(h, a) for h, a in zip(hosts, answers) if a is not None]
        dns_in = None
        if dns is not None and addrs is not None:
            dns_in = (dns[0], (await addrs) or [])
        now = began
        # EPMD ports: a restarted node ends its streak
        for h, pairs in epmd:
            for name, port in pairs:
                n = Atom(f"{name}@{h}")
                if n in self.records:
                    Retry.record(self.records[n], now, (Atom("epmd_port"), port), interval)
                else:
                    self.records[n] = Retry.record(None, now, (Atom("epmd_port"), port), interval)
        connected = node.dist.connected_nodes()
        cands = candidates(
            node.name,
            connected,
            self._list("connect"),
            hosts,
            [(h, [n for n, _ in pairs]) for h, pairs in epmd],
            dns_in,
        )
        connect_listed = {Atom(text(c)) for c in self._list("connect")}
        for c in cands:
            rec = self.records.get(c)
            if c in self.inflight or (rec is not None and rec.due > now + _SLACK_MS):
                continue
            self.inflight[c] = node.create_task(self._attempt(c, c in connect_listed, began), name=f"pynode discovery {c}")
        self._check_members(connected, now, interval)

    def _list(self, key: str) -> list[Any]:
        v = self.setting(key)
        if v is None or v == UNDEFINED:
            return []
        return list(v) if isinstance(v, (list, tuple)) else [v]

    def _dns_setting(self) -> tuple[str, str] | None:
        v = self.setting("dns")
        if v is None or v == UNDEFINED or v is False:
            return None
        try:
            base, name = v
            return text(base), text(name)
        except (TypeError, ValueError):
            log.warning("pynode discovery: ignoring dns setting %r (expected {Basename, Name})", v)
            return None

    async def _names(self, host: str, timeout: float) -> list[tuple[str, int]] | None:
        try:
            return await names(resolve_host(host), epmd_port=self.node.epmd_port, timeout=timeout)
        except (OSError, EpmdError, LocalProtocolError, asyncio.TimeoutError, TimeoutError) as e:
            log.debug("pynode discovery: EPMD on %s did not answer: %s", host, e)
            return None

    async def _resolve(self, name: str, timeout: float) -> list[str] | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, asyncio.TimeoutError, TimeoutError) as e:
            log.debug("pynode discovery: %s did not resolve: %s", name, e)
            return None
        return _dedup(str(i[4][0]) for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6))

    async def _attempt(self, peer: Atom, listed: bool, began: float) -> None:
        """One attempt, launched by the poll that began at ``began`` (ms): the outcome is
        recorded at that time, so "due at the next poll" is exactly the next poll."""
        node = self.node
        try:
            up, failure = await node.network.attempt(peer, quiet=True)
        finally:
            self.inflight.pop(peer, None)
        outcome = OK if up else classify(failure)
        interval = self._interval_ms()
        rec = self.records.get(peer)
        was_logged = rec is not None and rec.logged
        rec = Retry.record(rec, began, outcome, interval)
        self.records[peer] = rec
        if outcome == OK:
            if was_logged:
                log.info("pynode discovery: %s reached %s", node.name, peer)
            return
        if rec.logged:
            log.debug("pynode discovery: %s: %s again (%s)", peer, outcome, failure)
            return
        if outcome == REFUSED:
            rec.logged = True
            log.warning("pynode discovery: %s refused the connection (%s); retrying with backoff", peer, failure)
        elif outcome == UNREACHABLE and listed:
            rec.logged = True
            log.info("pynode discovery: %s is unreachable (%s); retrying every poll", peer, failure)

    def _check_members(self, connected: list[Atom], now: float, interval: float) -> None:
        """Step 4: connected for a full poll interval and still not a registry member."""
        reg = self.node.registry
        members = set(reg.members()) if reg is not None else set()
        up = set(connected)
        for n in list(self._seen):
            if n not in up or n in members:
                del self._seen[n]
        for n in connected:
            if n in members:
                self._no_registry_logged.discard(n)
                continue
            first = self._seen.setdefault(n, now)
            if now - first >= interval and n not in self._no_registry_logged:
                self._no_registry_logged.add(n)
                rec = self.records.get(n)
                self.records[n] = rec = Retry.record(rec, now, NO_REGISTRY, interval)
                if not rec.logged:
                    rec.logged = True
                    log.info("pynode discovery: %s is connected but runs no pynode registry", n)

    def status(self) -> dict[Atom, dict[str, Any]]:
        """Each remembered candidate: last ``outcome`` streak ``k``, ``due_in_ms``, ``port``."""
        now = self._now_ms()
        return {
            n: {"outcome": r.last, "k": r.k, "due_in_ms": max(0.0, r.due - now), "port": r.port, "inflight": n in self.inflight}
            for n, r in sorted(self.records.items(), key=lambda kv: _node_sort_key(kv[0]))
        }
