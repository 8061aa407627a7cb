"""What every subcommand shares: one set of connection flags (:func:`connection_flags`, the
same names and rules in every command, as ``erl`` takes them), the cookie ``erl`` would use,
the client node of the client commands (:func:`client_node`), why a connection failed in
words (:func:`explain_connect_failure`), and one logging and event loop set-up (uvloop when
installed)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
import stat
import string
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine

from erl_interop import codec
from erl_interop.errors import EpmdError, HandshakeError

from ..config import ConfigError, KernelSettings, load_config, load_kernel_settings
from ..core import Process
from ..errors import PynodeError
from ..node import Node

__all__ = ["port_number", "default_cookie", "run_main", "CookieFileError", "LOG_FORMAT", "connection_flags", "short_name",
           "node_name", "kernel_from_args", "client_node", "connect", "explain_connect_failure", "in_process",
           "codec_note"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

uvloop: Any
try:
    import uvloop  # type: ignore[import-not-found, no-redef, unused-ignore]
except ImportError:  # optional: the standard event loop then
    uvloop = None


class CookieFileError(PynodeError):
    """``~/.erlang.cookie`` is one that ``erl`` refuses; the message is ``erl``'s."""


def default_cookie() -> str:
    """The cookie ``erl`` would use: ``~/.erlang.cookie``, created (20 random capital letters,
    mode 0400) when it does not exist, as ``erl`` does. Like ``erl`` (``auth.erl``), refuses
    with :class:`CookieFileError` a file that group or others may access, one that is not a
    regular file, and an empty cookie."""
    path = Path.home() / ".erlang.cookie"
    try:
        st = path.stat()
    except FileNotFoundError:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(cookie)
        return cookie
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            kind = "directory"
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = "device"
        else:
            kind = "other"
        raise CookieFileError(f"Cookie file {path} is of type {kind}")
    if st.st_mode & 0o077:
        raise CookieFileError(f"Cookie file {path} must be accessible by owner only")
    cookie = path.read_text().strip()
    if not cookie:
        raise CookieFileError("Too short cookie string")
    return cookie


def short_name(sname: str) -> str:
    """``--sname NAME[@HOST]`` as ``erl -sname`` takes it: without a host, this machine's
    short host name (the same in every command)."""
    return sname if "@" in sname else f"{sname}@{socket.gethostname().split('.')[0]}"


def run_main(fn: Callable[[Any], Coroutine[Any, Any, int]], args: Any) -> int:
    """Set up logging at ``args.log_level`` and run ``await fn(args)`` on a fresh loop. A
    cookie file ``erl`` would refuse ends the command with ``erl``'s message and status 1."""
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        if uvloop is not None:
            return int(uvloop.run(fn(args)))
        return asyncio.run(fn(args))
    except CookieFileError as e:
        print(e, file=sys.stderr)
        return 1
    except ConfigError as e:  # a malformed sys.config kernel key or TLS option: say which, do not start
        print(f"pynode: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the cookie file cannot be read or created, a port cannot be bound
        print(f"pynode: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", file=sys.stderr)
        return 1
    except EpmdError as e:  # the name is taken, or no EPMD could be reached or started: one line, as erl
        print(f"pynode: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C in a client command (it cleaned up on the way out)
        return 130


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0..65535 (0: any free port where that means something)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{n} is not a port number (0..65535)")
    return n


def connection_flags(*, name_required: bool = False, log_level: str = "WARNING",
                     client: bool = True) -> argparse.ArgumentParser:
    """The flags every command takes, as one argparse parent (``parents=[...]``): the node's
    name (``--sname NAME[@HOST]``, ``--name NAME@HOST``), ``--cookie``, ``--epmd-port``,
    ``--config`` (sys.config: its kernel section, TLS included), ``--proto-dist`` with
    ``--ssl-dist-optfile``, ``--log-level``. ``name_required``: a node needs a name (a client
    command makes up a unique one)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (the same in every command, as erl takes them)")
    who = g.add_mutually_exclusive_group(required=name_required)
    default = "" if name_required else "; default: a unique pynode_<command>_... name on the first peer's host"
    who.add_argument("--sname", metavar="NAME[@HOST]",
                     help="short node name, e.g. n1@localhost; without @HOST this machine's short host name, as "
                     f"erl -sname{default}")
    who.add_argument("--name", metavar="NAME@HOST", help="long node name, e.g. n1@127.0.0.1 (as erl -name)")
    g.add_argument("--cookie", help="magic cookie (default: ~/.erlang.cookie, created if missing, as erl does)")
    g.add_argument("--epmd-port", type=port_number, default=None, help="EPMD port (default: $ERL_EPMD_PORT or 4369)"
                   + ("" if client else "; pynode starts its own EPMD if none answers"))
    g.add_argument("--config", metavar="FILE",
                   help="sys.config shared with the BEAM side: its kernel section (net_ticktime, TLS, ports...) "
                   + ("and the pynode settings" if not client else "and the job settings"))
    g.add_argument("--proto-dist", choices=["inet_tcp", "inet_tls"], default=None,
                   help="distribution carrier, as erl -proto_dist: inet_tls runs it over TLS (with "
                   "--ssl-dist-optfile); default: the kernel's proto_dist in --config, else inet_tcp")
    g.add_argument("--ssl-dist-optfile", metavar="FILE", default=None,
                   help="the TLS options [{server, Opts}, {client, Opts}] (the file erl -ssl_dist_optfile reads)")
    g.add_argument("--log-level", default=log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help=f"log level on stderr (default {log_level})")
    return p


def node_name(args: argparse.Namespace) -> str | None:
    """The name ``--sname``/``--name`` give, by ``erl``'s rules; None when neither is given."""
    if getattr(args, "sname", None):
        return short_name(args.sname)
    if getattr(args, "name", None):
        if "@" not in args.name:
            raise SystemExit("--name needs NAME@HOST")
        return str(args.name)
    return None


def kernel_from_args(args: argparse.Namespace) -> KernelSettings:
    """The kernel section of ``--config``, with ``--proto-dist``/``--ssl-dist-optfile`` over it
    (the command line wins, as with ``erl``)."""
    kernel = load_kernel_settings(args.config) if args.config else KernelSettings()
    return kernel.with_proto_dist(args.proto_dist, args.ssl_dist_optfile)


def client_node(args: argparse.Namespace, peers: list[str], *, services: bool = True) -> Node:
    """The node of a client command (``ping``, ``rpc``, ``jobs``, ``members``, ``run_job``):
    hosts no jobs and discovers nobody by itself (the registry connects to the members it
    learns of). Without ``--sname``/``--name`` a unique name on the first peer's host, with
    that peer's naming mode (a host with a dot is a long name). ``services=False``: a bare
    node, no registry (``ping``, ``rpc``: they join no cluster-wide state)."""
    name = node_name(args)
    if name is None:
        host = peers[0].split("@", 1)[1] if peers and "@" in peers[0] else "localhost"
        name = f"pynode_{args.cmd}_{os.getpid()}_{secrets.token_hex(2)}@{host}"
        longnames = None  # as the host says
    else:
        longnames = True if args.name else None
    cookie = args.cookie if args.cookie is not None else default_cookie()
    node = Node(name, cookie, epmd_port=args.epmd_port, longnames=longnames, kernel=kernel_from_args(args),
                services=services)
    config: dict[Any, Any] = load_config(args.config) if args.config else {}
    node.config = {**config, "host_jobs": False, "discovery": False}
    return node


def explain_connect_failure(peer: str, error: BaseException | None, node: Node) -> str:
    """Why connecting ``node`` to ``peer`` failed, in one line an operator can act on."""
    mode = "long names (--name)" if node.network.settings.longnames else "short names (--sname)"
    if error is None:
        return "the connection was not set up (the peer's own simultaneous attempt never completed)"
    if isinstance(error, HandshakeError):
        text = f"{error.reason}" + (f": {' '.join(str(error.detail).split())}" if error.detail else "")
        if error.step == "port_please" and error.reason == "not_registered":
            return (f"{peer} is not registered in EPMD ({error.detail}): it is not running, or runs under "
                    "another name")
        if error.step == "port_please":
            return f"no EPMD answered on {peer.rpartition('@')[2]} ({text}); is the host right, and --epmd-port?"
        if error.reason == "illegal_hostname":
            return (f"the other naming mode: this node uses {mode}, the name {peer} needs the other one "
                    f"({' '.join(str(error.detail).replace('*', '').split())})")
        if error.step == "recv_challenge_ack" and error.reason == "closed":
            return "the cookie was most likely rejected (it closed the connection after our challenge reply); " \
                   "check --cookie (default ~/.erlang.cookie)"
        if error.reason == "not_allowed":
            return f"it refused this node (not_allowed): it may run the other naming mode (this node: {mode})"
        if error.reason == "oversized" and not node.network.settings.tls:
            return f"{text}: it answered with TLS: it runs -proto_dist inet_tls (use --proto-dist inet_tls " \
                   "--ssl-dist-optfile FILE, or --config)"
        return f"the handshake failed at {error.step}: {text}"
    if isinstance(error, ConnectionRefusedError):
        return "nothing listens on its distribution port (the node stopped after registering in EPMD?)"
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "no answer within the setup time (net_setuptime): a firewall, an overloaded node, or TLS on one " \
               "side only (--proto-dist inet_tls)"
    if isinstance(error, EpmdError):
        return f"EPMD: {error}"
    if isinstance(error, OSError):
        return f"{type(error).__name__}: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


async def connect(node: Node, peer: str, cmd: str) -> bool:
    """Connect ``node`` to ``peer``; on failure print ``CMD: cannot connect to PEER: why`` on
    stderr and return False."""
    up, error = await node.network.attempt(peer, quiet=True)
    if not up:
        print(f"{cmd}: cannot connect to {peer}: {explain_connect_failure(peer, error, node)}", file=sys.stderr,
              flush=True)
    return bool(up)


async def in_process(node: Node, fn: Callable[[Process], Awaitable[Any]]) -> Any:
    """``await fn(proc)`` in a short-lived process of ``node`` (what rpc and calls need);
    its exception is raised here."""
    out: list[tuple[bool, Any]] = []

    async def body(proc: Process) -> None:
        try:
            out.append((True, await fn(proc)))
        except Exception as e:  # handed to the caller, not a crash of the helper
            out.append((False, e))

    p = node.spawn(body)
    await asyncio.shield(p.task)  # type: ignore[arg-type]
    if not out:
        raise PynodeError(f"the helper process exited: {p.exit_reason}")
    ok, value = out[0]
    if not ok:
        raise value
    return value


def codec_note() -> str | None:
    """None when the codec runs its C accelerator or ``ERL_INTEROP_PURE`` chose the pure one;
    else why it is pure Python (the accelerator was not built when the package installed)."""
    if codec.ACCELERATED or os.environ.get("ERL_INTEROP_PURE", "") not in ("", "0"):
        return None
    return ("the pure-Python codec: the C accelerator erl_interop._speedups is not installed (it did not "
            "build when pynode-erlang was installed: no C compiler?); everything works, only slower")
