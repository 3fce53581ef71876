"""``quanta.util`` names that plugins provide: without the plugin, a clear ImportError that
names the package to install (checked in a fresh interpreter with plugin autoload off, so the
result does not depend on what is installed here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    ("from quanta.util import ActorPool", "ImportError", "quanta-util-pool"),
    ("import quanta.util; quanta.util.Queue", "ImportError", "quanta-util-queue"),
    ("from quanta.util.queue import Queue", "ModuleNotFoundError", "quanta-util-queue"),
]


@pytest.mark.parametrize("code,error,package", CASES)
def test_missing_plugin_names_its_package(code, error, package):
    env = dict(os.environ, QUANTA_DISABLE_PLUGIN_AUTOLOAD="1")
    script = (f"try:\n    {code}\nexcept ImportError as e:\n"
              "    print(type(e).__name__); print(e)\nelse:\n    print('no error')\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == error, out.stdout
    assert f"pip install {package}" in out.stdout


def test_unknown_util_name_is_an_attribute_error():
    out = subprocess.run([sys.executable, "-c", "import quanta.util as u; u.no_such_thing"],
                         capture_output=True, text=True, timeout=60)
    assert "AttributeError" in out.stderr and "no_such_thing" in out.stderr
