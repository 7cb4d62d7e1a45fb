"""One run per workdir: an exclusive lock file holding the owner's host, pid and start time.

A lock left behind by a process that no longer exists on this host (a SIGKILLed run)
is stale and taken over; a lock held from another host cannot be checked from here,
so the refusal says how to tell and what to do.
"""
import json
import os
import socket
import time

from etils import epath

from tljax.errors import UserError


class WorkdirInUse(UserError):
    """Another live process holds the workdir (a worker may skip to other work)."""

LOCK_NAME = "lock.json"


def process_alive(pid):
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Exists, owned by someone else.
        return True
    return True


def _create_exclusive(path, text):
    """Creates `path` only if it does not exist (atomic on local disks)."""
    if "://" in str(path):  # Buckets have no O_EXCL: check, then write (best effort).
        if path.exists():
            raise FileExistsError(str(path))
        path.write_text(text)
        return
    fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class WorkdirLock:
    def __init__(self, workdir):
        self.path = epath.Path(workdir) / LOCK_NAME
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self.held = False

    def _stale(self, holder):
        """A lock of a process gone from this host, or of this very process."""
        same_host = holder.get("host") == self.owner["host"]
        return same_host and (holder.get("pid") == os.getpid() or not process_alive(holder.get("pid", 0)))

    def acquire(self):
        text = json.dumps({**self.owner, "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(2):
            try:
                _create_exclusive(self.path, text)
                self.held = True
                return self
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if not self._stale(holder):
                    raise WorkdirInUse(
                        f"workdir {self.path.parent} is in use by pid {holder.get('pid')} on "
                        f"{holder.get('host')} (since {holder.get('since')}); wait for that run "
                        f"to end or use another --workdir. If that run is gone, delete "
                        f"{self.path} and start again") from None
                self.path.unlink(missing_ok=True)
            except PermissionError:
                raise UserError(f"cannot write into workdir {self.path.parent} (permission "
                                f"denied); use a writable --workdir") from None
        raise UserError(f"could not lock workdir {self.path.parent}; try again")

    def acquire_waiting(self, poll_seconds, on_wait=None):
        """Acquires the lock once its live holder releases it, polling; `on_wait()` is
        called once, when it first has to wait."""
        waited = False
        while True:
            try:
                return self.acquire()
            except WorkdirInUse:
                if on_wait and not waited:
                    on_wait()
                waited = True
                time.sleep(poll_seconds)

    def release(self):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
