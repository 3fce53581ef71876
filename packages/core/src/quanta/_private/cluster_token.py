"""The cluster token: the shared secret every node and driver presents to the head.

``quanta start --head`` generates it (128 random bits, hex), or takes it from
``--token-file`` / ``QUANTA_CLUSTER_TOKEN`` (a head restarted on its ``--storage`` reuses the
one kept there), and stores it in ``<session>/cluster_token`` with mode 0600 (readable by the
user who started the head only). Joining processes pass it with ``--token-file`` /
``QUANTA_CLUSTER_TOKEN`` (``--token`` too, which ``ps`` shows), or read it from that file when
they run on the head's machine as the same user. Daemons get it by environment only. It travels in the ``quanta-token``
metadata entry of every control-plane call; the head refuses a missing or wrong token with
``UNAUTHENTICATED`` (compared in constant time).
"""

from __future__ import annotations

import hmac
import os
import secrets

FILE_NAME = "cluster_token"
METADATA_KEY = "quanta-token"
ENV_VAR = "QUANTA_CLUSTER_TOKEN"


def generate() -> str:
    return secrets.token_hex(16)


def token_path(session_dir: str) -> str:
    return os.path.join(session_dir, FILE_NAME)


def write(session_dir: str, token: str) -> str:
    """Store ``token`` in the session directory, readable by this user only. Returns the path."""
    path = token_path(session_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return path


def read(session_dir: str) -> str | None:
    try:
        with open(token_path(session_dir)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def check(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def validate(token: str) -> str:
    """Raise ValueError unless ``token`` looks like one :func:`generate` makes."""
    if not token or len(token) < 16 or any(c not in "0123456789abcdef" for c in token):
        raise ValueError("--token: expected the cluster's token, at least 16 lowercase hex "
                         f"characters (see <session>/{FILE_NAME} on the head), got {token!r}")
    return token
