"""``python -m erl_interop.epmd``: run the EPMD server in the foreground, or query one.

    python -m erl_interop.epmd [--port N] [--address A[,B]] [--daemon] [--pidfile F]
    python -m erl_interop.epmd --names [--port N]

The port defaults to ``$ERL_EPMD_PORT``, else 4369. ``--daemon`` is what :func:`ensure_epmd`
passes: the process is already detached by its parent, so it only silences logging; the loop
is the same. SIGINT/SIGTERM stop the server and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from erl_interop.errors import EpmdError

from .client import epmd_port_from_env, names
from .server import EpmdServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m erl_interop.epmd", description="Erlang port mapper daemon (pynode)")
    p.add_argument("--port", "-port", type=int, default=None, help="port (default $ERL_EPMD_PORT or 4369)")
    p.add_argument("--address", "-address", default="127.0.0.1", help="comma-separated addresses to bind")
    p.add_argument("--daemon", "-daemon", action="store_true", help="run silently (used by ensure_epmd)")
    p.add_argument("--pidfile", default=None, help="write the server's pid to this file")
    p.add_argument(
        "--relaxed-command-check",
        "-relaxed_command_check",
        action="store_true",
        help="allow KILL with live nodes and STOP (as epmd -relaxed_command_check)",
    )
    p.add_argument("--names", "-names", action="store_true", help="list the nodes registered at a running epmd")
    p.add_argument("--debug", "-d", action="count", default=0, help="log more (repeat for more)")
    return p.parse_args(argv)


async def _print_names(port: int) -> int:
    try:
        nodes = await names(epmd_port=port)
    except (EpmdError, OSError, TimeoutError):
        print("epmd: Cannot connect to local epmd", file=sys.stderr)
        return 1
    lines = [f"epmd: up and running on port {port} with data:"]
    lines += [f"name {name} at port {node_port}" for name, node_port in nodes]
    print("\n".join(lines))
    return 0


async def _serve(args: argparse.Namespace, port: int) -> int:
    server = EpmdServer(
        port, [a.strip() for a in args.address.split(",") if a.strip()], relaxed_command_check=args.relaxed_command_check
    )
    try:
        await server.start()
    except OSError as e:
        logging.getLogger("erl_interop.epmd").error("cannot listen on port %d: %s", port, e)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.close)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        await server.serve_until_stopped()
    finally:
        await server.aclose()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    port = epmd_port_from_env(args.port)
    if args.names:
        return asyncio.run(_print_names(port))
    if args.daemon:
        logging.basicConfig(level=logging.CRITICAL + 1)
    else:
        level = logging.WARNING if args.debug == 0 else (logging.INFO if args.debug == 1 else logging.DEBUG)
        logging.basicConfig(level=level, format="epmd: %(asctime)s: %(message)s", stream=sys.stderr)
    return asyncio.run(_serve(args, port))


if __name__ == "__main__":
    sys.exit(main())
