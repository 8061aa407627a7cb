"""atheris fuzz harness for the ETF decoder.

Invariant: on any input, ``decode`` either returns a term or raises ``DecodeError`` whose
offset is an int inside the input; nothing else escapes (no IndexError, struct.error,
RecursionError, MemoryError, UnicodeError, ...). Anything that decodes re-encodes, and the
re-encoding decodes to an ``exact_equal`` term.

Run it directly::

    python tests/fuzz_codec.py -atheris_runs=200000            # from the repository root
    python tests/fuzz_codec.py -max_len=4096 -runs=-1 corpus/  # open-ended, with a corpus dir

``tests/test_codec_hostile.py::test_fuzz_codec_bounded`` runs it for a bounded number of
iterations in a subprocess.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Seeds: canonical encodings of one term of every kind, so mutation starts from real shapes.
def _seeds() -> list[bytes]:
    from erl_interop import Atom, BitBinary, Export, Fun, ImproperList, Map, Pid, Port, Reference, encode

    pid = Pid(Atom("a@b"), 1, 2, 3)
    terms = [
        0, 300, -(2**40), 2**300, 1.5, Atom("ok"), Atom("åäö"), True, None, b"bin",
        BitBinary(b"\x01\x40", 3), (1, 2), tuple(range(260)), [], [1, 2], [1, 256], ImproperList((1,), Atom("t")),
        {Atom("k"): 1}, Map([(1, 1), (1.0, 2), ([1], 3)]), pid, Reference(Atom("a@b"), 1, (1, 2, 3)),
        Port(Atom("a@b"), 1 << 40, 2), Export(Atom("m"), Atom("f"), 1),
        Fun(1, bytes(16), 2, Atom("m"), 3, 4, pid, (1, [2])),
    ]
    # Deeper than the codec's recursion (the explicit stack takes over), of every container kind,
    # and a map whose keys share one Python hash (the collision-resistant duplicate check).
    deep: object = Atom("x")
    for i in range(150):
        deep = [deep] if i % 5 == 0 else (deep,) if i % 5 == 1 else {1: deep} if i % 5 == 2 else \
            ImproperList((deep,), 1) if i % 5 == 3 else Fun(1, bytes(16), 2, Atom("m"), 3, 4, pid, (deep,))
    terms += [deep, Map([(7 + i * (2**61 - 1), i) for i in range(40)]), Map([(0.0, 1), (-0.0, 2)])]
    seeds = [encode(t) for t in terms]
    body = encode(terms)[1:]
    seeds.append(b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body))
    seeds += [b"\x83g\x77\x03a@b\x00\x00\x00\x01\x00\x00\x00\x00\x01", b"\x83c1.5" + b"\x00" * 28]
    return seeds


def check(data: bytes) -> None:
    from erl_interop import DecodeError, decode, encode, exact_equal

    try:
        t = decode(data)
    except DecodeError as e:
        if type(e.offset) is not int or not 0 <= e.offset <= len(data):
            raise AssertionError(f"offset {e.offset!r} outside input of {len(data)} bytes") from None
        return
    raw = encode(t)
    again = decode(raw)
    if not exact_equal(again, t):
        raise AssertionError(f"re-encoding changed the term: {t!r:.200} -> {again!r:.200}")


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():
        import erl_interop.codec  # noqa: F401
        import erl_interop.terms  # noqa: F401

    seeds = _seeds()

    def one_input(data: bytes) -> None:
        # Prefix with a seed chosen by the first byte half of the time, so the fuzzer
        # explores both pure random bytes and mutations inside valid terms.
        if len(data) > 1 and data[0] & 1:
            seed = seeds[data[1] % len(seeds)]
            cut = int.from_bytes(data[2:4], "big") % (len(seed) + 1) if len(data) > 3 else len(seed)
            data = seed[:cut] + data[4:]
        check(data)
        if data[:1] != b"\x83":
            check(b"\x83" + data)

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
