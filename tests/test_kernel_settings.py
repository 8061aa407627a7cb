"""The ``kernel`` section of ``sys.config`` (issue 10): what a BEAM cluster's operators already
set for distribution, honoured by Python nodes — ``net_ticktime``, ``inet_dist_listen_min``/
``max``, ``inet_dist_use_interface``, ``inet_dist_connect_options``/``inet_dist_listen_options``,
``dist_auto_connect`` — through ``python -m pynode --config sys.config`` and
``Node(kernel=...)``, against real ``erl`` peers; unknown keys logged once, malformed values
an error before the node starts. (``proto_dist``/``ssl_dist_optfile``: tests/test_tls.py.)

Every wait is on a condition; names and cookies are unique per test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from erl_interop.terms import Atom
from pynode.config import ConfigError, KernelSettings, kernel_settings, load_kernel_settings
from pynode.node import Node
from pynode.testing import read_until, test_cookie, unique_name

from node_helpers import A, Mailbox, beam, ev, run, wait_for  # noqa: F401  (beam is a fixture)

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]
PONG, PANG = A("pong"), A("pang")


def sys_config(tmp_path: Path, kernel: str, apps: str = "") -> Path:
    f = tmp_path / "sys.config"
    f.write_text(f"%% test config\n[{{kernel, [{kernel}]}}{', ' + apps if apps else ''}].\n")
    return f


class Cli:
    """``python -m pynode`` as a subprocess (stopped by its own pid)."""

    def __init__(self, *args: str, name: str | None = None, flag: str = "--sname") -> None:
        self.name = name or unique_name("cli") + "@localhost"
        cmd = [sys.executable, "-m", "pynode", flag, self.name, "--cookie", test_cookie(), "--no-discovery", "--no-jobs", *args]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen: list[str] = []

    def up(self) -> str:
        assert self.proc.stdout is not None
        line, seen = read_until(self.proc.stdout, " up: ")
        self.seen += seen
        return line

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return "".join(self.seen) + out.decode("utf-8", "replace")


# -- reading and checking ---------------------------------------------------------------------
def test_every_applicable_key_is_read(tmp_path):
    f = sys_config(tmp_path, """
        {net_ticktime, 20}, {net_setuptime, 3},
        {inet_dist_listen_min, 9100}, {inet_dist_listen_max, 9105},
        {inet_dist_use_interface, {127,0,0,1}},
        {inet_dist_connect_options, [{nodelay, true}, {sndbuf, 65536}, {send_timeout, 5000}]},
        {inet_dist_listen_options, [{backlog, 16}, {keepalive, true}]},
        {dist_auto_connect, once},
        {proto_dist, inet_tls}, {ssl_dist_optfile, "/etc/ssl_dist.conf"},
        {logger_level, info}, {sync_nodes_optional, ['a@h']}, {error_logger, silent}""",
        apps="{pynode, [{replicas, 1}]}")
    k = load_kernel_settings(str(f))
    assert (k.net_ticktime, k.net_setuptime) == (20, 3.0)
    assert k.listen_port_range == (9100, 9105)
    assert k.use_interface == "127.0.0.1"
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in k.connect_options.sockopts
    assert (socket.SOL_SOCKET, socket.SO_SNDBUF, 65536) in k.connect_options.sockopts
    assert k.connect_options.ignored == ("send_timeout",)
    assert k.listen_options.backlog == 16
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in k.listen_options.sockopts
    assert k.dist_auto_connect == "once"
    assert k.tls and k.ssl_dist_optfile == "/etc/ssl_dist.conf"
    assert k.ignored == ("logger_level", "error_logger")
    assert kernel_settings({"inet_dist_listen_min": 9000}).listen_port_range == (9000, 9000)  # max defaults to min
    assert load_kernel_settings(str(ROOT / "mix_compat" / "sys.config")) == KernelSettings(source=str(ROOT / "mix_compat" / "sys.config"))


MALFORMED = [
    ("{net_ticktime, abc}", "net_ticktime must be a positive integer"),
    ("{net_ticktime, 0}", "net_ticktime must be a positive integer"),
    ("{net_setuptime, \"7\"}", "net_setuptime must be a positive number"),
    ("{inet_dist_listen_min, 70000}", "inet_dist_listen_min must be a port number"),
    ("{inet_dist_listen_min, 9200}, {inet_dist_listen_max, 9100}", "inet_dist_listen_max 9100 is below inet_dist_listen_min 9200"),
    ("{inet_dist_use_interface, \"127.0.0.1\"}", "inet_dist_use_interface must be an IPv4 address tuple"),
    ("{inet_dist_connect_options, nodelay}", "inet_dist_connect_options must be a list"),
    ("{inet_dist_listen_options, [{sndbuf, big}]}", "sndbuf must be a non-negative integer"),
    ("{inet_dist_connect_options, [{nodelay, yes}]}", "nodelay must be true or false"),
    ("{dist_auto_connect, sometimes}", "dist_auto_connect must be one of always, once, never"),
    ("{proto_dist, inet6_tls}", "proto_dist must be one of inet_tcp, inet_tls"),
    ("{proto_dist, inet_tls}", "proto_dist inet_tls needs ssl_dist_optfile"),
    ("{ssl_dist_optfile, 42}", "ssl_dist_optfile must be a file name"),
]


@pytest.mark.parametrize("kernel, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_values_are_a_clear_error_at_start(tmp_path, kernel, message):
    f = sys_config(tmp_path, kernel)
    with pytest.raises(ConfigError, match=message) as e:
        load_kernel_settings(str(f))
    assert str(f) in str(e.value)  # the message names the file
    r = subprocess.run([sys.executable, "-m", "pynode", "--sname", unique_name("bad") + "@localhost", "--cookie", "x",
                        "--config", str(f)], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert " up: " not in r.stdout


def test_unknown_keys_are_ignored_with_one_log_line(tmp_path, beam):
    f = sys_config(tmp_path, "{logger_level, info}, {foo_bar, 1}, {net_ticktime, 30}, {shell_history, enabled}")
    cli = Cli("--config", str(f))
    try:
        cli.up()
        erl = beam("erlang")
        assert erl.eval(f"net_adm:ping('{cli.name}').") == PONG
    finally:
        out = cli.stop()
    lines = [ln for ln in out.splitlines() if "ignored" in ln]
    assert len(lines) == 1, out
    assert lines[0].endswith("kernel keys without meaning for a Python node, ignored: logger_level, foo_bar, shell_history"), lines


# -- net_ticktime -----------------------------------------------------------------------------
def test_net_ticktime_from_sys_config(tmp_path, beam):
    """With {net_ticktime, 4}, the Python node drops a peer that went silent within about 4 s
    (OTP's rule, docs/WIRE.md §3.1), where the default 60 would keep it for a minute."""
    f = sys_config(tmp_path, "{net_ticktime, 4}")
    cli = Cli("--config", str(f))
    frozen = None
    try:
        cli.up()
        frozen, watcher = beam("erlang"), beam("erlang")
        for b in (frozen, watcher):
            assert b.eval(f"net_adm:ping('{cli.name}').") == PONG
        info = f"maps:get(connected_nodes, rpc:call('{cli.name}', pynode, info, []))."
        assert set(watcher.eval(info)) == {A(frozen.name), A(watcher.name)}
        os.kill(frozen.pid, signal.SIGSTOP)

        async def gone() -> bool:
            return A(frozen.name) not in await ev(watcher, info)

        async def main():
            await wait_for(gone, timeout=12, interval=0.2, what="the silent peer dropped")
        run(main, timeout=30)
    finally:
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)
        cli.stop()


# -- ports and interfaces ---------------------------------------------------------------------
def _free_run(n: int) -> int:
    """A port P with P..P+n-1 free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free run of ports")


def test_listen_port_range_from_sys_config(tmp_path, beam):
    base = _free_run(3)
    taken = socket.socket()
    taken.bind(("127.0.0.1", base))
    taken.listen()
    f = sys_config(tmp_path, f"{{inet_dist_listen_min, {base}}}, {{inet_dist_listen_max, {base + 2}}}")
    cli = Cli("--config", str(f))
    try:
        line = cli.up()
        assert f"listening on 127.0.0.1:{base + 1}," in line, line  # the first free port of the range
        erl = beam("erlang")
        assert erl.eval(f"net_adm:ping('{cli.name}').") == PONG
        alive = cli.name.split("@")[0]
        assert erl.eval(f'erl_epmd:port_please("{alive}", {{127,0,0,1}}).')[1] == base + 1
    finally:
        cli.stop()
        taken.close()


@pytest.mark.parametrize("kernel", ["{inet_dist_use_interface, {127,0,0,2}}", "{inet_dist_listen_options, [{ip, {127,0,0,2}}]}"])
def test_use_interface_from_sys_config(tmp_path, beam, kernel):
    """A node called x@127.0.0.2 listens on 127.0.0.1 by default (a loopback name); the
    kernel's interface makes it listen where its name says, so that peers reach it."""
    f = sys_config(tmp_path, kernel)
    cli = Cli("--config", str(f), name=unique_name("cli") + "@127.0.0.2", flag="--name")
    try:
        line = cli.up()
        assert "listening on 127.0.0.2:" in line, line
        erl = beam("erlang", name=unique_name("e") + "@127.0.0.1")
        assert erl.eval(f"net_adm:ping('{cli.name}').") == PONG
    finally:
        cli.stop()


def test_connect_and_listen_options_reach_the_sockets(tmp_path, beam):
    f = sys_config(tmp_path, "{inet_dist_connect_options, [{sndbuf, 262144}, {keepalive, true}, {nodelay, true}]}, "
                             "{inet_dist_listen_options, [{keepalive, true}, {backlog, 16}, {recbuf, 131072}]}")
    erl_a, erl_b = beam("erlang"), beam("erlang")

    def sock(node: Node, peer: str) -> socket.socket:
        c = node.network.conns[A(peer)]
        assert c.link is not None
        return c.link.writer.get_extra_info("socket")

    async def main():
        py = Node(unique_name("py") + "@localhost", test_cookie(), kernel=load_kernel_settings(str(f)))
        py.config = {"discovery": False}
        await py.start()
        try:
            assert await py.ping(erl_a.name) == PONG  # dialled: the connect options
            s = sock(py, erl_a.name)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 262144
            assert await ev(erl_b, f"net_adm:ping('{py.name}').") == PONG  # accepted: the listen options
            s = sock(py, erl_b.name)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 131072
        finally:
            await py.stop()

    run(main)


# -- dist_auto_connect ------------------------------------------------------------------------
def _down(m: Any) -> bool:
    return isinstance(m, tuple) and m[0] == A("DOWN")


def test_dist_auto_connect_never(beam):
    erl = beam("erlang")

    async def main():
        py = Node(unique_name("py") + "@localhost", test_cookie(), kernel={"dist_auto_connect": Atom("never")})
        py.config = {"discovery": False}
        await py.start()
        try:
            assert await py.ping(erl.name, timeout=3) == PANG  # a send does not connect (net_adm:ping's pang)
            assert py.network.connected_nodes() == [] and await ev(erl, "nodes(hidden).") == []
            assert await py.network.connect(erl.name)  # net_kernel:connect_node still does
            assert await py.ping(erl.name) == PONG
            pid = await ev(erl, "spawn(fun() -> receive _ -> ok end end).")
            await ev(erl, f"erlang:disconnect_node('{py.name}').")
            await wait_for(lambda: py.network.connected_nodes() == [], what="the disconnect")
            box = Mailbox(py)
            ref = box.proc.monitor(pid)  # to a node that may not be dialled: noconnection at once
            assert await box.get(_down, timeout=5) == (A("DOWN"), ref, A("process"), pid, A("noconnection"))
            assert await ev(erl, "nodes(hidden).") == []
            assert await ev(erl, f"net_adm:ping('{py.name}').") == PONG  # others may still connect to it
        finally:
            await py.stop()

    run(main)


def test_dist_auto_connect_once(beam):
    erl = beam("erlang")

    async def main():
        py = Node(unique_name("py") + "@localhost", test_cookie(), kernel=[(Atom("dist_auto_connect"), Atom("once"))])
        py.config = {"discovery": False}
        await py.start()
        try:
            assert await py.ping(erl.name) == PONG  # the one automatic connect
            await ev(erl, f"erlang:disconnect_node('{py.name}').")
            await wait_for(lambda: py.network.connected_nodes() == [], what="the disconnect")
            assert await py.ping(erl.name, timeout=3) == PANG  # never again by itself
            assert await ev(erl, "nodes(hidden).") == []
            assert await py.network.connect(erl.name)  # unless connected explicitly
            assert await py.ping(erl.name) == PONG
        finally:
            await py.stop()

    run(main)
