"""Reading the files an operator points the daemon at (policy, state, tokens), defensively.

A path may name anything: a FIFO (an open() for reading blocks until a writer comes, which
would wedge a reload and then SIGTERM), a character device (/dev/zero never ends), a
directory, a file of gigabytes. `read_regular` opens without blocking, refuses whatever is
not a regular file once opened (fstat of the descriptor, so a symlink swapped in between
cannot fool it), and reads at most `limit` bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileReadError(OSError):
    """The file cannot be used; str() is the reason alone (the caller names the file)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot read"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The content of the regular file `path`, at most `limit` bytes; FileReadError otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for a
        # regular file. O_NOCTTY: a terminal device must not become our controlling tty.
        fd = os.open(
            Path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        )
    except OSError as exc:
        raise FileReadError(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileReadError(f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileReadError(f"{st.st_size} bytes, larger than the limit of {limit}")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read it
                raise FileReadError(f"larger than the limit of {limit} bytes")
        return b"".join(chunks)
    except FileReadError:
        raise
    except OSError as exc:
        raise FileReadError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
