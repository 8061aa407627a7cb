"""The BEAM side of the codec benchmark: builds the corpus on a real ``erl`` node and times
``binary_to_term/1`` and ``term_to_binary/2`` there, in compiled code.

Theory of operation: :func:`start` starts an ``erl`` peer (:class:`pynode.testing.BeamNode`),
writes :data:`MODULE_SOURCE` to a temporary directory and compiles and loads it on the peer
(``erl_eval`` would time the interpreter, not the BIFs). ``corpus/0`` generates every corpus
term on the peer, keeps the terms in ``persistent_term`` (so the timing later runs on exactly
the same terms) and returns ``[{Name, term_to_binary(T, [{minor_version, 2}])}]``: the pids
and references in it are real OTP 25 ``NEW_PID_EXT`` / ``NEWER_REFERENCE_EXT`` of a
distributed node. ``bench/4`` then times each term the way ``timeit`` does in Python: a loop
length is calibrated until one run lasts about the target time, the run is repeated and the
fastest run counts.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from pynode.testing import BeamNode, unique_name

__all__ = ["MODULE_SOURCE", "Beam", "start"]

MODULE_SOURCE = r"""
-module(pynode_codec_bench).
-export([corpus/0, bench/4, otp_release/0]).

otp_release() -> list_to_binary(erlang:system_info(otp_release)).

%% The corpus: what a node sends and receives most. Each term is built here, so the pids
%% and references are the BEAM's own.
corpus() ->
    Self = self(),
    Peer = spawn(fun() -> receive stop -> ok end end),
    %% gen:do_call/4 (OTP 25): monitor with an alias, tag [alias | Mref].
    Mref = erlang:monitor(process, Peer, [{alias, demonitor}]),
    Ref = make_ref(),
    Terms = [
        {ctrl_reg_send, {6, Self, '', net_kernel}},
        {ctrl_monitor, {19, Self, Peer, Ref}},
        {gen_call, {'$gen_call', {Self, [alias | Mref]}, {lookup, user_cache, <<"user:42">>}}},
        {map_10_binaries,
            maps:from_list([{list_to_atom("field" ++ integer_to_list(I)),
                             list_to_binary(lists:duplicate(32, $a + I))}
                            || I <- lists:seq(1, 10)])},
        {list_100_tuples, [{item, I, I * 1000} || I <- lists:seq(1, 100)]},
        {binary_1k, rand:bytes(1024)},
        {pid, Self},
        {ref, Ref}
    ],
    persistent_term:put(?MODULE, Terms),
    [{Name, term_to_binary(T, [{minor_version, 2}])} || {Name, T} <- Terms].

%% [{Name, {DecodeLoops, DecodeBestMicros}, {EncodeLoops, EncodeBestMicros}}]
%% Clock: wall (timer:tc) or cpu (statistics(runtime): the VM's CPU time, in ms; the node
%% runs one scheduler without busy waiting, so that is the loop's own time).
bench(Clock, TargetUs, Repeat, Names) ->
    Terms = persistent_term:get(?MODULE),
    [begin
         {Name, T} = lists:keyfind(Name, 1, Terms),
         Bin = term_to_binary(T, [{minor_version, 2}]),
         {Name, run(Clock, fun dec_loop/3, Bin, TargetUs, Repeat),
                run(Clock, fun enc_loop/3, T, TargetUs, Repeat)}
     end || Name <- Names].

run(Clock, Loop, Arg, TargetUs, Repeat) ->
    N = calibrate(Clock, Loop, Arg, 1, TargetUs),
    Times = [tc(Clock, fun() -> Loop(N, Arg, ok) end) || _ <- lists:seq(1, Repeat)],
    {N, lists:min(Times)}.

calibrate(Clock, Loop, Arg, N, TargetUs) ->
    T = tc(Clock, fun() -> Loop(N, Arg, ok) end),
    if
        T >= TargetUs div 5 -> max(1, (N * TargetUs) div max(T, 1));
        true -> calibrate(Clock, Loop, Arg, N * 2, TargetUs)
    end.

tc(wall, F) ->
    element(1, timer:tc(F));
tc(cpu, F) ->
    {T0, _} = statistics(runtime),
    F(),
    {T1, _} = statistics(runtime),
    (T1 - T0) * 1000.

%% The result is threaded through the loop so that no call can be dropped as dead code.
dec_loop(0, _, Acc) -> Acc;
dec_loop(N, Bin, _) -> dec_loop(N - 1, Bin, binary_to_term(Bin)).

enc_loop(0, _, Acc) -> Acc;
enc_loop(N, T, _) -> enc_loop(N - 1, T, term_to_binary(T, [{minor_version, 2}])).
"""


class Beam:
    """A running ``erl`` peer with the benchmark module loaded."""

    def __init__(self, node: BeamNode) -> None:
        self.node = node

    def otp_release(self) -> str:
        return bytes(self.node.eval("pynode_codec_bench:otp_release().")).decode()

    def corpus(self) -> list[tuple[str, bytes]]:
        """``[(name, term_to_binary bytes)]`` in corpus order."""
        return [(str(name), bytes(b)) for name, b in self.node.eval("pynode_codec_bench:corpus().")]

    def bench(self, names: list[str], target_s: float, repeat: int, clock: str = "wall") -> dict[str, tuple[float, float]]:
        """``{name: (decode ops/s, encode ops/s)}`` of the BEAM's own BIFs. With the ``cpu``
        clock (millisecond resolution) each run lasts at least 0.05 s."""
        if clock == "cpu":
            target_s = max(target_s, 0.05)
        src = "pynode_codec_bench:bench(%s, %d, %d, [%s])." % (
            clock,
            int(target_s * 1e6),
            repeat,
            ", ".join("'%s'" % n for n in names),
        )
        out: dict[str, tuple[float, float]] = {}
        timeout = 60.0 + len(names) * 2 * (repeat + 3) * target_s * 4
        for name, (dn, dus), (en, eus) in self.node.eval(src, timeout=timeout):
            out[str(name)] = (dn * 1e6 / max(dus, 1), en * 1e6 / max(eus, 1))
        return out

    def stop(self) -> None:
        self.node.stop()


#: One scheduler, none of them busy-waiting: the VM's CPU time is then the timed loop's.
_CPU_ARGS = ["+S", "1:1", "+SDcpu", "1:1", "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]


def start(cpu_clock: bool = True, otp_root: str | None = None) -> Beam:
    """Start an ``erl`` node on localhost and load the benchmark module into it; ``otp_root``:
    the OTP release it runs (``$PYNODE_OTP_ROOT`` by default, see pynode.testing)."""
    node = BeamNode.start(
        unique_name("bench") + "@localhost", cookie="bench", args=_CPU_ARGS if cpu_clock else [], otp_root=otp_root
    )
    try:
        with tempfile.TemporaryDirectory(prefix="pynode_bench_") as tmp:
            path = os.path.join(tmp, "pynode_codec_bench.erl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(MODULE_SOURCE)
            res: Any = node.eval(
                '{ok, M, B} = compile:file("%s", [binary, report]),'
                ' {module, M} = code:load_binary(M, "%s", B), ok.' % (path, path)
            )
            if res != "ok":
                raise RuntimeError(f"could not load the benchmark module: {res!r}")
    except BaseException:
        node.kill()
        raise
    return Beam(node)
