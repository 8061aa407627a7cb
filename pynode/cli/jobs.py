"""``python -m pynode run_job N`` and ``python -m pynode jobs``: job commands for the shell.

``run_job N`` joins the cluster as a client-only node (no job host), then for ids ``1..N``
starts a ``'Job'``, updates it with ``update``, finishes it and checks that the result is
``[update, Id]``. It prints one line per job, ``job <id>: ok`` or ``job <id>: FAILED
<reason>``, then ``run_job: N ok, M failed``, and exits 1 when any job failed (2 when it
could not reach the cluster), as ``mix run_job N`` does on the Elixir side.

``jobs --node n1@localhost`` prints every job in the cluster (id, kind, node, pid), asking
each job host for its ``list``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from erl_interop.terms import Atom, Pid

from .. import jobs
from ..node import Node
from .common import default_cookie, short_name

__all__ = ["add_parsers", "run_job", "show_jobs"]

DEFAULT_CONNECT = ["n1@localhost", "n2@localhost", "n3@localhost"]
UPDATE = Atom("update")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sname", metavar="NAME[@HOST]", help="this client's node name (default: a unique one)")
    p.add_argument("--name", metavar="NAME@HOST", help="long node name instead of --sname")
    p.add_argument("--cookie", help="magic cookie (default: ~/.erlang.cookie, as erl)")
    p.add_argument("--epmd-port", type=int, default=None, help="EPMD port (default: $ERL_EPMD_PORT or 4369)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def add_parsers(sub: Any) -> None:
    """The ``run_job`` and ``jobs`` subcommands."""
    r = sub.add_parser("run_job", prog="python -m pynode run_job",
                       help="start, update and finish N jobs and check their results")
    r.add_argument("count", type=int, help="number of jobs")
    r.add_argument("--connect", action="append", default=None, metavar="NODE",
                   help=f"cluster node to join (repeatable; default {' '.join(DEFAULT_CONNECT)})")
    r.add_argument("--via", choices=["local", "client"], default=None,
                   help="read the registry locally (default) or go through a host's {client, Op, Args}")
    r.add_argument("--timeout", type=float, default=None, help="per-operation limit in seconds (default job_timeout, 15)")
    _common(r)
    r.set_defaults(func=run_job)
    j = sub.add_parser("jobs", prog="python -m pynode jobs", help="list every job in the cluster")
    j.add_argument("--node", required=True, metavar="NODE", help="a cluster node to ask")
    j.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the cluster's registry (default 10)")
    _common(j)
    j.set_defaults(func=show_jobs)


def _client_node(args: argparse.Namespace, peers: list[str]) -> Node:
    if args.name:
        name = args.name
    elif args.sname:
        name = short_name(args.sname)  # as `python -m pynode --sname` and erl -sname
    else:
        host = peers[0].split("@", 1)[1] if peers and "@" in peers[0] else "localhost"
        name = f"pynode_{args.cmd}_{os.getpid()}@{host}"
    node = Node(name, args.cookie if args.cookie is not None else default_cookie(), epmd_port=args.epmd_port)
    node.config = {"host_jobs": False}  # a client only, like the seed's c1
    return node


async def _connect_all(node: Node, peers: list[str]) -> list[str]:
    up = []
    for peer in peers:
        if await node.network.connect(peer):
            up.append(peer)
        else:
            print(f"run_job: cannot connect to {peer}", file=sys.stderr)
    return up


async def run_job(args: argparse.Namespace) -> int:
    peers = list(args.connect or DEFAULT_CONNECT)
    node = _client_node(args, peers)
    await node.start()
    try:
        if not await _connect_all(node, peers):
            print("run_job: no cluster node reachable", file=sys.stderr)
            return 2
        kw: dict[str, Any] = {"via": args.via, "timeout": args.timeout}
        ids = list(range(1, args.count + 1))
        failed: dict[int, str] = {}
        for i in ids:
            r = await jobs.start(node, i, **kw)
            if not (type(r) is tuple and len(r) == 2 and r[0] == jobs.OK and type(r[1]) is Pid):
                failed[i] = f"start: {jobs.format_term(r)}"
        for i in ids:
            if i in failed:
                continue
            r = await jobs.update(node, i, UPDATE, **kw)
            if r != jobs.OK:
                failed[i] = f"update: {jobs.format_term(r)}"
        for i in ids:
            if i in failed:
                continue
            r = await jobs.finish(node, i, **kw)
            if r != [UPDATE, i] or type(r[0]) is not Atom:
                failed[i] = f"finish: {jobs.format_term(r)}"
        for i in ids:
            print(f"job {i}: ok" if i not in failed else f"job {i}: FAILED {failed[i]}", flush=True)
        print(f"run_job: {len(ids) - len(failed)} ok, {len(failed)} failed", flush=True)
        return 1 if failed else 0
    finally:
        await node.stop()


async def show_jobs(args: argparse.Namespace) -> int:
    node = _client_node(args, [args.node])
    await node.start()
    try:
        if not await node.network.connect(args.node):
            print(f"jobs: cannot connect to {args.node}", file=sys.stderr)
            return 2
        # The registry of the node we asked sends its snapshot and its member list; the
        # other members' snapshots follow as we connect to them. The table is printed once
        # the snapshot of every member we know of is in (not merely its discover: a member
        # whose entries have not arrived would show no jobs), or after 3 s for a member
        # named in a snapshot that never answers.
        if not await node.registry.wait_synced([args.node], args.wait):
            print(f"jobs: {args.node} runs no pynode registry", file=sys.stderr)
            return 2
        await node.registry.wait_synced(node.registry.claimed_members, min(args.wait, 3.0))
        rows = await jobs.list_jobs(node)
        hosts = sorted({p.node for p in node.registry.lookup_pids(jobs.HOST_KEY)})
        table = [("ID", "KIND", "NODE", "PID")]
        for job_id, kind, pid in sorted(rows, key=lambda r: (str(r[2].node), jobs.format_term(r[0]))):
            table.append((jobs.format_term(job_id), str(kind), str(pid.node), jobs.format_term(pid)))
        widths = [max(len(r[c]) for r in table) for c in range(4)]
        for r in table:
            print("  ".join(r[c].ljust(widths[c]) for c in range(4)).rstrip())
        print(f"{len(rows)} job(s) on {len(hosts)} host(s): {', '.join(map(str, hosts))}")
        return 0
    finally:
        await node.stop()
