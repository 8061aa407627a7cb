"""The job rules against the shared vectors (docs/vectors/jobs.terms), and the header of
pynode/jobs/protocol.py against docs/JOBS_PROTOCOL.md. The Elixir suite reads the same vectors
(elixir/test/pynode/jobs_vectors_test.exs, mix_compat/test/job_vectors_test.exs)."""

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
    for key in ("result_ttl", "replicas", "replica_check", "host_jobs", "job_kinds", "max_jobs"):
        assert key in cfg, key
        assert cfg[key] == jobs.DEFAULTS[key], key


# -- run kinds ("Run kinds") ------------------------------------------------------------------
@pytest.mark.parametrize("vec", _of("run_initial"), ids=lambda v: repr(v)[:80])
def test_run_initial(vec: tuple[Any, ...]) -> None:
    _, args, expected = vec
    assert _same(protocol.run_initial(args), expected)


@pytest.mark.parametrize("vec", _of("run_backoff"), ids=repr)
def test_run_backoff(vec: tuple[Any, ...]) -> None:
    _, attempt, base, top, expected = vec
    assert protocol.run_backoff(attempt, base, top) == expected


@pytest.mark.parametrize("vec", _of("run_done"), ids=lambda v: repr(v)[:80])
def test_run_done(vec: tuple[Any, ...]) -> None:
    _, state, result, ttl, expected = vec
    assert _same(protocol.run_done(state, result, ttl), expected)


@pytest.mark.parametrize("vec", _of("run_error"), ids=lambda v: repr(v)[:80])
def test_run_error(vec: tuple[Any, ...]) -> None:
    _, state, error, max_attempts, base, top, ttl, expected = vec
    assert _same(protocol.run_error(state, error, max_attempts, base, top, ttl), expected)


@pytest.mark.parametrize("vec", _of("run_retry"), ids=lambda v: repr(v)[:80])
def test_run_retry(vec: tuple[Any, ...]) -> None:
    _, state, expected = vec
    assert _same(protocol.run_retry(state), expected)


@pytest.mark.parametrize("vec", _of("run_cancel"), ids=lambda v: repr(v)[:80])
def test_run_cancel(vec: tuple[Any, ...]) -> None:
    _, state, ttl, expected = vec
    assert _same(protocol.run_cancel(state, ttl), expected)


@pytest.mark.parametrize("vec", _of("run_status"), ids=lambda v: repr(v)[:80])
def test_run_status(vec: tuple[Any, ...]) -> None:
    _, state, node, expected = vec
    assert _same(protocol.run_status(state, node), expected)


@pytest.mark.parametrize("vec", _of("run_results"), ids=lambda v: repr(v)[:80])
def test_run_results(vec: tuple[Any, ...]) -> None:
    _, state, expected = vec
    assert _same(protocol.run_results(state), expected)


@pytest.mark.parametrize("vec", _of("run_elapse"), ids=lambda v: repr(v)[:80])
def test_run_elapse(vec: tuple[Any, ...]) -> None:
    _, state, ms, expected = vec
    assert _same(jobs.RunKind.elapse(state, ms), expected)


@pytest.mark.parametrize("vec", _of("run_merge"), ids=lambda v: repr(v)[:80])
def test_run_merge(vec: tuple[Any, ...]) -> None:
    _, mine, theirs, expected = vec
    assert _same(jobs.RunKind.merge(mine, theirs), expected)


# -- load ("Load") ----------------------------------------------------------------------------
@pytest.mark.parametrize("vec", _of("place"), ids=repr)
def test_place(vec: tuple[Any, ...]) -> None:
    _, candidates, n, expected = vec
    assert _same(protocol.place(candidates, n), expected)


@pytest.mark.parametrize("vec", _of("run_queue"), ids=lambda v: repr(v)[:80])
def test_run_queue(vec: tuple[Any, ...]) -> None:
    _, state, expected = vec
    assert _same(protocol.run_queue(state), expected)


@pytest.mark.parametrize("vec", _of("run_admit"), ids=lambda v: repr(v)[:80])
def test_run_admit(vec: tuple[Any, ...]) -> None:
    _, state, expected = vec
    assert _same(protocol.run_admit(state), expected)
