"""Checks run before the work: can the outputs be written, and one line for any OS error.

A command that writes files checks each output location first, so a wrong ``--json``, an
``--out`` naming a file, or a folder without write permission is exit 2 in a second, not after a
whole audit or simulation. Operating-system errors that still reach the CLI's top level become
one line naming the path (:func:`os_error_line`), never a traceback.

Messages (asserted verbatim by the tests)::

    {flag} {path} cannot be written: {reason}
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from audit.exceptions import UsageError

__all__ = ["MSG_OUTPUT", "check_output_dir", "check_output_file", "os_error_line", "os_reason"]

MSG_OUTPUT = "{flag} {path} cannot be written: {reason}"


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in a few lowercase words."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop"
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return "no such folder"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[0].lower() + text[1:] if text else text


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that reached the top level: the path(s) and the reason."""
    reason = exc.strerror or type(exc).__name__
    reason = reason[0].lower() + reason[1:]
    if exc.filename is not None and exc.filename2 is not None:
        return f"{os.fsdecode(exc.filename)} -> {os.fsdecode(exc.filename2)}: {reason}"
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {reason}"
    return f"operating-system error: {reason}" if exc.strerror else f"operating-system error: {exc}"


def _stat(p: Path, flag: str) -> os.stat_result | None:
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=p, reason="a parent is not a folder")) from None
    except OSError as exc:
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=p, reason=os_reason(exc))) from None


def _probe_folder(folder: Path, flag: str, shown: Path) -> None:
    """The nearest existing ancestor of ``folder`` is a folder in which a file can be created
    (a temporary file is written and removed); nothing else is created."""
    probe = folder
    st = _stat(probe, flag)
    while st is None and probe.parent != probe:
        probe = probe.parent
        st = _stat(probe, flag)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=shown, reason="a parent is not a folder"))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".trustaudit-", suffix=".probe", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=shown, reason=os_reason(exc))) from None


def check_output_file(path: str | Path, flag: str) -> Path:
    """``path`` can be written as a file: not a folder or a special file, its folder writable."""
    p = Path(path)
    st = _stat(p, flag)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=p, reason="it is a folder; give a file path"))
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=p, reason="it is not a regular file"))
    _probe_folder(p.parent, flag, p)
    return p


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` is (or can be created as) a writable folder; an existing file there is refused."""
    p = Path(path)
    st = _stat(p, flag)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(MSG_OUTPUT.format(flag=flag, path=p, reason="it is a file, not a folder"))
    _probe_folder(p, flag, p)
    return p
