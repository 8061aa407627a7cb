"""What every subcommand shares: the cookie ``erl`` would use, and one logging and event
loop set-up (uvloop when installed)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import stat
import string
import sys
from pathlib import Path
from typing import Any, Callable, Coroutine

from erl_interop.errors import EpmdError

from ..config import ConfigError
from ..errors import PynodeError

__all__ = ["default_cookie", "run_main", "CookieFileError", "LOG_FORMAT"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

uvloop: Any
try:
    import uvloop  # type: ignore[import-not-found, no-redef, unused-ignore]
except ImportError:  # optional: the standard event loop then
    uvloop = None


class CookieFileError(PynodeError):
    """``~/.erlang.cookie`` is one that ``erl`` refuses; the message is ``erl``'s."""


def default_cookie() -> str:
    """The cookie ``erl`` would use: ``~/.erlang.cookie``, created (20 random capital letters,
    mode 0400) when it does not exist, as ``erl`` does. Like ``erl`` (``auth.erl``), refuses
    with :class:`CookieFileError` a file that group or others may access, one that is not a
    regular file, and an empty cookie."""
    path = Path.home() / ".erlang.cookie"
    try:
        st = path.stat()
    except FileNotFoundError:
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(cookie)
        return cookie
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            kind = "directory"
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = "device"
        else:
            kind = "other"
        raise CookieFileError(f"Cookie file {path} is of type {kind}")
    if st.st_mode & 0o077:
        raise CookieFileError(f"Cookie file {path} must be accessible by owner only")
    cookie = path.read_text().strip()
    if not cookie:
        raise CookieFileError("Too short cookie string")
    return cookie


def short_name(sname: str) -> str:
    """``--sname NAME[@HOST]`` as ``erl -sname`` takes it: without a host, this machine's
    short host name (the same in every command)."""
    return sname if "@" in sname else f"{sname}@{socket.gethostname().split('.')[0]}"


def run_main(fn: Callable[[Any], Coroutine[Any, Any, int]], args: Any) -> int:
    """Set up logging at ``args.log_level`` and run ``await fn(args)`` on a fresh loop. A
    cookie file ``erl`` would refuse ends the command with ``erl``'s message and status 1."""
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    try:
        if uvloop is not None:
            return int(uvloop.run(fn(args)))
        return asyncio.run(fn(args))
    except CookieFileError as e:
        print(e, file=sys.stderr)
        return 1
    except ConfigError as e:  # a malformed sys.config kernel key or TLS option: say which, do not start
        print(f"pynode: {e}", file=sys.stderr)
        return 2
    except EpmdError as e:  # the name is taken, or no EPMD could be reached or started: one line, as erl
        print(f"pynode: {e}", file=sys.stderr)
        return 1
