"""``pynode ping``, ``pynode rpc`` and ``pynode members``: ask a cluster from the shell, as a
client-only node with a unique name (no jobs, no discovery of its own).

``ping NODE`` prints ``pong`` or ``pang`` as ``net_adm:ping/1`` answers (exit 0 / 1); on
``pang`` one line on stderr says why the connection failed (the cookie, EPMD, the naming
mode, TLS...).

``rpc NODE MOD FUN [ARGS]`` is ``rpc:call(NODE, MOD, FUN, ARGS)``: ARGS is the argument list
as Erlang term text (``'[1, <<"two">>, {three, 4}]'``; default ``[]``; the syntax of
``sys.config``, see :func:`pynode.config.parse_terms`). The result is printed as Elixir's
``inspect`` prints it; ``{badrpc, Reason}`` exits 1.

``members --node NODE`` lists the members of the cluster's registry as NODE's registry knows
them: each member's runtime (``python`` for a pynode node, which answers ``{pynode, Node}``'s
``info``; ``beam`` otherwise) and whether it hosts jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from erl_interop.terms import Atom

from .. import jobs
from ..config import ConfigError, parse_terms
from ..errors import CallError
from ..node import Node
from ..otp.rpc import rpc_call
from .common import client_node, connect, connection_flags, in_process

__all__ = ["add_parsers", "ping", "rpc", "members", "parse_args_text"]

BADRPC = Atom("badrpc")


def add_parsers(sub: Any, prog: str = "pynode") -> None:
    """The ``ping``, ``rpc`` and ``members`` subcommands."""
    flags = connection_flags()
    p = sub.add_parser("ping", prog=f"{prog} ping", parents=[flags], help="net_adm:ping a node: pong or pang",
                       description="Print pong (exit 0) or pang (exit 1), as net_adm:ping(NODE) answers; on pang, "
                       "why the connection failed goes to stderr.")
    p.add_argument("node", metavar="NODE", help="the node to ping, e.g. n1@localhost")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")
    p.set_defaults(func=ping)
    r = sub.add_parser("rpc", prog=f"{prog} rpc", parents=[flags], help="rpc:call(NODE, MOD, FUN, ARGS) and print "
                       "the result", description="Call MOD:FUN(ARGS...) on NODE as rpc:call/5 does and print the "
                       "result in Elixir syntax; {badrpc, Reason} exits 1.")
    r.add_argument("node", metavar="NODE", help="the node to call, e.g. n1@localhost")
    r.add_argument("module", metavar="MOD", help="module (an atom: erlang, 'Elixir.Enum', pynode)")
    r.add_argument("function", metavar="FUN", help="function name")
    r.add_argument("args_text", metavar="ARGS", nargs="?", default="[]",
                   help="the argument list as Erlang term text, e.g. '[1, <<\"two\">>, {three}]' (default [])")
    r.add_argument("--timeout", type=float, default=None, help="seconds (default: none, as rpc:call/4)")
    r.set_defaults(func=rpc)
    m = sub.add_parser("members", prog=f"{prog} members", parents=[flags], help="list the registry's members",
                       description="List the members of the cluster's registry (as NODE's registry knows them), "
                       "each with its runtime (python or beam) and whether it hosts jobs.")
    m.add_argument("--node", required=True, metavar="NODE", help="a cluster node to ask")
    m.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the cluster's registry (default 10)")
    m.set_defaults(func=members)


def parse_args_text(text: str) -> list[Any]:
    """``'[1, two, "three"]'`` -> ``[1, Atom('two'), [116, ...]]``: one Erlang term, a list
    (the final ``.`` may be left out). :class:`ValueError` with what is wrong otherwise."""
    body = text.strip()
    if not body.endswith("."):
        body += "."
    try:
        terms = parse_terms(body)
    except ConfigError as e:
        raise ValueError(f"ARGS is not Erlang term text: {e}") from None
    if len(terms) != 1 or not isinstance(terms[0], list):
        raise ValueError(f"ARGS must be one list of arguments, e.g. [1, two]; got {text!r}")
    return list(terms[0])


async def ping(args: argparse.Namespace) -> int:
    node = client_node(args, [args.node], services=False)
    await node.start()
    try:
        up = await connect(node, args.node, "ping")
        answer = await node.ping(args.node, timeout=args.timeout) if up else Atom("pang")
        print(answer, flush=True)
        return 0 if answer == Atom("pong") else 1
    finally:
        await node.stop()


async def rpc(args: argparse.Namespace) -> int:
    try:
        call_args = parse_args_text(args.args_text)
    except ValueError as e:
        print(f"rpc: {e}", file=sys.stderr)
        return 2
    node = client_node(args, [args.node], services=False)
    await node.start()
    try:
        if not await connect(node, args.node, "rpc"):
            print(jobs.format_term((BADRPC, Atom("nodedown"))), flush=True)
            return 1
        result = await in_process(node, lambda proc: rpc_call(proc, args.node, args.module, args.function,
                                                               call_args, args.timeout))
        print(jobs.format_term(result), flush=True)
        return 1 if type(result) is tuple and len(result) == 2 and result[0] == BADRPC else 0
    finally:
        await node.stop()


async def _runtime(node: Node, member: Atom) -> str:
    """``python`` when ``member`` runs pynode (its ``pynode`` server says so), else ``beam``."""
    try:
        info = await node.call((Atom("pynode"), member), Atom("info"), timeout=3.0)
    except CallError:
        return "beam"  # no pynode server there: a BEAM node (an Elixir or Erlang member)
    return "python" if isinstance(info, dict) and info.get(Atom("runtime")) == Atom("python") else "beam"


async def members(args: argparse.Namespace) -> int:
    node = client_node(args, [args.node])
    await node.start()
    try:
        if not await connect(node, args.node, "members"):
            return 2
        if not await node.registry.wait_synced([args.node], args.wait):
            print(f"members: {args.node} runs no pynode registry", file=sys.stderr)
            return 2
        await node.registry.wait_synced(node.registry.claimed_members, min(args.wait, 3.0))
        names = [m for m in node.registry.members() if m != node.name]
        runtimes = await asyncio.gather(*(_runtime(node, m) for m in names))
        hosts = {p.node for p in node.registry.lookup_pids(jobs.HOST_KEY)}
        table = [("NODE", "RUNTIME", "JOB HOST")]
        table += [(str(m), rt, "yes" if m in hosts else "no") for m, rt in zip(names, runtimes)]
        widths = [max(len(r[c]) for r in table) for c in range(3)]
        for row in table:
            print("  ".join(row[c].ljust(widths[c]) for c in range(3)).rstrip())
        n_py = runtimes.count("python")
        print(f"{len(names)} member(s): {n_py} python, {len(names) - n_py} beam; {len(hosts & set(names))} job host(s)",
              flush=True)
        return 0
    finally:
        await node.stop()
