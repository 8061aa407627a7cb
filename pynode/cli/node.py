"""``pynode [node] --sname ...``: run a Python node in an Erlang/Elixir cluster.

Examples::

    pynode --sname n1@localhost --cookie test          # or: python -m pynode ...
    pynode node --name n1@127.0.0.1 --config sys.config
    pynode ping n1@localhost                           # see pynode.cli.client
    pynode run_job 10 --connect n1@localhost           # see pynode.cli.jobs
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import Any

from .. import web
from ..config import load_config
from ..node import Node
from ..otp import net_kernel
from .common import codec_note, connection_flags, default_cookie, kernel_from_args, node_name, port_number

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, prog: str = "pynode") -> argparse.ArgumentParser:
    """The ``node`` subcommand (the default: ``pynode --sname ...``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "node",
        prog=f"{prog} [node]",
        parents=[connection_flags(name_required=True, log_level="INFO", client=False)],
        help="start a node (the default command)",
        description="Start a Python node that joins an Erlang/Elixir cluster (a hidden node, "
        "like erl -hidden). It answers Node.ping, GenServer.call({:pynode, node}, :info) and "
        ":rpc.call(node, :pynode, :info, []). Stop it with Ctrl-C, SIGTERM, :init.stop() by rpc "
        "or erl_call -q: its jobs move to another node first.",
        epilog=f"other commands: '{prog} ping NODE', '{prog} rpc NODE MOD FUN [ARGS]', '{prog} members --node "
        f"NODE', '{prog} jobs --node NODE' and '{prog} run_job N'; each has its own --help.",
    )
    p.add_argument("--listen", default=None, metavar="ADDR", help="address for distribution connections (default: "
                   "127.0.0.1 for a localhost or loopback name, else every interface, as erl)")
    p.add_argument("--port", type=port_number, default=0, help="distribution port (default: any free port)")
    p.add_argument("--ticktime", type=float, default=None,
                   help="net_ticktime in seconds (default: the kernel's net_ticktime in --config, else 60)")
    p.add_argument("--connect", action="append", default=[], metavar="NODE",
                   help="node to connect to, retried until reached and whenever lost (repeatable; "
                   "added to the config's connect list)")
    p.add_argument("--no-discovery", action="store_true",
                   help="connect to nobody by itself (config key discovery=false); by default the node "
                   "finds every node in its own host's EPMD, the connect list, hosts and dns (docs/DISCOVERY.md)")
    p.add_argument("--no-jobs", action="store_true", help="do not host background jobs (no pynode_jobs process)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE before the node starts, so its job kinds exist on this node; a "
                   "function pynode_start(node) in it (plain or async) is called once the node is up, to "
                   "expose functions or start servers (repeatable; the current directory is on the path)")
    p.add_argument("--http", type=port_number, default=None, metavar="PORT",
                   help="serve the operator page (nodes, registry, jobs, live) on PORT (0: any free port); off by default")
    p.add_argument("--http-host", default=web.DEFAULT_HOST, metavar="ADDR", help="address of --http (default 127.0.0.1)")
    p.set_defaults(func=run)
    return p


def _node_name(args: argparse.Namespace) -> str:
    name = node_name(args)
    assert name is not None  # --sname or --name is required
    return name


async def run(args: argparse.Namespace) -> int:
    # the user's kinds (@job_kind) and code, as iex -S mix loads an application; from the
    # current directory too, as `python -m pynode` has it (the console script's sys.path[0]
    # is its own bin/ directory)
    imports = getattr(args, "imports", None) or []
    if imports and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    modules = []
    for m in imports:
        try:
            modules.append(importlib.import_module(m))
        except ImportError as e:  # the module's own traceback is the user's to read: one line here
            print(f"pynode: cannot import {m} (--import): {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    # the kernel section of sys.config, and erl's -proto_dist/-ssl_dist_optfile over it
    kernel = kernel_from_args(args)
    node = Node(
        _node_name(args),
        args.cookie if args.cookie is not None else default_cookie(),
        tick_time=args.ticktime,
        epmd_port=args.epmd_port,
        listen_host=args.listen,
        listen_port=args.port,
        longnames=bool(args.name),
        kernel=kernel,
    )
    config: dict[Any, Any] = {}
    if args.config:
        config = load_config(args.config)
    node.config = dict(config)
    if args.no_jobs:
        node.config["host_jobs"] = False
    if args.connect:
        node.config["connect"] = list(node.config.get("connect", [])) + list(args.connect)
    if args.no_discovery:
        node.config["discovery"] = False
    note = codec_note()
    if note is not None:
        logging.getLogger("pynode").warning("%s", note)
    await node.start()
    for module in modules:
        # a module's pynode_start(node), as an application's start/2: what needs the node
        # (node.expose, GenServer.start, a registration) before it says it is up
        start = getattr(module, "pynode_start", None)
        if start is None:
            continue
        try:
            r = start(node)
            if inspect.isawaitable(r):
                await r
        except Exception as e:
            logging.getLogger("pynode").error("%s.pynode_start(node) failed", module.__name__, exc_info=True)
            print(f"pynode: {module.__name__}.pynode_start(node) failed: {type(e).__name__}: {e}", file=sys.stderr)
            await node.stop()
            return 1
    if args.http is not None:
        try:
            page = await web.serve(node, args.http, args.http_host)
        except OSError as e:
            print(f"pynode: cannot serve the operator page on {args.http_host}:{args.http}: {e.strerror or e}", file=sys.stderr)
            await node.stop()
            return 1
        print(f"pynode: operator page on {page.url}", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, net_kernel.halt, node, 0)
    print(
        f"pynode {node.name} up: listening on {node.listen_host}:{node.network.port}, "
        f"creation {node.creation}, epmd port {node.epmd_port or os.environ.get('ERL_EPMD_PORT', 4369)}, pid {os.getpid()}",
        flush=True,
    )
    # Ctrl-C, SIGTERM, or init:stop/erlang:halt from a peer (erl_call -q): the node stops
    # gracefully, then the command exits with the status asked for (0 for a signal).
    return await net_kernel.halted(node)
