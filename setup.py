"""The optional C accelerator of the codec, ``erl_interop._speedups`` (everything else of the
package is declared in pyproject.toml).

The extension is optional: on a machine without a C compiler (or without Python's headers)
the package installs with the pure-Python codec, which is complete and only slower
(``erl_interop.codec.ACCELERATED`` is then False). setuptools' own ``optional`` extension
only logs a line that pip hides; :class:`BuildExtOptional` says it loudly instead, on stderr
and as a warning, naming the compiler's error.
"""

from __future__ import annotations

import sys
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 65 re-exports distutils' errors here
    from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError
except ImportError:  # pragma: no cover - older setuptools
    from distutils.errors import (  # type: ignore[no-redef]
        CCompilerError,
        CompileError,
        DistutilsExecError as ExecError,
        DistutilsPlatformError as PlatformError,
        LinkError,
    )

#: what a missing or failing compiler raises while an extension builds
BUILD_ERRORS = (CCompilerError, CompileError, LinkError, ExecError, PlatformError, OSError)

SPEEDUPS = "erl_interop._speedups"


def say_pure(why: BaseException | str) -> None:
    """Tell the person installing that the accelerator is missing, and why."""
    reason = " ".join(str(why).split()) or type(why).__name__
    message = (
        f"pynode-erlang: the C accelerator {SPEEDUPS} did not build ({reason}); installing the "
        "pure-Python codec (complete, only slower: erl_interop.codec.ACCELERATED is False). "
        "Install a C compiler and Python's headers (Debian: gcc python3-dev) and reinstall to get it."
    )
    bar = "*" * 78
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr, flush=True)
    warnings.warn(message, RuntimeWarning, stacklevel=2)


class BuildExtOptional(build_ext):
    """``build_ext`` that installs without the accelerator when it cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as e:  # no compiler at all (found before any extension is built)
            say_pure(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as e:
            say_pure(e)


setup(
    # optional: an editable install (pip install -e .) skips copying what did not build
    ext_modules=[Extension(SPEEDUPS, sources=["erl_interop/_speedups.c"], optional=True)],
    cmdclass={"build_ext": BuildExtOptional},
)
