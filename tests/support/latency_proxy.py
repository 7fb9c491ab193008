"""A TCP relay on loopback that adds latency: a slow network for tests, without netem.

    with LatencyProxy(("198.18.0.2", 22), delay=0.1) as proxy:
        ...connect to ("127.0.0.1", proxy.port)...

Every byte is held ``delay`` seconds in each direction (so a round trip takes
``2 * delay`` longer) and then passed on in order; throughput is not limited. Closing
the proxy closes every connection through it and joins its threads.

``ThrottledRelay`` is the other kind of slow link: no added delay, but a limited rate,
between two unix sockets (a local node's, and one the test points the controller at).
"""

from __future__ import annotations

import queue
import socket
import threading
import time


class _Relay:
    """What both relays share: a listener, a thread per job, and a close that ends every
    connection through the relay and joins its threads. A subclass opens the upstream
    socket (``_open_upstream``) and starts the threads that move the bytes (``_relay``)."""

    name = "relay"

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start(self._accept)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=self.name)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _open_upstream(self) -> socket.socket:
        raise NotImplementedError

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = self._open_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            self._relay(client, upstream)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
            except OSError:
                pass
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()


class LatencyProxy(_Relay):
    """Relays connections made to ``127.0.0.1:port`` to ``target``, ``delay`` s late each way."""

    name = "latency-proxy"

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        super().__init__(listener)

    def _open_upstream(self) -> socket.socket:
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        for src, dst in ((client, upstream), (upstream, client)):
            held: queue.SimpleQueue = queue.SimpleQueue()
            self._start(self._read, src, held)
            self._start(self._write, held, dst)

    def _read(self, src: socket.socket, held: queue.SimpleQueue) -> None:
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            held.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self, held: queue.SimpleQueue, dst: socket.socket) -> None:
        while True:
            due, data = held.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return


class ThrottledRelay(_Relay):
    """Relays connections made to the unix socket ``path`` to the unix socket ``target``,
    at about ``rate`` bytes a second in each direction: a slow link for tests.

    Each direction is one thread that reads a small piece, writes it on and sleeps until
    the rate allows the next, so it holds at most one piece: when the far end stops
    reading (a frozen process), the relay stops too, and the sender's socket fills up.
    ``forwarded["up"]`` counts the bytes passed on towards ``target``, ``["down"]`` the
    bytes passed back. Closing the relay closes every connection through it and joins
    its threads.
    """

    PIECE = 1 << 14
    name = "throttled-relay"

    def __init__(self, target: str, path: str, rate: float) -> None:
        self.target = target
        self.path = path
        self.rate = rate
        self.forwarded = {"up": 0, "down": 0}
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(8)
        super().__init__(listener)

    def _open_upstream(self) -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.target)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        self._start(self._pump, client, upstream, "up")
        self._start(self._pump, upstream, client, "down")

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        free_at = time.monotonic()  # when the rate allows the next piece
        while True:
            try:
                data = src.recv(self.PIECE)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return
            with self._lock:
                self.forwarded[direction] += len(data)
            now = time.monotonic()
            free_at = max(free_at, now) + len(data) / self.rate
            if free_at > now:
                time.sleep(free_at - now)
