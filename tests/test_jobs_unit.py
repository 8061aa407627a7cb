"""Unit tests of pynode.jobs: placement rules, kinds, portable shapes, replica bookkeeping,
client retry rules, CLI formatting. No network here (see test_jobs_py_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from erl_interop import decode, encode
from erl_interop.terms import Atom, Pid, Reference
from pynode import jobs
from pynode.jobs import (
    JobError,
    JobHost,
    JobKind,
    OtpJob,
    Reply,
    SimpleJob,
    adopts,
    format_term,
    job_key,
    job_kind,
    replica_targets,
    results_binary,
    retryable,
)
from pynode.jobs.client import _unwrap

A = Atom


# -- placement --------------------------------------------------------------------------------
def test_replica_targets_are_the_next_hosts_after_the_owner_wrapping():
    hosts = ["n3@h", "n1@h", "n2@h", "n4@h"]
    assert replica_targets(hosts, "n2@h", 1) == ["n3@h"]
    assert replica_targets(hosts, "n2@h", 2) == ["n3@h", "n4@h"]
    assert replica_targets(hosts, "n4@h", 2) == ["n1@h", "n2@h"]  # wraps around
    assert replica_targets(hosts, "n2@h", 9) == ["n3@h", "n4@h", "n1@h"]  # never the owner
    assert replica_targets(["n1@h"], "n1@h", 1) == []  # no other host: nothing to replicate to
    assert replica_targets(hosts, "n2@h", 0) == []
    # an owner that is not (or no longer) a host: the next ones after its name
    assert replica_targets(["a@h", "c@h"], "b@h", 1) == ["c@h"]
    assert replica_targets(["a@h", "c@h"], "d@h", 1) == ["a@h"]


def test_node_order_is_bytewise_utf8_like_atoms():
    # Erlang compares atoms by text; 'Z' (0x5a) < 'a' (0x61); 'é' sorts after 'z'
    assert replica_targets(["a@h", "Z@h", "\u00e9@h"], "y@h", 3) == ["\u00e9@h", "Z@h", "a@h"]
    assert adopts("Z@h", ["b@h", "Z@h"], {"b@h"})
    assert not adopts("b@h", ["b@h", "Z@h"], {"Z@h"})


def test_adopter_is_first_surviving_holder_in_term_order():
    assert adopts("n2@h", ["n2@h"], set())
    assert not adopts("n3@h", ["n2@h", "n3@h"], {"n2@h"})  # n2 is alive: it adopts
    assert adopts("n3@h", ["n2@h", "n3@h"], set())  # n2 died too
    assert adopts("n2@h", ["n2@h", "n3@h"], {"n3@h"})
    # a holder missing from Replicas (a stale copy) adopts only when no named holder survives
    assert adopts("n1@h", ["n5@h"], set())
    assert not adopts("n1@h", ["n5@h"], {"n5@h"})


def test_job_key_and_host_key_shapes():
    assert job_key(7) == (A("n"), A("g"), (A("pynode_job"), 7))
    assert jobs.HOST_KEY == (A("p"), A("g"), A("pynode_job_host"))
    # a str id and the binary a peer sends are one job
    assert jobs.key_bytes(job_key("x")) == jobs.key_bytes(job_key(b"x"))
    assert jobs.key_bytes(job_key(1)) != jobs.key_bytes(job_key(1.0))


# -- kinds ------------------------------------------------------------------------------------
class FakeCtx:
    """A JobContext stand-in with a hand-driven clock and recorded timers."""

    def __init__(self, job_id: Any, **config: Any) -> None:
        self.id = job_id
        self.t = 100.0
        self.timers: list[tuple[float, Any]] = []
        self.conf = dict(jobs.DEFAULTS, **config)

    def config(self, key: str) -> Any:
        return self.conf[key]

    def start_timer(self, ms: float, tag: Any) -> None:
        self.timers.append((ms, tag))

    def now(self) -> float:
        return self.t


def test_builtin_kinds_are_registered_under_their_protocol_atoms():
    ks = jobs.kinds()
    assert ks[A("Job")] is SimpleJob and ks[A("Job.Otp")] is OtpJob


def test_job_kind_state_is_a_list_newest_first():
    k = SimpleJob(FakeCtx(b"j"))  # type: ignore[arg-type]
    k.init([])
    assert k.portable() == [b"j"]
    r = k.handle((A("update"), A("e1")))
    assert r == Reply(A("ok"), changed=True)
    k.handle((A("update"), 2))
    assert k.portable() == [2, A("e1"), b"j"]
    assert k.handle(A("finish")) == Reply([2, A("e1"), b"j"], stop=True)
    with pytest.raises(JobError):
        k.handle(A("check_results"))
    with pytest.raises(JobError):
        k.handle(b"finish")  # a binary is not the atom
    k.restore([A("x"), b"j"])
    assert k.portable() == [A("x"), b"j"]
    with pytest.raises(ValueError):
        k.restore({A("id"): 1})


def test_otp_kind_work_results_ttl_as_remaining_ms():
    ctx = FakeCtx(42, work_ms=2000, result_ttl=600_000)
    k = OtpJob(ctx)  # type: ignore[arg-type]
    k.init([])
    assert ctx.timers == [(2000.0, A("work_done"))]
    st = k.portable()
    assert st == {A("id"): 42, A("results"): None, A("work_left_ms"): 2000, A("ttl_left_ms"): None}
    ctx.t += 0.5
    assert k.portable()[A("work_left_ms")] == 1500
    assert k.handle(A("check_results")) == Reply(None)
    assert k.handle_timer(A("work_done")) == Reply(changed=True)
    assert k.handle(A("check_results")) == Reply(b"results of 42")
    ctx.t += 1.0
    st = k.portable()
    assert st == {A("id"): 42, A("results"): b"results of 42", A("work_left_ms"): None, A("ttl_left_ms"): 599_000}
    assert k.handle_timer(A("ttl")) == Reply(stop=True)
    # the encoded map is the doc's: atom keys, nil for missing values
    assert decode(encode(st)) == st


def test_otp_kind_restore_resumes_from_remaining_durations():
    ctx = FakeCtx(b"o", work_ms=2000, result_ttl=600_000)
    k = OtpJob(ctx)  # type: ignore[arg-type]
    k.restore({A("id"): b"o", A("results"): None, A("work_left_ms"): 700, A("ttl_left_ms"): None})
    assert ctx.timers == [(700.0, A("work_done"))]
    ctx.timers.clear()
    k.restore({A("id"): b"o", A("results"): b"results of o", A("work_left_ms"): None, A("ttl_left_ms"): 1234})
    assert ctx.timers == [(1234.0, A("ttl"))]
    assert k.portable()[A("ttl_left_ms")] == 1234
    with pytest.raises(ValueError):
        k.restore([b"o"])


def test_results_binary_for_each_id_type():
    assert results_binary(b"abc") == b"results of abc"
    assert results_binary("abc") == b"results of abc"
    assert results_binary(17) == b"results of 17"
    assert results_binary(-3) == b"results of -3"
    assert results_binary(A("ok")) == b"results of ok"


def test_custom_kind_decorator():
    @job_kind("unit_test_kind")
    class K(JobKind):
        def init(self, args: list[Any]) -> None:
            self.state = {A("n"): len(args)}

    assert jobs.kinds()[A("unit_test_kind")] is K and K.name == A("unit_test_kind")
    k = K(FakeCtx(1))  # type: ignore[arg-type]
    k.init([1, 2])
    assert k.portable() == {A("n"): 2}
    with pytest.raises(JobError) as e:
        k.handle(A("anything"))
    assert e.value.reason == (A("unknown_request"), A("anything"))
    with pytest.raises(TypeError):
        job_kind("bad")(object)  # type: ignore[arg-type]


# -- replica bookkeeping on a host (no network: a stand-in process) ------------------------------
class FakeProc:
    def __init__(self) -> None:
        self.monitored: dict[Reference, Any] = {}
        self.n = 0

    def monitor(self, target: Any) -> Reference:
        self.n += 1
        ref = Reference(A("me@h"), 1, (self.n, 0, 0))
        self.monitored[ref] = target
        return ref

    def demonitor(self, ref: Reference, flush: bool = False) -> None:
        self.monitored.pop(ref, None)


def _host() -> JobHost:
    h = JobHost()
    h.process = FakeProc()  # type: ignore[assignment]
    h.replicas, h._owner_mons, h._owner_refs, h.orphans = {}, {}, {}, set()
    h._by_owner = {}
    h.closed = True  # no adoption from these tests
    return h


def pid(node: str, i: int) -> Pid:
    return Pid(A(node), i, 0, 1)


def test_replica_higher_seq_or_new_owner_replaces_and_owner_is_monitored_once():
    h = _host()
    o1, o2 = pid("a@h", 1), pid("b@h", 2)
    assert h._store_replica(b"j", A("Job"), {"v": 1}, 3, o1, [A("c@h")]) == A("ok")
    assert h._store_replica(b"k", A("Job"), {"v": 1}, 1, o1, [A("c@h")]) == A("ok")
    assert list(h.process.monitored.values()) == [o1]  # one monitor per owner
    kb = jobs.key_bytes(b"j")
    assert h._store_replica(b"j", A("Job"), {"v": 0}, 2, o1, []) == A("ok")  # older: acked, ignored
    assert h.replicas[kb].portable == {"v": 1} and h.replicas[kb].seq == 3
    assert h._store_replica("j", A("Job"), {"v": 2}, 4, o1, []) == A("ok")  # str id = same job
    assert h.replicas[kb].portable == {"v": 2}
    assert h._store_replica(b"j", A("Job"), {"v": 9}, 1, o2, []) == A("ok")  # new owner, lower seq
    assert h.replicas[kb].owner == o2 and h.replicas[kb].seq == 1
    assert sorted(map(str, h.process.monitored.values())) == sorted(map(str, [o1, o2]))
    assert h._store_replica(b"j", A("Job"), {}, "x", o2, []) == (A("error"), A("badarg"))


def test_replica_owner_down_drops_unless_replaced_and_noconnection_keeps_orphan():
    h = _host()
    o1, o2 = pid("a@h", 1), pid("b@h", 2)
    h._store_replica(b"j", A("Job"), {}, 1, o1, [])
    h._store_replica(b"k", A("Job"), {}, 1, o1, [])
    h._store_replica(b"k", A("Job"), {}, 1, o2, [])  # replaced by a new owner (handoff)
    h._owner_down(o1, A("normal"))
    assert list(h.replicas) == [jobs.key_bytes(b"k")]  # j dropped, k kept for o2
    h._owner_down(o2, A("noconnection"))
    assert list(h.replicas) == [jobs.key_bytes(b"k")] and h.orphans == {jobs.key_bytes(b"k")}


def test_drop_replica_cast_only_for_the_named_owner():
    import asyncio

    h = _host()
    o1, o2 = pid("a@h", 1), pid("b@h", 2)
    h._store_replica(b"j", A("Job"), {}, 1, o1, [])
    asyncio.run(h.handle_cast((A("drop_replica"), b"j", o2)))
    assert h.replicas
    asyncio.run(h.handle_cast((A("drop_replica"), b"j", o1)))
    assert not h.replicas and not h.process.monitored


# -- client rules -------------------------------------------------------------------------------
def test_retryable_exit_reasons():
    for r in ("noproc", "normal", "shutdown", "noconnection", "nodedown", "killed", "timeout"):
        assert retryable(A(r))
    assert retryable((A("name_conflict"), job_key(1), pid("a@h", 1)))
    assert retryable((A("noproc"), (A("gen_server"), A("call"), [])))
    assert not retryable(A("badarg"))
    assert not retryable((A("python_error"), b"ValueError", b"x"))
    assert not retryable(b"normal")


def test_unwrap_and_defaults():
    assert _unwrap((A("ok"), [1])) == [1]
    assert _unwrap((A("error"), A("no_such_job"))) == (A("error"), A("no_such_job"))
    assert _unwrap((A("error"), A("no_such_job")), missing=None) is None
    assert _unwrap((A("error"), A("timeout"))) == (A("error"), A("timeout"))
    d = jobs.DEFAULTS
    assert (d["work_ms"], d["result_ttl"], d["replicas"], d["job_timeout"], d["missing_grace"]) == (2000, 600_000, 1, 15_000, 3_000)
    assert (jobs.BACKOFF_FIRST, jobs.BACKOFF_MAX, jobs.RECENT_MAX) == (0.010, 0.200, 64)


def test_wire_normalizes_like_a_peer():
    assert jobs.wire(("a", [A("x")], 1)) == (b"a", [A("x")], 1)


def test_format_term_like_elixir_inspect():
    assert format_term(A("ok")) == ":ok"
    assert format_term((A("error"), A("no_such_job"))) == "{:error, :no_such_job}"
    assert format_term(A("Job.Otp")) == ':"Job.Otp"'
    assert format_term(A("Elixir.Job")) == "Job"
    assert format_term([A("update"), 1]) == "[:update, 1]"
    assert format_term(b"results of 1") == '"results of 1"'
    assert format_term(b"\xff") == "<<255>>"
    assert format_term(None) == "nil"
    assert format_term(pid("n1@localhost", 5)) == "#PID<n1@localhost.5.0>"
    assert format_term({A("a"): 1}) == "%{a: 1}"
    assert format_term({A("b"): 2, A("a b"): 1}) == '%{"a b": 1, b: 2}'  # as iex
    assert format_term({A("Elixir.X"): 3, A("b"): 2}) == "%{X => 3, :b => 2}"
    assert format_term({1: A("x")}) == "%{1 => :x}"
