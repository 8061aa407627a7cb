"""The use case's two test cases (../shared/docs/USE_CASE.md), exactly as written, with Python
nodes in any server's place, and no configuration: the servers find each other by
themselves (docs/DISCOVERY.md).

Test case 1: three servers ``iex --sname nX@localhost --cookie test -S mix`` (or
``python -m pynode --sname nX@localhost --cookie test``), then
``elixir --sname c1@localhost --cookie test -S mix run_job 10`` and the Python client
``python -m pynode run_job 10 --cookie test``.

Test case 2: ``iex --name n1@127.0.0.1 --erl '-config sys.config' -S mix`` in mix_compat/,
and the same for n2 (or ``python -m pynode --name n2@127.0.0.1 --config sys.config``);
``Job.Otp.start("ohai")`` on one node, ``Job.Otp.check_results("ohai")`` on the other, then
``:init.stop`` or ``Application.stop(:available_processes)`` moves the job.

The seed's names are fixed, so these tests hold a machine-wide lock (``seed_names_lock``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from erl_interop.terms import Atom
from pynode.testing import compile_mix_project

from use_case import MIX_PROJECT, ROOT, Iex, PyServer, run, seed_names_lock, stop_all

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

OTP_RESULTS = b"results of ohai"


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


def server(lang: str, i: int) -> Any:
    name = f"n{i}@localhost"
    if lang == "e":
        return Iex(["--sname", name, "--cookie", "test"])
    return PyServer(["--sname", name, "--cookie", "test"])


@pytest.mark.parametrize("mix", ["eee", "epp", "eep", "ppp"])
def test_case_1_run_job_10_from_both_clients(mix: str, mix_compiled: None) -> None:
    with seed_names_lock():
        nodes: list[Any] = []
        try:
            for i, lang in enumerate(mix, start=1):  # three terminals, one after the other
                nodes.append(server(lang, i))
            r = run(["elixir", "--sname", "c1@localhost", "--cookie", "test", "-S", "mix", "run_job", "10"], MIX_PROJECT)
            assert r.returncode == 0, f"elixir client:\n{r.stdout}\n{r.stderr}"
            assert "run_job: 10 ok, 0 failed" in r.stdout, r.stdout
            r = run([sys.executable, "-m", "pynode", "run_job", "10", "--cookie", "test"], ROOT)
            assert r.returncode == 0, f"python client:\n{r.stdout}\n{r.stderr}"
            assert "run_job: 10 ok, 0 failed" in r.stdout, r.stdout
            # every server ended up in one cluster, with no configuration
            for n in nodes:
                if isinstance(n, Iex):
                    assert n.ev("Pynode.Registry.members()") == [Atom(f"n{i}@localhost") for i in (1, 2, 3)]
            for n in reversed(nodes):
                assert (n.stop() if isinstance(n, Iex) else n.stop()) == 0
        finally:
            stop_all(nodes)


def _wait_results(n: Iex, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = n.ev('Job.Otp.check_results("ohai")')
        if r is not None or time.monotonic() > deadline:
            return r
        time.sleep(0.1)  # the simulated work takes work_ms (2 s): ask again, as a user would


def _owner(n: Iex) -> Atom:
    return n.ev('node(Pynode.Registry.where({:n, :g, {:pynode_job, "ohai"}}))')


@pytest.mark.parametrize("stop", [":init.stop()", "Application.stop(:available_processes)"])
def test_case_2_otp_job_moves_between_two_elixir_nodes(stop: str, mix_compiled: None) -> None:
    with seed_names_lock():
        nodes: list[Any] = []
        try:
            n1 = Iex(["--name", "n1@127.0.0.1", "--erl", "-config sys.config"])
            nodes.append(n1)
            n2 = Iex(["--name", "n2@127.0.0.1", "--erl", "-config sys.config"])
            nodes.append(n2)
            ok, pid = n1.ev('Job.Otp.start("ohai")')
            assert ok == Atom("ok")
            assert _wait_results(n2) == OTP_RESULTS  # "call the process ... on either node"
            assert n1.ev('Job.Otp.check_results("ohai")') == OTP_RESULTS
            owner, other = (n1, n2) if _owner(n1) == Atom("n1@127.0.0.1") else (n2, n1)
            if stop.startswith(":init"):
                owner.type(stop)
                assert owner.proc.wait(60) == 0
            else:
                assert owner.ev(stop) == Atom("ok")
            assert other.ev('Job.Otp.check_results("ohai")') == OTP_RESULTS
            assert _owner(other) == Atom(other.name)
        finally:
            stop_all(nodes)


def test_case_2_with_a_python_node(mix_compiled: None) -> None:
    """n2 is ``python -m pynode --name n2@127.0.0.1 --config sys.config``; the job moves to it
    when n1 stops, and back to n1 when n1 is started again and n2 stops."""
    with seed_names_lock():
        nodes: list[Any] = []
        try:
            n1 = Iex(["--name", "n1@127.0.0.1", "--erl", "-config sys.config"])
            nodes.append(n1)
            n2 = PyServer(["--name", "n2@127.0.0.1", "--config", "sys.config"], cwd=MIX_PROJECT)
            nodes.append(n2)
            # both ids on n1 and n2 in turn: round-robin placement puts one on each node
            assert n1.ev('Job.Otp.start("ohai")')[0] == Atom("ok")
            assert _wait_results(n1) == OTP_RESULTS
            owner = _owner(n1)
            if owner == Atom("n1@127.0.0.1"):
                n1.type(":init.stop()")
                assert n1.proc.wait(60) == 0
                n1 = Iex(["--name", "n1@127.0.0.1", "--erl", "-config sys.config"])
                nodes.append(n1)
                assert n1.ev('Job.Otp.check_results("ohai")') == OTP_RESULTS
                assert _owner(n1) == Atom("n2@127.0.0.1")
            assert n2.stop() == 0  # SIGTERM: the Python node hands the job to n1 first
            assert n1.ev('Job.Otp.check_results("ohai")') == OTP_RESULTS
            assert _owner(n1) == Atom("n1@127.0.0.1")
        finally:
            stop_all(nodes)
