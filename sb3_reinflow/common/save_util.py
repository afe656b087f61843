"""
Atomic file writes: the one save path for every file the package writes (model zips, pretrained policies,
datasets, VecNormalize statistics in the zoo).

A file is written to a temporary file in the destination's folder, flushed and fsync'ed, then moved over the
destination with :func:`os.replace` (atomic on POSIX and Windows), and the folder is fsync'ed. A reader therefore
sees either the old file or the complete new one, even if the writing process is killed. On Linux the temporary
file is created unnamed (``O_TMPFILE``) and only gets a name (``.<name>.<pid>.tmp``) for the instant between
``linkat`` and ``rename``; elsewhere it is named from the start. Temporary files of dead processes are removed by
the next write to the same destination; the writing process removes its own on any exception.

Permissions: the temporary file is created private (0600) and gets, just before the rename, the mode of the file it
replaces (a 0600 file stays 0600), or for a new file the usual ``0666 & ~umask``. A write-protected destination (no
write permission for its owner, e.g. 0444) is refused unless ``overwrite_read_only=True``.
"""

import contextlib
import ctypes
import os
import pickle
import re
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400
_TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def sb3_save_path(path: str | Path, suffix: str = "zip") -> Path:
    """
    The file SB3's ``save`` writes for ``path``: ``.zip`` is appended only when the name has no suffix at all
    (``"model"`` -> ``model.zip``; ``"hopper_lr1.5e-4"`` is kept as is, since ``.5e-4`` counts as a suffix), and
    an existing folder becomes ``<path>_2`` (with a warning), as in ``stable_baselines3.common.save_util``.

    :param path: path given to ``save``
    :param suffix: suffix SB3 appends when there is none
    :return: the destination file
    """
    path = Path(path)
    if path.suffix == "" and suffix:
        path = Path(f"{path}.{suffix}")
    if path.is_dir():
        warnings.warn(f"Path '{path}' is a folder. Will save instead to {path}_2", stacklevel=3)
        path = Path(f"{path}_2")
    return path


def temporary_files(path: str | Path) -> list[Path]:
    """
    :param path: a destination
    :return: temporary files left next to it by interrupted atomic writes (of any process)
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(
        entry
        for entry in path.parent.iterdir()
        if (match := _TMP_PATTERN.match(entry.name)) is not None and match["name"] == path.name
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporary_files(path: str | Path) -> list[Path]:
    """
    Remove the temporary files of interrupted writes to ``path`` whose process has exited.

    :param path: a destination
    :return: the removed files
    """
    removed = []
    for entry in temporary_files(path):
        match = _TMP_PATTERN.match(entry.name)
        assert match is not None
        if not _pid_alive(int(match["pid"])):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _temporary_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_unnamed(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o600)
    except OSError:  # the file system does not support it
        return None


def _link_unnamed(fd: int, tmp: Path) -> None:
    """
    Give the unnamed file ``fd`` the name ``tmp``: ``linkat(AT_SYMLINK_FOLLOW)`` on its ``/proc/self/fd`` entry
    (``os.link`` calls ``link``, which does not follow that link), or a copy where linking is refused.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    linkat = getattr(libc, "linkat", None)
    source = f"/proc/self/fd/{fd}".encode()
    if linkat is not None and linkat(_AT_FDCWD, source, _AT_FDCWD, os.fsencode(tmp), _AT_SYMLINK_FOLLOW) == 0:
        return
    copy_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(copy_fd, os.fstat(fd).st_mode & 0o7777)
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            os.write(copy_fd, chunk)
            offset += len(chunk)
        os.fsync(copy_fd)
    finally:
        os.close(copy_fd)


def _commit(fd: int, unnamed: bool, tmp: Path, path: Path) -> None:
    """Give the written file its final name, replacing ``path`` atomically."""
    if unnamed:
        # linkat cannot replace an existing file: name it ``tmp`` first, then rename over ``path``
        _link_unnamed(fd, tmp)
    os.replace(tmp, path)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, and other threads may create files)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path, overwrite_read_only: bool) -> int:
    """The mode the written file gets: the replaced file's, or ``0666 & ~umask`` for a new file."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()
    if not mode & 0o200 and not overwrite_read_only:
        raise PermissionError(
            f"{path} is write-protected (mode {mode:04o}): not replacing it. Make it writable (chmod u+w {path}), save "
            "to another name, or pass overwrite_read_only=True to replace it anyway (it keeps its mode)"
        )
    return mode


@contextlib.contextmanager
def atomic_write(path: str | Path, overwrite_read_only: bool = False) -> Iterator[IO[bytes]]:
    """
    Write ``path`` atomically: ``with atomic_write(path) as handle: handle.write(...)``. The name is used exactly
    as given (no suffix is added or changed); missing parent folders are created. If the block raises, ``path`` is
    untouched and the temporary file removed. A symbolic link is followed: its target is replaced.

    :param path: destination file
    :param overwrite_read_only: replace a write-protected destination (mode without owner write) instead of raising
    :return: a binary file handle to write to (do not close it)
    """
    path = Path(path)
    if path.is_symlink():  # replace the file the link points to, and keep the link
        path = path.resolve()
    if path.is_dir():
        raise IsADirectoryError(f"Cannot save to {path}: it is a folder; pass a file name inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path, overwrite_read_only)
    remove_stale_temporary_files(path)
    tmp = _temporary_name(path)
    fd = _open_unnamed(path.parent)
    unnamed = fd is not None
    if fd is None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    handle = os.fdopen(fd, "wb")
    try:
        yield handle
        handle.flush()
        if hasattr(os, "fchmod"):  # POSIX: the final mode, set while the file is still private to this process
            os.fchmod(handle.fileno(), mode)
        os.fsync(handle.fileno())
        _commit(handle.fileno(), unnamed, tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        handle.close()
    _fsync_folder(path.parent)


def atomic_pickle(obj: Any, path: str | Path) -> None:
    """
    Pickle ``obj`` to ``path`` atomically (for example VecNormalize statistics).

    :param obj: the object
    :param path: destination file
    """
    with atomic_write(path) as handle:
        pickle.dump(obj, handle)


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> None:
    """
    Write ``rows`` as a CSV file atomically (see :func:`atomic_write`).

    :param path: destination file
    :param rows: one dict per row
    :param fieldnames: the columns, in order (default: the first row's keys)
    """
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue().encode())
