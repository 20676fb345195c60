"""Reading a file a device was handed (a model, a golden trace, a state file) without trusting what the path is.

One rule for all three: the path's type and size are checked before it is opened, so a FIFO (opening it for reading
blocks until a writer comes), a device (``/dev/zero`` never ends) or a huge file costs nothing, and the file is
opened non-blocking, so a swap for a FIFO between the check and the open cannot hang either. Each caller names the
file and the error type its readers expect.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages ("FIFO (named pipe)", "character device", ...)."""
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def open_bounded(path, max_bytes: int, expected: str, error: type[Exception], missing: str | None = None,
                 missing_error: type[Exception] | None = None) -> BinaryIO:
    """Open ``path`` for reading, refused before any read unless it is a regular file of at most ``max_bytes``.

    Args:
        expected: what the file should be, for messages ("a .tflite file", "a state file").
        error: the exception raised for every refusal.
        missing: the message when the path does not exist (default: "{expected} not found: {path}.").
        missing_error: the exception for a missing or unreadable path (default: ``error``).

    Raises:
        ``error`` (or ``missing_error``): missing, unreadable, not a regular file, or larger than ``max_bytes``.
    """
    missing_error = missing_error or error
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise missing_error(missing or f"{expected} not found: {path}.") from None
    except (OSError, ValueError, TypeError) as exc:
        raise missing_error(f"cannot read {expected} {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise missing_error(f"expected {expected}, received a directory: {path}.")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"expected {expected} (a regular file), received a {file_kind(st.st_mode)}: {path}.")
    if st.st_size > max_bytes:
        raise error(f"{path} is too large for {expected}: expected at most {max_bytes:,} bytes, received "
                    f"{st.st_size:,} bytes.")
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    except OSError as exc:
        raise missing_error(f"cannot read {expected} {path}: {exc.strerror or exc}.") from None


def read_bounded(path, max_bytes: int, expected: str, error: type[Exception], missing: str | None = None,
                 missing_error: type[Exception] | None = None) -> bytes:
    """The bytes of ``path``, with ``open_bounded``'s checks (and a file that grew past ``max_bytes`` refused)."""
    with open_bounded(path, max_bytes, expected, error, missing, missing_error) as f:
        data = f.read(max_bytes + 1)
    if data is None or len(data) > max_bytes:
        raise error(f"{path} is too large for {expected}: expected at most {max_bytes:,} bytes.")
    return data
