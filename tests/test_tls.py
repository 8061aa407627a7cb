"""TLS distribution (issue 10): Python nodes and real ``erl -proto_dist inet_tls`` / Elixir nodes
over TLS, in both roles, with certificates made at test time (tests/tls_certs.py, Debian's
``openssl``).

Covered: ping, GenServer calls, rpc, links and monitors both ways between a TLS Python node
and a TLS ``erl`` node, TLS 1.3 and the name checks of ``server_name_indication``;
``python -m pynode --proto-dist inet_tls --ssl-dist-optfile F`` and the same from
``sys.config``'s kernel section; the refusals the BEAM makes, each with the log line that
names the cause while the node keeps serving a good peer (a plaintext peer either way, a
certificate from an untrusted CA, an expired one, none at all, a chain deeper than ``depth``,
a wrong cookie over good TLS); malformed TLS options refused at start; and the job cluster
(registry, run_job, handoff, replicas) over TLS with Elixir and Python nodes.

Every wait is on a condition; names and cookies are unique per test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from erl_interop.terms import Atom, Pid
from pynode import jobs
from pynode.config import ConfigError
from pynode.dist.tls import DistTls, TlsConfigError
from pynode.jobs import HOST_KEY
from pynode.node import Node
from pynode.otp.gen_server import GenServer
from pynode.otp.rpc import rpc_call
from pynode.testing import BeamNode, compile_mix_project, read_until, test_cookie, unique_name

from node_helpers import A, Mailbox, beam, ev, holdings, run, wait_for  # noqa: F401  (beam is a fixture)
from tls_certs import Pki, erl_tls_args, make_pki, optfile

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]
MIX_PROJECT = str(ROOT / "mix_compat")
PONG, PANG = A("pong"), A("pang")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Opts:
    """The optfiles of one test, written into its tmp_path."""

    def __init__(self, pki: Pki, d: Path) -> None:
        self.pki, self.d = pki, d
        self.good = optfile(d / "good.conf", pki.node_cert, pki.node_key, pki.ca)

    def make(self, name: str, cert: Path | None = None, key: Path | None = None, **kw: Any) -> Path:
        return optfile(self.d / f"{name}.conf", cert or self.pki.node_cert, key or self.pki.node_key, self.pki.ca, **kw)


@pytest.fixture
def opts(pki: Pki, tmp_path: Path) -> Opts:
    return Opts(pki, tmp_path)


def py_tls(opt: Path | Any, **kw: Any) -> Node:
    node = Node(unique_name("py") + "@localhost", kw.pop("cookie", test_cookie()), tls=opt, **kw)
    node.config = {"discovery": False}
    return node


def tls_version(node: Node, peer: str) -> str:
    c = node.network.conns[A(peer)]
    assert c.link is not None
    so = c.link.writer.get_extra_info("ssl_object")
    assert so is not None, "not a TLS connection"
    return str(so.version())


class Echo(GenServer):
    async def handle_call(self, request: Any, from_: Any) -> Any:
        return (A("echo"), request)


# -- both roles -------------------------------------------------------------------------------
def test_python_and_erl_over_tls_both_roles(beam, opts):
    """ping, call, rpc, link and monitor in both directions over one TLS link each way."""
    erl = beam("erlang", args=erl_tls_args(opts.good))

    async def main():
        py = py_tls(opts.good)
        await py.start()
        try:
            assert py.tls is not None and "verify_peer" in py.tls.summary
            py.expose("math_py", "add", lambda a, b: a + b)
            await Echo.start(py, name="echo")
            box = Mailbox(py, trap_exit=True, name="box")
            # BEAM dials the Python node
            assert await ev(erl, f"net_adm:ping('{py.name}').") == PONG
            assert tls_version(py, erl.name) == "TLSv1.2"  # OTP 25's inet_tls_dist default
            assert await ev(erl, f"rpc:call('{py.name}', math_py, add, [1, 2]).") == 3
            assert await ev(erl, f"erpc:call('{py.name}', math_py, add, [3, 4]).") == 7
            assert await ev(erl, f"gen_server:call({{echo, '{py.name}'}}, hi).") == (A("echo"), A("hi"))
            # erl monitors and links a Python process, which dies: DOWN and EXIT arrive
            erl_pid = await ev(erl, "self().")
            box.proc.send(erl_pid, (A("pid"), box.pid))
            await ev(erl, "receive {pid, P} -> put(p, P), process_flag(trap_exit, true), "
                          "put(m, monitor(process, P)), link(P), ok after 5000 -> error(nopid) end.")
            await wait_for(lambda: erl_pid in box.proc.links, what="the link from erl")
            box.proc.kill(A("bye"))
            assert await ev(erl, "M = get(m), P = get(p), receive {'DOWN', M, process, P, R} -> R after 5000 -> timeout end.") == A("bye")
            assert await ev(erl, "P = get(p), receive {'EXIT', P, R} -> R after 5000 -> timeout end.") == A("bye")
            # the Python node dials the BEAM node
            await ev(erl, f"erlang:disconnect_node('{py.name}').")
            await wait_for(lambda: A(erl.name) not in py.network.connected_nodes(), what="the disconnect")
            assert await py.ping(erl.name) == PONG
            assert tls_version(py, erl.name) == "TLSv1.2"
            assert await py.call((A("rex"), A(erl.name)), (A("call"), A("erlang"), A("node"), [], A("user"))) == A(erl.name)
            got: list[Any] = []

            async def caller(proc):
                got.append(await rpc_call(proc, erl.name, "lists", "reverse", [[1, 2, 3]]))
            await asyncio.shield(py.spawn(caller).task)
            assert got == [[3, 2, 1]]
            # Python monitors and links an erl process, which dies
            target = await ev(erl, "P = spawn(fun() -> receive X -> exit(X) end end), register(victim, P), P.")
            watcher = Mailbox(py, trap_exit=True)
            ref = watcher.proc.monitor(target)
            watcher.proc.link(target)
            await wait_for(lambda: ev(erl, "{links, L} = process_info(whereis(victim), links), L =/= []."),
                           what="the link on the erl side")
            py.send((A("victim"), A(erl.name)), A("boom"))  # the Python node's own send
            down = await watcher.get(lambda m: isinstance(m, tuple) and m[0] == A("DOWN"))
            assert down == (A("DOWN"), ref, A("process"), target, A("boom"))
            assert await watcher.get(lambda m: isinstance(m, tuple) and m[0] == A("EXIT")) == (A("EXIT"), target, A("boom"))
        finally:
            await py.stop()

    run(main, timeout=90)


def test_python_to_python_and_elixir_over_tls_13_mapping_form(beam, opts, pki):
    """TLS 1.3 (versions), Node(tls={...}) in its Python mapping form, an Elixir TLS node,
    and two Python TLS nodes."""
    opt13 = opts.make("v13", server_extra="{versions, ['tlsv1.3']}", client_extra="{versions, ['tlsv1.3']}")
    ex = beam("elixir", args=erl_tls_args(opt13))
    side = {"certfile": str(pki.node_cert), "keyfile": str(pki.node_key), "cacertfile": str(pki.ca),
            "verify": "verify_peer", "versions": ["tlsv1.3"]}
    mapping = {"server": {**side, "fail_if_no_peer_cert": True}, "client": side}

    async def main():
        a, b = py_tls(mapping), py_tls(opt13)
        await a.start()
        await b.start()
        try:
            assert await a.ping(ex.name) == PONG and tls_version(a, ex.name) == "TLSv1.3"
            assert await ev(ex, f":rpc.call(:\"{b.name}\", :pynode, :info, [])[:node]") == A(b.name)
            assert tls_version(b, ex.name) == "TLSv1.3"
            assert await a.ping(b.name) == PONG and tls_version(a, b.name) == "TLSv1.3"
        finally:
            await a.stop()
            await b.stop()

    run(main, timeout=60)


def test_server_name_indication_and_hostname_check(beam, opts, pki):
    """With verify_peer the server's certificate must be valid for the host part of the
    node name (the SNI), on both sides alike; {server_name_indication, disable} turns it off."""
    wrong = opts.make("wrong", pki.wrongname_cert, pki.wrongname_key)
    erl_wrong = beam("erlang", args=erl_tls_args(wrong))
    sni_off = opts.make("sni_off", client_extra="{server_name_indication, disable}")
    sni_named = opts.make("sni_named", client_extra='{server_name_indication, "wrong.example"}')

    async def main():
        strict, lax, named = py_tls(opts.good), py_tls(sni_off), py_tls(sni_named)
        py_wrong = py_tls(wrong)
        for n in (strict, lax, named, py_wrong):
            await n.start()
        try:
            assert await strict.ping(erl_wrong.name) == PANG  # cert for wrong.example, dialled as localhost
            assert await lax.ping(erl_wrong.name) == PONG
            assert await named.ping(erl_wrong.name) == PONG
            # the BEAM refuses the same way: its client checks the SNI host too
            assert await ev(erl_wrong, f"net_adm:ping('{strict.name}').") == PONG  # strict's cert is for localhost
            good_erl = await asyncio.to_thread(beam, "erlang", args=erl_tls_args(opts.good))
            assert await ev(good_erl, f"net_adm:ping('{py_wrong.name}').") == PANG
        finally:
            for n in (strict, lax, named, py_wrong):
                await n.stop()

    run(main, timeout=60)


# -- the command line and sys.config ----------------------------------------------------------
class PyCli:
    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.name = unique_name("cli") + "@localhost"
        cmd = [sys.executable, "-m", "pynode", "--sname", self.name, "--cookie", test_cookie(), "--no-discovery",
               "--no-jobs", *args]
        self.proc = subprocess.Popen(cmd, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []

    def wait_up(self) -> str:
        assert self.proc.stdout is not None
        line, seen = read_until(self.proc.stdout, " up: ")
        self.lines += seen
        return line

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return "".join(self.lines) + out.decode("utf-8", "replace")


def test_cli_proto_dist_inet_tls(beam, opts):
    erl = beam("erlang", args=erl_tls_args(opts.good))
    plain = beam("erlang")
    cli = PyCli("--proto-dist", "inet_tls", "--ssl-dist-optfile", str(opts.good))
    try:
        cli.wait_up()
        assert erl.eval(f"net_adm:ping('{cli.name}').") == PONG
        assert erl.eval(f"maps:get(node, rpc:call('{cli.name}', pynode, info, [])).") == A(cli.name)
        assert plain.eval(f"net_adm:ping('{cli.name}').") == PANG
    finally:
        out = cli.stop()
    assert "TLS distribution (inet_tls)" in out, out
    assert "the peer does not speak TLS" in out, out


def test_sys_config_kernel_proto_dist_and_optfile(beam, opts, tmp_path):
    """proto_dist and ssl_dist_optfile in sys.config's kernel section: the same TLS node."""
    cfg = tmp_path / "sys.config"
    cfg.write_text(f'[{{kernel, [{{proto_dist, inet_tls}}, {{ssl_dist_optfile, "{opts.good}"}}]}}].\n')
    erl = beam("erlang", args=erl_tls_args(opts.good))
    plain = beam("erlang")
    cli = PyCli("--config", str(cfg))
    try:
        cli.wait_up()
        assert erl.eval(f"net_adm:ping('{cli.name}').") == PONG
        assert plain.eval(f"net_adm:ping('{cli.name}').") == PANG
    finally:
        out = cli.stop()
    assert "TLS distribution (inet_tls)" in out, out


@pytest.mark.parametrize("text, message", [
    ('[{server, [{certfile, "/nonexistent.pem"}]}].', "cannot load /nonexistent.pem"),
    ("[{server, [CK, {verify, verify_peer}]}].", "needs cacertfile"),
    ("[{server, [CK, {verify_fun, {m, f, []}}]}].", "verify_fun is not supported"),
    ("[{server, [CK, {versions, ['sslv3']}]}].", "unknown version"),
    ("[{server, [CK]}, {client, [{fail_if_no_peer_cert, true}]}].", "fail_if_no_peer_cert is a server option only"),
    ("[{server, [CK, {bogus, 1}]}].", "bogus: unknown ssl option"),
    ("[{server, [CK, {verify, verify_none}, {fail_if_no_peer_cert, true}]}].", "true needs {verify, verify_peer}"),
    ("[{server, [{certfile, ", "ssl_dist_optfile"),
])
def test_malformed_tls_options_are_an_error_at_start(opts, pki, tmp_path, text, message):
    f = tmp_path / "bad.conf"
    f.write_text(text.replace("CK", f'{{certfile, "{pki.node_cert}"}}, {{keyfile, "{pki.node_key}"}}'))
    with pytest.raises(TlsConfigError, match=message):
        py_tls(f)
    assert issubclass(TlsConfigError, ConfigError)
    cli = subprocess.run([sys.executable, "-m", "pynode", "--sname", unique_name("bad") + "@localhost", "--cookie", "x",
                          "--proto-dist", "inet_tls", "--ssl-dist-optfile", str(f)],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and message in cli.stderr and "Traceback" not in cli.stderr, cli.stderr


def test_optfile_maps_onto_ssl_contexts(pki, tmp_path, caplog):
    """OTP 25's defaults where the file says nothing, and each option's mapping."""
    caplog.set_level(logging.INFO)
    f = tmp_path / "opts.conf"
    f.write_text(f"""%% a comment, as erl allows
[{{server, [{{certfile, "{pki.node_cert}"}}, {{keyfile, "{pki.node_key}"}}, {{cacertfile, "{pki.ca}"}},
            {{verify, verify_peer}}, {{fail_if_no_peer_cert, false}}, {{depth, 2}}, {{reuse_sessions, true}},
            {{secure_renegotiate, true}}, {{honor_cipher_order, true}}]}},
 {{client, [{{verify, verify_none}}, {{versions, ['tlsv1.2', 'tlsv1.3']}}, {{hibernate_after, 1000}}]}}].
""")
    t = py_tls(f).tls
    assert isinstance(t, DistTls)
    assert t.server.verify_mode == ssl.CERT_OPTIONAL  # verify_peer without fail_if_no_peer_cert
    assert t.server.minimum_version == t.server.maximum_version == ssl.TLSVersion.TLSv1_2  # inet_tls_dist's default
    assert t.server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert (t.client.verify_mode, t.client.check_hostname) == (ssl.CERT_NONE, False)
    assert (t.client.minimum_version, t.client.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert (t.server_depth, t.client_depth) == (2, None)
    assert t.ignored == ("server reuse_sessions", "client hibernate_after")
    assert t.client_hostname("n1@db1.example.com") == "db1.example.com"  # SNI: the host part
    assert "client verify_none" in caplog.text and "ignored: server reuse_sessions, client hibernate_after" in caplog.text
    # no client entry: ssl's own defaults; a client SNI of its own, or none
    only = py_tls([(A("server"), [(A("certfile"), list(map(ord, str(pki.node_cert)))),
                                  (A("keyfile"), list(map(ord, str(pki.node_key))))])]).tls
    assert only is not None and only.client.maximum_version == ssl.TLSVersion.TLSv1_3
    named = py_tls({"server": {"certfile": str(pki.node_cert), "keyfile": str(pki.node_key)},
                    "client": {"server_name_indication": "peers.example", "verify": "verify_peer",
                               "cacertfile": str(pki.ca)}}).tls
    assert named is not None and named.client_hostname("n1@localhost") == "peers.example" and named.client.check_hostname
    off = py_tls({"server": {"certfile": str(pki.node_cert), "keyfile": str(pki.node_key)},
                  "client": {"server_name_indication": A("disable"), "verify": "verify_peer", "cacertfile": str(pki.ca)}}).tls
    assert off is not None and off.client_hostname("n1@localhost") == "" and not off.client.check_hostname


# -- refusals ---------------------------------------------------------------------------------
def _causes(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("pynode", "erl_interop")))


# (case, which side dials, what the bad peer is, the cause the Python node's log must name)
REFUSALS = [
    ("plaintext erl dials the TLS node", "erl", "plain", "the peer does not speak TLS"),
    ("the TLS node dials a plaintext erl", "py", "plain", "the TLS handshake did not finish"),
    ("erl's certificate is from an untrusted CA (erl dials)", "erl", "rogue", "unable to get local issuer certificate"),
    ("erl's certificate is from an untrusted CA (Python dials)", "py", "rogue", "unable to get local issuer certificate"),
    ("erl's certificate has expired (erl dials)", "erl", "expired", "certificate has expired"),
    ("erl's certificate has expired (Python dials)", "py", "expired", "certificate has expired"),
    ("erl sends no certificate (fail_if_no_peer_cert)", "erl", "nocert", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    ("erl's chain is deeper than depth (erl dials)", "erl", "deep", "intermediate CA(s), more than depth 0"),
    ("erl's chain is deeper than depth (Python dials)", "py", "deep", "intermediate CA(s), more than depth 0"),
    ("a wrong cookie over good TLS (erl dials)", "erl", "cookie", "Invalid challenge reply. ** (it does not share our cookie)"),
    ("a wrong cookie over good TLS (Python dials)", "py", "cookie", "rejected our cookie"),
]


@pytest.mark.parametrize("case, dialer, bad, cause", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_cause_and_the_node_keeps_serving(beam, opts, pki, caplog, case, dialer, bad, cause):
    caplog.set_level(logging.INFO)
    node_opt = opts.make("node", server_extra="{depth, 0}", client_extra="{depth, 0}") if bad == "deep" else opts.good
    bad_args = {
        "plain": [],
        "rogue": erl_tls_args(opts.make("rogue", pki.rogue_cert, pki.rogue_key)),
        "expired": erl_tls_args(opts.make("expired", pki.expired_cert, pki.expired_key)),
        "deep": erl_tls_args(opts.make("deep", pki.deep_cert, pki.deep_key)),
        "cookie": erl_tls_args(opts.good),
    }
    if bad == "nocert":
        nocert = opts.d / "nocert.conf"
        nocert.write_text(f'[{{server, [{{certfile, "{pki.node_cert}"}}, {{keyfile, "{pki.node_key}"}}]}}, '
                          f'{{client, [{{verify, verify_none}}]}}].\n')
        bad_args["nocert"] = erl_tls_args(nocert)
    good = beam("erlang", args=erl_tls_args(opts.good))
    wrong = beam("erlang", args=bad_args[bad], cookie="another" + test_cookie() if bad == "cookie" else None)

    async def main():
        py = py_tls(node_opt, setup_timeout=3.0)
        await py.start()
        try:
            assert await ev(good, f"net_adm:ping('{py.name}').") == PONG  # a link that stays up
            if dialer == "erl":
                assert await ev(wrong, f"net_adm:ping('{py.name}').") == PANG
            else:
                assert await py.ping(wrong.name, timeout=15) == PANG
            await wait_for(lambda: cause in _causes(caplog), timeout=15, what=f"a log line naming {cause!r}")
            assert A(wrong.name) not in py.network.connected_nodes()
            # the node kept serving: the old link works, and a new peer connects both ways
            assert A(good.name) in py.network.connected_nodes()
            assert await ev(good, f"rpc:call('{py.name}', pynode, info, []) =/= undefined.") is True
            other = await asyncio.to_thread(beam, "erlang", args=erl_tls_args(opts.good))
            assert await ev(other, f"net_adm:ping('{py.name}').") == PONG
            await ev(other, f"erlang:disconnect_node('{py.name}').")
            await wait_for(lambda: A(other.name) not in py.network.connected_nodes(), what="the disconnect")
            assert await py.ping(other.name) == PONG
        finally:
            await py.stop()

    run(main, timeout=90)


def test_plaintext_python_node_against_tls_erl_names_the_cause(beam, opts, caplog):
    """A Python node without TLS and a TLS erl node refuse each other either way; the Python
    node says that the peer speaks TLS."""
    caplog.set_level(logging.INFO)
    erl = beam("erlang", args=erl_tls_args(opts.good))

    async def main():
        py = Node(unique_name("plain") + "@localhost", test_cookie())
        py.config = {"discovery": False}
        await py.start()
        try:
            assert await py.ping(erl.name) == PANG
            assert "the peer answered with a TLS record" in _causes(caplog)
            assert await ev(erl, f"net_adm:ping('{py.name}').") == PANG
            await wait_for(lambda: "a TLS ClientHello?" in _causes(caplog), what="the acceptor's log line")
        finally:
            await py.stop()

    run(main, timeout=60)


# -- the job cluster over TLS -----------------------------------------------------------------
@pytest.fixture(scope="session")
def mix_compiled() -> str:
    return compile_mix_project(MIX_PROJECT)


async def _settled(obs: Node, elixir: list[BeamNode], want: int) -> None:
    await wait_for(lambda: len(obs.registry.lookup_pids(HOST_KEY)) == want, timeout=30, what=f"{want} job hosts")
    for b in elixir:
        src = "length(Pynode.Registry.lookup_pids({:p, :g, :pynode_job_host}))"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (v := await ev(b, src)) != want:
            assert loop.time() < deadline, f"{b.name} sees {v} hosts, not {want}"
            await asyncio.sleep(0.05)


@pytest.mark.slow
def test_job_cluster_over_tls_with_elixir_and_python_nodes(opts, tmp_path, mix_compiled):
    """Elixir (mix_compat) and Python nodes, all TLS: the registry meshes them, `mix run_job`
    from a TLS client works against them, a Python node's jobs move on SIGTERM (handoff) and
    an Elixir node's jobs run again elsewhere after kill -9 (replicas)."""
    names = [unique_name(p) + "@localhost" for p in ("a", "b", "c")]
    cfg = tmp_path / "sys.config"
    connect = ", ".join(f"'{n}'" for n in names)
    cfg.write_text(f"[{{pynode, [{{work_ms, 300}}, {{result_ttl, 60000}}, {{replicas, 1}}, "
                   f"{{connect, [{connect}]}}]}}].\n")
    tls = erl_tls_args(opts.good)
    cookie = test_cookie()
    started: list[Any] = []

    def elixir(name: str) -> BeamNode:
        n = BeamNode.start(name, cookie, lang="elixir", mix_project=MIX_PROJECT, args=["-config", str(cfg), *tls])
        started.append(n)
        return n

    e1 = elixir(names[0])
    py_cli = subprocess.Popen([sys.executable, "-m", "pynode", "--sname", names[1], "--cookie", cookie, "--config", str(cfg),
                               "--proto-dist", "inet_tls", "--ssl-dist-optfile", str(opts.good)],
                              cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert py_cli.stdout is not None
        read_until(py_cli.stdout, " up: ")
        e2 = elixir(names[2])

        async def main():
            obs = Node(unique_name("y") + "@localhost", cookie, tls=opts.good)
            obs.config = {"host_jobs": False, "work_ms": 300, "result_ttl": 60000}
            await obs.start()
            try:
                for n in names:
                    assert await obs.network.connect(n), n
                await _settled(obs, [e1, e2], 3)
                # the seed's client, over TLS
                env = dict(os.environ, MIX_ENV="dev")
                client = unique_name("c") + "@localhost"
                proc = await asyncio.create_subprocess_exec(
                    "elixir", "--sname", client, "--cookie", cookie, "--erl", " ".join(tls), "-S", "mix", "run_job", "10",
                    *[x for n in names for x in ("--connect", n)], cwd=MIX_PROJECT, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await asyncio.wait_for(proc.communicate(), 120)
                text = out.decode()
                assert proc.returncode == 0 and "run_job: 10 ok, 0 failed" in text, text
                # jobs that stay, with state, spread over the three hosts
                ids = [f"t{i}".encode() for i in range(9)]
                for i in ids:
                    assert (await jobs.start(obs, i))[0] == A("ok")
                    assert await jobs.update(obs, i, A("before")) == A("ok")
                held = await holdings(obs, names)
                assert {h for i in ids for h in held[i]} == set(names), held
                # handoff: the Python node stops gracefully; its jobs move with their state
                py_cli.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(py_cli.wait, 60) == 0
                await _settled(obs, [e1, e2], 2)
                for i in ids:
                    assert await jobs.get_state(obs, i) == [A("before"), i], i
                # replicas: kill -9 an Elixir node; its jobs run again on the other one
                e1.kill()
                await _settled(obs, [e2], 1)

                async def all_on_e2() -> bool:
                    h = await holdings(obs, [names[2]])
                    return all(h.get(i) == [names[2]] for i in ids)
                await wait_for(all_on_e2, timeout=30, what="every job on the surviving node")
                for i in ids:
                    assert await jobs.get_state(obs, i) == [A("before"), i], i
                    assert await jobs.update(obs, i, A("after")) == A("ok")
                assert tls_version(obs, names[2]) == "TLSv1.2"
            finally:
                await obs.stop()

        run(main, timeout=240)
    finally:
        if py_cli.poll() is None:
            py_cli.kill()
        py_cli.wait(10)
        for n in started:
            n.kill()
