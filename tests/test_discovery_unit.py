"""The discovery rules against the shared vectors (docs/vectors/discovery.terms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from erl_interop.errors import HandshakeError
from erl_interop.terms import Atom
from pynode import discovery
from pynode.config import parse_terms
from pynode.discovery import Retry, candidates, classify, host_list, text

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "vectors" / "discovery.terms"
TERMS = parse_terms(VECTORS.read_text(encoding="utf-8"))


def _of(tag: str) -> list[tuple[Any, ...]]:
    out = [t for t in TERMS if isinstance(t, tuple) and t[0] == Atom(tag)]
    assert out, f"no {tag} vectors in {VECTORS}"
    return out


def _m(d: dict[Any, Any], key: str) -> Any:
    return d[Atom(key)]


@pytest.mark.parametrize("vec", _of("host_list"), ids=lambda v: repr(v[1])[:60])
def test_host_list_vectors(vec: tuple[Any, ...]) -> None:
    _, inp, expected = vec
    got = host_list(_m(inp, "own"), _m(inp, "hosts"), _m(inp, "file"))
    assert got == [text(e) for e in expected]


@pytest.mark.parametrize("vec", _of("candidates"), ids=lambda v: str(v[1][Atom("self")]))
def test_candidate_vectors(vec: tuple[Any, ...]) -> None:
    _, inp, expected = vec
    dns = _m(inp, "dns")
    got = candidates(
        _m(inp, "self"),
        _m(inp, "connected"),
        _m(inp, "connect"),
        _m(inp, "hosts"),
        [(h, names) for h, names in _m(inp, "epmd")],
        None if dns == Atom("undefined") else dns,
    )
    assert got == expected
    assert all(type(a) is Atom for a in got)


@pytest.mark.parametrize("vec", _of("retry"), ids=lambda v: f"poll{v[1]}-{len(v[2])}steps")
def test_retry_vectors(vec: tuple[Any, ...]) -> None:
    _, poll, steps = vec
    rec = None
    for i, (time, event, due) in enumerate(steps):
        rec = Retry.record(rec, time, event, poll)
        assert rec.due == due, f"step {i} {event!r} at {time}: due {rec.due}, expected {due}"


def test_vectors_cover_every_outcome() -> None:
    seen = {e for _, _, steps in _of("retry") for _, e, _ in steps if isinstance(e, Atom)}
    assert seen == {discovery.OK, discovery.UNREACHABLE, discovery.REFUSED, discovery.NO_REGISTRY}


def test_classify() -> None:
    assert classify(HandshakeError("port_please", "not_registered")) == discovery.UNREACHABLE
    assert classify(HandshakeError("connect", "timeout")) == discovery.UNREACHABLE
    assert classify(ConnectionRefusedError()) == discovery.UNREACHABLE
    assert classify(None) == discovery.UNREACHABLE
    assert classify(HandshakeError("recv_challenge_ack", "closed")) == discovery.REFUSED
    assert classify(HandshakeError("recv_status", "not_allowed")) == discovery.REFUSED


def test_unknown_event_is_an_error() -> None:
    with pytest.raises(ValueError):
        Retry.record(None, 0, Atom("maybe"), 1000)


def test_defaults_match_sys_config() -> None:
    """The shipped configuration documents the discovery keys with these defaults."""
    from pynode.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parent.parent / "mix_compat" / "sys.config"))
    for key, default in discovery.DEFAULTS.items():
        assert key in cfg, f"sys.config does not set {key}"
        assert cfg[key] == default, (key, cfg[key], default)
