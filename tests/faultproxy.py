"""A TCP proxy on 127.0.0.1 in front of PostgreSQL that a test can cut, black-hole and restore.

Faults are injected here rather than by restarting the PostgreSQL server, so the rest of the
suite (and other sessions' databases) never notice:

* :meth:`FaultProxy.cut` closes every connection and refuses new ones at once (a fail-over,
  a server restart): clients see "connection refused" or "server closed the connection";
* :meth:`FaultProxy.blackhole` keeps connections open but forwards nothing in either
  direction, and new connections are accepted and then ignored (a half-open network):
  clients hang until their own timeouts fire;
* :meth:`FaultProxy.restore` forwards again (new connections; black-holed ones stay dead).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

__all__ = ["FaultProxy", "fault_proxy"]


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until told otherwise."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._mode = "open"  # open | cut | blackhole
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- controls -----------------------------------------------------------------------

    def cut(self) -> None:
        """Close every connection; refuse new ones until :meth:`restore`."""
        with self._lock:
            self._mode = "cut"
            self._close_all()

    def blackhole(self) -> None:
        """Forward nothing from now on; connections stay open (half-open)."""
        with self._lock:
            self._mode = "blackhole"

    def restore(self) -> None:
        """Forward new connections again; black-holed connections are closed."""
        with self._lock:
            if self._mode == "blackhole":
                self._close_all()
            self._mode = "open"

    def close(self) -> None:
        """Stop the proxy and close everything."""
        self._stopping = True
        self._thread.join(timeout=5)
        with self._lock:
            self._close_all()
        self._selector.close()
        self._listener.close()

    # -- the forwarding loop ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            mode = self._mode
        if mode == "cut":
            client.close()
            return
        if mode == "blackhole":
            # Accepted and then ignored: the client's handshake never gets an answer.
            with self._lock:
                self._pairs[client] = client
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        server.setblocking(False)
        with self._lock:
            self._pairs[client] = server
            self._pairs[server] = client
        self._selector.register(client, selectors.EVENT_READ, None)
        self._selector.register(server, selectors.EVENT_READ, None)

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self._lock:
            peer = self._pairs.get(sock)
            mode = self._mode
        if peer is None:
            return
        if not data:
            with self._lock:
                self._close_pair(sock)
            return
        if mode == "blackhole":
            return  # swallowed
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            with self._lock:
                self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):
                s.close()

    def _close_all(self) -> None:
        for sock in list(self._pairs):
            self._close_pair(sock)


@contextlib.contextmanager
def fault_proxy(host: str, port: int) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` to ``host:port`` for the duration of the block."""
    proxy = FaultProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
