"""EPMD (docs/WIRE.md §1): the sans-IO codec (whole, byte by byte, with junk, fuzzed), our server
and client paired in-process, and interop with OTP 25's real ``epmd`` and real ``erl`` nodes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erl_interop.epmd import (
    EpmdServer,
    NodeInfo,
    ensure_epmd,
    names,
    port_please,
    register,
)
from erl_interop.epmd.proto import (
    NEED_DATA,
    Alive2Request,
    Alive2Response,
    Alive2ResponseParser,
    DumpRequest,
    KillRequest,
    NamesRequest,
    NamesResponse,
    NamesResponseParser,
    Port2Response,
    Port2ResponseParser,
    PortPlease2Request,
    RequestParser,
    StopRequest,
    encode_alive2_req,
    encode_alive2_resp,
    encode_dump_req,
    encode_kill_req,
    encode_names_req,
    encode_names_resp,
    encode_port2_resp,
    encode_port_please2_req,
    encode_stop_req,
)
from erl_interop.errors import EpmdError, EpmdLocalError, LocalProtocolError
from pynode.testing import BeamNode, await_until, unique_name, wait_until

# Talks to real BEAM programs (erl, elixir, iex, epmd): run again on each OTP release (./dev.sh test).
pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]


# -- helpers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


async def until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    return await await_until(cond, timeout=timeout, what=what)


async def raw(port: int, data: bytes, *, eof: bool = True) -> bytes:
    """Send raw bytes to an EPMD (then half-close, unless not ``eof``) and collect everything
    until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if eof:
        writer.write_eof()
    out = b""
    try:
        while chunk := await reader.read(4096):
            out += chunk
    except ConnectionResetError:
        pass
    writer.close()
    return out


def feed_whole(parser: Any, data: bytes, eof: bool = False) -> Any:
    parser.receive_data(data)
    if eof:
        parser.receive_data(b"")
    return parser.next_event()


def feed_bytewise(parser: Any, data: bytes, eof: bool = False) -> Any:
    event = NEED_DATA
    for i in range(len(data)):
        assert event is NEED_DATA, f"event before the last byte (at {i})"
        parser.receive_data(data[i : i + 1])
        event = parser.next_event()
    if eof:
        parser.receive_data(b"")
        event = parser.next_event()
    return event


NODE = NodeInfo("py", 45123, 72, 0, 6, 5, b"")
NODE_X = NodeInfo("ünï", 1, 77, 0, 6, 5, b"\x00extra\xff")


# -- proto: requests ------------------------------------------------------------------------------


def test_alive2_req_layout_is_the_documented_one():
    pkt = encode_alive2_req(NodeInfo("py", 0x1234, 77, 0, 6, 5, b"x"))
    assert pkt == b"\x00\x10" + bytes([120]) + b"\x12\x34" + b"M\x00" + b"\x00\x06\x00\x05" + b"\x00\x02py" + b"\x00\x01x"


@pytest.mark.parametrize("node", [NODE, NODE_X])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_alive2_req_round_trip(node, feed):
    assert feed(RequestParser(), encode_alive2_req(node)) == Alive2Request(node)


@pytest.mark.parametrize(
    "packet, expected",
    [
        (encode_port_please2_req("py"), PortPlease2Request("py")),
        (b"\x00\x04zpy\x00", PortPlease2Request("py")),  # one C terminator is tolerated
        (encode_names_req(), NamesRequest()),
        (encode_dump_req(), DumpRequest()),
        (encode_kill_req(), KillRequest()),
        (encode_stop_req("py"), StopRequest("py")),
    ],
)
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_other_requests(packet, expected, feed):
    assert feed(RequestParser(), packet) == expected


@pytest.mark.parametrize(
    "packet, message",
    [
        (b"\x00\x00", "invalid EPMD packet size 0"),
        (b"\x0b\xf2" + b"z" * 3058, "invalid EPMD packet size 3058"),
        (b"\x00\x02zab", "got 3 bytes in a packet announced as 2"),  # trailing junk
        (b"\x00\x01Q", "unknown EPMD request type 81"),
        (b"\x00\x01z", "without a node name"),
        (b"\x00\x04za\x00b", "NUL"),
        (b"\x00\x03z\xff\xfe", "not valid UTF-8"),
        (b"\x00\x0d" + bytes([120]) + bytes(12), "ALIVE2_REQ too short"),
        (b"\x00\x0e" + bytes([120]) + bytes(8) + b"\x00\x09" + bytes(3), "name length 9 overruns"),
        (b"\x00\x0f" + bytes([120]) + bytes(8) + b"\x00\x01a\x00\x05" + bytes(1), "extra length 5 overruns"),
        (b"\x00\x0f" + bytes([120]) + bytes(8) + b"\x00\x02a\x00\x00\x00", "contains a NUL"),
    ],
)
def test_malformed_requests(packet, message):
    p = RequestParser()
    with pytest.raises(EpmdError, match=message):
        p.receive_data(packet)
        p.next_event()


def test_request_parser_rejects_bytes_after_the_request():
    p = RequestParser()
    assert feed_whole(p, encode_names_req()) == NamesRequest()
    with pytest.raises(EpmdError):
        p.receive_data(b"x")


def test_request_parser_end_of_input():
    p = RequestParser()
    p.receive_data(encode_names_req()[:1])
    assert p.next_event() is NEED_DATA
    p.receive_data(b"")
    with pytest.raises(EpmdError, match="incomplete EPMD request"):
        p.next_event()
    with pytest.raises(EpmdLocalError, match="after the end of input"):
        p.receive_data(b"\x00")


def _alive2_body(name: bytes, extra: bytes = b"", high: int = 6) -> bytes:
    body = bytes([120]) + struct.pack(">HBBHHH", 9, 77, 0, high, 5, len(name)) + name
    body += struct.pack(">H", len(extra)) + extra
    return struct.pack(">H", len(body)) + body


@pytest.mark.parametrize(
    "name, extra, refusal",
    [
        (b"\xff\xfe", b"", "not valid UTF-8"),
        (b"a" * 256, b"", "longer than 255"),
        (b"a", b"e" * 1021, "extra data too long"),
    ],
)
def test_alive2_refusals_are_parsed_not_fatal(name, extra, refusal):
    req = feed_whole(RequestParser(), _alive2_body(name, extra))
    assert isinstance(req, Alive2Request)
    assert req.refusal is not None and refusal in req.refusal


def test_alive2_limits_accept_the_largest_valid_values():
    req = feed_whole(RequestParser(), _alive2_body("é".encode() * 255, b"e" * 1020))
    assert req.refusal is None and req.node.name == "é" * 255 and len(req.node.extra) == 1020


@pytest.mark.parametrize("name", ["", "a@b", "a\x00b", "x" * 256])
def test_encoders_refuse_bad_names_as_local_errors(name):
    with pytest.raises(LocalProtocolError):
        encode_port_please2_req(name)
    with pytest.raises(LocalProtocolError):
        encode_alive2_req(NodeInfo(name, 1))


def test_encoders_refuse_bad_numbers():
    with pytest.raises(LocalProtocolError):
        encode_alive2_req(NodeInfo("a", 70000))
    with pytest.raises(LocalProtocolError):
        encode_alive2_req(NodeInfo("a", 1, node_type=300))
    with pytest.raises(LocalProtocolError):
        encode_alive2_req(NodeInfo("a", 1, extra=b"e" * 1021))


# -- proto: responses -----------------------------------------------------------------------------


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_alive2_responses(feed):
    assert feed(Alive2ResponseParser(), bytes.fromhex("76006b0c2b47")) == Alive2Response(0, 1795959623, True)
    assert feed(Alive2ResponseParser(), bytes.fromhex("79000003")) == Alive2Response(0, 3, False)
    assert feed(Alive2ResponseParser(), bytes.fromhex("760100000063")) == Alive2Response(1, 99, True)
    assert encode_alive2_resp(0, 1795959623, extended=True) == bytes.fromhex("76006b0c2b47")
    assert encode_alive2_resp(0, 3, extended=False) == bytes.fromhex("79000003")


def test_alive2_response_junk_and_truncation():
    p = Alive2ResponseParser()
    p.receive_data(bytes.fromhex("76006b0c2b47") + b"junk")
    assert p.next_event() == Alive2Response(0, 1795959623, True)
    assert p.unused_data == b"junk"
    with pytest.raises(EpmdError, match="expected ALIVE2_X_RESP"):
        feed_whole(Alive2ResponseParser(), b"\x77\x00")
    with pytest.raises(EpmdError, match="incomplete ALIVE2"):
        feed_whole(Alive2ResponseParser(), bytes.fromhex("76006b0c"), eof=True)


@pytest.mark.parametrize("node", [NODE, NODE_X])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_port2_response_round_trip(node, feed):
    assert feed(Port2ResponseParser(), encode_port2_resp(node)) == Port2Response(0, node)


def test_port2_response_known_bytes_not_found_junk_truncation():
    # Captured from epmd 25.2 for "a" registered at port 5000, type M, 6/5, no extra.
    found = bytes.fromhex("770013884d00000600050001610000")
    assert feed_bytewise(Port2ResponseParser(), found) == Port2Response(0, NodeInfo("a", 5000, 77, 0, 6, 5, b""))
    assert encode_port2_resp(NodeInfo("a", 5000, 77, 0, 6, 5, b"")) == found
    assert feed_bytewise(Port2ResponseParser(), b"\x77\x01") == Port2Response(1, None)
    assert encode_port2_resp(None) == b"\x77\x01"
    p = Port2ResponseParser()
    p.receive_data(found + b"zz")
    assert p.next_event().node.name == "a" and p.unused_data == b"zz"
    with pytest.raises(EpmdError, match="incomplete PORT2"):
        feed_whole(Port2ResponseParser(), found[:-1], eof=True)
    with pytest.raises(EpmdError, match="expected PORT2_RESP"):
        feed_whole(Port2ResponseParser(), b"\x76\x00")
    with pytest.raises(EpmdError, match="UTF-8"):
        feed_whole(Port2ResponseParser(), bytes.fromhex("770013884d0000060005000" + "1ff0000"))


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_names_response(feed):
    data = b"\x00\x00\x11\x11name a at port 5000\nname \xc3\xa9t\xc3\xa9 at port 1\n"
    assert feed(NamesResponseParser(), data, eof=True) == NamesResponse(4369, (("a", 5000), ("été", 1)))
    assert encode_names_resp(4369, [("a", 5000), ("été", 1)]) == data
    assert feed(NamesResponseParser(), b"\x00\x00\x11\x11", eof=True) == NamesResponse(4369, ())


def test_names_response_needs_eof_and_rejects_junk():
    p = NamesResponseParser()
    p.receive_data(b"\x00\x00\x11\x11name a at port 5000\n")
    assert p.next_event() is NEED_DATA  # complete only when the server closes
    p.receive_data(b"")
    assert p.next_event() == NamesResponse(4369, (("a", 5000),))
    assert p.next_event() == NamesResponse(4369, (("a", 5000),))  # and again, as the others
    with pytest.raises(EpmdLocalError, match="after the end of input"):
        p.receive_data(b"x")
    for bad, msg in [
        (b"\x00\x00\x11\x11name a at port 5000", "truncated line"),
        (b"\x00\x00\x11\x11nome a at port 5000\n", "malformed NAMES line"),
        (b"\x00\x00\x11\x11name a at port 99999\n", "out of range"),
        (b"\x00\x00\x11\x11name a at port x\n", "malformed"),
        (b"\x00\x00\x11\x11name \xff at port 1\n", "UTF-8"),
        (b"\x00\x00\x11", "incomplete NAMES"),
    ]:
        with pytest.raises(EpmdError, match=msg):
            feed_whole(NamesResponseParser(), bad, eof=True)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_fuzz_only_epmd_errors_escape(data, eof):
    for cls in (RequestParser, Alive2ResponseParser, Port2ResponseParser, NamesResponseParser):
        p = cls()
        try:
            if data:  # b"" would be the end of input
                p.receive_data(data)
            if eof:
                p.receive_data(b"")
            p.next_event()
        except EpmdError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(blacklist_characters="@\x00", blacklist_categories=("Cs",)), min_size=1, max_size=40),
    st.integers(0, 65535),
    st.integers(0, 255),
    st.binary(max_size=50),
)
def test_property_alive2_and_port2_round_trip(name, port, node_type, extra):
    node = NodeInfo(name, port, node_type, 0, 6, 5, extra)
    assert feed_whole(RequestParser(), encode_alive2_req(node)) == Alive2Request(node)
    assert feed_whole(Port2ResponseParser(), encode_port2_resp(node)) == Port2Response(0, node)


# -- our server and client, paired in-process -----------------------------------------------------


def with_server(test: Callable[[EpmdServer], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        async with EpmdServer(port=0, **kw) as server:
            return await test(server)

    return run(main())


def test_register_lookup_names_and_unregister_on_close():
    async def t(server: EpmdServer) -> None:
        p = server.port
        reg = await register("alpha", 4242, epmd_port=p, extra=b"hi")
        assert 4 <= reg.creation < 2**32 and reg.extended
        assert await port_please("alpha", epmd_port=p) == NodeInfo("alpha", 4242, 72, 0, 6, 5, b"hi")
        assert await port_please("nobody", epmd_port=p) is None
        reg2 = await register("beta", 4343, epmd_port=p, node_type=77)
        assert await names(epmd_port=p) == [("beta", 4343), ("alpha", 4242)]  # most recent first
        await reg.aclose()
        assert reg.closed.is_set() and not reg.dropped
        await until(lambda: _gone(p, "alpha"))
        again = await register("alpha", 4444, epmd_port=p)
        assert again.creation == reg.creation + 1  # per-name counter, as epmd does
        assert await names(epmd_port=p) == [("alpha", 4444), ("beta", 4343)]
        await again.aclose()
        await reg2.aclose()

    with_server(t)


async def _gone(port: int, name: str) -> bool:
    return await port_please(name, epmd_port=port) is None


def test_duplicate_name_is_refused_and_the_first_survives():
    async def t(server: EpmdServer) -> None:
        async with await register("dup", 1, epmd_port=server.port) as reg:
            with pytest.raises(EpmdError, match="refused to register 'dup'"):
                await register("dup", 2, epmd_port=server.port)
            assert await port_please("dup", epmd_port=server.port) == reg.node
            # The refusal on the wire: result 1, creation 99 (as epmd).
            assert await raw(server.port, encode_alive2_req(NodeInfo("dup", 2))) == bytes.fromhex("760100000063")
            assert not reg.closed.is_set()

    with_server(t)


def test_v5_node_gets_a_16_bit_creation():
    async def t(server: EpmdServer) -> None:
        async with await register("old", 1, epmd_port=server.port, high=5) as reg:
            assert not reg.extended and 1 <= reg.creation <= 3

    with_server(t)


def test_registration_notices_epmd_going_away():
    async def main() -> None:
        server = EpmdServer(port=0)
        await server.start()
        reg = await register("gone", 1, epmd_port=server.port)
        await server.aclose()
        await asyncio.wait_for(reg.wait_closed(), 5)
        assert reg.dropped
        await reg.aclose()

    run(main())


def test_bad_requests_close_only_their_own_connection():
    async def t(server: EpmdServer) -> None:
        p = server.port
        async with await register("steady", 7, epmd_port=p) as reg:
            assert await raw(p, b"\x00\x01Q") == b""  # unknown request
            assert await raw(p, b"\x00\x00") == b""  # size 0
            assert await raw(p, b"\x00\x02zab") == b""  # trailing junk
            assert await raw(p, b"\x00\x10z") == b""  # truncated, then closed by us
            assert await raw(p, b"\x00\x04za\x00b") == b""  # NUL in name
            assert await port_please("steady", epmd_port=p) == reg.node
            assert not reg.closed.is_set()

    with_server(t)


def test_silent_client_times_out():
    async def t(server: EpmdServer) -> None:
        assert await raw(server.port, b"\x00", eof=False) == b""  # never completes: closed after packet_timeout

    with_server(t, packet_timeout=0.2)


def test_data_on_registration_socket_unregisters():
    async def t(server: EpmdServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_alive2_req(NodeInfo("chatty", 3)))
        assert len(await reader.readexactly(6)) == 6
        assert await port_please("chatty", epmd_port=server.port) is not None
        writer.write(b"x")
        assert await reader.read() == b""  # epmd closes it
        assert await port_please("chatty", epmd_port=server.port) is None
        writer.close()

    with_server(t)


def test_kill_and_stop_as_epmd_without_relaxed_command_check():
    async def t(server: EpmdServer) -> None:
        p = server.port
        reg = await register("k", 1, epmd_port=p)
        assert await raw(p, encode_kill_req()) == b"NO"
        assert await raw(p, encode_stop_req("k")) == b""  # refused by closing
        assert await port_please("k", epmd_port=p) == reg.node
        await reg.aclose()
        await until(lambda: _gone(p, "k"))
        assert await raw(p, encode_kill_req()) == b"OK"
        await asyncio.wait_for(server.serve_until_stopped(), 5)

    with_server(t)


def test_relaxed_command_check_stop_and_kill():
    async def t(server: EpmdServer) -> None:
        p = server.port
        reg = await register("s", 1, epmd_port=p)
        assert await raw(p, encode_stop_req("s")) == b"STOPPED"
        await asyncio.wait_for(reg.wait_closed(), 5)
        assert reg.dropped
        assert await raw(p, encode_stop_req("nobody")) == b"NOEXISTSTOPPED"  # epmd's fall-through
        reg2 = await register("s2", 1, epmd_port=p)
        assert await raw(p, encode_kill_req()) == b"OK"
        await asyncio.wait_for(reg2.wait_closed(), 5)

    with_server(t, relaxed_command_check=True)


def test_dump():
    async def t(server: EpmdServer) -> None:
        p = server.port
        async with await register("d1", 11, epmd_port=p):
            r = await register("d2", 12, epmd_port=p)
            await r.aclose()
            await until(lambda: _gone(p, "d2"))
            out = await raw(p, encode_dump_req())
        assert out[:4] == struct.pack(">I", p)
        lines = out[4:].split(b"\x00")
        assert lines[0].startswith(b"active name     <d1> at port 11, fd = ")
        assert lines[1].startswith(b"old/unused name <d2>, port = 12, fd = ")

    with_server(t)


def test_epmd_port_defaults_to_env(monkeypatch):
    async def t(server: EpmdServer) -> None:
        monkeypatch.setenv("ERL_EPMD_PORT", str(server.port))
        assert await names() == []

    with_server(t)


def test_client_errors_when_nothing_listens():
    with pytest.raises(EpmdError, match="cannot connect"):
        run(names(epmd_port=free_port()))


def test_local_failures_are_epmd_local_errors_not_epmd_errors(monkeypatch):
    # This side's fault (errors.py): a bad $ERL_EPMD_PORT, a name EPMD cannot carry, our
    # own EPMD server not coming up. Still LocalProtocolErrors, as pynode.dist catches them.
    monkeypatch.setenv("ERL_EPMD_PORT", "epmd")
    for call in (names(), port_please("py"), register("py", 1)):
        with pytest.raises(EpmdLocalError, match="ERL_EPMD_PORT") as info:
            run(call)
        assert isinstance(info.value, LocalProtocolError) and not isinstance(info.value, EpmdError)
    with pytest.raises(EpmdLocalError, match="give EPMD the alive part only"):
        run(port_please("py@host", epmd_port=free_port()))
    # 203.0.113.1 (TEST-NET-3) is no address of this host: the server we start cannot bind.
    with pytest.raises(EpmdLocalError, match="exited with status"):
        run(ensure_epmd(free_port(), listen="203.0.113.1"))


# -- interop with the real epmd and real erl nodes -------------------------------------------------


def _epmd_exe() -> str:
    exe = shutil.which("epmd")
    if exe is None:
        raise RuntimeError("epmd is not installed: run the README's test command, which installs erlang-nox")
    return exe


@pytest.fixture
def real_epmd() -> Iterator[int]:
    """OTP's epmd in the foreground on a free port, stopped by its pid."""
    port = free_port()
    proc = subprocess.Popen(
        [_epmd_exe(), "-port", str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: answers(port) or proc.poll() is not None, what="real epmd to listen")
        assert proc.poll() is None, "real epmd exited"
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def our_epmd() -> Iterator[int]:
    """Our server as `python -m erl_interop.epmd`, in the foreground, stopped by its pid."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "erl_interop.epmd", "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: answers(port) or proc.poll() is not None, what="our epmd to listen")
        assert proc.poll() is None, f"our epmd exited: {proc.stderr.read().decode() if proc.stderr else ''}"
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


def test_our_client_against_real_epmd(real_epmd):
    async def main() -> None:
        p = real_epmd
        reg = await register("realone", 5555, epmd_port=p, extra=b"ex")
        assert reg.extended and reg.creation >= 4
        assert await port_please("realone", epmd_port=p) == NodeInfo("realone", 5555, 72, 0, 6, 5, b"ex")
        assert await port_please("nobody", epmd_port=p) is None
        assert await names(epmd_port=p) == [("realone", 5555)]
        with pytest.raises(EpmdError, match="refused"):
            await register("realone", 1, epmd_port=p)
        old = await register("realold", 5, epmd_port=p, high=5)
        assert not old.extended and 1 <= old.creation <= 3
        await reg.aclose()
        await until(lambda: _gone(p, "realone"))
        again = await register("realone", 5556, epmd_port=p)
        assert again.creation == reg.creation + 1  # real epmd: same name, next creation
        await again.aclose()
        await old.aclose()

    run(main())


async def _same_registrations(port: int) -> list[Any]:
    regs = [
        await register("zed", 7001, epmd_port=port),
        await register("amy", 7002, epmd_port=port, node_type=77),
        await register("été", 7003, epmd_port=port, high=5),
    ]
    r = await register("gone", 7004, epmd_port=port)
    await r.aclose()
    await until(lambda: _gone(port, "gone"))
    return regs


def _epmd_names_output(port: int, ours: bool) -> str:
    env = dict(os.environ, ERL_EPMD_PORT=str(port))
    cmd = [sys.executable, "-m", "erl_interop.epmd", "--names"] if ours else [_epmd_exe(), "-names"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=20, check=True)
    return out.stdout.decode()


def test_names_of_our_server_match_real_epmd(real_epmd, our_epmd):
    async def collect(port: int) -> tuple[bytes, list[Any], bytes, bytes]:
        regs = await _same_registrations(port)
        wire = await raw(port, encode_names_req())
        lookups = await raw(port, encode_port_please2_req("amy")), await raw(port, encode_port_please2_req("gone"))
        listed = await names(epmd_port=port)
        text = await asyncio.to_thread(_epmd_names_output, port, False)
        ours_text = await asyncio.to_thread(_epmd_names_output, port, True)
        for r in regs:
            await r.aclose()
        return wire, listed, lookups, (text, ours_text)

    real_wire, real_list, real_lookups, (real_text, real_text_by_us) = run(collect(real_epmd))
    our_wire, our_list, our_lookups, (our_text, our_text_by_us) = run(collect(our_epmd))
    assert real_wire[:4] == struct.pack(">I", real_epmd) and our_wire[:4] == struct.pack(">I", our_epmd)
    assert real_wire[4:] == our_wire[4:]  # same lines, same order (most recent first)
    assert real_list == our_list == [("été", 7003), ("amy", 7002), ("zed", 7001)]
    assert real_lookups == our_lookups
    # `epmd -names` reads both servers alike, and our --names prints what `epmd -names` prints.
    assert real_text.replace(str(real_epmd), "P") == our_text.replace(str(our_epmd), "P")
    assert real_text == real_text_by_us and our_text == our_text_by_us


def test_real_erl_nodes_register_with_our_server_and_ping(our_epmd):
    env = {"ERL_EPMD_PORT": str(our_epmd)}
    a_name, b_name = f"{unique_name('ea')}@localhost", f"{unique_name('eb')}@localhost"
    a = BeamNode.start(a_name, "epmdcookie", env=env)
    try:
        b = BeamNode.start(b_name, "epmdcookie", env=env)
        try:
            listed = dict(run(names(epmd_port=our_epmd)))
            assert {a.alive, b.alive} <= set(listed)
            assert a.eval(f"net_adm:ping('{b_name}').") == "pong"
            assert b.eval("nodes().") == [a_name]
            # The creation the node uses came from our ALIVE2_X_RESP: 32-bit, >= 4.
            assert a.eval("erlang:system_info(creation).") >= 4
            assert a.eval(f"erl_epmd:port_please(\"{b.alive}\", \"localhost\").")[1] == listed[b.alive]
        finally:
            b.stop()
        wait_until(lambda: b.alive not in dict(run(names(epmd_port=our_epmd))), what="b to unregister")
    finally:
        a.stop()


def test_ensure_epmd_starts_a_detached_server_that_outlives_its_caller(tmp_path):
    port = free_port()
    pidfile = tmp_path / "epmd.pid"
    caller = (
        "import asyncio, sys\n"
        "from erl_interop.epmd import ensure_epmd\n"
        f"print(asyncio.run(ensure_epmd({port}, pidfile={str(pidfile)!r})))\n"
    )
    assert not answers(port)
    out = subprocess.run([sys.executable, "-c", caller], cwd=ROOT, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "True"
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pidfile"))
    try:
        # The caller has exited; the daemon still answers, in its own session.
        assert answers(port)
        assert os.getsid(pid) == pid
        assert run(names(epmd_port=port)) == []
        assert run(ensure_epmd(port)) is False  # already running: nothing started

        async def reg_and_look() -> NodeInfo | None:
            async with await register("viaensure", 9, epmd_port=port):
                return await port_please("viaensure", epmd_port=port)

        assert run(reg_and_look()) == NodeInfo("viaensure", 9, 72, 0, 6, 5, b"")
    finally:
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, what="the daemon to exit")
    assert not answers(port)
    assert not pidfile.exists()
