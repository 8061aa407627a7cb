"""The CLI: `python -m pynode` starts a node that says who it is, answers ping, and shuts
down cleanly (exit 0, peers see nodedown at once) on SIGTERM and SIGINT, and on what stops a
BEAM node from outside (erl_call -q, init:stop/1 and erlang:halt/1 by rpc); iex --remsh is
told there is no shell; a cookie file erl would refuse is refused."""

from __future__ import annotations

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
from pynode.cli import jobs as cli_jobs, node as cli_node, parser
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
        assert str(cli_jobs._client_node(a, ["x@h"]).name) == want, cmd
