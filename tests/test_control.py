"""Control messages (docs/WIRE.md §4): every OTP 25 tag round-trips exactly, malformed tuples
raise DistProtocolError naming the tag, unknown tags become UnknownControl."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erl_interop import codec
from erl_interop import control as C
from erl_interop.control import MISSING, UnknownControl, from_terms
from erl_interop.errors import DistProtocolError
from erl_interop.terms import Atom, ImproperList, Pid, Reference

A = Pid(Atom("a@localhost"), 85, 0, 1700000001)
B = Pid(Atom("py@localhost"), 1, 0, 7)
REF = Reference(Atom("a@localhost"), 1700000001, (1, 2, 3))
TOKEN = (0, Atom("label"), 1, A, 0)
E = Atom("")

#: One wire example per OTP 25 tag: (control tuple, payload or MISSING).
SAMPLES: dict[int, tuple[tuple[Any, ...], Any]] = {
    1: ((1, A, B), MISSING),
    2: ((2, E, B), (Atom("hello"), [1, 2])),
    3: ((3, A, B, Atom("normal")), MISSING),
    4: ((4, A, B), MISSING),
    5: ((5,), MISSING),
    6: ((6, A, E, Atom("net_kernel")), {b"k": b"v"}),
    7: ((7, A, B), MISSING),
    8: ((8, A, B, (Atom("shutdown"), 1)), MISSING),
    12: ((12, E, B, TOKEN), None),
    13: ((13, A, B, TOKEN, Atom("killed")), MISSING),
    16: ((16, A, E, Atom("rex"), TOKEN), [Atom("x")]),
    18: ((18, A, B, TOKEN, Atom("kill")), MISSING),
    19: ((19, A, Atom("net_kernel"), REF), MISSING),
    20: ((20, A, B, REF), MISSING),
    21: ((21, Atom("reg"), B, REF, Atom("noproc")), MISSING),
    22: ((22, A, B), b"payload"),
    23: ((23, A, B, TOKEN), 3.5),
    24: ((24, A, B), Atom("normal")),
    25: ((25, A, B, TOKEN), Atom("normal")),
    26: ((26, A, B), Atom("kill")),
    27: ((27, A, B, TOKEN), Atom("kill")),
    28: ((28, A, B, REF), (REF, Atom("return"), 42)),
    29: ((29, REF, A, A, (Atom("erpc"), Atom("execute_call"), 4), [Atom("monitor")]), [REF, Atom("m"), Atom("f"), []]),
    30: ((30, REF, A, A, (Atom("erpc"), Atom("execute_cast"), 3), [], TOKEN), [Atom("m"), Atom("f"), []]),
    31: ((31, REF, B, 2, A), MISSING),
    32: ((32, REF, B, 0, Atom("badopt"), TOKEN), MISSING),
    33: ((33, A, REF), (ImproperList((Atom("alias"),), REF), Atom("yes"))),
    34: ((34, A, REF, TOKEN), Atom("yes")),
    35: ((35, 7, A, B), MISSING),
    36: ((36, 7, B, A), MISSING),
}

UNUSED_TAGS = [9, 10, 11, 14, 15, 17]


def test_every_otp25_tag_has_a_class() -> None:
    assert sorted(C.CONTROL_CLASSES) == sorted(SAMPLES)
    assert len(SAMPLES) == 30
    for tag, cls in C.CONTROL_CLASSES.items():
        assert cls.TAG == tag
        assert cls.__name__ in C.__all__


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_round_trip_exact(tag: int) -> None:
    control, payload = SAMPLES[tag]
    msg = from_terms(control, payload)
    assert type(msg) is C.CONTROL_CLASSES[tag]
    assert msg.to_terms() == (control, payload)
    # and through the wire format
    c2 = codec.decode(codec.encode(control))
    assert from_terms(c2, payload) == msg
    # frozen and slotted
    for name in C.CONTROL_CLASSES[tag].__dataclass_fields__:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, name, 1)
    assert not hasattr(msg, "__dict__")
    if C.CONTROL_CLASSES[tag].PAYLOAD is not None:
        assert getattr(msg, C.CONTROL_CLASSES[tag].PAYLOAD) == payload


def test_typed_fields_and_constructors() -> None:
    m = C.SendSender(A, B, Atom("hi"))
    assert (m.from_pid, m.to_pid, m.message) == (A, B, "hi")
    assert m.to_terms() == ((22, A, B), Atom("hi"))
    assert C.Send(B, 1).to_terms() == ((2, E, B), 1)
    assert "unused" not in repr(C.Send(B, 1))
    assert C.RegSend(A, Atom("rex"), 1).to_terms() == ((6, A, E, Atom("rex")), 1)
    sr = from_terms(*SAMPLES[29])
    assert isinstance(sr, C.SpawnRequest)
    assert sr.mfa == ("erpc", "execute_call", 4) and sr.args[0] == REF and sr.opts == ["monitor"]
    dn = from_terms(*SAMPLES[21])
    assert isinstance(dn, C.MonitorPExit) and dn.from_proc == "reg" and dn.reason == "noproc"
    assert from_terms(*SAMPLES[36]).from_pid == B


def test_nil_payload_is_not_missing() -> None:
    m = from_terms((22, A, B), None)  # the atom nil
    assert m.message is None
    assert m.to_terms() == ((22, A, B), None)
    with pytest.raises(DistProtocolError, match="payload term is missing"):
        from_terms((22, A, B))
    assert repr(MISSING) == "MISSING"


@pytest.mark.parametrize("tag", UNUSED_TAGS + [37, 99, 0, -1, 2**70])
def test_unknown_tags_are_values(tag: int) -> None:
    m = from_terms((tag, A, B), b"x")
    assert m == UnknownControl(tag, (tag, A, B), b"x")
    assert m.to_terms() == ((tag, A, B), b"x")
    assert from_terms((tag,)).to_terms() == ((tag,), MISSING)


@pytest.mark.parametrize(
    "control, payload, match",
    [
        ((1, A), MISSING, r"LINK \(1\).*2 elements"),
        ((1, A, B, B), MISSING, r"LINK \(1\).*4 elements"),
        ((1, A, B), 5, r"LINK \(1\).*unexpected payload"),
        ((22, A, B), MISSING, r"SEND_SENDER \(22\).*payload term is missing"),
        ((22, A, Atom("x")), 1, r"SEND_SENDER \(22\).*to_pid"),
        ((6, A, E, 5), 1, r"REG_SEND \(6\).*to_name"),
        ((19, A, B, 5), MISSING, r"MONITOR_P \(19\).*ref"),
        ((33, A, B), 1, r"ALIAS_SEND \(33\).*alias"),
        ((29, REF, A, A, (Atom("m"), Atom("f")), []), [], r"SPAWN_REQUEST \(29\).*M, F, Arity"),
        ((29, REF, A, A, (Atom("m"), Atom("f"), 1), Atom("x")), [], r"SPAWN_REQUEST \(29\).*opts"),
        ((31, REF, B, True, A), MISSING, r"SPAWN_REPLY \(31\).*flags"),
        ((35, Atom("x"), A, B), MISSING, r"UNLINK_ID \(35\).*id"),
        ((5, 1), MISSING, r"NODE_LINK \(5\)"),
    ],
)
def test_malformed_names_the_tag(control: Any, payload: Any, match: str) -> None:
    with pytest.raises(DistProtocolError, match=match):
        from_terms(control, payload)


@pytest.mark.parametrize("control", [[22, A, B], (), (True, A, B), (Atom("send"), A), "x", None, 22, (1.0, A, B)])
def test_not_a_control_tuple(control: Any) -> None:
    with pytest.raises(DistProtocolError, match="control message"):
        from_terms(control, 1)


def test_registered_name_true_is_accepted() -> None:
    # true/false/nil decode to bool/None but are atoms on the wire
    assert from_terms((6, A, E, True), 1).to_name is True


_terms = st.recursive(
    st.one_of(st.integers(-5, 40), st.booleans(), st.none(), st.binary(max_size=3), st.sampled_from([A, B, REF, Atom("a"), E])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=7).map(tuple)),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(control=_terms, payload=st.one_of(st.just(MISSING), _terms))
def test_only_dist_protocol_error_escapes(control: Any, payload: Any) -> None:
    try:
        m = from_terms(control, payload)
    except DistProtocolError:
        return
    assert m.to_terms() == (control, payload)
