"""``pynode run_job N`` and ``pynode jobs``: job commands for the shell (also ``python -m
pynode run_job ...``).

``run_job N`` joins the cluster as a client-only node (no job host), then for ids ``1..N``
starts a ``'Job'``, updates it with ``update``, finishes it and checks that the result is
``[update, Id]``. It prints one line per job, ``job <id>: ok`` or ``job <id>: FAILED
<reason>``, then ``run_job: N ok, M failed``, and exits 1 when any job failed (2 when it
could not reach the cluster, or the cluster hosts no jobs), as ``mix run_job N`` does on the
Elixir side.

A failed run names its cause and cleans up after itself:

- a peer it cannot connect to is named with why (the cookie, EPMD, the naming mode, TLS:
  :func:`pynode.cli.common.explain_connect_failure`);
- a cluster in which no node hosts jobs fails at once (``{:error, :no_hosts}`` would take
  the client's ``missing_grace`` per job), naming the members that run no host;
- a failure line says what lay behind the answer: the job's host went down (nodedown), did
  not answer in time, or no job host is left;
- the jobs it started and did not finish (a later step failed, or it was interrupted) are
  finished before it exits, within a bounded time, and it says how that went.

``jobs --node n1@localhost`` prints every job in the cluster (id, kind, node, pid), asking
each job host for its ``list``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from erl_interop.terms import Atom, Pid

from .. import jobs
from ..node import Node
from .common import client_node, connect, connection_flags

__all__ = ["add_parsers", "run_job", "show_jobs", "CLEANUP_TIMEOUT"]

DEFAULT_CONNECT = ["n1@localhost", "n2@localhost", "n3@localhost"]
UPDATE = Atom("update")
ERROR = Atom("error")
TIMEOUT = Atom("timeout")
NO_SUCH_JOB = Atom("no_such_job")
#: seconds the clean-up of the jobs a failed run leaves may take in all
CLEANUP_TIMEOUT = 10.0


def add_parsers(sub: Any, prog: str = "pynode") -> None:
    """The ``run_job`` and ``jobs`` subcommands."""
    flags = connection_flags()
    r = sub.add_parser("run_job", prog=f"{prog} run_job", parents=[flags],
                       help="start, update and finish N jobs and check their results",
                       description="Start, update and finish the jobs 1..N and check each result, as mix run_job N "
                       "does. Exit 0: all ok; 1: a job failed (the jobs it started are finished first); 2: no "
                       "cluster node reachable, or no job host in the cluster.")
    r.add_argument("count", type=int, help="number of jobs")
    r.add_argument("--connect", action="append", default=None, metavar="NODE",
                   help="cluster node to join (repeatable; default: the connect list of --config, else "
                   f"{' '.join(DEFAULT_CONNECT)})")
    r.add_argument("--via", choices=["local", "client"], default=None,
                   help="read the registry locally (default) or go through a host's {client, Op, Args}")
    r.add_argument("--timeout", type=float, default=None, help="per-operation limit in seconds (default job_timeout, 15)")
    r.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the cluster's registry (default 10)")
    r.set_defaults(func=run_job)
    j = sub.add_parser("jobs", prog=f"{prog} jobs", parents=[flags], help="list every job in the cluster",
                       description="Print every job in the cluster (id, kind, node, pid), asking each job host.")
    j.add_argument("--node", required=True, metavar="NODE", help="a cluster node to ask")
    j.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the cluster's registry (default 10)")
    j.set_defaults(func=show_jobs)


def _hosts(node: Node) -> set[Atom]:
    return {p.node for p in node.registry.lookup_pids(jobs.HOST_KEY)}


class _Run:
    """One ``run_job``: where each job runs, what failed and why."""

    def __init__(self, node: Node, args: argparse.Namespace) -> None:
        self.node = node
        self.kw: dict[str, Any] = {"via": args.via, "timeout": args.timeout}
        self.limit = args.timeout if args.timeout is not None else None
        # where each started job was started (None: its start was in flight when interrupted)
        self.host_of: dict[int, Atom | None] = {}
        self.failed: dict[int, str] = {}
        self.done: set[int] = set()  # finished (its state came back, right or wrong)
        self.lost: set[Atom] = set()  # job hosts seen at the start and gone since

    def note_lost_hosts(self, before: set[Atom]) -> None:
        connected = set(self.node.connected_nodes)
        self.lost |= {h for h in before if h not in connected}

    def why(self, i: int, r: Any) -> str:
        """What lay behind a failed answer ``r`` for job ``i``."""
        host = self.host_of.get(i)
        if host is not None and host not in self.node.connected_nodes:
            return f" (its host {host} went down: nodedown; no other host took the job over)"
        if type(r) is tuple and len(r) == 2 and r[0] == ERROR:
            if r[1] == TIMEOUT:
                limit = f"{self.limit:g} s" if self.limit is not None else "job_timeout"
                return f" (no answer within {limit}" + (f" from its host {host})" if host else ")")
            if r[1] == NO_SUCH_JOB and host is not None:
                return f" (its host {host} no longer has it)"
        return ""

    def skip_if_no_hosts(self, i: int, step: str) -> bool:
        """Fail job ``i`` at once when no job host is left in the cluster."""
        if _hosts(self.node):
            return False
        gone = f" ({', '.join(sorted(map(str, self.lost)))} went down: nodedown)" if self.lost else ""
        self.failed[i] = f"{step}: not tried: no job host is left in the cluster{gone}"
        return True

    async def cleanup(self) -> None:
        """Finish the jobs this run started and did not finish (best effort, bounded)."""
        left = [i for i in self.host_of if i not in self.done]
        if not left:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLEANUP_TIMEOUT
        finished, gone, stuck = [], [], []
        for i in left:
            host = self.host_of[i]
            if host not in self.node.connected_nodes and not _hosts(self.node):
                gone.append(i)  # it went with its host, and no host is left to have taken it over
                continue
            budget = deadline - loop.time()
            if budget <= 0.05:
                stuck.append(f"job {i}: no time left")
                continue
            try:
                r = await asyncio.wait_for(jobs.finish(self.node, i, via=self.kw["via"], timeout=min(budget, 5.0)),
                                           budget + 1.0)
            except TimeoutError:
                r = (ERROR, TIMEOUT)
            if isinstance(r, list):
                finished.append(i)
            elif r == (ERROR, NO_SUCH_JOB):
                gone.append(i)
            else:
                stuck.append(f"job {i}: {jobs.format_term(r)}{self.why(i, r)}")
        parts = [f"{len(finished)} finished"]
        if gone:
            parts.append(f"{len(gone)} already gone (" + ", ".join(f"job {i}" for i in gone) + ")")
        if stuck:
            parts.append(f"{len(stuck)} could not be finished: " + "; ".join(stuck))
        print(f"run_job: cleaning up the {len(left)} job(s) it started and did not finish: {', '.join(parts)}",
              flush=True)


async def _wait_for_registry(node: Node, up: list[str], wait: float) -> bool:
    if not await node.registry.wait_synced(lambda: [p for p in up if Atom(p) in node.connected_nodes], wait):
        return False
    await node.registry.wait_synced(node.registry.claimed_members, min(wait, 3.0))
    return True


async def run_job(args: argparse.Namespace) -> int:
    node = client_node(args, list(args.connect or []))
    peers = [str(p) for p in (args.connect or node.config.get("connect") or DEFAULT_CONNECT)]
    await node.start()
    try:
        up = [p for p in peers if await connect(node, p, "run_job")]
        if not up:
            print("run_job: no cluster node reachable", file=sys.stderr)
            return 2
        ids = list(range(1, args.count + 1))
        if not await _wait_for_registry(node, up, args.wait) and args.via != "client":
            print(f"run_job: {', '.join(up)} run(s) no pynode registry (plain BEAM nodes?): no job host to use",
                  file=sys.stderr)
            return 2
        if not _hosts(node) and args.via != "client":
            members = [str(m) for m in node.registry.members() if m != node.name]
            print(f"run_job: {{:error, :no_hosts}}: no node of the cluster hosts jobs ({', '.join(members)} "
                  "run(s) no pynode_jobs host: started with --no-jobs, or host_jobs false)", file=sys.stderr)
            return 2
        run = _Run(node, args)
        try:
            return await _steps(run, ids)
        finally:
            # also when interrupted (Ctrl-C cancels this task): the jobs it started must not stay
            await asyncio.shield(run.cleanup())
    finally:
        await node.stop()


async def _steps(run: _Run, ids: list[int]) -> int:
    node, kw, failed = run.node, run.kw, run.failed
    before = _hosts(node)
    for i in ids:
        if run.skip_if_no_hosts(i, "start"):
            continue
        run.host_of[i] = None  # Ctrl-C during the start: the job may exist; cleanup tries it too
        r = await jobs.start(node, i, **kw)
        if type(r) is tuple and len(r) == 2 and r[0] == jobs.OK and type(r[1]) is Pid:
            run.host_of[i] = r[1].node
        else:
            del run.host_of[i]
            failed[i] = f"start: {jobs.format_term(r)}{run.why(i, r)}"
        run.note_lost_hosts(before)
    for i in ids:
        if i in failed or run.skip_if_no_hosts(i, "update"):
            continue
        r = await jobs.update(node, i, UPDATE, **kw)
        if r != jobs.OK:
            failed[i] = f"update: {jobs.format_term(r)}{run.why(i, r)}"
        run.note_lost_hosts(before)
    for i in ids:
        if i in failed or run.skip_if_no_hosts(i, "finish"):
            continue
        r = await jobs.finish(node, i, **kw)
        if isinstance(r, list):
            run.done.add(i)
        if r != [UPDATE, i] or type(r[0]) is not Atom:
            failed[i] = f"finish: {jobs.format_term(r)}{run.why(i, r)}"
        run.note_lost_hosts(before)
    for i in ids:
        print(f"job {i}: ok" if i not in failed else f"job {i}: FAILED {failed[i]}", flush=True)
    print(f"run_job: {len(ids) - len(failed)} ok, {len(failed)} failed", flush=True)
    return 1 if failed else 0


async def show_jobs(args: argparse.Namespace) -> int:
    node = client_node(args, [args.node])
    await node.start()
    try:
        if not await connect(node, args.node, "jobs"):
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
