"""Run-directory safety: writability checks before any work, one writer per run, atomic file replacement.

    check_writable(path)            # before any work: refuse targets that cannot be written
    with RunLock(run_dir):          # train / resume: a second process on the same run exits 2 naming our pid
        remove_stale_temp_files(run_dir)
        atomic_write_text(run_dir / "config.yaml", text)

Every failure raises :class:`RunDirError` (a ``UsageError``-like one-line message naming the path).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from maml_rl.errors import RunDirError

CONFIG_FILE = "config.yaml"  # a run directory's resolved config
LOCK_FILE = ".lock"
TEMP_PREFIX = ".tmp_"


def _first_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current


def check_writable(path: str | Path, what: str = "--output", is_file: bool = False) -> Path:
    """Refuse an output that cannot be written, before any work and without creating anything.

    The nearest existing ancestor of ``path`` (``path`` itself if it exists) must be a directory in which a
    file can really be created: a probe file is created and removed there, which catches read-only mounts,
    ``/proc`` and ``/sys`` and permission problems that ``os.access`` misses when running as root.

    Args:
        path: the output directory (or file, with ``is_file``).
        what: how the user named it, for the message (``--output``).
        is_file: ``path`` is a file to be written: it must not be a directory, and its directory is probed.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        RunDirError: with one line naming ``path`` and the reason.
    """
    path = Path(path)
    if is_file:
        if path.is_dir():
            raise RunDirError(f"{what} {path} is a directory; give a file name (e.g. {path / 'plot.png'})")
        if path.exists() and not os.access(path, os.W_OK):
            raise RunDirError(f"{what} {path}: the file is not writable")
        probe_dir = _first_existing(path.parent)
    else:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{what} {path} exists and is not a directory")
        probe_dir = _first_existing(path)
    if not probe_dir.is_dir():
        raise RunDirError(f"{what} {path}: {probe_dir} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=TEMP_PREFIX + "probe_", dir=probe_dir)
    except OSError as error:
        raise RunDirError(f"{what} {path}: cannot write in {probe_dir} ({error.strerror or error})") from error
    os.close(handle)
    Path(probe).unlink(missing_ok=True)
    return path


class RunLock:
    """An exclusive advisory lock (``flock``) on ``run_dir/.lock`` held while a process trains the run.

    The lock file holds the holder's pid. The kernel releases the lock when the process ends, however it ends,
    so a killed run never leaves a stale lock behind (the file stays, unlocked).

    Raises:
        RunDirError: another process holds the lock (the message names its pid).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"{self.path.parent} is in use by another maml-rl process (pid {holder}); wait for it to end "
                    "or stop it first"
                ) from error
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete temporary files a killed process left (``.tmp_*`` in the run directory and ``checkpoints/``).

    Only call this while holding the run's :class:`RunLock`: then no other process can be writing them.
    Returns the removed paths.
    """
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.glob(TEMP_PREFIX + "*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def file_mode() -> int:
    """The mode a plainly created file gets (``0o666`` less the umask): temporary files start private (0600)
    and are given this mode before they are renamed into place."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk and rename it over ``path``.

    The one way maml-rl writes a file that must never be seen half-written (checkpoints, ``metrics.csv``,
    ``config.yaml``, evaluation results, figures): a crash at any point leaves either the old file or the new one;
    on failure the temporary file is removed and the error propagates. The file gets :func:`file_mode`.
    """
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
