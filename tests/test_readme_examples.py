"""The README's snippets run as written: examples/counter.py served to a real iex peer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from erl_interop import Atom
from pynode.testing import read_until, test_cookie, unique_name

import pytest  # for the marker below

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parent.parent


def test_counter_example_from_elixir(beam_node):
    name = unique_name("py") + "@localhost"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "counter.py"), name, test_cookie()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        read_until(proc.stdout, "ready ")
        ex = beam_node("elixir", cookie=test_cookie())
        n = f':"{name}"'
        assert ex.eval(f"Node.ping({n})") == Atom("pong")
        assert ex.eval(f"GenServer.call({{:counter, {n}}}, {{:add, 5}})") == 5
        assert ex.eval(f"GenServer.cast({{:counter, {n}}}, :reset)") == Atom("ok")
        assert ex.eval(f"GenServer.call({{:counter, {n}}}, :get)") == 0
        assert ex.eval(f":rpc.call({n}, :math_py, :add, [1, 2])") == 3
        assert ex.eval(f":erpc.call({n}, :math_py, :slow_square, [7])") == 49
        assert ex.eval(f':rpc.call({n}, :os, :cmd, [~c"ls"])') == (
            Atom("badrpc"),
            (Atom("EXIT"), (Atom("undef"), [(Atom("os"), Atom("cmd"), [[108, 115]], [])])),
        )
        info = ex.eval(f"GenServer.call({{:pynode, {n}}}, :info)")
        assert info[Atom("node")] == Atom(name)
        assert Atom(ex.name) in info[Atom("connected_nodes")]
        assert {"node", "connected_nodes", "process_count", "jobs"} <= {str(k) for k in info}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
