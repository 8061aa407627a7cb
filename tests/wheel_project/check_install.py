"""What was installed: the packages in this virtualenv (not a checkout), the C accelerator
as the wheel was built, the console script."""

import os
import subprocess
import sys
from pathlib import Path

import erl_interop
import erl_interop.codec
import pynode
from erl_interop.terms import Atom

CHECKOUT = Path(os.environ["PYNODE_CHECKOUT"])


def test_the_packages_come_from_this_virtualenv():
    for mod in (pynode, erl_interop):
        path = Path(mod.__file__).resolve()
        assert path.is_relative_to(Path(sys.prefix).resolve()), path
        assert not path.is_relative_to(CHECKOUT), path
    assert not any(Path(p or ".").resolve() == CHECKOUT for p in sys.path), sys.path


def test_the_codec_is_accelerated_as_the_wheel_was_built():
    want = os.environ["EXPECT_ACCELERATED"] == "1"
    assert erl_interop.codec.ACCELERATED is want
    term = (Atom("ok"), [1, 2.5, b"bin", "text"], {Atom("k"): -(2**70)})
    assert erl_interop.codec.decode(erl_interop.codec.encode(term)) == (Atom("ok"), [1, 2.5, b"bin", b"text"],
                                                                      {Atom("k"): -(2**70)})


def test_the_console_script_runs():
    script = Path(sys.executable).parent / "pynode"
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: pynode "), r
    for cmd in ("node", "ping", "rpc", "members", "jobs", "run_job"):
        assert cmd in r.stdout
