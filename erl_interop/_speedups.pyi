"""Types of the optional C accelerator (``_speedups.c``), which may not be built.

``decode_at`` and ``encode_into`` replace :func:`erl_interop.codec._decode` and
:func:`erl_interop.codec._enc` and take the same arguments (``depth``: the nesting already
recursed into; deeper than ``codec.RECURSION_DEPTH`` both continue with an explicit stack);
``init`` receives the globals of :mod:`erl_interop.codec` (term classes, errors, constants,
helpers) once, before they are swapped in.
"""

from typing import Any, Sequence

def init(namespace: dict[str, Any], /) -> None: ...
def decode_at(data: bytes, pos: int, depth: int, refs: Sequence[Any] | None, /) -> tuple[Any, int]: ...
def encode_into(term: Any, out: bytearray, depth: int = 0, /) -> None: ...
