"""The CLI: `python -m pynode` starts a node that says who it is, answers ping, and shuts
down cleanly (exit 0, peers see nodedown at once) on SIGTERM and SIGINT, and on what stops a
BEAM node from outside (erl_call -q, init:stop/1 and erlang:halt/1 by rpc); iex --remsh is
told there is no shell; a cookie file erl would refuse is refused."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from erl_interop.terms import Atom
from pynode import jobs as jobs_api
from pynode.cli import node as cli_node, parser
from pynode.cli.common import client_node
from pynode.testing import beam_program, otp_version, test_cookie, unique_name

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


def stop_cli(proc: subprocess.Popen) -> None:
    """SIGTERM (by its own pid) if still running, reap, close the pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


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


def erl_call_path() -> str:
    """Debian's erlang-base ships erl_call (never a skip: the README's test command installs it)."""
    return beam_program("erl_call")  # the release's own


def announced(proc: subprocess.Popen, name: str) -> None:
    line = proc.stdout.readline()  # blocks until the node announces itself
    assert name in line and "listening on" in line, line


def test_erl_call_q_stops_the_node_as_it_stops_a_beam_node(beam):
    """erl_call -q sends {Pid, {call, erlang, halt, [], user}} to rex: a BEAM node halts
    (status 0). It did nothing to a Python node (undef); now the node stops gracefully: exit
    status 0, peers see nodedown, unregistered from EPMD."""
    erl_call = erl_call_path()
    erl = beam("erlang")
    target = beam("erlang")
    r = subprocess.run([erl_call, "-c", test_cookie(), "-sname", target.name, "-q"], capture_output=True, timeout=30)
    assert r.returncode == 0, r
    assert target.proc.wait(10) == 0

    name = unique_name("cli") + "@localhost"
    proc = start_cli(name)
    try:
        announced(proc, name)
        assert erl.eval(f"net_adm:ping('{name}').") == Atom("pong")
        erl.eval(f"monitor_node('{name}', true).")
        r = subprocess.run([erl_call, "-c", test_cookie(), "-sname", name, "-q"], capture_output=True, timeout=30)
        assert r.returncode == 0, r
        assert erl.eval(f"receive {{nodedown, '{name}'}} -> nodedown after 5000 -> timeout end.") == Atom("nodedown")
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "shutting down" in err, err
        assert erl.eval(f"net_adm:ping('{name}').") == Atom("pang")
    finally:
        stop_cli(proc)


def test_init_stop_with_a_status_by_rpc_exits_with_it(beam):
    """rpc:call(N, init, stop, [3]) answers ok and the node exits with status 3, on a BEAM
    node and on a Python node."""
    erl = beam("erlang")
    target = beam("erlang")
    assert erl.eval(f"rpc:call('{target.name}', init, stop, [3]).") == Atom("ok")
    assert target.proc.wait(15) == 3

    name = unique_name("cli") + "@localhost"
    proc = start_cli(name)
    try:
        announced(proc, name)
        assert erl.eval(f"rpc:call('{name}', init, stop, [3]).") == Atom("ok")
        assert proc.wait(10) == 3
        # erlang:halt/1 by rpc: no answer, the node is gone (as a BEAM node)
        proc2 = start_cli(name)
        announced(proc2, name)
        try:
            assert erl.eval(f"rpc:call('{name}', erlang, halt, [0]).") == (Atom("badrpc"), Atom("nodedown"))
            assert proc2.wait(10) == 0
        finally:
            stop_cli(proc2)
    finally:
        stop_cli(proc)


def run_in_pty(cmd: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` on a terminal of its own (iex ignores --remsh without one); return its exit
    status (None if it had to be killed after ``timeout``) and everything it wrote."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True, cwd=ROOT)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        try:
            rc: int | None = p.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, out.decode("utf-8", "replace")


def test_iex_remsh_says_a_python_node_has_no_shell():
    """iex --remsh first asks the remote node for code:ensure_loaded(IEx) by rpc; a Python
    node answered undef, and iex printed "Could not contact remote node ... {:undef, ...}".
    Now the answer names the cause and iex exits at once."""
    name = unique_name("cli") + "@localhost"
    proc = start_cli(name)
    try:
        announced(proc, name)
        rc, out = run_in_pty(["iex", "--sname", unique_name("rsh") + "@localhost", "--cookie", test_cookie(),
                              "--remsh", name], timeout=60)
        assert rc == 1, out
        assert "undef" not in out and "CRASH REPORT" not in out, out
        if int(otp_version().split(".")[0]) < 26:
            assert f"{name} is a Python node (pynode): it has no Erlang shell" in out, out
        else:
            # OTP 26+ asks for code:ensure_loaded(iex) first; the answer a BEAM node without
            # IEx gives ({error, nofile}) makes iex say so and exit, as it does against one
            assert "nofile" in out, out
    finally:
        stop_cli(proc)


def test_cookie_file_readable_by_others_is_refused_as_erl_refuses_it(tmp_path):
    """erl refuses a ~/.erlang.cookie that group or others may read ("Cookie file ... must be
    accessible by owner only", status 1); the Python node accepted it silently."""
    home = tmp_path / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text("SECRETCOOKIE")
    env = dict(os.environ, HOME=str(home))
    message = f"Cookie file {cookie} must be accessible by owner only"
    for mode in (0o644, 0o640, 0o604):
        cookie.chmod(mode)
        erl = subprocess.run(["erl", "-sname", unique_name("ck"), "-noshell", "-eval", "halt()."],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert erl.returncode == 1 and message in erl.stdout + erl.stderr, erl
        for cmd in (["--sname", unique_name("ck") + "@localhost"], ["jobs", "--node", "nonode@localhost"]):
            r = subprocess.run([sys.executable, "-m", "pynode", *cmd], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=30)
            assert (r.returncode, r.stderr, r.stdout) == (1, message + "\n", ""), (oct(mode), cmd, r)
    # owner-only is taken, as by erl; --cookie does not read the file at all
    cookie.chmod(0o600)
    name = unique_name("ck") + "@localhost"
    proc = subprocess.Popen([sys.executable, "-m", "pynode", "--sname", name, "--no-discovery"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        announced(proc, name)
    finally:
        stop_cli(proc)
    cookie.chmod(0o644)
    proc = subprocess.Popen([sys.executable, "-m", "pynode", "--sname", name, "--cookie", test_cookie(),
                             "--no-discovery"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        announced(proc, name)
    finally:
        stop_cli(proc)


def test_a_name_in_use_is_one_line_and_status_1_as_erl(beam):
    """erl started with a name another node holds prints one line ("the name ... seems to be
    in use by another Erlang node") and exits 1; so does the Python node, for every command
    that starts a node, with no traceback."""
    name = unique_name("dup") + "@localhost"
    erl = beam("erlang", name=name)  # the BEAM holds the name
    assert erl.name == name
    for cmd in (["--sname", name], ["run_job", "1", "--sname", name, "--connect", name]):
        r = subprocess.run([sys.executable, "-m", "pynode", *cmd, "--cookie", test_cookie()],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(
            f"pynode: the name {name} seems to be in use by another Erlang node (epmd at "), r.stderr


def test_sname_without_host_names_the_node_alike_in_every_command():
    """``--sname foo`` is ``foo@<this host's short name>`` for the node and for the job
    commands alike, as ``erl -sname foo`` (run_job used to say ``foo@localhost``)."""
    want = "foo@" + socket.gethostname().split(".")[0]
    p = parser()
    assert cli_node._node_name(p.parse_args(["node", "--sname", "foo"])) == want
    for cmd in (["run_job", "1", "--sname", "foo"], ["jobs", "--node", "x@h", "--sname", "foo"]):
        a = p.parse_args(cmd)
        assert str(client_node(a, ["x@h"]).name) == want, cmd


# -- the console script and the client commands (ping, rpc, members, jobs, run_job) ----------

#: the console script ``pip install`` made beside this Python (``[project.scripts]``)
PYNODE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "pynode")
CONNECTION_FLAGS = ("--sname", "--name", "--cookie", "--epmd-port", "--config", "--proto-dist", "--ssl-dist-optfile",
                    "--log-level")


def script() -> list[str]:
    assert os.access(PYNODE_SCRIPT, os.X_OK), f"{PYNODE_SCRIPT} missing: pip install -e . (./dev.sh does)"
    return [PYNODE_SCRIPT]


def module() -> list[str]:
    return [sys.executable, "-m", "pynode"]


def cli(launcher: list[str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # cwd outside the checkout: what runs is the installed package, as a user runs it
    return subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=timeout, cwd="/")


def start_host(name: str, *extra: str) -> subprocess.Popen:
    """A Python node (job host unless --no-jobs) of this test's cluster, announced."""
    proc = subprocess.Popen([*module(), "--sname", name, "--cookie", test_cookie(), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        announced(proc, name)
    except BaseException:
        stop_cli(proc)
        raise
    return proc


@pytest.mark.parametrize("launcher", [script, module], ids=["console-script", "python-m"])
def test_help_names_every_command_and_the_same_connection_flags(launcher):
    r = cli(launcher(), "--help")
    assert r.returncode == 0, r.stderr
    prog = "pynode" if launcher is script else "python -m pynode"
    assert r.stdout.startswith(f"usage: {prog} "), r.stdout
    for cmd in ("node", "ping", "rpc", "members", "jobs", "run_job"):
        assert f"    {cmd} " in r.stdout, (cmd, r.stdout)
        h = cli(launcher(), cmd, "--help")
        assert h.returncode == 0 and h.stdout.startswith(f"usage: {prog} "), (cmd, h)
        for flag in CONNECTION_FLAGS:
            assert flag in h.stdout, (cmd, flag, h.stdout)
    v = cli(launcher(), "--version")
    assert v.returncode == 0 and v.stdout.startswith("pynode-erlang ") and "codec:" in v.stdout, v


@pytest.mark.parametrize("launcher", [script, module], ids=["console-script", "python-m"])
def test_ping_prints_pong_or_pang_and_says_why(beam, launcher):
    """As net_adm:ping: pong (exit 0) / pang (exit 1); a pang says why on stderr: the cookie,
    a name EPMD does not know, the other naming mode."""
    erl = beam("erlang")
    r = cli(launcher(), "ping", erl.name, "--cookie", test_cookie())
    assert (r.returncode, r.stdout) == (0, "pong\n"), r
    r = cli(launcher(), "ping", erl.name, "--cookie", "not" + test_cookie())
    assert (r.returncode, r.stdout) == (1, "pang\n"), r
    assert f"ping: cannot connect to {erl.name}: the cookie was most likely rejected" in r.stderr, r.stderr
    nobody = unique_name("nobody") + "@localhost"
    r = cli(launcher(), "ping", nobody, "--cookie", test_cookie())
    assert (r.returncode, r.stdout) == (1, "pang\n"), r
    assert f"{nobody} is not registered in EPMD" in r.stderr, r.stderr
    r = cli(launcher(), "ping", erl.name, "--cookie", test_cookie(), "--name", unique_name("c") + "@127.0.0.1")
    assert (r.returncode, r.stdout) == (1, "pang\n"), r
    assert "the other naming mode: this node uses long names (--name)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("launcher", [script, module], ids=["console-script", "python-m"])
def test_rpc_takes_erlang_term_text_and_prints_elixir_syntax(beam, launcher):
    erl = beam("erlang")
    c = ("--cookie", test_cookie())
    r = cli(launcher(), "rpc", erl.name, "erlang", "node", *c)
    assert (r.returncode, r.stdout) == (0, f":{erl.name}\n"), r
    r = cli(launcher(), "rpc", erl.name, "lists", "reverse", '[[1, two, <<"three">>, {4, 5.5}, #{k => v}]]', *c)
    assert (r.returncode, r.stdout) == (0, '[%{k: :v}, {4, 5.5}, "three", :two, 1]\n'), r
    r = cli(launcher(), "rpc", erl.name, "erlang", "error", "[boom]", *c)
    assert r.returncode == 1 and r.stdout.startswith("{:badrpc, {:EXIT, {:boom, "), r
    r = cli(launcher(), "rpc", erl.name, "erlang", "node", "[1,", *c)
    assert r.returncode == 2 and r.stderr.startswith("rpc: ARGS is not Erlang term text"), r
    r = cli(launcher(), "rpc", unique_name("nobody") + "@localhost", "erlang", "node", *c)
    assert (r.returncode, r.stdout) == (1, "{:badrpc, :nodedown}\n") and "not registered in EPMD" in r.stderr, r


def test_members_and_jobs_list_the_cluster(beam):
    """members: every registry member with its runtime and whether it hosts jobs; a BEAM
    node with no registry is said to run none. jobs: every job, from a console script."""
    h1, h2 = unique_name("m1") + "@localhost", unique_name("m2") + "@localhost"
    p1 = start_host(h1)
    p2 = start_host(h2, "--no-jobs", "--connect", h1)
    try:
        c = ("--cookie", test_cookie())
        r = cli(script(), "members", "--node", h1, *c)
        assert r.returncode == 0, r
        rows = [ln.split() for ln in r.stdout.splitlines()]
        assert rows[0] == ["NODE", "RUNTIME", "JOB", "HOST"], r.stdout
        assert sorted(rows[1:3]) == sorted([[h1, "python", "yes"], [h2, "python", "no"]]), r.stdout
        assert rows[3:] == [["2", "member(s):", "2", "python,", "0", "beam;", "1", "job", "host(s)"]], r.stdout
        r = cli(module(), "run_job", "2", "--connect", h1, *c)
        assert r.returncode == 0 and r.stdout.endswith("run_job: 2 ok, 0 failed\n"), r
        r = cli(script(), "jobs", "--node", h2, *c)
        assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(f"0 job(s) on 1 host(s): {h1}"), r
        erl = beam("erlang")
        r = cli(script(), "members", "--node", erl.name, "--wait", "1", *c)
        assert r.returncode == 2 and f"members: {erl.name} runs no pynode registry" in r.stderr, r
    finally:
        stop_cli(p2)
        stop_cli(p1)


# -- run_job: a failed run is fast, names the real cause and cleans up its jobs ------------------

def test_run_job_with_a_wrong_cookie_says_the_cookie_was_rejected(beam):
    """It said only "run_job: cannot connect to n1@localhost"."""
    erl = beam("erlang")
    r = cli(script(), "run_job", "1", "--connect", erl.name, "--cookie", "not" + test_cookie())
    assert r.returncode == 2, r
    assert f"run_job: cannot connect to {erl.name}: the cookie was most likely rejected" in r.stderr, r.stderr


def test_run_job_in_a_cluster_with_no_job_host_fails_at_once():
    """Only nodes that host no jobs: it took ~6.5 s per run (the client's missing_grace for
    hosts to show up, for each job) to print {:error, :no_hosts}; now it fails at once,
    naming the nodes that host none."""
    h = unique_name("nh") + "@localhost"
    p = start_host(h, "--no-jobs")
    try:
        t0 = time.monotonic()
        r = cli(script(), "run_job", "3", "--connect", h, "--cookie", test_cookie())
        took = time.monotonic() - t0
        assert r.returncode == 2, r
        assert "{:error, :no_hosts}: no node of the cluster hosts jobs" in r.stderr and h in r.stderr, r.stderr
        assert took < 3.0, took  # a Python start-up, a connect and a registry sync
    finally:
        stop_cli(p)


def _run_job_in_process(argv: list[str]) -> int:
    args = parser().parse_args(["run_job", *argv])
    return asyncio.run(args.func(args))


def test_run_job_whose_host_dies_mid_run_names_nodedown_and_ends_fast(monkeypatch, capsys):
    """The only host dies (SIGKILL) after the jobs started: each failure said
    {:error, :no_such_job} after the client's missing_grace (3 s) per job; now the first
    names nodedown, the others fail at once (no job host is left), and no job is left."""
    h = unique_name("hd") + "@localhost"
    p = start_host(h)
    real_update = jobs_api.update
    try:
        async def update(node, job_id, event, **kw):
            if p.poll() is None:
                p.kill()  # the host dies between the starts and the updates
                p.wait()
            return await real_update(node, job_id, event, **kw)

        monkeypatch.setattr(jobs_api, "update", update)
        t0 = time.monotonic()
        rc = _run_job_in_process(["3", "--connect", h, "--cookie", test_cookie()])
        took = time.monotonic() - t0
        out = capsys.readouterr().out
        assert rc == 1, out
        lines = out.splitlines()
        assert lines[0].startswith("job 1: FAILED update: ") and f"its host {h} went down: nodedown" in lines[0], out
        for i in (2, 3):
            assert lines[i - 1] == (f"job {i}: FAILED update: not tried: no job host is left in the cluster "
                                    f"({h} went down: nodedown)"), out
        assert lines[3] == "run_job: 0 ok, 3 failed", out
        assert lines[4] == ("run_job: cleaning up the 3 job(s) it started and did not finish: 0 finished, "
                            "3 already gone (job 1, job 2, job 3)"), out
        assert took < 8.0, took
    finally:
        stop_cli(p)


def test_run_job_finishes_the_jobs_it_leaves_when_a_host_stops_answering(monkeypatch, capsys):
    """A host stops answering (SIGSTOP) after the jobs started: its jobs' updates time out
    (and those of the other host's jobs, which wait for their replica on it). They stayed
    running; now run_job says timeout with the job's host, and once the host answers again
    (SIGCONT) it finishes them: no job is left in the cluster."""
    h1, h2 = unique_name("ha") + "@localhost", unique_name("hb") + "@localhost"
    p1 = start_host(h1)
    p2 = start_host(h2, "--connect", h1)
    real_update, real_finish = jobs_api.update, jobs_api.finish
    try:
        async def update(node, job_id, event, **kw):
            if job_id == 1:
                os.kill(p2.pid, signal.SIGSTOP)
            return await real_update(node, job_id, event, **kw)

        async def finish(node, job_id, **kw):
            os.kill(p2.pid, signal.SIGCONT)  # it answers again by the time the run cleans up
            return await real_finish(node, job_id, **kw)

        monkeypatch.setattr(jobs_api, "update", update)
        monkeypatch.setattr(jobs_api, "finish", finish)
        rc = _run_job_in_process(["4", "--connect", h1, "--connect", h2, "--cookie", test_cookie(), "--timeout", "1"])
        out = capsys.readouterr().out
        assert rc == 1, out
        lines = out.splitlines()
        failed = [ln for ln in lines if ": FAILED " in ln]
        assert any(ln.endswith(f"from its host {h2})") for ln in failed), out  # at least the jobs on h2
        for ln in failed:
            assert any(ln.endswith(f": FAILED update: {{:error, :timeout}} (no answer within 1 s from its host {h})")
                       for h in (h1, h2)), out
        assert lines[-1] == (f"run_job: cleaning up the {len(failed)} job(s) it started and did not finish: "
                             f"{len(failed)} finished"), out
        r = cli(script(), "jobs", "--node", h1, "--cookie", test_cookie())
        assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("0 job(s) on 2 host(s)"), r
    finally:
        if p2.poll() is None:
            os.kill(p2.pid, signal.SIGCONT)
        stop_cli(p2)
        stop_cli(p1)


WORKER_MODULE = '''
import asyncio
from pynode import Atom, GenServer

class Greeter(GenServer):
    async def handle_call(self, request, from_):
        return (Atom("hello"), request)

async def pynode_start(node):
    node.expose("worker_mod", "double", lambda x: 2 * x)
    await Greeter.start(node, name="greeter")
'''


@pytest.mark.parametrize("launcher", [script, module], ids=["console-script", "python-m"])
def test_import_from_the_current_directory_runs_its_pynode_start(beam, launcher, tmp_path):
    """`pynode --import workers` in the directory of workers.py, as `iex -S mix` in a project:
    the module is found (the console script's own sys.path[0] is bin/), and its
    pynode_start(node) runs before the node says it is up."""
    mod = unique_name("workers")
    (tmp_path / f"{mod}.py").write_text(WORKER_MODULE)
    name = unique_name("imp") + "@localhost"
    proc = subprocess.Popen([*launcher(), "--sname", name, "--cookie", test_cookie(), "--import", mod],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True)
    try:
        announced(proc, name)
        erl = beam("erlang")
        assert erl.eval(f"rpc:call('{name}', worker_mod, double, [21]).") == 42
        assert erl.eval(f"gen_server:call({{greeter, '{name}'}}, hi).") == (Atom("hello"), Atom("hi"))
    finally:
        stop_cli(proc)


def test_a_failing_pynode_start_stops_the_node_with_one_line(tmp_path):
    mod = unique_name("broken")
    (tmp_path / f"{mod}.py").write_text("def pynode_start(node):\n    raise RuntimeError('no model file')\n")
    name = unique_name("imp") + "@localhost"
    r = subprocess.run([*module(), "--sname", name, "--cookie", test_cookie(), "--import", mod],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 1, r
    assert f"pynode: {mod}.pynode_start(node) failed: RuntimeError: no model file" in r.stderr, r.stderr
    assert " up: " not in r.stdout, r.stdout


def test_ping_and_rpc_are_bare_clients_that_join_no_registry():
    """`pynode ping` and `pynode rpc` start a bare node (no registry, discovery or job host):
    the cluster they visit does not count them as members, even while they are connected."""
    h = unique_name("bare") + "@localhost"
    p = start_host(h)
    try:
        r = cli(module(), "rpc", h, "pynode", "info", "[]", "--cookie", test_cookie())
        assert r.returncode == 0, r
        assert f"members: [:{h}]" in r.stdout and "connected_nodes: [:pynode_rpc_" in r.stdout, r.stdout
        r = cli(module(), "ping", h, "--cookie", test_cookie())
        assert (r.returncode, r.stdout) == (0, "pong\n"), r
    finally:
        stop_cli(p)


@pytest.mark.parametrize("argv, line", [
    (["--sname", "x@localhost", "--config", "/nonexistent/sys.config"],
     "pynode: cannot read the configuration file /nonexistent/sys.config: No such file or directory"),
    (["ping", "x@localhost", "--config", "/nonexistent/sys.config"],
     "pynode: cannot read the configuration file /nonexistent/sys.config: No such file or directory"),
    (["--sname", "x@localhost", "--import", "no_such_module_here"],
     "pynode: cannot import no_such_module_here (--import): ModuleNotFoundError"),
    (["--sname", "x@localhost", "--http", "70000"], "argument --http: 70000 is not a port number (0..65535)"),
    (["--sname", "x@localhost", "--port", "-1"], "argument --port: -1 is not a port number (0..65535)"),
], ids=["config-node", "config-client", "import", "http-port", "dist-port"])
def test_bad_arguments_are_one_line_not_a_traceback(argv, line):
    r = cli(module(), *argv)
    assert r.returncode in (1, 2) and line in r.stderr and "Traceback" not in r.stderr, r
