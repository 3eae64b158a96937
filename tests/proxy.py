"""A loopback TCP proxy in front of a nats-server that sees every client request and can cut it.

Fault tests point the deploy (the provider's `natsUrl`) at the proxy and everything
else straight at the server. The proxy parses the client-to-server side of the
NATS protocol into whole operations (PUB and HPUB with their payloads, control
lines), records the subject of every publish, and before forwarding each one asks
`hook(subject)` what to do:

* `FORWARD`: pass it on (the default);
* `CUT_BEFORE`: drop it and close both sides of that connection;
* `CUT_AFTER`: pass it on, then close both sides (the server acts on it, the reply is lost).

The hook runs on the connection's own thread, so it may also block (e.g. restart
the server) before it answers: "between the release and the claim" is then an
exact point, not a timing guess. New connections are accepted after a cut, as a
load balancer or a restarted pod would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

FORWARD, CUT_BEFORE, CUT_AFTER = "forward", "cut-before", "cut-after"

#: Bounds: how long a connection may idle before its pump gives up, and buffer size.
IDLE_TIMEOUT = 120.0
CHUNK = 65536


class ApiProxy:
    def __init__(self, upstream_port: int, hook: Callable[[str], str] | None = None) -> None:
        self.upstream_port = upstream_port
        self.hook = hook or (lambda _subject: FORWARD)
        self.subjects: list[str] = []  # every client publish, in order
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._muted: set[socket.socket] = set()  # server sides whose replies are dropped (CUT_AFTER)
        self._thread = threading.Thread(target=self._accept, name="nats-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> ApiProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
        self._thread.join(5)

    def requests(self, prefix: str) -> list[str]:
        """Subjects published so far that start with `prefix` (e.g. "$JS.API.STREAM.UPDATE.")."""
        with self._lock:
            return [s for s in self.subjects if s.startswith(prefix)]

    # -- plumbing ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)  # the server is down: the client sees a dropped connection
                continue
            for sock in (client, server):
                sock.settimeout(IDLE_TIMEOUT)
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _cut(self, client: socket.socket, server: socket.socket) -> None:
        with self._lock:
            self.cuts += 1
            self._sockets -= {client, server}
            self._muted.discard(server)
        _close(client)
        _close(server)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(CHUNK):
                with self._lock:
                    if server in self._muted:
                        break  # the reply to a CUT_AFTER request: never reaches the client
                client.sendall(data)
        except OSError:
            pass
        self._cut(client, server)

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        buf = b""
        try:
            while True:
                op = _next_op(buf)
                if op is None:
                    data = client.recv(CHUNK)
                    if not data:
                        break
                    buf += data
                    continue
                raw, subject = op
                buf = buf[len(raw):]
                action = FORWARD
                if subject is not None:
                    with self._lock:
                        self.subjects.append(subject)
                    action = self.hook(subject)
                if action == CUT_BEFORE:
                    break
                if action == CUT_AFTER:
                    # Muted before the request goes up, so its reply cannot race the cut.
                    with self._lock:
                        self._muted.add(server)
                server.sendall(raw)
                if action == CUT_AFTER:
                    break
        except OSError:
            pass
        self._cut(client, server)


def _next_op(buf: bytes) -> tuple[bytes, str | None] | None:
    """The first complete protocol operation in `buf` and its subject (publishes only)."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    line = buf[:end]
    parts = line.split()
    verb = parts[0].upper() if parts else b""
    if verb not in (b"PUB", b"HPUB"):
        return buf[:end + 2], None
    total = int(parts[-1])  # PUB subj [reply] size | HPUB subj [reply] hdr_size total_size
    size = end + 2 + total + 2
    if len(buf) < size:
        return None
    return buf[:size], parts[1].decode()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
