"""A minimal HTTP/1.1 server for the operator page: ``GET`` only, one request per connection.

Theory of operation
-------------------
The page is read by an operator's browser on loopback, so the server is small and strict
rather than complete. Each accepted connection gets one task that:

1. reads the request head (the request line and the header lines, up to the blank line)
   within ``head_timeout`` seconds and ``max_head`` bytes: a client that sends too much
   gets ``431`` (``414`` when the request line alone is too long), one that sends too slowly
   gets ``408``, one that closes early is dropped;
2. parses it with :func:`parse_head` (sans-IO: bytes in, a :class:`Request` or an
   :class:`HttpError` out): a malformed request line or header is ``400``, a version other
   than HTTP/1.0 or 1.1 is ``505``, a method other than ``GET`` is ``405`` (with
   ``Allow: GET``), HTTP/1.1 without ``Host`` is ``400``;
3. calls the handler, which answers a :class:`Response` (a handler that raises is ``500``,
   logged; the handler bounds its own time);
4. writes the response with ``Connection: close`` within ``write_timeout`` seconds, ends
   its side of the connection, drops what the client still sends until it closes (at most
   ``linger`` seconds and ``linger_bytes``: closing on unread input would reset the
   connection and could lose the response), and closes (a client that does not read is
   aborted).

At most ``max_connections`` connections are served at once; one more is answered ``503``
and closed. A request body is never read (no method that has one is accepted). Nothing a
client sends reaches the node other than through the handler's answer: bad input costs
one task, bounded in bytes and time, and the node goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from erl_interop.bounded import bounded_logger

__all__ = ["HttpLimits", "HttpError", "Request", "Response", "parse_head", "HttpServer", "REASONS"]

log = bounded_logger(logging.getLogger("pynode.web"))

#: the reason phrases of the statuses this server sends
REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
#: the visible ASCII characters a request target may hold (RFC 9112 §3.2; no spaces, no controls)
_TARGET = re.compile(rb"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds of one connection."""

    #: bytes of the request head (request line and headers), at most
    max_head: int = 8192
    #: bytes of the request line, at most
    max_request_line: int = 2048
    #: header lines, at most
    max_headers: int = 64
    #: seconds for the whole request head to arrive
    head_timeout: float = 5.0
    #: seconds for the response to be taken by the client
    write_timeout: float = 10.0
    #: connections served at once; more are answered 503
    max_connections: int = 32
    #: after the response, seconds and bytes of the client's further input read and dropped
    #: before closing (until the client closes its side)
    linger: float = 1.0
    linger_bytes: int = 262144


class HttpError(Exception):
    """A request this server refuses: ``status`` and a short text for the body."""

    def __init__(self, status: int, detail: str = "", allow: str | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.allow = allow


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head. ``headers``: ``(lower-case name, value)`` in order."""

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers; the server adds ``Content-Length`` and ``Connection: close``."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    def encode(self) -> bytes:
        """The whole response, head and body."""
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}",
                 "Connection: close",
                 "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff"]
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def error_response(e: HttpError) -> Response:
    """The plain-text response for a refused request."""
    text = f"{e.status} {REASONS.get(e.status, 'Error')}" + (f": {e.detail}" if e.detail else "") + "\n"
    extra = (("Allow", e.allow),) if e.allow else ()
    return Response(e.status, text.encode("utf-8"), headers=extra)


def head_end(buf: bytes | bytearray) -> tuple[int, int] | None:
    """Where the request head ends in ``buf``: ``(end of head, start of what follows)``, or
    ``None`` while the blank line has not arrived. CRLF line ends; bare LF is accepted too."""
    i = buf.find(b"\r\n\r\n")
    j = buf.find(b"\n\n")
    if i < 0 and j < 0:
        return None
    if j < 0 or (0 <= i < j):
        return i, i + 4
    return j, j + 2


def parse_head(data: bytes, limits: HttpLimits = HttpLimits()) -> Request:
    """Parse a request head (without its blank line). Raises :class:`HttpError`."""
    if len(data) > limits.max_head:
        raise HttpError(431, "request head too large")
    lines = data.split(b"\n")
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    while lines and not lines[0]:
        lines.pop(0)  # RFC 9112 §2.2: empty lines before the request line are ignored
    if not lines:
        raise HttpError(400, "empty request")
    line = lines[0]
    if len(line) > limits.max_request_line:
        raise HttpError(414, "request line too long")
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "malformed method")
    m = _VERSION.fullmatch(version)
    if m is None:
        raise HttpError(400, "malformed HTTP version")
    if m.group(1) != b"1" or m.group(2) not in (b"0", b"1"):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "malformed request target")
    if len(lines) - 1 > limits.max_headers:
        raise HttpError(431, "too many header fields")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if raw[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")
        name, sep, value = raw.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            raise HttpError(400, "control character in a header value")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    t = target.decode("ascii")
    if t.startswith("/"):
        path, _, query = t.partition("?")
    elif t.lower().startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
        rest = t.split("://", 1)[1]
        slash = rest.find("/")
        path, _, query = ("/" if slash < 0 else rest[slash:]).partition("?")
    else:
        raise HttpError(400, "request target must be a path")
    v = version.decode("ascii")
    req = Request(method.decode("ascii"), t, path, query, v, tuple(headers))
    if req.method != "GET":
        raise HttpError(405, f"{req.method} is not served here", allow="GET")
    if v == "HTTP/1.1" and req.header("host") is None:
        raise HttpError(400, "HTTP/1.1 request without Host")
    if sum(1 for k, _ in req.headers if k == "host") > 1:  # RFC 9112 §3.2
        raise HttpError(400, "more than one Host header")
    return req


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (``port`` 0: any free port, see :attr:`port`)."""

    def __init__(self, handler: Handler, limits: HttpLimits = HttpLimits()) -> None:
        self.handler = handler
        self.limits = limits
        self.server: asyncio.AbstractServer | None = None
        self.host = ""
        self.port = 0
        self._conns: set[asyncio.Task[None]] = set()
        #: requests answered, by status (for tests and curiosity)
        self.answered: dict[int, int] = {}

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``."""
        self.server = await asyncio.start_server(self._serve, host, port, limit=self.limits.max_head + 1024)
        sock = self.server.sockets[0].getsockname()
        self.host, self.port = str(sock[0]), int(sock[1])

    def close(self) -> None:
        """Stop listening and drop every connection being served."""
        if self.server is not None:
            self.server.close()
        for t in list(self._conns):
            t.cancel()

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection task are gone."""
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=5)
        if self.server is not None:
            await self.server.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        lim = self.limits
        buf = bytearray()
        while True:
            end = head_end(buf)
            if end is not None:
                if end[0] > lim.max_head:
                    raise HttpError(431, "request head too large")
                return bytes(buf[: end[0]])
            first = buf.find(b"\n")
            if (first < 0 and len(buf.lstrip(b"\r\n")) > lim.max_request_line) or first > lim.max_request_line + 2:
                raise HttpError(414, "request line too long")
            if len(buf) > lim.max_head:
                raise HttpError(431, "request head too large")
            chunk = await reader.read(4096)
            if not chunk:
                raise ConnectionResetError("the client closed before the end of the request head")
            buf += chunk

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - asyncio always runs the callback in a task
            writer.close()
            return
        self._conns.add(task)
        try:
            if len(self._conns) > self.limits.max_connections:
                await self._send(reader, writer, error_response(HttpError(503, "too many connections")))
                return
            try:
                async with asyncio.timeout(self.limits.head_timeout):
                    head = await self._read_head(reader)
                req = parse_head(head, self.limits)
            except HttpError as e:
                await self._send(reader, writer, error_response(e))
                return
            except TimeoutError:
                await self._send(reader, writer, error_response(HttpError(408, "the request head took too long")))
                return
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                return
            try:
                resp = await self.handler(req)
            except HttpError as e:
                resp = error_response(e)
            except Exception:
                log.exception("the operator page's handler failed on %s", req.target)
                resp = error_response(HttpError(500, "see the node's log"))
            await self._send(reader, writer, resp)
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection's trouble, never the node's
            log.debug("operator page connection failed", exc_info=True)
        finally:
            self._conns.discard(task)
            if not writer.is_closing():
                writer.transport.abort()

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, resp: Response) -> None:
        self.answered[resp.status] = self.answered.get(resp.status, 0) + 1
        try:
            writer.write(resp.encode())
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
            if writer.can_write_eof():
                writer.write_eof()
            # Linger: read and drop what the client still sends (the rest of a refused head, a
            # body), so that closing with unread input does not reset the connection before the
            # client has read the response. Bounded in time and bytes.
            try:
                async with asyncio.timeout(self.limits.linger):
                    left = self.limits.linger_bytes
                    while left > 0:
                        chunk = await reader.read(min(65536, left))
                        if not chunk:
                            break
                        left -= len(chunk)
            except TimeoutError:
                pass
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
