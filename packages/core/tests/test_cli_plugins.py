"""``quanta plugins``: the installed plugins, their distribution and version, their status and
hooks, as a table or as JSON.

Each test runs ``python -S -m quanta.cli plugins`` in an isolated environment: ``-S`` leaves
site-packages (and whatever plugins are installed there) off ``sys.path``, which holds only a
directory with links to quanta, pluggy and cloudpickle, plus the fake distributions
(``*.dist-info`` with ``quanta`` entry points) a test writes there. So the results do not depend
on the plugins installed in the Python running the tests; one test checks the listing against
that real environment too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pluggy
import pytest
import quanta

pytestmark = pytest.mark.timeout(60)

TWO_HOOKS = """
from quanta.plugins import hookimpl

@hookimpl
def quanta_util_exports():
    return {"Thing": object}

@hookimpl
def quanta_task_events(events):
    pass
"""
ACCELERATORS = """
from quanta.plugins import hookimpl

@hookimpl
def quanta_accelerator_managers():
    return []
"""
NO_HOOKS = "x = 1\n"
BROKEN = "raise ImportError('no module named zzz_missing')\n"
# A plugin that registers a second plugin in-process while it is being loaded.
SIDECAR = """
from quanta.plugins import get_plugin_manager, hookimpl

class _Sidecar:
    @hookimpl
    def quanta_task_events(self, events):
        pass

get_plugin_manager().register(_Sidecar(), name="sidecar")
"""


class Env:
    """An isolated ``sys.path`` for the CLI; ``add_dist`` installs a fake plugin distribution."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for module in (quanta, pluggy, cloudpickle):
            src = Path(module.__file__)
            src = src.parent if src.name == "__init__.py" else src
            (root / src.name).symlink_to(src, target_is_directory=src.is_dir())

    def add_dist(
        self, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
    ) -> None:
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[quanta]\n{lines}")

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("QUANTA_")}
        return subprocess.run(
            [sys.executable, "-S", "-m", "quanta.cli", "plugins", *args],
            cwd=self.root,
            env={**clean, "PYTHONPATH": str(self.root), **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    def json(self, *args: str, **env: str) -> tuple[dict, subprocess.CompletedProcess]:
        proc = self.run("--json", *args, **env)
        return json.loads(proc.stdout), proc


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
def two_plugins(env: Env) -> Env:
    env.add_dist("quanta-alpha", "1.2.3", {"alpha": "fake_alpha"}, {"fake_alpha": TWO_HOOKS})
    env.add_dist("quanta-beta", "0.9", {"beta": "fake_beta"}, {"fake_beta": ACCELERATORS})
    return env


def table(stdout: str) -> dict[str, list[str]]:
    """The rows of the text table by plugin name: [status, distribution, version, hooks]."""
    lines = stdout.split("\n\n")[0].splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "DISTRIBUTION", "VERSION", "HOOKS"]
    starts = [lines[0].index(h) for h in ("STATUS", "DISTRIBUTION", "VERSION", "HOOKS")]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip([0, *starts], [*starts, None])]
        rows[cells[0]] = cells[1:]
    return rows


def test_no_plugin_installed(env: Env) -> None:
    proc = env.run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("No Quanta plugins are installed")
    assert "entry points of group 'quanta'" in proc.stdout
    data, proc = env.json()
    assert proc.returncode == 0
    assert data == {"entry_point_group": "quanta", "plugins": [], "error": None}


def test_lists_name_distribution_version_and_hooks(two_plugins: Env) -> None:
    proc = two_plugins.run()
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout) == {
        "alpha": ["loaded", "quanta-alpha", "1.2.3", "quanta_task_events, quanta_util_exports"],
        "beta": ["loaded", "quanta-beta", "0.9", "quanta_accelerator_managers"],
    }
    assert "\n\n" not in proc.stdout  # no notes when every plugin is loaded


def test_json(two_plugins: Env) -> None:
    data, proc = two_plugins.json()
    assert proc.returncode == 0, proc.stderr
    assert data["error"] is None
    assert data["plugins"] == [
        {
            "name": "alpha",
            "status": "loaded",
            "distribution": "quanta-alpha",
            "version": "1.2.3",
            "entry_point": "fake_alpha",
            "hooks": ["quanta_task_events", "quanta_util_exports"],
        },
        {
            "name": "beta",
            "status": "loaded",
            "distribution": "quanta-beta",
            "version": "0.9",
            "entry_point": "fake_beta",
            "hooks": ["quanta_accelerator_managers"],
        },
    ]


def test_a_plugin_with_no_hooks(env: Env) -> None:
    env.add_dist("quanta-empty", "1.0", {"empty": "fake_empty"}, {"fake_empty": NO_HOOKS})
    proc = env.run()
    assert table(proc.stdout)["empty"] == ["loaded", "quanta-empty", "1.0", "(none)"]
    assert env.json()[0]["plugins"][0]["hooks"] == []


@pytest.mark.parametrize(
    ("variables", "statuses", "note"),
    [
        (
            {"QUANTA_BLOCK_PLUGINS": "beta"},
            {"alpha": "loaded", "beta": "blocked"},
            "blocked: named in QUANTA_BLOCK_PLUGINS",
        ),
        (
            {"QUANTA_PLUGINS": "alpha"},
            {"alpha": "loaded", "beta": "not selected"},
            "not selected: QUANTA_PLUGINS is set",
        ),
        (
            {"QUANTA_PLUGINS": "alpha,beta", "QUANTA_BLOCK_PLUGINS": " alpha "},
            {"alpha": "blocked", "beta": "loaded"},
            "blocked: named in QUANTA_BLOCK_PLUGINS",
        ),
        (
            {"QUANTA_DISABLE_PLUGIN_AUTOLOAD": "1", "QUANTA_PLUGINS": "alpha"},
            {"alpha": "disabled", "beta": "disabled"},
            "QUANTA_DISABLE_PLUGIN_AUTOLOAD is set",
        ),
    ],
)
def test_blocked_and_disabled_plugins_are_shown_as_such(
    two_plugins: Env, variables: dict[str, str], statuses: dict[str, str], note: str
) -> None:
    proc = two_plugins.run(**variables)
    assert proc.returncode == 0, proc.stderr
    rows = table(proc.stdout)
    assert {name: row[0] for name, row in rows.items()} == statuses
    for name, status in statuses.items():
        assert rows[name][3] != "-" if status == "loaded" else rows[name][3] == "-"
    assert note in proc.stdout
    data, _ = two_plugins.json(**variables)
    assert {p["name"]: p["status"] for p in data["plugins"]} == statuses
    skipped = [p for p in data["plugins"] if p["status"] != "loaded"]
    assert skipped and all(p["hooks"] is None for p in skipped)
    assert all(p["distribution"] and p["version"] for p in skipped)  # known without importing


def test_a_blocked_plugin_is_not_imported(env: Env) -> None:
    env.add_dist("quanta-broken", "0.1", {"broken": "fake_broken"}, {"fake_broken": BROKEN})
    proc = env.run(QUANTA_BLOCK_PLUGINS="broken")
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout)["broken"] == ["blocked", "quanta-broken", "0.1", "-"]


def test_a_plugin_that_fails_to_load(two_plugins: Env) -> None:
    two_plugins.add_dist("quanta-broken", "0.1", {"broken": "fake_broken"}, {"fake_broken": BROKEN})
    proc = two_plugins.run()
    assert proc.returncode == 1
    rows = table(proc.stdout)
    # alphabetical loading: alpha and beta were registered, then broken failed and the whole
    # manager was discarded, so no plugin is loaded in this process
    assert {name: row[0] for name, row in rows.items()} == {
        "alpha": "not loaded",
        "beta": "not loaded",
        "broken": "failed",
    }
    assert "QUANTA_BLOCK_PLUGINS=broken" in proc.stderr and "'quanta-broken'" in proc.stderr
    assert "zzz_missing" in proc.stderr
    data, proc = two_plugins.json()
    assert proc.returncode == 1
    assert "zzz_missing" in data["error"]
    assert [p["status"] for p in data["plugins"]] == ["not loaded", "not loaded", "failed"]


def test_a_plugin_registered_in_process(env: Env) -> None:
    env.add_dist("quanta-sidecar", "2.0", {"host": "fake_host"}, {"fake_host": SIDECAR})
    data, proc = env.json()
    assert proc.returncode == 0, proc.stderr
    assert data["plugins"] == [
        {
            "name": "host",
            "status": "loaded",
            "distribution": "quanta-sidecar",
            "version": "2.0",
            "entry_point": "fake_host",
            "hooks": [],
        },
        {
            "name": "sidecar",
            "status": "loaded",
            "distribution": None,
            "version": None,
            "entry_point": None,
            "hooks": ["quanta_task_events"],
        },
    ]
    assert table(env.run().stdout)["sidecar"] == [
        "loaded",
        "(in-process)",
        "-",
        "quanta_task_events",
    ]


def test_matches_this_python_environment() -> None:
    """Not isolated: whatever plugins are installed here are the ones listed."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("QUANTA_")}
    variables["QUANTA_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # so that a broken plugin cannot fail it
    proc = subprocess.run(
        [sys.executable, "-m", "quanta.cli", "plugins", "--json"],
        env=variables,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    installed = sorted(ep.name for ep in importlib.metadata.entry_points(group="quanta"))
    listed = json.loads(proc.stdout)["plugins"]
    assert [p["name"] for p in listed] == installed
    assert all(p["status"] == "disabled" for p in listed)


def test_plugins_is_in_the_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "quanta.cli", "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and "plugins" in proc.stdout
