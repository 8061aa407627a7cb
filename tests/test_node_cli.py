"""The CLI: `python -m pynode` starts a node that says who it is, answers ping, and shuts
down cleanly (exit 0, peers see nodedown at once) on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from erl_interop.terms import Atom
from pynode.testing import unique_name, test_cookie

from node_helpers import beam  # noqa: F401  (fixture)

pytestmark = pytest.mark.interop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_cli(name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pynode", "--sname", name, "--cookie", test_cookie()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_node_lifecycle(beam, sig):
    erl = beam("erlang")
    name = unique_name("cli") + "@localhost"
    proc = start_cli(name)
    try:
        line = proc.stdout.readline()  # blocks until the node announces itself
        assert name in line and "listening on 127.0.0.1:" in line, line
        port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0].split()[0])
        assert erl.eval(f"net_adm:ping('{name}').") == Atom("pong")
        assert erl.eval(f"{{ok, [{{Alive, Port}} | _]}} = {{ok, [{{A, P}} || {{A, P}} <- element(2, net_adm:names()), A =:= \"{name.split('@')[0]}\"]}}, Port.") == port
        assert erl.eval(f"gen_server:call({{pynode, '{name}'}}, info).")[Atom("node")] == Atom(name)
        erl.eval(f"monitor_node('{name}', true).")
        t0 = time.monotonic()
        proc.send_signal(sig)
        got = erl.eval(f"receive {{nodedown, '{name}'}} -> nodedown after 2000 -> timeout end.")
        assert got == Atom("nodedown")
        assert proc.wait(10) == 0
        assert time.monotonic() - t0 < 3
        assert proc.stdout.read() == ""  # exactly one line on stdout
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        # unregistered from EPMD
        assert erl.eval(f"net_adm:ping('{name}').") == Atom("pang")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_help():
    r = subprocess.run([sys.executable, "-m", "pynode", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0
    for opt in ("--sname", "--name", "--cookie"):
        assert opt in r.stdout
