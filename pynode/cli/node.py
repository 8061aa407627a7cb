"""``python -m pynode [node] --sname ...``: run a Python node in an Erlang/Elixir cluster.

Examples::

    python -m pynode --sname n1@localhost --cookie test
    python -m pynode --name n1@127.0.0.1 --config sys.config
    python -m pynode run_job 10 --connect n1@localhost    # see pynode.cli.jobs
    python -m pynode jobs --node n1@localhost
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
from typing import Any, Sequence

from ..config import KernelSettings, load_config, load_kernel_settings
from ..node import Node
from ..otp import net_kernel
from .common import default_cookie, short_name

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``node`` subcommand (the default: ``python -m pynode --sname ...``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "node",
        prog="python -m pynode",
        help="start a node (the default command)",
        description="Start a Python node that joins an Erlang/Elixir cluster (a hidden node, "
        "like erl -hidden). It answers Node.ping, GenServer.call({:pynode, node}, :info) and "
        ":rpc.call(node, :pynode, :info, []). Stop it with Ctrl-C, SIGTERM, :init.stop() by rpc "
        "or erl_call -q: its jobs move to another node first.",
        epilog="other commands: 'python -m pynode run_job N' (the seed's job check against "
        "n1..n3@localhost) and 'python -m pynode jobs --node NODE' (where every job runs); "
        "each has its own --help.",
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--sname", metavar="NAME[@HOST]", help="short node name, e.g. n1@localhost (as erl -sname)")
    who.add_argument("--name", metavar="NAME@HOST", help="long node name, e.g. n1@127.0.0.1 (as erl -name)")
    p.add_argument("--cookie", help="magic cookie (default: ~/.erlang.cookie, created if missing, as erl does)")
    p.add_argument("--config", metavar="FILE", help="cluster configuration shared with the BEAM side (sys.config)")
    p.add_argument("--epmd-port", type=int, default=None, help="EPMD port (default: $ERL_EPMD_PORT or 4369); "
                   "pynode starts its own EPMD if none answers")
    p.add_argument("--listen", default=None, metavar="ADDR", help="address for distribution connections (default: "
                   "127.0.0.1 for a localhost or loopback name, else every interface, as erl)")
    p.add_argument("--port", type=int, default=0, help="distribution port (default: any free port)")
    p.add_argument("--ticktime", type=float, default=None,
                   help="net_ticktime in seconds (default: the kernel's net_ticktime in --config, else 60)")
    p.add_argument("--proto-dist", choices=["inet_tcp", "inet_tls"], default=None,
                   help="distribution carrier, as erl -proto_dist: inet_tls runs it over TLS (with "
                   "--ssl-dist-optfile); default: the kernel's proto_dist in --config, else inet_tcp")
    p.add_argument("--ssl-dist-optfile", metavar="FILE", default=None,
                   help="the TLS options [{server, Opts}, {client, Opts}] (the file erl -ssl_dist_optfile reads)")
    p.add_argument("--connect", action="append", default=[], metavar="NODE",
                   help="node to connect to, retried until reached and whenever lost (repeatable; "
                   "added to the config's connect list)")
    p.add_argument("--no-discovery", action="store_true",
                   help="connect to nobody by itself (config key discovery=false); by default the node "
                   "finds every node in its own host's EPMD, the connect list, hosts and dns (docs/DISCOVERY.md)")
    p.add_argument("--no-jobs", action="store_true", help="do not host background jobs (no pynode_jobs process)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE before the node starts, so its job kinds and exposed functions "
                   "exist on this node (repeatable; the current directory is on the path)")
    p.set_defaults(func=run)
    return p


def _node_name(args: argparse.Namespace) -> str:
    if args.sname:
        return short_name(args.sname)
    if "@" not in args.name:
        raise SystemExit("--name needs NAME@HOST")
    return str(args.name)


async def run(args: argparse.Namespace) -> int:
    for module in getattr(args, "imports", None) or []:
        importlib.import_module(module)  # the user's kinds (@job_kind) and code, as iex -S mix loads an app
    # the kernel section of sys.config, and erl's -proto_dist/-ssl_dist_optfile over it
    kernel = load_kernel_settings(args.config) if args.config else KernelSettings()
    kernel = kernel.with_proto_dist(args.proto_dist, args.ssl_dist_optfile)
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
    await node.start()
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
