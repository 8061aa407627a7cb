"""The node: a :class:`~pynode.core.Runtime` on the network, with its built-in services.

This module is the composition root: :meth:`Node.start` plugs the distribution layer
(:mod:`pynode.dist`) into the runtime, hands it the handler for ``SPAWN_REQUEST``
(:mod:`pynode.otp.rpc`), and starts, in order, ``net_kernel``, ``rex``, ``pynode`` (the info
server), the registry, discovery and (unless ``host_jobs`` is false) the job host.
:meth:`Node.stop` runs the stop hooks (the job handoff) while everything still works, then
closes every connection (peers see ``nodedown`` at once) and shuts the runtime down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any, Awaitable, Callable, Mapping, TypeVar

from erl_interop.bounded import bounded_logger
from erl_interop.aio import DIST_BUF_BUSY_LIMIT
from erl_interop.connection import MAX_MESSAGE_SIZE
from erl_interop.terms import Atom

from .config import KernelSettings, kernel_settings
from .core import Process, Runtime
from .discovery import Discovery
from .dist import Distribution, DistSettings
from .dist.distribution import is_ip_address
from .dist.tls import DistTls, TlsSpec, dist_tls
from .errors import CallError, ErlangError, NotStarted
from .jobs import JobHost, start_host
from .otp import net_kernel
from .otp.gen_server import call as gen_call
from .otp.rpc import handle_spawn_request, rex_server
from .registry import Registry, RegistryAPI

__all__ = ["Node", "default_listen_host"]

log = bounded_logger(logging.getLogger("pynode.node"))


def default_listen_host(name: str) -> str:
    """Where a node called ``name`` listens by default: loopback for a loopback name, else
    every interface (``erl`` always listens on every interface)."""
    host = _node_host(name)
    if host == "localhost":
        return "127.0.0.1"
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_loopback else "0.0.0.0"
    except ValueError:
        return "0.0.0.0"


T = TypeVar("T")


def _started(service: T | None) -> T:
    """A service of a started node; :class:`~pynode.errors.NotStarted` before ``start``."""
    if service is None:
        raise NotStarted("the node is not started: await node.start() first")
    return service


def _node_host(name: str) -> str:
    return name.split("@", 1)[1] if "@" in name else "localhost"


class Node(Runtime):
    """A Python node. ``await node.start()`` joins the network; ``await node.stop()`` leaves it.

    :param name: full node name, ``alive@host`` (``--sname``-style when host has no dot).
    :param cookie: the magic cookie shared with the cluster.
    :param tick_time: ``net_ticktime`` in seconds (default: the kernel's ``net_ticktime``,
        else 60, as OTP).
    :param epmd_port: EPMD port (default ``$ERL_EPMD_PORT`` or 4369).
    :param listen_host: address to listen on. Default: ``127.0.0.1`` when the host part of
        ``name`` is ``localhost`` or a loopback address (nothing else could reach such a
        name), else every interface (``0.0.0.0``), as ``erl`` does.
    :param setup_timeout: handshake time limit (``net_setuptime``; default: the kernel's, else
        7 s), the TLS handshake included.
    :param hidden: connect as a hidden node (default; ``PUBLISHED`` is not advertised).
    :param dist_flags: the distribution flags to advertise (default ``DEFAULT_FLAGS``).
    :param longnames: ``-name`` (True) or ``-sname`` (False) mode; default: long when the
        host part of ``name`` has a dot or is an IP address. As on the BEAM, a short-name
        node neither dials nor accepts a host with a dot, a long-name node one without.
    :param max_message_size: the largest message a peer may send, in bytes (default 1 GiB);
        a larger one drops that peer's link, with a log line naming the limit.
    :param busy_limit: a link's send buffer, in bytes, above which a process that sends on
        it waits at its next ``receive`` until it drains (default 1 MiB, OTP's
        ``dist_buf_busy_limit``).
    :param config: settings of the built-in services, the ``pynode`` keys of
        ``sys.config`` (``pynode.config.load_config``): discovery (docs/DISCOVERY.md), jobs.
    :param tls: run the distribution over TLS, as ``erl -proto_dist inet_tls`` (README, "TLS
        distribution"): the path of an ``ssl_dist_optfile`` (the file the BEAM reads), its
        term, a mapping ``{"server": {...}, "client": {...}}`` of ssl options, or a
        :class:`~pynode.dist.tls.DistTls`. Default: the kernel's ``proto_dist inet_tls`` with
        its ``ssl_dist_optfile``/``ssl_dist_opts``, else plain TCP.
    :param kernel: the ``kernel`` section of ``sys.config``
        (:func:`pynode.config.load_kernel_settings`, or a dict of its keys): ``net_ticktime``,
        ``net_setuptime``, ``inet_dist_listen_min``/``max``, ``inet_dist_use_interface``,
        ``inet_dist_connect_options``/``inet_dist_listen_options``, ``dist_auto_connect``,
        ``proto_dist``, ``ssl_dist_optfile``. The other arguments win over it. A malformed
        value raises :class:`~pynode.config.ConfigError` here; unknown keys are logged once.
    :param services: ``False`` for a bare node: ``net_kernel``, ``rex`` and the ``pynode``
        info server only, no registry, discovery or job host (a client that pings or calls,
        as ``pynode ping`` and ``pynode rpc``; it joins no cluster-wide state).
    """

    def __init__(
        self,
        name: str,
        cookie: str,
        *,
        tick_time: float | None = None,
        epmd_port: int | None = None,
        listen_host: str | None = None,
        listen_port: int = 0,
        setup_timeout: float | None = None,
        hidden: bool = True,
        dist_flags: int | None = None,
        longnames: bool | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        busy_limit: int = DIST_BUF_BUSY_LIMIT,
        config: dict[str, Any] | None = None,
        tls: TlsSpec | None = None,
        kernel: KernelSettings | Mapping[str, Any] | None = None,
        services: bool = True,
    ) -> None:
        super().__init__(name)
        k = kernel if isinstance(kernel, KernelSettings) else kernel_settings(kernel or {}, source="Node(kernel=...)")
        #: the kernel settings in force (``sys.config``'s kernel section)
        self.kernel = k
        self.cookie = cookie
        self.tick_time = float(tick_time if tick_time is not None else k.net_ticktime or 60)
        self.epmd_port = epmd_port
        if listen_host is None:
            listen_host = k.use_interface or k.listen_options.ip or default_listen_host(name)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.setup_timeout = float(setup_timeout if setup_timeout is not None else k.net_setuptime or 7.0)
        #: ``dist_auto_connect``: always, once or never
        self.dist_auto_connect = k.dist_auto_connect or "always"
        if k.ignored:
            log.info("%s: kernel keys without meaning for a Python node, ignored: %s", k.source, ", ".join(k.ignored))
        #: the TLS distribution settings (``-proto_dist inet_tls``), None for plain TCP
        self.tls: DistTls | None = self._tls(tls, k)
        self.hidden = hidden
        #: distribution flags to advertise (default: erl_interop.flags.DEFAULT_FLAGS); add
        #: DIST_HDR_ATOM_CACHE / FRAGMENTS to receive in header mode
        self.dist_flags = dist_flags
        host = _node_host(name)
        #: ``-name`` (True) or ``-sname`` (False); by default long when the host part has a
        #: dot or is an address. It decides which peers the node may talk to, as on the BEAM.
        self.longnames = longnames if longnames is not None else ("." in host or is_ip_address(host))
        self.max_message_size = max_message_size
        self.busy_limit = busy_limit
        self.dist: Distribution | None = None
        self._registry: RegistryAPI | None = None
        self._discovery: Discovery | None = None
        #: this node's job host (:class:`pynode.jobs.JobHost`), None when ``host_jobs`` is false
        self.jobs: JobHost | None = None
        self._stopping = False
        #: settings read by built-in services (the ``pynode`` env of sys.config)
        self.config: dict[str, Any] = dict(config or {})
        self._stop_hooks: list[Callable[[], Awaitable[Any]]] = []
        #: False: a bare node (net_kernel, rex and the info server only: no registry,
        #: discovery or job host), for a client that only pings or calls, as `pynode ping`
        self.services = services

    def _tls(self, tls: TlsSpec | None, k: KernelSettings) -> DistTls | None:
        """The TLS settings from ``tls`` or the kernel's ``proto_dist``; logs the socket
        options that have no effect."""
        source = "Node(tls=...)"
        if tls is None and k.tls:
            tls = k.ssl_dist_optfile if k.ssl_dist_optfile is not None else k.ssl_dist_opts
            source = f"{k.source}: kernel ssl_dist_opts"
        elif tls is None and (k.ssl_dist_optfile is not None or k.ssl_dist_opts is not None):
            log.warning("%s: ssl_dist_optfile without proto_dist inet_tls: plain TCP distribution, as erl does",
                        k.source)
        unused = [f"inet_dist_connect_options {o}" for o in k.connect_options.ignored]
        unused += [f"inet_dist_listen_options {o}" for o in k.listen_options.ignored]
        unused += [f"inet_dist_listen_options {key}" for key, _ in k.listen_options.other]
        if tls is None:
            unused += [f"inet_dist_connect_options {key}" for key, _ in k.connect_options.other]
        if unused:
            log.info("%s: socket options without effect on a Python node, ignored: %s", k.source, ", ".join(unused))
        if tls is None:
            return None
        # inet_tls_dist merges inet_dist_connect_options into the ssl client options
        return dist_tls(tls, client_overrides=k.connect_options.other, source=source)

    async def start(self) -> "Node":
        """Listen, register with EPMD (starting pynode's EPMD if none runs) and start the
        built-in processes (``net_kernel``, ``rex``, ``pynode``, the registry, discovery and
        the job host)."""
        settings = DistSettings(
            cookie=self.cookie,
            tick_time=self.tick_time,
            epmd_port=self.epmd_port,
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            setup_timeout=self.setup_timeout,
            hidden=self.hidden,
            dist_flags=self.dist_flags,
            longnames=self.longnames,
            max_message_size=self.max_message_size,
            busy_limit=self.busy_limit,
            tls=self.tls,
            listen_port_range=self.kernel.listen_port_range,
            auto_connect=self.dist_auto_connect,
            connect_options=self.kernel.connect_options,
            listen_options=self.kernel.listen_options,
        )
        self.dist = Distribution(self, settings, spawn_handler=handle_spawn_request)
        await self.dist.start()
        await net_kernel.NetKernel.start(self, name="net_kernel")
        self.spawn(rex_server, name="rex")
        await net_kernel.PynodeInfo.start(self, self.info, name="pynode")
        if not self.services:
            self.expose("pynode", "info", self.info)
            return self
        server = await Registry.start_for(self)
        self._registry = RegistryAPI(self, server)
        self._discovery = Discovery.start_for(self)
        if self.config.get("host_jobs", True):
            self.jobs = await start_host(self)
        self.expose("pynode", "info", self.info)
        return self

    def info(self) -> dict[Atom, Any]:
        """The map ``GenServer.call({:pynode, node}, :info)`` and ``:rpc.call(node, :pynode,
        :info, [])`` answer: node, connected nodes, process count, jobs, members, ..."""
        return net_kernel.node_info(
            self,
            members=self._registry.members() if self._registry is not None else None,
            jobs=self.jobs.list() if self.jobs is not None else None,
        )

    @property
    def registry(self) -> RegistryAPI:
        """The cluster registry (:class:`pynode.registry.RegistryAPI`)."""
        return _started(self._registry)

    @property
    def discovery(self) -> Discovery:
        """The discovery process (:class:`pynode.discovery.Discovery`)."""
        return _started(self._discovery)

    @property
    def network(self) -> Distribution:
        """The distribution layer (connections, the node table)."""
        return _started(self.dist)

    def on_stop(self, hook: Callable[[], Awaitable[Any]]) -> None:
        """Run ``await hook()`` first in :meth:`stop`, while processes and connections still
        work (the job host hands its jobs off there). Hooks run in the order added."""
        self._stop_hooks.append(hook)

    async def stop(self, reason: Any = Atom("shutdown")) -> None:
        """Run the :meth:`on_stop` hooks, then stop every process, close every connection
        (peers see ``nodedown`` at once) and unregister from EPMD."""
        if self._stopping:
            return
        self._stopping = True
        for hook in list(self._stop_hooks):
            try:
                await hook()
            except Exception:
                log.exception("%s: a stop hook failed", self.name)
        # Connections go first, as when a BEAM node halts: peers see nodedown and
        # 'noconnection' for our processes, not the local reason they are killed with.
        if self.dist is not None:
            await self.dist.stop()
        await self.shutdown(reason)

    async def __aenter__(self) -> "Node":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- conveniences ----------------------------------------------------------------------
    async def call(self, dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
        """``gen_server:call`` from a short-lived helper process."""
        outcome: list[Any] = []

        async def body(proc: Process) -> None:
            try:
                outcome.append((True, await gen_call(proc, dest, request, timeout)))
            except Exception as e:  # handed to the caller, not a crash of the helper
                outcome.append((False, e))

        p = self.spawn(body)
        await asyncio.shield(p.task)  # type: ignore[arg-type]
        if not outcome:
            raise ErlangError(p.exit_reason)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    async def ping(self, node: str, timeout: float | None = None) -> Atom:
        """``net_adm:ping(Node)``: ``pong`` or ``pang``."""
        try:
            r = await self.call((Atom("net_kernel"), Atom(node)), (Atom("is_auth"), self.name), timeout=timeout or 10.0)
        except CallError:
            return Atom("pang")
        return Atom("pong") if r == Atom("yes") else Atom("pang")
