"""``mix run_job N`` (mix_compat/lib/mix/tasks/run_job.ex) when a run fails: it is fast, names
the real cause and cleans up the jobs it started, as ``python -m pynode run_job`` does
(tests/test_node_cli.py, test_run_job_*): exit 2 when no cluster node can be reached or none
hosts jobs, 1 when a job failed.

The client is typed as the use case types it (``elixir --sname C --cookie K -S mix run_job N``
in mix_compat/), with unique node names given by ``--connect`` and the servers Python nodes
(``python -m pynode --sname ...``, stopped by their own pid). The success output of the seed's
test case 1 is checked by tests/test_use_case.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from pynode.testing import beam_program, compile_mix_project, test_cookie, unique_name, wait_until

from use_case import MIX_PROJECT, ROOT, PyServer, _Output, run, stop_all

# Talks to real BEAM programs (elixir, mix, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def mix_compiled() -> None:
    compile_mix_project(str(MIX_PROJECT))


def node(prefix: str) -> str:
    return unique_name(prefix) + "@localhost"


def server(name: str, *extra: str, cookie: str | None = None) -> PyServer:
    return PyServer(["--sname", name, "--cookie", cookie or test_cookie(), *extra])


def client(count: int, *extra: str, cookie: str | None = None) -> list[str]:
    return ["elixir", "--sname", node("c"), "--cookie", cookie or test_cookie(), "-S", "mix", "run_job", str(count),
            *extra]


class Client:
    """The client command running in the background (its output awaitable), stopped by its pid."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen([beam_program(cmd[0]), *cmd[1:]], cwd=MIX_PROJECT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.out = _Output(self.proc)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_a_wrong_cookie_fails_fast_naming_the_cookie(mix_compiled: None) -> None:
    """The server is registered in EPMD but refuses us: it waited the whole --wait (30 s) to
    print "none of ... is reachable"; now it gives up after a short retry, saying why."""
    nodes: list[Any] = []
    try:
        s = server(node("wc"))
        nodes.append(s)
        t0 = time.monotonic()
        r = run(client(1, "--connect", s.name, cookie="not" + test_cookie()), MIX_PROJECT, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
        assert f"run_job: cannot connect to {s.name}: the cookie was most likely rejected" in r.stderr, r.stderr
        assert f"run_job: none of {s.name} is reachable" in r.stderr, r.stderr
        assert took < 10.0, (took, r.stderr)
    finally:
        stop_all(nodes)


def test_a_server_not_yet_registered_is_waited_for_while_a_refusing_one_is_named(mix_compiled: None) -> None:
    """Servers starting a moment after the client are a real case: a node not registered in
    EPMD yet is waited for (up to --wait), even when the other named node refuses us; the run
    then goes through the one that came up. (The old task also waited: a guard, not a fix.)"""
    nodes: list[Any] = []
    late = node("late")
    try:
        refusing = server(node("rf"), cookie="not" + test_cookie())
        nodes.append(refusing)
        cmd = client(2, "--connect", refusing.name, "--connect", late, "--wait", "60")
        c = Client(cmd)
        nodes.append(c)
        # the client has been refused for longer than it tries a refusing node alone (1 s, a
        # retry each 200 ms): the refusing server logs each attempt
        refusals = [0]

        def refused_often() -> bool:
            refusals[0] = sum(1 for ln in refusing.out.lines if f"from node {cmd[2]} rejected" in ln)
            assert c.proc.poll() is None, c.out.tail()
            return refusals[0] >= 8

        wait_until(refused_often, 60, "the client's refused attempts")
        nodes.append(server(late))
        c.out.wait_for(lambda s: s == "run_job: 2 ok, 0 failed", 120, "the run")
        assert c.proc.wait(60) == 0, c.out.tail()
    finally:
        stop_all(nodes)


def test_a_cluster_with_no_job_host_exits_2_at_once_naming_its_nodes(mix_compiled: None) -> None:
    """Only nodes started with --no-jobs: each start waited job_timeout (15 s) for a host and
    the run ended with exit 1 and {:error, :no_hosts} per job; now it exits 2 at once."""
    nodes: list[Any] = []
    try:
        a = server(node("na"), "--no-jobs")
        nodes.append(a)
        b = server(node("nb"), "--no-jobs")
        nodes.append(b)
        t0 = time.monotonic()
        r = run(client(3, "--connect", a.name, "--connect", b.name), MIX_PROJECT, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
        assert "run_job: {:error, :no_hosts}: no node of the cluster hosts jobs (" in r.stderr, r.stderr
        assert a.name in r.stderr and b.name in r.stderr and "--no-jobs" in r.stderr, r.stderr
        assert "job 1" not in r.stdout, r.stdout
        assert took < 10.0, (took, r.stderr)
    finally:
        stop_all(nodes)


def test_a_host_killed_mid_run_names_nodedown_and_no_job_is_left(mix_compiled: None) -> None:
    """The only job host dies (SIGKILL) after the starts (--pause): each update waited the
    client's job_timeout and failed with {:error, :no_hosts} (or {:error, :no_such_job});
    now the failures name the host and nodedown at once, and the clean-up line says the
    jobs it started went with their host; the cluster (the member that hosts no jobs) lists
    no job."""
    nodes: list[Any] = []
    try:
        host = server(node("kh"))
        nodes.append(host)
        member = server(node("km"), "--no-jobs")
        nodes.append(member)
        cmd = client(3, "--connect", host.name, "--connect", member.name, "--pause", "3")
        t0 = time.monotonic()
        c = Client(cmd)
        nodes.append(c)
        c.out.wait_for(lambda s: s.startswith("run_job: started 3 job(s) on ") and host.name in s, 120, "the starts")
        host.kill()  # SIGKILL, by its pid, while the client pauses
        c.out.wait_for(lambda s: s.startswith("run_job: cleaning up"), 60, "the clean-up line")
        assert c.proc.wait(60) == 1, c.out.tail()
        took = time.monotonic() - t0
        lines = [ln for ln in c.out.lines if ln.startswith(("job ", "run_job: "))]
        assert lines[0].startswith("run_job: started 3 job(s)"), lines
        for i in (1, 2, 3):
            ln = lines[i]
            assert ln.startswith(f"job {i}: FAILED update: ") and "nodedown" in ln and host.name in ln, lines
        assert lines[4] == "run_job: 0 ok, 3 failed", lines
        assert lines[5] == ("run_job: cleaning up the 3 job(s) it started and did not finish: 0 finished, "
                            "3 already gone (job 1, job 2, job 3)"), lines
        assert took < 25.0, (took, lines)  # mix start-up, the 3 s pause, no job_timeout
        r = run([sys.executable, "-m", "pynode", "jobs", "--node", member.name, "--cookie", test_cookie()], ROOT)
        assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("0 job(s)"), r
    finally:
        stop_all(nodes)
