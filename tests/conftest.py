"""Shared helpers of the cross-package tests (tests/).

``run_script`` runs a Python script in a fresh interpreter, exactly as a user would
(``python path``), so that it starts and stops its own Quanta node. It gives the script a
private TMPDIR and watches it while the script runs, which tells it the session directories
the script's node daemons made (``$TMPDIR/quanta-session-*``) and so the names of their
shared-memory stores (``/dev/shm/quanta-quanta-session-*``), even while other Quanta nodes
run on the machine. After the script it reports what the script left behind: a store under
/dev/shm, a session directory, or a live process (daemon, zygote or worker: their command
lines name the session directory). Whatever is left behind is then removed (processes are
killed by pid) so that one failure does not spill into the next test.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

SHM_ROOT = "/dev/shm"
SESSION_PREFIX = "quanta-session-"


def shm_dir_for(session_name: str) -> str:
    """The object-store directory of the daemon whose session dir is named ``session_name``
    (the daemon uses ``<shm root>/quanta-<basename of the session dir>``)."""
    return os.path.join(SHM_ROOT, f"quanta-{session_name}")


def pids_mentioning(text: str) -> list[int]:
    """Live processes (not zombies) whose command line contains ``text``."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _wait_for(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return bool(pred())
        time.sleep(interval)
    return True


@dataclasses.dataclass
class ScriptRun:
    path: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    sessions: list[str]          # session dir names the script's daemons made
    leftovers: list[str]         # what the script left behind (empty when clean)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"{os.path.basename(self.path)}: rc={self.returncode} "
                f"timed_out={self.timed_out} {self.seconds:.2f}s\n"
                f"--- stdout (tail) ---\n{self.stdout[-3000:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-3000:]}")


def run_script(path: str, timeout: float = 60) -> ScriptRun:
    """Run ``python path`` in a subprocess with a private TMPDIR; see the module docstring."""
    tmp = tempfile.mkdtemp(prefix="quanta-seed-example-")
    env = dict(os.environ, TMPDIR=tmp, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.pop("QUANTA_ADDRESS", None)
    env.pop("RAY_ADDRESS", None)

    sessions: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while True:
            try:
                sessions.update(n for n in os.listdir(tmp) if n.startswith(SESSION_PREFIX))
            except FileNotFoundError:
                pass
            if stop.is_set():
                return
            stop.wait(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.run([sys.executable, path], timeout=timeout, env=env,
                              capture_output=True, text=True, cwd=tmp,
                              stdin=subprocess.DEVNULL)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        timed_out = True
        returncode = None
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (
            e.stdout or "")
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (
            e.stderr or "")
    seconds = time.monotonic() - start
    stop.set()
    watcher.join()

    # What the script left behind. Its driver waits for the daemon in shutdown(), so all of
    # it should be gone already; a short grace period covers processes that are exiting.
    leftovers: list[str] = []
    _wait_for(lambda: not pids_mentioning(tmp), 5)
    stray = pids_mentioning(tmp)
    if stray:
        leftovers.append(f"processes still running: {stray}")
    for name in sorted(sessions):
        shm = shm_dir_for(name)
        if not _wait_for(lambda shm=shm: not os.path.exists(shm), 2):
            leftovers.append(f"shared-memory store left behind: {shm}")
        if os.path.exists(os.path.join(tmp, name)):
            leftovers.append(f"session directory left behind: {os.path.join(tmp, name)}")

    # clean up after a failure so the next test starts clean
    for pid in stray:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in sessions:
        shutil.rmtree(shm_dir_for(name), ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)

    return ScriptRun(path=path, returncode=returncode, stdout=stdout, stderr=stderr,
                     seconds=seconds, timed_out=timed_out, sessions=sorted(sessions),
                     leftovers=leftovers)


@pytest.fixture
def script_runner():
    """``script_runner(path, timeout=60) -> ScriptRun``: see :func:`run_script`."""
    return run_script
