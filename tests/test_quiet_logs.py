"""What a node started from the command line logs, at its default level (INFO), for what is
routine in a cluster: a peer that goes away, a client that joins the registry and leaves. A
BEAM node logs nothing for those (net_kernel is quiet unless ``net_kernel:verbose/1``;
``nodedown`` tells the processes that care), and one ERROR line for a peer with another
cookie. A Python node does the same; what it used to say at INFO is at DEBUG."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from erl_interop.terms import Atom
from pynode.testing import unique_name, wait_until

from use_case import ROOT, PyServer, run, stop_all

pytestmark = pytest.mark.interop


def test_peers_that_leave_or_die_leave_no_line_at_info(beam_node: Any) -> None:
    cookie = unique_name("cookie")
    name = f"{unique_name('quiet')}@localhost"
    server = PyServer(["--sname", name, "--cookie", cookie, "--no-discovery"])
    try:
        peers = []
        for how in ("stop", "kill", "disconnect"):
            erl = beam_node("erlang", cookie, f"{unique_name('quiet_' + how)}@localhost")
            assert erl.eval(f"net_adm:ping('{name}').") == Atom("pong")
            peers.append((how, erl))
        for how, erl in peers:
            if how == "stop":
                erl.stop()  # a node that stops (init:stop)
            elif how == "kill":
                erl.kill()  # a node that dies: its socket closes or resets under the link
            else:
                assert erl.eval(f"erlang:disconnect_node('{name}').") is True
        # a client that joins the registry, runs a job and leaves: the seed's run_job
        client = f"{unique_name('quiet_client')}@localhost"
        r = run([sys.executable, "-m", "pynode", "run_job", "1", "--cookie", cookie, "--connect", name,
                 "--sname", client], cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        # a node with another cookie: one ERROR line, erl's
        stranger = beam_node("erlang", unique_name("other_cookie"), f"{unique_name('quiet_stranger')}@localhost")
        assert stranger.eval(f"net_adm:ping('{name}').") == Atom("pang")
        gone = {Atom(erl.name) for _, erl in peers} | {Atom(client)}
        probe = beam_node("erlang", cookie, f"{unique_name('quiet_probe')}@localhost")

        def connected() -> set[Atom]:
            info = probe.eval(f"rpc:call('{name}', pynode, info, []).")
            return set(info[Atom("connected_nodes")])

        wait_until(lambda: not (connected() & gone), timeout=20, what="the peers' links closed")
        assert probe.eval(f"net_adm:ping('{name}').") == Atom("pong")  # it serves on
    finally:
        rc = server.stop()
        stop_all([server])
    assert rc == 0
    out = server.out.lines
    noisy = [s for s in out if any(str(n) in s for n in gone) and any(f" {lv} " in s for lv in ("INFO", "WARNING", "ERROR"))]
    assert not noisy, "\n".join(noisy)
    about_stranger = [s for s in out if stranger.name in s]
    assert len(about_stranger) == 1, "\n".join(about_stranger)
    assert " ERROR " in about_stranger[0] and "rejected" in about_stranger[0], about_stranger
