"""A lock file that says who holds a folder, and takes over locks of dead processes.

Two processes writing one folder at once would delete each other's temporary files or
train into the same checkpoint: the synthetic-data generator and every pipeline run hold a
`FolderLock` while they write. The lock file records the holder's pid, host, start time
and command, so a refusal can say who holds it; a lock whose process is gone (same host)
is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """``with FolderLock(folder / ".lock", "the run 'demo'"):`` holds the lock or raises LockHeld.

    Re-entrant within one process (a lock file of this pid is taken as held). Released on
    exit, also after an exception or Ctrl-C; a kill -9 leaves the file, which the next run
    takes over since its pid is gone.
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self._owned = False

    def holder(self) -> dict | None:
        """The recorded holder (pid, host, started, command), or None when unlocked."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        pid = int(holder.get("pid", 0) or 0)
        if holder.get("host", socket.gethostname()) != socket.gethostname():
            return False  # another machine's process: cannot tell, keep it
        return not pid_alive(pid)

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    return self  # held by this process already (not owned here)
                if holder and not self._stale(holder):
                    raise LockHeld(
                        f"{self.what} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('started')} "
                        f"({holder.get('command', '?')}); wait for it, choose another name, "
                        f"or delete {self.path} if that process is gone") from None
                self.path.unlink(missing_ok=True)  # left by a dead process, or unreadable
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record))
            self._owned = True
            return self
        raise LockHeld(f"{self.path}: could not take the lock for {self.what}")

    def __exit__(self, *exc) -> bool:
        if self._owned:
            self.path.unlink(missing_ok=True)
            self._owned = False
        return False
