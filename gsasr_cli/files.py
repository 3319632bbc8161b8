"""Bytes in and out: bounded reads, the one atomic writer, and signals that clean up.

Nothing here knows about images, so model weights, checkpoints and reports use the same
writer as the upscaled images. Every failure is a GsasrError of one line naming the file.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from .errors import GsasrError

# The most bytes read from one input. The largest image within the default pixel limit
# (imageio.MAX_INPUT_PIXELS, 2^27) stored uncompressed at 16 bits per RGBA sample takes
# 8 bytes a pixel: 1 GiB. Anything longer is not an image we would decode; reading stops
# there, so /dev/zero or an endless pipe costs at most this much memory.
MAX_INPUT_BYTES = 1 << 30

_CHUNK = 1 << 20
_REASONS = {
    errno.ENOENT: "its folder does not exist",
    errno.ENOTDIR: "a folder in its path is a file",
    errno.EISDIR: "is a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "name too long",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ELOOP: "too many symbolic links",
}


class OutputExists(GsasrError):
    """The output file exists and was not to be replaced."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived inside `terminate_on_signals()`; exit with 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def reason(exc: OSError) -> str:
    """A short, lower-case reason for an OSError (no path: the caller names the file)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or str(exc)).lower()


def size_text(n: int) -> str:
    """Bytes as a short human figure: 1.5 GiB, 20 MiB, 300 bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"


def read_file(path: Path, *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """All bytes of a regular file or a pipe (`<(...)`), refusing devices, folders and
    sockets, and anything longer than `max_bytes`."""
    try:
        st = path.stat()
    except OSError as exc:
        msg = "no such file" if exc.errno == errno.ENOENT else f"cannot read ({reason(exc)})"
        raise GsasrError(f"{path}: {msg}") from exc
    kind = _kind(st.st_mode)
    if kind == "folder":
        raise GsasrError(f"{path}: is a folder, not an image")
    if kind not in ("file", "pipe"):
        raise GsasrError(f"{path}: not a regular file (a {kind})")
    if kind == "file" and st.st_size > max_bytes:
        raise GsasrError(
            f"{path}: {size_text(st.st_size)} is over the {size_text(max_bytes)} input limit"
        )
    try:
        with open(path, "rb") as f:
            return _read_bounded(f, str(path), max_bytes)
    except OSError as exc:
        raise GsasrError(f"{path}: cannot read ({reason(exc)})") from exc


def read_stdin(stream: BinaryIO | None = None, *, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """All of standard input (default `sys.stdin.buffer`), at most `max_bytes`; refuses a
    closed standard input and a terminal (it would wait for typed binary)."""
    if stream is None:
        stream = sys.stdin.buffer if sys.stdin is not None else None
    if stream is None:
        raise GsasrError("<stdin>: standard input is closed")
    try:
        if stream.isatty():
            raise GsasrError("<stdin>: is a terminal; pipe or redirect an image into it")
        return _read_bounded(stream, "<stdin>", max_bytes)
    except (OSError, ValueError) as exc:  # ValueError: a closed file object
        raise GsasrError(f"<stdin>: cannot read ({exc})") from exc


def _read_bounded(f: BinaryIO, name: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of `f`, else GsasrError. Read into one growing buffer that is
    returned as it is (no chunk list joined at the end: memory peaks near 1x the data)."""
    data = bytearray()
    while True:
        chunk = f.read(min(_CHUNK, max_bytes + 1 - len(data)))
        if not chunk:
            return data  # type: ignore[return-value]  # a bytearray: bytes-like, not copied
        data += chunk
        if len(data) > max_bytes:
            raise GsasrError(f"{name}: longer than the {size_text(max_bytes)} input limit")


_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "pipe"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one existing file (links followed); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_replaceable(path: Path) -> None:
    """GsasrError if `path` (through symlinks) is a device, pipe or socket: moving a file
    over one would break the system (`/dev/null`) or whoever reads the pipe, so it is
    never replaced. Nothing there, a file or a folder: no error here."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    kinds = (
        (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"),
        (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
    )  # fmt: skip
    for test, kind in kinds:
        if test(mode):
            raise GsasrError(f"{path}: cannot write (a {kind}, not a file; not replaced)")


def real_path(path: str | os.PathLike[str]) -> Path:
    """`path` absolute, its symlinks followed as far as they lead. Unlike `Path.resolve`,
    which raises RuntimeError for a symlink loop on Python 3.11, it never fails."""
    return Path(os.path.realpath(path))


def destination(path: Path) -> Path:
    """Where an output named `path` is to be put: `path` itself, or the file a symlink
    there names (written through, the link stays: `/dev/stdout` is one; a dangling link
    is replaced). GsasrError for a device, pipe or socket (`check_replaceable`)."""
    check_replaceable(path)
    if os.path.islink(path) and os.path.exists(path):
        return real_path(path)
    return Path(path)


def write_atomic(
    path: Path, data: bytes | bytearray | memoryview, *, overwrite: bool = True
) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file.

    The bytes go to a hidden temporary file beside `path` (a short name, so a long output
    name still fits), are flushed to disk, then moved into place: with `overwrite` by
    `os.replace`; without it by a hard link that fails if `path` exists (OutputExists),
    so two processes writing one output cannot both succeed. A symlink to a file is
    written through and a device, pipe or socket is never replaced (`destination`). The
    temporary file is removed on any error or exception, including KeyboardInterrupt and
    `Terminated`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        if not overwrite and os.path.lexists(path):
            raise OutputExists(f"{path}: output exists")
        dest = destination(path)
        tmp = _create_temp(dest.parent)
        with open(tmp, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the temp file's 0600 would surprise users
        if overwrite:
            os.replace(tmp, dest)
            tmp = None
        else:
            link_exclusive(tmp, dest)
    except OSError as exc:
        raise GsasrError(f"{path}: cannot write ({reason(exc)})") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def make_folder(folder: Path, name: str | None = None) -> None:
    """Create `folder` and its parents if missing; GsasrError naming `name` (default: the
    folder) if it cannot be, e.g. because a parent is a file."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = reason(exc)
        if isinstance(exc, FileExistsError):  # `folder`, or one above it, is a file
            why = "a folder in its path is a file"
        raise GsasrError(f"{name or folder}: cannot create folder {folder} ({why})") from exc


def _create_temp(folder: Path) -> str:
    """A new, empty, hidden file in `folder` with a short name; the caller removes it."""
    for _ in range(100):
        name = os.path.join(folder, f".gsasr-{secrets.token_hex(4)}.part")
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def link_exclusive(tmp: str | Path, path: Path) -> None:
    """Put the finished file `tmp` at `path` only if nothing is there (OutputExists); the
    caller removes `tmp`. Where the file system has no hard links, `path` is claimed with an
    exclusive create and `tmp` moved over it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path}: output exists") from None
    except OSError as exc:
        if exc.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EXDEV,
            errno.ENOSYS,
            errno.EMLINK,
        ):
            raise
        # No hard links here (FAT, some network file systems): claim the name with an
        # exclusive create, then replace the empty placeholder with the full file.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise OutputExists(f"{path}: output exists") from None
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(path)  # our empty placeholder, not a file of anyone else
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_name(path: Path) -> None:
    """Raise GsasrError if `path`'s file name or whole path is too long for its file system
    (checked against the nearest existing folder, before any work)."""
    folder = Path(os.path.abspath(path)).parent
    while not os.path.isdir(folder) and folder.parent != folder:
        folder = folder.parent
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in Path(path).parts:
        if len(os.fsencode(part)) > name_max:
            raise GsasrError(
                f"{path}: cannot write (name too long: {len(os.fsencode(part))} bytes, "
                f"at most {name_max})"
            )
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        raise GsasrError(f"{path}: cannot write (path too long, at most {path_max - 1} bytes)")


@contextmanager
def terminate_on_signals(signums: tuple[int, ...] | None = None) -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise `Terminated` instead of killing the
    process at once, so `finally` blocks run (write_atomic removes its temporary file).

    A signal that the process was started with ignored stays ignored (`nohup` keeps a run
    alive after the terminal hangs up). The first signal puts every handled one back to
    its default action, so a second one ends the process at once even when the clean-up
    is stuck (writing to a terminal that nobody reads). Only the main thread can install
    handlers; elsewhere this does nothing. The previous handlers are restored on exit.
    """
    if signums is None:
        signums = tuple(
            s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s
        )
    saved: dict[int, Any] = {}

    def handler(signum, frame):
        for s in saved:
            signal.signal(s, signal.SIG_DFL)
        raise Terminated(signum)

    try:
        for s in signums:
            try:
                if signal.getsignal(s) is signal.SIG_IGN:
                    continue
                saved[s] = signal.signal(s, handler)
            except ValueError:  # not the main thread
                break
        yield
    finally:
        for s, old in saved.items():
            signal.signal(s, old)


@contextmanager
def capture_stderr(notes: list[str], limit: int = 1 << 16) -> Iterator[None]:
    """Collect what C libraries write to file descriptor 2 inside the block into `notes`.

    libpng, libjpeg, libtiff and OpenCV's logger print warnings and errors straight to
    fd 2 (no file name, and on top of any progress display); callers turn the notes into
    one line naming the file. Text with terminal control characters (a progress bar
    drawn by another thread meanwhile) is written back to stderr unchanged. fd 2 is one
    per process, so captures from several threads take turns (a lock).
    """
    with _CAPTURE_LOCK:
        with _capture_stderr(notes, limit):
            yield


_CAPTURE_LOCK = threading.RLock()


@contextmanager
def _capture_stderr(notes: list[str], limit: int) -> Iterator[None]:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        sink = tempfile.TemporaryFile()
    except OSError:  # no temporary folder: the codecs print as they would anyway
        yield
        return
    try:
        saved: int | None = os.dup(2)
    except OSError:  # fd 2 closed: capture anyway, then close it again
        saved = None
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        else:
            os.close(2)
        sink.seek(0)
        text = sink.read(limit).decode("utf-8", "replace")
        sink.close()
        passthrough = []
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if "\x1b" in line or "\r" in line:
                passthrough.append(line + ("\n" if i < len(lines) - 1 else ""))
            elif line.strip():
                notes.append(line.strip())
        if passthrough and saved is not None:
            try:
                os.write(2, "".join(passthrough).encode())
            except OSError:
                pass
