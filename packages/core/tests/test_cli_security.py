"""``quanta start`` and the secrets and processes it handles: the token never stays in a
long-lived process's argv (``--token-file``, ``$QUANTA_CLUSTER_TOKEN``, ``--token`` moved to
the environment by re-exec), Ctrl-C on a ``--block`` node stops that node only, and the
session's files are private to their user."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest
import test_cli
from quanta._private import cluster

shell = test_cli.shell  # a private TMPDIR; stops what it starts

pytestmark = pytest.mark.timeout(120)


def _token(head: dict) -> str:
    with open(os.path.join(head["session_dir"], "cluster_token")) as f:
        return f.read().strip()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _popen_block(sh, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "quanta.cli", "start", *args, "--block"],
                            env=sh.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def _wait_member(sh, helpers, proc: subprocess.Popen, before: set[int]) -> dict:
    """The record of the member node the blocking ``proc`` started."""
    def new() -> list[dict]:
        return [r for r in sh.members() if r["pid"] not in before]

    assert helpers.wait_until(lambda: new() or proc.poll() is not None, 60)
    found = new()
    assert found, proc.communicate(timeout=10)
    sh.sessions.append(found[0])
    assert cluster.probe(found[0]) is not None
    return found[0]


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


# ------------------------------------------------------------------------------------------
# Ctrl-C on a --block node stops that node only
# ------------------------------------------------------------------------------------------
def test_ctrl_c_on_a_blocking_member_stops_that_member_only(shell, helpers):
    head = shell.start("--num-cpus", "1")
    other = shell.join(head)
    proc = _popen_block(shell, "--address", head["control_address"], "--num-cpus", "1")
    try:
        member = _wait_member(shell, helpers, proc, {other["pid"]})
        proc.send_signal(signal.SIGINT)  # Ctrl-C in its terminal
        out, err = _finish(proc)
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
        assert helpers.wait_until(lambda: not helpers.pid_alive(member["pid"]), 10)
        assert not os.path.exists(member["session_dir"])
        assert [r["pid"] for r in shell.members()] == [other["pid"]]
        # the head and the other member still run, and are still recorded
        assert cluster.probe(head) is not None and cluster.probe(other) is not None
        assert shell.record()["pid"] == head["pid"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert shell.quanta("stop").returncode == 0


def test_ctrl_c_on_a_blocking_head_stops_the_head_only(shell, helpers):
    proc = _popen_block(shell, "--head", "--num-cpus", "1", "--port", "0")
    try:
        assert helpers.wait_until(
            lambda: shell.record() is not None or proc.poll() is not None, 60)
        head = shell.record()
        assert head is not None, proc.communicate(timeout=10)
        shell.sessions.append(head)
        member = shell.join(head)
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc)
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err
        assert helpers.wait_until(lambda: not helpers.pid_alive(head["pid"]), 10)
        assert shell.record() is None
        # the member keeps running (waiting for a head) and stays recorded
        assert cluster.probe(member) is not None
        assert [r["pid"] for r in shell.members()] == [member["pid"]]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = shell.quanta("stop")
    assert res.returncode == 0 and f"pid {member['pid']}" in res.stdout


# ------------------------------------------------------------------------------------------
# the token never stays in a long-lived process's argv
# ------------------------------------------------------------------------------------------
def test_a_token_on_the_command_line_leaves_argv_with_block(shell, helpers):
    head = shell.start("--num-cpus", "1")
    token = _token(head)
    proc = _popen_block(shell, "--address", head["control_address"], "--num-cpus", "1",
                        "--token", token)
    try:
        member = _wait_member(shell, helpers, proc, set())
        assert proc.poll() is None
        # the blocking process (re-executed, same pid) and the daemon: no token in argv
        assert token.encode() not in _cmdline(proc.pid), _cmdline(proc.pid)
        assert b"quanta.cli" in _cmdline(proc.pid) and b"--block" in _cmdline(proc.pid)
        assert token.encode() not in _cmdline(member["pid"])
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc)
        assert proc.returncode == 0, out + err
        assert err.count("visible to other users") == 1, err
        assert "--token-file" in err
        assert cluster.probe(head) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert shell.quanta("stop").returncode == 0


def test_token_file_and_environment(shell, helpers):
    head = shell.start("--num-cpus", "1")
    token_file = os.path.join(head["session_dir"], "cluster_token")
    member = shell.join(head, "--token-file", token_file)
    assert _token(head).encode() not in _cmdline(member["pid"])
    # --token-file: a clear error naming the option for a missing or malformed file
    res = shell.quanta("start", "--address", head["control_address"], "--token-file",
                       os.path.join(shell.tmp, "nowhere"))
    assert res.returncode == 2 and "--token-file" in res.stderr
    bad = os.path.join(shell.tmp, "bad_token")
    with open(bad, "w") as f:
        f.write("not a token\n")
    res = shell.quanta("start", "--address", head["control_address"], "--token-file", bad)
    assert res.returncode == 2 and "--token-file" in res.stderr
    assert "not a token" not in res.stderr  # the file's content is not echoed
    res = shell.quanta("start", "--address", head["control_address"], "--token-file", bad,
                       "--token", _token(head))
    assert res.returncode == 2 and "not both" in res.stderr
    assert [r["pid"] for r in shell.members()] == [member["pid"]]
    assert shell.quanta("stop").returncode == 0


def test_the_head_takes_a_token_from_a_file_or_the_environment(shell, helpers, tmp_path):
    token = "0123456789abcdef" * 2
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    head = shell.start("--token-file", str(token_file))
    assert _token(head) == token
    assert token.encode() not in _cmdline(head["pid"])
    assert shell.quanta("stop").returncode == 0

    other = "fedcba9876543210" * 2
    shell.env["QUANTA_CLUSTER_TOKEN"] = other
    try:
        head = shell.start()
        assert _token(head) == other
        member = shell.join(head)  # the member takes it from the environment too
        assert cluster.probe(member) is not None
        assert shell.quanta("stop").returncode == 0
        shell.env["QUANTA_CLUSTER_TOKEN"] = "short"
        res = shell.quanta("start", "--head", "--port", "0")
        assert res.returncode == 2 and "QUANTA_CLUSTER_TOKEN" in res.stderr
    finally:
        del shell.env["QUANTA_CLUSTER_TOKEN"]
    res = shell.quanta("start", "--head", "--port", "0", "--token", "short")
    assert res.returncode == 2 and "--token" in res.stderr
    assert shell.record() is None


# ------------------------------------------------------------------------------------------
# files on disk
# ------------------------------------------------------------------------------------------
def test_session_log_and_storage_files_are_private(shell, tmp_path):
    storage = str(tmp_path / "control.sqlite3")
    old = os.umask(0o022)  # the CLI and the daemon inherit it
    try:
        head = shell.start("--storage", storage)
    finally:
        os.umask(old)

    def mode(path: str) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    assert mode(head["session_dir"]) == 0o700
    assert mode(os.path.dirname(head["log"])) == 0o700
    assert mode(head["log"]) == 0o600
    for name in (storage, storage + "-wal", storage + "-shm"):
        if os.path.exists(name) or name == storage:
            assert mode(name) == 0o600, name
    assert shell.quanta("stop").returncode == 0
