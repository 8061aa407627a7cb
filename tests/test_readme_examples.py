"""Every fenced block of README.md runs as written, against real nodes (harness: tests/literate.py).

One scenario per README section (or group of sections): it starts what the README starts in
prose and runs each of the section's blocks by its kind. :func:`test_every_block_belongs_to_a_scenario`
fails for a block that no scenario owns, and a scenario fails for a block of its sections
that it did not run, so a new block without coverage fails the suite.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from erl_interop import encode
from pynode.testing import BeamNode

import literate
from literate import ROOT, Scenario, kind, readme_blocks, run_scenario, scenario, scenarios

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop


# -- scenarios, in README order ------------------------------------------------------------------
@scenario("Quick start")
def quick_start(sc: Scenario) -> None:
    sc.run(sc.block(0))  # ./dev.sh node (in the background); ./dev.sh test: what CI runs
    sc.run(sc.block(1))  # iex c1 -> n1


@scenario("A Python GenServer called from iex")
def counter(sc: Scenario) -> None:
    c1 = sc.iex("iex --sname c1@localhost --cookie test")
    py = sc.name("py@localhost")
    # the listing registers `counter` just after the node is up: it serves once a call answers
    sc.ready["examples/counter.py"] = lambda p: c1.true(
        f'try do is_integer(GenServer.call({{:counter, :"{py}"}}, :get, 1000)) catch :exit, _ -> false end')
    sc.run(sc.find("# examples/counter.py"))  # the listing is the file
    sc.run(sc.find("examples/counter.py      #"))  # python examples/counter.py, until Ctrl-C
    sc.run_rest()  # the two iex transcripts


@scenario("Python calling an Elixir GenServer")
def call_elixir(sc: Scenario) -> None:
    app = sc.started(BeamNode.start(sc.name("app@localhost"), sc.cookie, lang="elixir"))
    app.status = None  # a test peer: stopped by pid, whatever its status
    app.eval(textwrap.dedent("""
        defmodule MyServer do
          use GenServer
          def init(s), do: {:ok, s}
          def handle_call(:state, _from, s), do: {:reply, s, s}
        end
        {:ok, _} = GenServer.start(MyServer, %{jobs: 3}, name: :my_server)
        :ok
    """))
    sc.start_host("py@localhost")
    sc.run(sc.block(0), after=textwrap.dedent(f"""
        assert await ask(node) == {{Atom("jobs"): 3}}
        try:
            await node.call((Atom("nobody"), Atom("{app.name}")), Atom("state"), timeout=5.0)
        except CallError as e:
            assert e.reason == Atom("noproc"), e.reason
        else:
            raise AssertionError("no CallError")
    """))


@scenario("Exposing a function to `:rpc.call`")
def expose(sc: Scenario) -> None:
    sc.start_host("py@localhost")
    sc.iex("iex --sname c1@localhost --cookie test")
    sc.run_rest()  # the snippet on py, then the iex transcript calling it


@scenario("Processes, links and monitors")
def processes(sc: Scenario) -> None:
    ex = sc.started(BeamNode.start(sc.name("app@localhost"), sc.cookie, lang="elixir"))
    ex.status = None
    pid = ex.eval("pid = spawn(fn -> receive do :stop -> :ok end end); Process.register(pid, :readme_target); pid")
    sc.start_host("py@localhost", setup=textwrap.dedent(f"""
        import base64
        from erl_interop import decode
        elixir_pid = decode(base64.b64decode({base64.b64encode(encode(pid))!r}))
        # a program has a pid of another node once it is connected to it (it got the pid in a message)
        assert await node.ping("{ex.name}") == Atom("pong")
        seen = []
        async def _collect(proc):
            while True:
                seen.append(await proc.receive())
        some_proc = node.spawn(_collect)
    """))
    sc.run(sc.block(0), after=textwrap.dedent("""
        from pynode.testing import await_until
        await await_until(lambda: p.alive, what="the worker waits for its job")
        some_proc.send(p.pid, (Atom("job"), 1))
        await await_until(lambda: not p.alive, what="the worker ends once it has its job")
        assert some_proc.alive
    """))
    ex.eval("send(:readme_target, :stop)")  # the Elixir process ends (normal: the link keeps some_proc)
    assert sc.host is not None
    sc.host.exec(textwrap.dedent("""
        await await_until(lambda: ("DOWN", ref, "process", elixir_pid, "normal") in seen, what="DOWN")
        assert some_proc.alive
    """))


@scenario("Testing against real BEAM nodes (pytest plugin)")
def pytest_plugin(sc: Scenario) -> None:
    b = sc.block(0)
    assert kind(b) == "snippet"
    test = sc.tmp / "test_readme_plugin.py"
    test.write_text(b.text)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                       cwd=sc.tmp, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "2 passed" in r.stdout, f"{b} as a test file:\n{r.stdout}\n{r.stderr}"
    sc.done.add(b.index)


@scenario("The cluster registry")
def registry(sc: Scenario) -> None:
    sc.start_host("py@localhost", setup=textwrap.dedent("""
        async def _idle(proc):
            await asyncio.Event().wait()
        proc = node.spawn(_idle)
    """))
    sc.run(sc.block(0))  # on n1 (iex -S mix): reg, where, members (py among them)
    sc.run(sc.block(1), after=textwrap.dedent("""
        assert (pid, value) == (proc.pid, Atom("idle"))
    """))
    sc.run(sc.block(2))  # back on n1: the Python holder, and the message the shell got


@scenario("TLS distribution and the kernel settings")
def tls(sc: Scenario) -> None:
    from tls_certs import make_pki

    certs = sc.tmp / "etc-pynode"
    make_pki(certs)
    sc.extra["/etc/pynode/"] = f"{certs}/"
    sc.run(sc.find("%% /etc/pynode/ssl_dist.conf"))
    sc.run(sc.find("%% /etc/pynode/sys.config"))
    sc.run(sc.find("-proto_dist inet_tls -ssl_dist_optfile"))  # n1 (iex -S mix), n2, n3 over TLS
    n1 = sc.session
    assert n1 is not None
    want = sorted([sc.name("n2@localhost"), sc.name("n3@localhost")])
    n1.true(f"Enum.sort(Node.list(:hidden)) == [{', '.join(f':{n!r}' for n in want)}]".replace("'", '"'),
            what="n2 and n3 connected to n1 over TLS")
    # the snippet's two nodes (both kept), started, each reaching n1 over TLS
    sc.start_host(None, cwd=certs, setup=textwrap.dedent("""
        made = []
        class Node(Node):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                made.append(self)
    """))
    sc.run(sc.find("tls={"), after=textwrap.dedent(f"""
        assert len(made) == 2
        for n in made:
            async with n:
                assert await n.ping("{n1.name}") == Atom("pong"), n.name
    """))


@scenario("Jobs", fixed_names=True)
def jobs(sc: Scenario) -> None:
    # the servers the section names in prose: n1 an Elixir node, n2 a Python one
    sc.iex("iex --sname n1@localhost --cookie test -S mix")
    sc.command("./dev.sh node --sname n2@localhost --cookie test")
    sc.start_host(f"pyjobs{sc.token}@localhost")
    sc.run(sc.block(0))  # iex on n1: Job.Otp, Job
    sc.run(sc.block(1))  # the same from Python
    sc.run(sc.block(2))  # the seed's clients (Elixir, Python) and the jobs listing
    for line, r in sc.outputs.items():
        if "run_job 10" in line:
            assert "run_job: 10 ok, 0 failed" in r.stdout, f"{line}:\n{r.stdout}"


@scenario("Python workers from iex: run kinds")
def crawl(sc: Scenario) -> None:
    sc.extra["8000"] = str(literate.free_port())
    sc.run_rest()  # the excerpt; four terminals (http.server, py1, py2, n1: iex); two iex transcripts


@scenario("Installing, and the `pynode` command")
def installing(sc: Scenario) -> None:
    # "With n1 of the quick start running" (in the clone)
    sc.command(sc.map("./dev.sh node --sname n1@localhost --cookie test"))
    n1 = sc.name("n1@localhost")
    # the install, as a user makes it: a fresh directory and venv; the package from a wheel of
    # this checkout (not on an index yet: pip's find-links), uvloop from PyPI
    user = sc.tmp / "user"
    user.mkdir()
    sc.cwd = user
    sc.env.update(PIP_FIND_LINKS=str(literate.pynode_wheel()), PIP_DISABLE_PIP_VERSION_CHECK="1",
                  PYTHONPATH=None, VIRTUAL_ENV=None, PYTHONHOME=None, PIP_REQUIRE_VIRTUALENV=None)
    sc.run(sc.find("pip install pynode-erlang"))
    assert (user / ".venv" / "bin" / "pynode").is_file()
    b = sc.find(".venv/bin/pynode ping")
    sc.run(b)
    ping, rpc, members, jobs_ = (sc.outputs[sc.map(s)].stdout for s in b.lines)
    assert ping == "pong\n", ping  # "pong (exit 0)"
    assert rpc.startswith("%{") and f"node: :{n1}," in rpc and "runtime: :python" in rpc, rpc  # pynode:info()
    assert re.search(rf"^{re.escape(n1)}\s+python\s+yes$", members, re.M), members  # python or beam, job host
    assert re.search(r"^ID\s+KIND\s+NODE\s+PID$", jobs_, re.M) and re.search(r"^0 job\(s\) on \d+ host\(s\)", jobs_, re.M), jobs_


@scenario("Watching the cluster")
def watching(sc: Scenario) -> None:
    sc.extra["8080"] = str(literate.free_port())
    b = sc.block(0)
    sc.run(b)  # the node with --http, then curl
    cluster = json.loads(sc.outputs[sc.map(b.lines[1])].stdout)
    assert {"nodes", "jobs", "totals"} <= set(cluster), sorted(cluster)
    assert cluster["node"] == sc.name("py1@localhost"), cluster["node"]
    assert [n["runtime"] for n in cluster["nodes"] if n["self"]] == ["python"], cluster["nodes"]


@scenario("API reference")
def api_reference(sc: Scenario) -> None:
    home = sc.tmp / "home"
    home.mkdir()
    sc.env.update(HOME=str(home), MIX_HOME=str(home / ".mix"), MIX_ARCHIVES=str(home / ".mix" / "archives"),
                  HEX_HOME=str(home / ".hex"), HEX_OFFLINE="1", MIX_BUILD_PATH=str(sc.tmp / "mix_build"))
    t0 = time.time()
    sc.run(sc.block(0))
    for out in (ROOT / "build" / "api", ROOT / "elixir" / "doc"):  # "into build/api/", "into elixir/doc/"
        index = out / "index.html"
        assert index.is_file() and index.stat().st_mtime >= t0 - 1, f"{index}: not written by the block"
    assert (ROOT / "build" / "api" / "pynode.html").is_file()
    assert (ROOT / "elixir" / "doc" / "Pynode.Registry.html").is_file()


# -- the coverage -----------------------------------------------------------------------------------
def test_every_block_belongs_to_a_scenario() -> None:
    covered = {s for sections, _, _ in scenarios().values() for s in sections}
    blocks = readme_blocks()
    orphans = [str(b) for b in blocks if b.section not in covered]
    assert not orphans, "README blocks that no scenario of tests/test_readme_examples.py runs:\n" + "\n".join(orphans)
    for b in blocks:
        kind(b)  # raises for a block of no known kind


@pytest.mark.parametrize("name", list(scenarios()))
def test_readme_section(name: str, tmp_path: Path) -> None:
    run_scenario(name, tmp_path)
