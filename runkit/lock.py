"""One process per workdir: an advisory lock held for the whole run.

The lock is ``fcntl.flock`` on ``<workdir>/.lock``, which also holds the owner's pid.
The kernel drops a flock when its process dies, so a lock left by a killed run is
free again and is simply taken over (with a note naming the dead pid); a second
live process is refused at once, naming the holder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from runkit.errors import RunFault

LOCK_NAME = ".lock"


class WorkdirBusy(RunFault):
    """Another live process holds the workdir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds ``workdir`` for this process (created if needed).
    A workdir the lock created is removed again when the block fails before anything but
    the lock was written in it: a failed start leaves no trace."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / LOCK_NAME
        self._file = None
        self._created = False

    def acquire(self) -> WorkdirLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise WorkdirBusy(f"{self.path.parent} is in use by another run (process "
                              f"{holder}); wait for it to finish or use another "
                              "--workdir") from None
        f.seek(0)
        previous = f.read().strip()
        if previous.isdigit() and int(previous) != os.getpid() and not _pid_alive(int(previous)):
            print(f"note: taking over the lock on {self.path.parent} left by process "
                  f"{previous}, which is no longer running")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, exc_type, *exc):
        self.release()
        if exc_type is not None and self._created:
            try:
                if [p.name for p in self.path.parent.iterdir()] == [LOCK_NAME]:
                    self.path.unlink()
                    self.path.parent.rmdir()
            except OSError:  # another process got in between: leave it
                pass
