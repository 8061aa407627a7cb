"""The job rules against the shared vectors (docs/vectors/jobs.terms), and the header of
pynode/jobs/protocol.py against docs/JOBS_PROTOCOL.md. The Elixir suite reads the same vectors
(mix_compat/test/pynode/jobs_vectors_test.exs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from erl_interop import encode
from erl_interop.terms import Atom
from pynode import jobs
from pynode.jobs import protocol
from pynode.config import parse_terms

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "docs" / "vectors" / "jobs.terms"
TERMS = parse_terms(VECTORS.read_text(encoding="utf-8"))


def _of(tag: str) -> list[tuple[Any, ...]]:
    out = [t for t in TERMS if isinstance(t, tuple) and t[0] == Atom(tag)]
    assert out, f"no {tag} vectors in {VECTORS}"
    return out


def _same(a: Any, b: Any) -> bool:
    return encode(a) == encode(b)  # exact term equality (=:=)


def test_defaults_vector() -> None:
    (vec,) = _of("defaults")
    expected = {str(k): v for k, v in vec[1].items()}
    assert expected == jobs.DEFAULTS


@pytest.mark.parametrize("vec", _of("replica_targets"), ids=repr)
def test_replica_targets(vec: tuple[Any, ...]) -> None:
    _, hosts, owner, n, expected = vec
    assert jobs.replica_targets(hosts, owner, n) == expected


@pytest.mark.parametrize("vec", _of("adopts"), ids=repr)
def test_adopts(vec: tuple[Any, ...]) -> None:
    _, me, replicas, alive, expected = vec
    assert jobs.adopts(me, replicas, alive) is expected


@pytest.mark.parametrize("vec", _of("retryable"), ids=repr)
def test_retryable(vec: tuple[Any, ...]) -> None:
    _, reason, expected = vec
    assert jobs.retryable(reason) is expected


@pytest.mark.parametrize("vec", _of("elapse"), ids=repr)
def test_elapse(vec: tuple[Any, ...]) -> None:
    _, kind, state, ms, expected = vec
    assert _same(jobs.kinds()[kind].elapse(state, ms), expected)


@pytest.mark.parametrize("vec", _of("merge"), ids=lambda v: repr(v)[:80])
def test_merge(vec: tuple[Any, ...]) -> None:
    _, mine, theirs, expected = vec
    kind = jobs.kinds()[mine[Atom("kind")]]
    assert _same(kind.merge(mine, theirs), expected)


@pytest.mark.parametrize("vec", _of("recent_merge"), ids=repr)
def test_recent_merge(vec: tuple[Any, ...]) -> None:
    _, mine, theirs, expected_recent, expected_seq = vec
    recent, seq = jobs.merge_recent(mine, theirs)
    assert _same(recent, expected_recent)
    assert seq == expected_seq


def test_module_header_repeats_the_protocol_doc_verbatim() -> None:
    doc = (ROOT / "docs" / "JOBS_PROTOCOL.md").read_text().rstrip("\n")
    header = protocol.__doc__ or ""
    begin, end = "--- BEGIN docs/JOBS_PROTOCOL.md ---\n", "\n--- END docs/JOBS_PROTOCOL.md ---"
    assert begin in header and end in header
    assert header.split(begin, 1)[1].split(end, 1)[0] == doc


def test_sys_config_documents_every_job_key() -> None:
    from pynode.config import load_config

    cfg = load_config(str(ROOT / "mix_compat" / "sys.config"))
    for key in ("result_ttl", "replicas", "replica_check", "host_jobs", "job_kinds"):
        assert key in cfg, key
        assert cfg[key] == jobs.DEFAULTS[key], key
