"""Paired sans-IO handshake machines (docs/WIRE.md §2): both roles, whole / byte-by-byte /
with trailing connected-phase bytes, and every refusal path. Only HandshakeError escapes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erl_interop.errors import HandshakeError, LocalProtocolError
from erl_interop.flags import DEFAULT_FLAGS, MANDATORY_25, DistFlags
from erl_interop.handshake import (
    MAX_PACKET,
    NEED_DATA,
    ChallengeReceived,
    DefaultPolicy,
    Handshake,
    HandshakeComplete,
    NameReceived,
    StatusReceived,
    gen_digest,
)

A = "alice@localhost"
B = "bob@localhost"


def pair(cookie_a="secret", cookie_b="secret", flags_a=DEFAULT_FLAGS, flags_b=DEFAULT_FLAGS,
         policy_a=None, policy_b=None):
    init = Handshake("initiator", A, cookie_a, 11, flags=flags_a, peer_name=B, policy=policy_a)
    acc = Handshake("acceptor", B, cookie_b, 22, flags=flags_b, policy=policy_b)
    return init, acc


def drain(hs):
    """All events until NEED_DATA or completion."""
    out = []
    while True:
        ev = hs.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, HandshakeComplete):
            return out


LEFTOVER: dict = {}


def run(init, acc, chunk=None, extra_to_init=b"", extra_to_acc=b""):
    """Shuttle bytes between the two machines; return (init events, acc events)."""
    ev_i, ev_a = [], []
    done_i = done_a = False
    leftover = LEFTOVER
    leftover.clear()
    for _ in range(20):
        for src, dst, evs, extra in ((init, acc, ev_a, extra_to_acc), (acc, init, ev_i, extra_to_init)):
            data = src.data_to_send()
            if (dst is acc and done_a) or (dst is init and done_i):
                continue
            if data and src.complete and extra:
                data += extra
            if chunk is None:
                if data:
                    dst.receive_data(data)
            else:
                for i in range(0, len(data), chunk):
                    if dst.complete:  # the rest belongs to the connection
                        leftover[dst] = leftover.get(dst, b"") + data[i:]
                        break
                    dst.receive_data(data[i : i + chunk])
                    evs += drain(dst)
            if not dst.complete:
                evs += drain(dst)
            if evs and isinstance(evs[-1], HandshakeComplete):
                if dst is acc:
                    done_a = True
                else:
                    done_i = True
        if done_i and done_a:
            return ev_i, ev_a
    raise AssertionError(f"no completion: {ev_i} {ev_a}")


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_back_to_back_completes(chunk):
    init, acc = pair()
    ev_i, ev_a = run(init, acc, chunk=chunk)
    assert ev_i[0] == StatusReceived("ok")
    assert isinstance(ev_i[1], ChallengeReceived) and ev_i[1].peer_creation == 22
    ci, ca = ev_i[-1], ev_a[-1]
    assert ci == HandshakeComplete(B, DEFAULT_FLAGS, DEFAULT_FLAGS, 22, b"")
    assert ca == HandshakeComplete(A, DEFAULT_FLAGS, DEFAULT_FLAGS, 11, b"")
    assert ev_a[0] == NameReceived(A, DEFAULT_FLAGS, 11, "ok")
    assert not (ci.flags & DistFlags.PUBLISHED)  # hidden by default
    assert init.data_to_send() == b"" and acc.data_to_send() == b""


def test_trailing_connected_phase_bytes_initiator():
    # The acceptor writes its ack and, at once, a tick and a packet: they must come back
    # as `trailing`, fed whole and byte by byte.
    tail = b"\x00\x00\x00\x00" + b"\x00\x00\x00\x03p\x83j"
    for chunk in (None, 1):
        init, acc = pair()
        ev_i, _ = run(init, acc, chunk=chunk, extra_to_init=tail)
        got = ev_i[-1].trailing
        if chunk == 1:
            # fed byte by byte, completion happens right after the ack's last byte and
            # the driver hands the rest to the connection itself
            assert got == b""
            assert LEFTOVER[init] == tail
        else:
            assert got == tail


def test_trailing_then_receive_data_is_local_error():
    init, acc = pair()
    run(init, acc)
    with pytest.raises(LocalProtocolError):
        init.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(LocalProtocolError):
        init.next_event()


def test_trailing_acceptor():
    init, acc = pair()
    acc.receive_data(init.data_to_send())
    drain(acc)
    init.receive_data(acc.data_to_send())
    drain(init)
    acc.receive_data(init.data_to_send() + b"\x00\x00\x00\x00xyz")
    (ev,) = [e for e in drain(acc) if isinstance(e, HandshakeComplete)]
    assert ev.trailing == b"\x00\x00\x00\x00xyz"


def test_wire_format_of_name_and_digest():
    init = Handshake("initiator", A, "c", 0x01020304, flags=DEFAULT_FLAGS, peer_name=B)
    data = init.data_to_send()
    (length,) = struct.unpack(">H", data[:2])
    assert length == len(data) - 2
    assert data[2:3] == b"N"
    flags, creation, nlen = struct.unpack(">QIH", data[3:17])
    assert (flags, creation, nlen) == (int(DEFAULT_FLAGS), 0x01020304, len(A))
    assert data[17:] == A.encode()
    import hashlib
    assert gen_digest(4294967295, b"c") == hashlib.md5(b"c4294967295").digest()


def test_mandatory_digest_is_expanded():
    peer = (DEFAULT_FLAGS & ~MANDATORY_25) | DistFlags.MANDATORY_25_DIGEST
    init, acc = pair(flags_a=peer)
    ev_i, ev_a = run(init, acc)
    assert ev_a[-1].peer_flags & MANDATORY_25 == MANDATORY_25
    assert ev_a[-1].flags == DEFAULT_FLAGS  # intersection with our flags
    assert ev_i[-1].flags == peer & DEFAULT_FLAGS


def test_negotiated_is_intersection():
    a = DEFAULT_FLAGS | DistFlags.PUBLISHED | DistFlags.FRAGMENTS
    b = DEFAULT_FLAGS | DistFlags.PUBLISHED
    ev_i, ev_a = run(*pair(flags_a=a, flags_b=b))
    assert ev_i[-1].flags == ev_a[-1].flags == DEFAULT_FLAGS | DistFlags.PUBLISHED


# -- refusals -----------------------------------------------------------------------------
def step_until_error(init, acc):
    """Shuttle until one side raises; return {"init": err|None, "acc": err|None}."""
    errs = {"init": None, "acc": None}
    for _ in range(10):
        for name, src, dst in (("acc", init, acc), ("init", acc, init)):
            if errs[name]:
                continue
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
            try:
                drain(dst)
            except HandshakeError as e:
                errs[name] = e
        if errs["init"] or errs["acc"]:
            # deliver anything the failing side still queued, then the close
            for name, src, dst in (("acc", init, acc), ("init", acc, init)):
                if errs[name]:
                    continue
                data = src.data_to_send()
                if data:
                    dst.receive_data(data)
                dst.receive_data(b"")
                try:
                    drain(dst)
                except HandshakeError as e:
                    errs[name] = e
            return errs
    raise AssertionError("no error")


def test_wrong_cookie_detected_by_acceptor():
    errs = step_until_error(*pair(cookie_a="one", cookie_b="two"))
    assert (errs["acc"].step, errs["acc"].reason) == ("recv_challenge_reply", "bad_cookie")
    # OTP closes without an ack: the initiator sees the close at recv_challenge_ack
    assert (errs["init"].step, errs["init"].reason) == ("recv_challenge_ack", "closed")
    assert "cookie" in errs["init"].detail


def test_wrong_cookie_detected_by_initiator():
    # An acceptor that (wrongly) skips the check: the initiator's ack check must catch it.
    init, acc = pair(cookie_a="one", cookie_b="two")
    acc._cookie = b"one"  # acceptor verifies with "one" ...
    acc.receive_data(init.data_to_send())
    drain(acc)
    init.receive_data(acc.data_to_send())
    drain(init)
    acc.receive_data(init.data_to_send())
    drain(acc)
    # ... but acks with digest over "two"
    ack = acc.data_to_send()
    forged = ack[:3] + gen_digest(init._our_challenge, b"two")
    init.receive_data(forged)
    with pytest.raises(HandshakeError) as ei:
        init.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_challenge_ack", "bad_cookie")
    # stays failed
    with pytest.raises(HandshakeError):
        init.next_event()


def test_acceptor_refuses_missing_mandatory_flags(caplog):
    init, acc = pair(flags_a=DEFAULT_FLAGS & ~DistFlags.BIG_CREATION)
    acc.receive_data(init.data_to_send())
    with pytest.raises(HandshakeError) as ei:
        acc.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_name", "missing_flags")
    assert "BIG_CREATION" in ei.value.detail
    assert "BIG_CREATION" in caplog.text
    sent = acc.data_to_send()
    assert sent == b"\x00\x0csnot_allowed"
    init.receive_data(sent)
    with pytest.raises(HandshakeError) as ei:
        init.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_status", "not_allowed")


def test_initiator_refuses_missing_mandatory_flags():
    init, acc = pair(flags_b=DEFAULT_FLAGS & ~(DistFlags.MAP_TAG | DistFlags.UTF8_ATOMS))
    errs = step_until_error(init, acc)
    assert (errs["init"].step, errs["init"].reason) == ("recv_challenge", "missing_flags")
    assert "MAP_TAG" in errs["init"].detail and "UTF8_ATOMS" in errs["init"].detail
    assert errs["acc"].reason == "closed"


class Fixed(DefaultPolicy):
    def __init__(self, status="ok", alive_answer=True):
        self.status, self.alive_answer, self.asked = status, alive_answer, []

    def accept_pending(self, peer_name, peer_flags, peer_creation):
        self.asked.append((peer_name, peer_creation))
        return self.status

    def answer_alive(self, peer_name):
        self.asked.append(peer_name)
        return self.alive_answer


@pytest.mark.parametrize("status", ["nok", "not_allowed"])
def test_acceptor_policy_refuses(status):
    pol = Fixed(status)
    errs = step_until_error(*pair(policy_b=pol))
    assert pol.asked == [(A, 11)]
    assert (errs["acc"].step, errs["acc"].reason) == ("send_status", status)
    assert (errs["init"].step, errs["init"].reason) == ("recv_status", status)


def test_ok_simultaneous_continues():
    ev_i, ev_a = run(*pair(policy_b=Fixed("ok_simultaneous")))
    assert ev_i[0] == StatusReceived("ok_simultaneous")
    assert ev_a[0].status == "ok_simultaneous"
    assert isinstance(ev_i[-1], HandshakeComplete)


def test_alive_true_continues():
    pa = Fixed(alive_answer=True)
    ev_i, ev_a = run(*pair(policy_a=pa, policy_b=Fixed("alive")))
    assert pa.asked == [B]
    assert ev_i[0] == StatusReceived("alive", True)
    assert isinstance(ev_i[-1], HandshakeComplete) and isinstance(ev_a[-1], HandshakeComplete)


def test_alive_false_stops_both():
    errs = step_until_error(*pair(policy_a=Fixed(alive_answer=False), policy_b=Fixed("alive")))
    assert (errs["init"].step, errs["init"].reason) == ("recv_status", "alive")
    assert (errs["acc"].step, errs["acc"].reason) == ("recv_status", "alive_false")


def test_bad_policy_answer_is_local_error():
    init, acc = pair(policy_b=Fixed("maybe"))
    acc.receive_data(init.data_to_send())
    with pytest.raises(LocalProtocolError):
        acc.next_event()


def test_wrong_name_in_challenge():
    init = Handshake("initiator", A, "c", 1, peer_name="carol@localhost")
    acc = Handshake("acceptor", B, "c", 2)
    errs = step_until_error(init, acc)
    assert (errs["init"].step, errs["init"].reason) == ("recv_challenge", "wrong_name")


def test_v5_name_closes_without_status():
    acc = Handshake("acceptor", B, "c", 2)
    body = b"n" + struct.pack(">HI", 5, int(DEFAULT_FLAGS) & 0xFFFFFFFF) + A.encode()
    acc.receive_data(struct.pack(">H", len(body)) + body)
    with pytest.raises(HandshakeError) as ei:
        acc.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_name", "old_version")
    assert acc.data_to_send() == b""


def test_name_me_refused_cleanly():
    acc = Handshake("acceptor", B, "c", 2)
    host = b"localhost"
    body = b"N" + struct.pack(">QIH", int(DEFAULT_FLAGS | DistFlags.NAME_ME), 0, len(host)) + host
    acc.receive_data(struct.pack(">H", len(body)) + body)
    with pytest.raises(HandshakeError) as ei:
        acc.next_event()
    assert ei.value.reason == "name_me_unsupported"
    assert acc.data_to_send() == b"\x00\x0csnot_allowed"


@pytest.mark.parametrize("status", [b"sfoo", b"snamed:", b"xok"])
def test_unexpected_status(status):
    init = Handshake("initiator", A, "c", 1, peer_name=B)
    init.receive_data(struct.pack(">H", len(status)) + status)
    with pytest.raises(HandshakeError) as ei:
        init.next_event()
    assert ei.value.step == "recv_status"
    assert ei.value.reason in ("unexpected_status", "malformed")


@pytest.mark.parametrize(
    "packet, reason",
    [
        (b"\x00\x00", "malformed"),
        (b"\xff\xff", "oversized"),
        (struct.pack(">H", MAX_PACKET + 1), "oversized"),
        (b"\x00\x03N\x00\x00", "malformed"),
        (b"\x00\x01Q", "malformed"),
        (b"\x00\x11N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 1, 50) + b"ab", "malformed"),
        (b"\x00\x12N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 1, 3) + b"abc", "bad_node_name"),
        (b"\x00\x12N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 1, 3) + b"\xff@a", "bad_node_name"),
        (b"\x00\x12N" + struct.pack(">QIH", int(DEFAULT_FLAGS), 1, 3) + b"a@@", "bad_node_name"),
    ],
)
def test_malformed_name_packets(packet, reason):
    acc = Handshake("acceptor", B, "c", 2)
    acc.receive_data(packet)
    with pytest.raises(HandshakeError) as ei:
        acc.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_name", reason)


def test_truncated_stream_is_closed_error():
    init, acc = pair()
    data = init.data_to_send()
    acc.receive_data(data[:-3])
    assert acc.next_event() is NEED_DATA
    acc.receive_data(b"")
    with pytest.raises(HandshakeError) as ei:
        acc.next_event()
    assert (ei.value.step, ei.value.reason) == ("recv_name", "closed")


def test_timeout_names_the_step():
    init = Handshake("initiator", A, "c", 1, peer_name=B)
    err = init.timed_out()
    assert (err.step, err.reason) == ("recv_status", "timeout")
    with pytest.raises(HandshakeError):
        init.next_event()


def test_local_misuse():
    with pytest.raises(LocalProtocolError):
        Handshake("initiator", A, "c", 1)  # no peer_name
    with pytest.raises(LocalProtocolError):
        Handshake("both", A, "c", 1)
    with pytest.raises(LocalProtocolError):
        Handshake("acceptor", "nohost", "c", 1)
    with pytest.raises(LocalProtocolError):
        Handshake("acceptor", A, "c", 1 << 32)


def test_events_are_frozen():
    ev_i, _ = run(*pair())
    with pytest.raises(AttributeError):
        ev_i[-1].peer_name = "x"  # type: ignore[misc]


# -- hostile input: only HandshakeError escapes -------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["initiator", "acceptor"]), st.integers(1, 7))
def test_fuzz_only_handshake_errors(data, role, chunk):
    hs = Handshake(role, A, "c", 1, peer_name=B if role == "initiator" else None)
    try:
        for i in range(0, len(data), chunk):
            hs.receive_data(data[i : i + chunk])
            while hs.next_event() is not NEED_DATA:
                if hs.complete:
                    return
        hs.receive_data(b"")
        while hs.next_event() is not NEED_DATA:
            pass
    except HandshakeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_exchange(data):
    """Flip bytes in a real exchange: the receiving side raises HandshakeError or completes."""
    init, acc = pair()
    name_pkt = bytearray(init.data_to_send())
    i = data.draw(st.integers(0, len(name_pkt) - 1))
    name_pkt[i] = data.draw(st.integers(0, 255))
    acc.receive_data(bytes(name_pkt))
    try:
        drain(acc)
    except HandshakeError:
        return
    reply = bytearray(acc.data_to_send())
    if not reply:  # the mutated length asks for more bytes
        return
    j = data.draw(st.integers(0, len(reply) - 1))
    reply[j] = data.draw(st.integers(0, 255))
    init.receive_data(bytes(reply))
    try:
        drain(init)
    except HandshakeError:
        pass
