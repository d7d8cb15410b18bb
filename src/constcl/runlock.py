"""One process per output folder: the lock every command that writes a folder takes first.

``with run_lock(folder, "pretrain"):`` creates ``folder`` if needed and holds
``folder/.constcl.lock`` until the block ends. The file names its holder (host, PID, start
time, command) and carries a POSIX record lock (``fcntl.lockf``) for as long as the holder
lives, so:

* a second process that wants the same folder is refused with :class:`FolderLocked`, one line
  naming the holder;
* a lock left by a process that died on **this host** (killed, out of memory, a reboot) is
  taken over with a warning: the kernel released its record lock, and its PID no longer runs
  (or runs another program, started at another time, or the machine was rebooted);
* a lock written on **another host** (a shared file system) is never assumed stale, since the
  PID means nothing here: :class:`FolderLocked` says so and how to remove it by hand
  (``rm FOLDER/.constcl.lock`` once that run is known to be gone). Whether the record lock
  itself works across hosts depends on the file system (NFS with its lock service, Lustre with
  ``flock`` mounts: yes; some FUSE mounts: no, then only the holder record protects the folder).

The same process may take the lock of a folder again inside the block (re-entrant), e.g. a
command that calls another library function writing the same folder. Record locks are not
inherited by forked children (DataLoader workers), so the lock goes the moment its holder dies,
even while orphaned workers linger. They also belong to the whole process, and closing *any*
descriptor of the lock file drops them: the holder reads its own record only through the
descriptor it holds (:func:`read_holder`).

When the lock created ``folder`` and the block leaves it empty, the folder is removed again, so
a run refused by its own checks leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from constcl.errors import ConstclError

__all__ = ["LOCK_NAME", "FolderLocked", "Holder", "read_holder", "run_lock"]

log = logging.getLogger(__name__)

LOCK_NAME = ".constcl.lock"


class FolderLocked(ConstclError):
    """Another process (alive, or on another host) holds the folder's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written into the lock file as one JSON object."""

    host: str
    pid: int
    started: str  # local time, ISO 8601 with offset
    command: str
    boot_id: str = ""  # /proc/sys/kernel/random/boot_id: a reboot makes every old PID stale
    process_start: int = -1  # /proc/PID/stat field 22: tells a reused PID from the holder

    def describe(self) -> str:
        return f"{self.command!r} (host {self.host}, PID {self.pid}, started {self.started})"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot, -1 when unknown (no /proc) or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def _me(command: str) -> Holder:
    return Holder(host=socket.gethostname(), pid=os.getpid(),
                  started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=command,
                  boot_id=_boot_id(), process_start=_process_start(os.getpid()))


def read_holder(folder: str | os.PathLike[str]) -> Holder | None:
    """The holder recorded in ``folder``'s lock file; None when there is no (complete) record."""
    held = _HELD.get(str(Path(folder).resolve()))
    if held is not None:
        return _read_fd(held[0])
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_fd(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0).decode())
        return Holder(**data)
    except (OSError, ValueError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _is_stale(holder: Holder) -> bool:
    """A holder on this host whose process is gone (or is another process under its PID)."""
    if holder.host != socket.gethostname():
        return False
    if holder.boot_id and _boot_id() and holder.boot_id != _boot_id():
        return True  # rebooted since
    if not _pid_alive(holder.pid):
        return True
    start = _process_start(holder.pid)
    return holder.process_start >= 0 and start >= 0 and start != holder.process_start


# folder (resolved) -> [open fd, depth] of the locks this process holds
_HELD: dict[str, list[int]] = {}


def _refusal(folder: Path, holder: Holder | None, lock: Path) -> FolderLocked:
    if holder is None:
        return FolderLocked(
            f"{folder} is in use by another process (its lock {lock} holds no readable record; "
            f"if no constcl process uses the folder, remove {lock} and run again)")
    if holder.host != socket.gethostname():
        return FolderLocked(
            f"{folder} is locked by {holder.describe()}, another host; a lock from another host "
            f"is never taken over automatically. If that run is gone, remove {lock} by hand")
    return FolderLocked(
        f"{folder} is in use by {holder.describe()}; wait for it to finish, or use another "
        f"output folder")


def _try_lock(fd: int) -> bool:
    """True when this process now holds the record lock; False when another does. A file
    system without record locks counts as acquired (the holder record then decides)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        log.debug("no record locks on this file system (%s); using the holder record", err)
    return True


def _open_locked(lock: Path) -> tuple[int | None, Holder | None]:
    """(fd holding the record lock of the current lock file, its previous holder record), or
    (None, the holder) when another process holds it."""
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return None, read_holder(lock.parent) or _wait_for_record(lock)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read_fd(fd)
        os.close(fd)  # the holder removed the file after we opened it: try the new one
    raise FolderLocked(f"{lock.parent}: could not take the lock {lock} (it keeps changing)")


def _wait_for_record(lock: Path, seconds: float = 1.0) -> Holder | None:
    """A holder that has just taken the lock may not have written its record yet."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        holder = read_holder(lock.parent)
        if holder is not None:
            return holder
    return None


def _write_record(fd: int, holder: Holder) -> None:
    data = (json.dumps(holder.__dict__) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], command: str | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (creating ``folder``); yields the folder.

    Args:
        folder: the output folder (a run folder, ``data prepare``'s OUT, an evaluation's
            ``--out`` ...).
        command: what holds it, for the refusal message (default: this process's command line).

    Raises:
        FolderLocked: another live process holds it, or a process on another host does.
    """
    path = Path(folder)
    key = str(path.resolve())
    if key in _HELD:  # re-entrant within one process
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    fd, previous = _open_locked(lock)
    if fd is None:
        _remove_if_empty(path, created)
        raise _refusal(path, previous, lock)
    if previous is not None:
        if not _is_stale(previous):
            os.close(fd)
            raise _refusal(path, previous, lock)
        log.warning("taking over the stale lock of %s in %s: that process is no longer "
                    "running", previous.describe(), path)
    try:
        _write_record(fd, _me(command or " ".join(["constcl", *sys.argv[1:]])))
    except OSError as err:
        os.close(fd)
        raise OSError(err.errno, f"cannot write the lock file ({err.strerror})",
                      str(lock)) from err
    _HELD[key] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            lock.unlink()  # before releasing the lock: a waiter then retries with a new file
        os.close(fd)
        _remove_if_empty(path, created)


def _remove_if_empty(path: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty
