"""Writing files and folders so that a kill, a full disk or a read-only folder never leaves one that looks complete.

A file is written to a name of its writer's own beside it (``.NAME.HOST-PID-RANDOM.tmp``)
and renamed when complete (:func:`atomic_file`, :func:`atomic_write_text`), so two
processes writing one file at once each rename a whole file into place (the next
write removes the partial files of writers that were killed); a folder
(written by one process: checkpoints, exports) is written as ``NAME.tmp/`` and
renamed (:func:`atomic_folder`), and the next write removes one a kill left. A reader therefore sees the
old version or the new one, never half of one. :func:`disk_errors` turns a full
disk or a folder that cannot be written into one :class:`UserError` line naming
the folder and the space needed.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import IO, Iterator

from nlpssl.errors import UserError, first_line

TMP_SUFFIX = ".tmp"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
# What libraries that lose errno say instead (torch.save: "file write failed"; safetensors: the OS message).
_FULL_WORDS = ("no space left", "disk quota", "file write failed", "storagefull")
_NOT_WRITABLE_WORDS = ("read-only file system", "permission denied", "readonlyfilesystem")


def temporary_name(path: Path) -> Path:
    """``path`` with the suffix of a file or folder still being written: ``best`` -> ``best.tmp``."""
    return path.with_name(path.name + TMP_SUFFIX)


def writer_partial_name(path: Path) -> Path:
    """This writer's own partial file for ``path``: ``x.json`` -> ``.x.json.<host>-<pid>-<random>.tmp`` (hidden, unique)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def remove_dead_writers_partials(path: Path) -> list[Path]:
    """Remove the partial files of ``path`` that a killed writer on this host left; the ones removed.

    A partial file names its writer's host and process id; one whose process is
    gone can never be renamed into place. Partial files of live processes, and
    of other hosts (a shared file system), stay.
    """
    host, removed = socket.gethostname(), []
    for partial in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        writer = partial.name[len(path.name) + 2:-len(TMP_SUFFIX)].rsplit("-", 2)  # [host, pid, random]
        if len(writer) == 3 and writer[0] == host and writer[1].isdigit() and not _process_alive(int(writer[1])):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open this writer's partial file for ``path``; on success it is flushed to disk and renamed to ``path``, on error removed.

    Processes writing the same ``path`` at once never share a partial file:
    the last rename wins, and every version a reader sees is whole.

    Example::

        with atomic_file("out/predictions.csv", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_partials(path)
    partial = writer_partial_name(path)
    try:
        with partial.open(mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a partial file of this writer's own, renamed when complete.

    Example::

        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    """
    with atomic_file(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty ``folder.tmp`` to fill; on success it replaces ``folder``, on error it is removed.

    A kill mid-write leaves the previous ``folder`` as it was (and a ``.tmp`` the next write removes).

    Example::

        with atomic_folder(run / "best") as partial:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
    """
    folder = Path(folder)
    partial = temporary_name(folder)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_folder(partial, folder)


@contextlib.contextmanager
def removed_on_error(folder: str | Path | None) -> Iterator[None]:
    """Context: remove ``folder`` (a partial ``.tmp`` being written) when the block fails; None: nothing to remove."""
    try:
        yield
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def replace_folder(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is renamed aside first and removed after.

    Between the two renames (microseconds) neither name holds the folder; a
    crash there leaves the new one complete at ``source`` and the old at ``target.old``.
    """
    source, target = Path(source), Path(target)
    if not target.exists():
        source.rename(target)
        return
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    target.rename(old)
    source.rename(target)
    shutil.rmtree(old)


def folder_bytes(folder: str | Path) -> int:
    """Bytes of all files under ``folder`` (0 when it does not exist)."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


@contextlib.contextmanager
def disk_errors(folder: str | Path, needed_bytes: int | None, what: str) -> Iterator[None]:
    """Context: a full disk or a folder that cannot be written while writing ``what`` into ``folder`` becomes one line.

    ``needed_bytes``: an estimate of what the write takes (the previous
    checkpoint's size, the model's parameter bytes), said in the message. Other
    errors pass unchanged.

    Example::

        with disk_errors(run / "final", parameter_bytes, "the final model"), atomic_folder(run / "final") as partial:
            objective.export(partial)
    """
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        message = disk_problem(Path(folder), needed_bytes, what, error)
        if message is None:
            raise
        raise UserError(message) from None


def disk_problem(folder: Path, needed_bytes: int | None, what: str, error: BaseException) -> str | None:
    """The one line for a write that failed on a full disk or an unwritable folder; None when ``error`` is something else."""
    kind = _failure_kind(error)
    free = _free_bytes(folder)
    if kind is None and needed_bytes is not None and free is not None and free < needed_bytes:
        kind = "full"  # the library lost the errno, but the disk says it
    if kind is None:
        return None
    needed = f"about {format_bytes(needed_bytes)} of free space needed" if needed_bytes else "free space needed"
    on_disk = f", {format_bytes(free)} free" if free is not None else ""
    if kind == "full":
        return (
            f"no space left on the device while writing {what} to {folder} ({needed}{on_disk}); "
            f"free some space or set train.output_dir to another disk"
        )
    return (
        f"cannot write {what} to {folder}: the folder is read-only or not yours ({first_line(error)}; {needed}{on_disk}); "
        f"make it writable or set train.output_dir to another folder"
    )


def format_bytes(count: int | None) -> str:
    """``1234567`` -> ``1.2 MB``."""
    value = float(count or 0)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def _failure_kind(error: BaseException) -> str | None:
    """"full", "not writable" or None, from the errno of ``error`` (or its causes), else from its words."""
    seen: BaseException | None = error
    for _ in range(8):  # the exception and the ones it was raised from
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return "full"
        if isinstance(seen, OSError) and seen.errno in _NOT_WRITABLE:
            return "not writable"
        text = str(seen).lower()
        if any(words in text for words in _FULL_WORDS):
            return "full"
        if any(words in text for words in _NOT_WRITABLE_WORDS):
            return "not writable"
        seen = seen.__cause__ or seen.__context__
    return None


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None
