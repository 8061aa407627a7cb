"""What erl_interop's three machines and its errors share, and what its comments cite.

- one NEED_DATA, the same object from every module that exports it;
- one vocabulary: ``receive_data(bytes)`` (``b""`` is the end of input) and ``next_event()``
  returning an event or NEED_DATA, for the EPMD parsers, the handshake and the connection;
- one error taxonomy: every error is either the other end's fault (ProtocolError) or this
  side's (LocalProtocolError), never both;
- every ``docs/WIRE.md §N`` citation names a section that exists, and no citation of the
  old out-of-tree ``PROTOCOL.md`` is left.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

import erl_interop
from erl_interop import _events, codec, errors, handshake
from erl_interop import connection as connection_mod
from erl_interop.connection import ConnectionClosed, Connection
from erl_interop.epmd import proto
from erl_interop.flags import DEFAULT_FLAGS
from erl_interop.handshake import Handshake

ROOT = Path(__file__).resolve().parents[1]


# -- NEED_DATA ---------------------------------------------------------------------------------


def test_one_need_data():
    modules = (_events, handshake, connection_mod, proto, erl_interop, erl_interop.epmd)
    assert {id(m.NEED_DATA) for m in modules} == {id(_events.NEED_DATA)}
    assert handshake.NeedData is connection_mod.NeedData is proto.NeedData is _events.NeedData
    assert repr(_events.NEED_DATA) == str(_events.NEED_DATA) == "NEED_DATA"
    assert pickle.loads(pickle.dumps(_events.NEED_DATA)) is _events.NEED_DATA
    assert type(_events.NEED_DATA) is _events.NeedData  # pynode.dist tests it this way


# -- one vocabulary ----------------------------------------------------------------------------


def _machines():
    """(machine, the first byte of something it would accept)"""
    yield pytest.param(Handshake("acceptor", "py@localhost", "cookie", 1), b"\x00", id="Handshake")
    yield pytest.param(Connection(DEFAULT_FLAGS), b"\x00", id="Connection")
    yield pytest.param(proto.RequestParser(), b"\x00", id="RequestParser")
    yield pytest.param(proto.Alive2ResponseParser(), bytes([proto.ALIVE2_X_RESP]), id="Alive2ResponseParser")
    yield pytest.param(proto.Port2ResponseParser(), bytes([proto.PORT2_RESP]), id="Port2ResponseParser")
    yield pytest.param(proto.NamesResponseParser(), b"\x00", id="NamesResponseParser")


@pytest.mark.parametrize("machine, first", list(_machines()))
def test_every_machine_needs_data_then_ends_on_empty_bytes(machine, first):
    assert machine.next_event() is erl_interop.NEED_DATA
    machine.receive_data(first)  # the first byte of a packet
    assert machine.next_event() is erl_interop.NEED_DATA
    machine.receive_data(b"")  # end of input in the middle of a packet: the peer's fault
    with pytest.raises(errors.ProtocolError):
        machine.next_event()


def test_end_of_input_at_a_boundary():
    conn = Connection(DEFAULT_FLAGS)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    names = proto.NamesResponseParser()
    names.receive_data(b"\x00\x00\x11\x11")
    names.receive_data(b"")
    assert names.next_event() == proto.NamesResponse(4369, ())


@pytest.mark.parametrize("machine", [Connection(DEFAULT_FLAGS), proto.RequestParser(), proto.Port2ResponseParser()])
def test_bytes_after_the_end_of_input_are_a_local_error(machine):
    machine.receive_data(b"")
    with pytest.raises(errors.LocalProtocolError):
        machine.receive_data(b"\x00")


# -- one taxonomy ------------------------------------------------------------------------------


def test_every_error_is_one_side_or_the_other():
    classes = [getattr(errors, n) for n in errors.__all__]
    assert set(erl_interop.__all__) >= set(errors.__all__)
    for cls in classes:
        if cls in (errors.ErlInteropError, errors.ProtocolError, errors.LocalProtocolError):
            continue
        remote = issubclass(cls, errors.ProtocolError)
        local = issubclass(cls, errors.LocalProtocolError)
        assert remote != local, cls
    assert issubclass(errors.DecodeError, errors.ProtocolError) and issubclass(errors.DecodeError, ValueError)
    assert issubclass(errors.EpmdError, errors.ProtocolError)
    assert issubclass(errors.EncodeError, errors.LocalProtocolError) and issubclass(errors.EncodeError, TypeError)
    assert issubclass(errors.EpmdLocalError, errors.LocalProtocolError)
    assert not issubclass(errors.EpmdLocalError, errors.EpmdError)


@pytest.mark.parametrize("data", [b"\x83", b"\x83\x61", b"\x83\x75", b"\x84"])
def test_decode_errors_are_value_errors_and_protocol_errors(data):
    for catch in (ValueError, errors.ProtocolError, errors.DecodeError):
        with pytest.raises(catch):
            codec.decode(data)


def test_encode_errors_are_type_errors_and_local_errors():
    for catch in (TypeError, errors.LocalProtocolError, errors.EncodeError):
        with pytest.raises(catch):
            codec.encode(object())


# -- citations ---------------------------------------------------------------------------------

_CITED = re.compile(r"docs/WIRE\.md §(\d+(?:\.\d+)?)")
_OLD = re.compile(r"(?<![A-Z_])PROTOCOL\.md §")
_SOURCES = [
    *sorted((ROOT / "erl_interop").rglob("*.py")),
    *sorted((ROOT / "erl_interop").rglob("*.pyi")),
    *sorted((ROOT / "erl_interop").rglob("*.c")),
    *sorted((ROOT / "pynode").rglob("*.py")),
    *sorted((ROOT / "tests").glob("*.py")),
]


def _sections() -> set[str]:
    found = set()
    for line in (ROOT / "docs" / "WIRE.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{2,3} (\d+(?:\.\d+)?)\.? ", line)
        if m:
            found.add(m.group(1))
    return found


def test_every_wire_citation_names_a_section():
    sections = _sections()
    assert {"1", "1.1", "2", "2.7", "3.4", "4.2", "5.3", "6.3"} <= sections
    cited = 0
    for path in _SOURCES:
        text = path.read_text(encoding="utf-8")
        for m in _CITED.finditer(text):
            cited += 1
            line = text.count("\n", 0, m.start()) + 1
            assert m.group(1) in sections, f"{path.relative_to(ROOT)}:{line} cites §{m.group(1)}, not in docs/WIRE.md"
        assert not _OLD.search(text), f"{path.relative_to(ROOT)} still cites PROTOCOL.md, which a clone does not have"
    assert cited > 30
