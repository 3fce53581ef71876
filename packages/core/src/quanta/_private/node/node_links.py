"""A cluster node daemon's links: to its own processes over its TCP port, and to other nodes.

* **Routing.** Processes of a cluster node have addresses ``tcp://<node ip>:<node port>/<id>``
  (see ``transport.py``). A connection to one arrives at the daemon's TCP listener with a
  ``ROUTE`` frame; :meth:`NodeLinks.route` passes its socket to the process over the Unix
  socket ``<session>/sockets/<id>.fds`` (``SCM_RIGHTS``, one channel per process, opened on
  first use) and answers the connecting side one byte. The daemon then forgets the socket.
* **Other nodes' daemons.** One call-plane connection per node address, opened on first use,
  for one-way notifications (freeing objects, hosting actors) and calls whose answer comes
  back as a callback (reserving placement group bundles, locating them). A call to a node
  whose connection closes is answered ``(False, ConnectionClosed)``.
* **Copies of objects.** A node whose store made an object remembers which nodes pulled a copy
  of it (:meth:`NodeLinks.copied`), so that when the object is freed every copy goes too
  (:meth:`NodeLinks.free_copies`).

Reactor thread only.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from quanta._private import messages as m
from quanta._private.transport import Connection, ConnectionClosed, hand_over

_PROCESS_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NodeLinks:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._channels: dict[str, socket.socket] = {}
        self._nodes: dict[str, Connection] = {}
        self._copies: dict[str, set[str]] = {}
        self._calls: dict[int, tuple[str, Callable[[bool, Any], None]]] = {}
        self._req = itertools.count(1)

    # -- routing --------------------------------------------------------------------------
    def route(self, conn: Connection, target: Any) -> None:
        """Pass ``conn`` (a TCP connection whose first frame was ``(ROUTE, target)``) to the
        local process ``target``, or refuse it with a 0 byte when there is none."""
        sock = conn.detach()
        ok = isinstance(target, str) and bool(_PROCESS_ID.match(target))
        if ok:
            ok = self._hand_over(target, sock)
        try:  # one byte into an empty send buffer; the socket stays non-blocking (its
            # flags are shared with the process it was passed to)
            sock.send(b"\x01" if ok else b"\x00")
        except OSError:
            pass
        sock.close()

    def _hand_over(self, target: str, sock: socket.socket) -> bool:
        for _ in range(2):  # a cached channel may belong to a process that exited
            channel = self._channels.get(target)
            if channel is None:
                path = os.path.join(self.daemon.session_dir, "sockets", target + ".fds")
                channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    channel.connect(path)
                except OSError:
                    channel.close()
                    return False
                self._channels[target] = channel
            try:
                hand_over(channel, sock)
                return True
            except OSError:
                self.forget_process(target)
        return False

    def forget_process(self, target: str) -> None:
        channel = self._channels.pop(target, None)
        if channel is not None:
            channel.close()

    # -- other nodes ------------------------------------------------------------------------
    def _send(self, address: str, msg: tuple) -> bool:
        conn = self._nodes.get(address)
        if conn is None or conn.closed:
            try:
                conn = self.daemon.reactor.connect(address, timeout=2.0)
            except OSError:
                return False
            self._nodes[address] = conn
            conn.on_close.append(lambda c, a=address: self._node_lost(a))
        try:
            conn.send(msg)
        except ConnectionClosed:
            self._nodes.pop(address, None)
            return False
        return True

    def notify_node(self, address: str, method: str, *args: Any) -> bool:
        """Send a one-way call to the daemon at ``address``. Returns False when that daemon
        cannot be reached (a node that is gone)."""
        return self._send(address, (m.NOTIFY, method, args))

    def call_node(self, address: str, method: str, args: tuple,
                  then: Callable[[bool, Any], None]) -> bool:
        """Call ``method`` on the daemon at ``address``; ``then(ok, result)`` runs on the
        reactor with its answer. Returns False (``then`` is never run) when that daemon
        cannot be reached."""
        req = next(self._req)
        self._calls[req] = (address, then)
        if not self._send(address, (m.CALL, req, method, args)):
            del self._calls[req]
            return False
        return True

    def on_reply(self, conn: Connection, msg: tuple) -> None:
        call = self._calls.pop(msg[1], None)
        if call is not None:
            call[1](msg[2], msg[3])

    def _node_lost(self, address: str) -> None:
        """The connection to another node's daemon closed: it died (or is dying: a new
        connection might still be accepted by its closing socket), so no more work goes there
        until the head reports it again, and calls waiting for its answers fail."""
        failed = [req for req, (a, _) in self._calls.items() if a == address]
        for req in failed:
            _, then = self._calls.pop(req)
            then(False, ConnectionClosed(f"the node daemon at {address} went away"))
        for node in list(self.daemon.view.nodes.values()):
            if node.address == address:
                self.daemon.view.mark_unreachable(node.node_id)
        self.daemon.actors.node_lost(address)

    # -- copies -----------------------------------------------------------------------------
    def copied(self, hexid: str, puller: str) -> None:
        """The node at ``puller`` took a copy of ``hexid`` from this node's store."""
        if puller:
            self._copies.setdefault(hexid, set()).add(puller)

    def free_copies(self, hexids: list[str]) -> None:
        """Tell the nodes that copied any of ``hexids`` to delete their copies."""
        by_node: dict[str, list[str]] = {}
        for hexid in hexids:
            for address in self._copies.pop(hexid, ()):
                by_node.setdefault(address, []).append(hexid)
        for address, ids in by_node.items():
            self.notify_node(address, "free_objects", ids)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
