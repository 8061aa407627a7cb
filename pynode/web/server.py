"""The operator page's server: :func:`serve` starts a :class:`WebServer` for a node.

Routes (``GET`` only): ``/`` the page (:mod:`pynode.web.page`), ``/api/cluster`` the JSON
snapshot (:class:`pynode.web.cluster.ClusterView`), ``/healthz`` a plain ``ok``; anything
else is ``404``. Bound to a loopback address (the default, ``127.0.0.1``), the server answers
only requests whose ``Host`` names a loopback address or ``localhost`` (``421`` otherwise),
so that a web page elsewhere cannot read the cluster through a DNS name rebound to
127.0.0.1. The server closes with the node (a stop hook) or with :meth:`WebServer.close`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from erl_interop.bounded import bounded_logger

from .cluster import ClusterView
from .http import HttpError, HttpLimits, HttpServer, Request, Response
from .page import PAGE

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["WebServer", "serve", "DEFAULT_HOST"]

log = bounded_logger(logging.getLogger("pynode.web"))

DEFAULT_HOST = "127.0.0.1"

#: the page's own resources only: inline style and script, fetches to this server
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; "
       "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h.lower() == "localhost" or h.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The host of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``)."""
    v = value.strip()
    if v.startswith("["):
        return v[: v.find("]") + 1] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


class WebServer:
    """A running operator page: :attr:`url`, :attr:`host`, :attr:`port`; :meth:`close`."""

    def __init__(self, node: "Node", view: ClusterView, limits: HttpLimits) -> None:
        self.node = node
        self.view = view
        self.http = HttpServer(self._handle, limits)
        self._loopback_only = False

    @property
    def host(self) -> str:
        return self.http.host

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/"

    async def _start(self, host: str, port: int) -> None:
        self._loopback_only = _is_loopback(host)
        if not self._loopback_only:
            log.warning("%s: the operator page on %s:%s is open to everyone who can reach that address: it has no "
                        "authentication and shows every node, job and state of the cluster", self.view.node.name,
                        host, port)
        self.view.start()
        await self.http.start(host, port)

    def close(self) -> None:
        """Stop listening, drop the connections being served, stop the view."""
        self.http.close()
        self.view.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until everything is gone."""
        self.close()
        await self.http.wait_closed()

    async def _handle(self, req: Request) -> Response:
        if self._loopback_only and not _is_loopback(_host_name(req.header("host") or self.host)):
            raise HttpError(421, "this page answers loopback names only (see --http-host)")
        headers = (("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer"))
        if req.path in ("/", "/index.html"):
            return Response(200, PAGE, "text/html; charset=utf-8", headers)
        if req.path == "/api/cluster":
            return Response(200, await self.view.snapshot_json(), "application/json", headers)
        if req.path == "/healthz":
            return Response(200, b"ok\n")
        raise HttpError(404, "try / or /api/cluster")


async def serve(node: "Node", port: int, host: str = DEFAULT_HOST, *, limits: HttpLimits | None = None,
                **view_options: Any) -> WebServer:
    """Serve the operator page of ``node`` (started) on ``host:port`` (``port`` 0: any free
    port; read :attr:`WebServer.port`). ``view_options`` go to :class:`ClusterView`
    (``refresh_interval``, ``call_timeout``, ``state_cap``, ...). The server stops with the
    node, or with :meth:`WebServer.close`."""
    server = WebServer(node, ClusterView(node, **view_options), limits or HttpLimits())
    await server._start(host, port)

    async def stop() -> None:
        server.close()
        try:
            await asyncio.wait_for(server.http.wait_closed(), 2.0)
        except (TimeoutError, OSError):
            pass

    node.on_stop(stop)
    log.info("%s: operator page on %s", node.name, server.url)
    return server
