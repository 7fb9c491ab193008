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


class LatencyProxy:
    """Relays connections made to ``127.0.0.1:port`` to ``target``, ``delay`` s late each way."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start(self._accept)

    def __enter__(self) -> "LatencyProxy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="latency-proxy")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
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
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)


class ThrottledRelay:
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

    def __init__(self, target: str, path: str, rate: float) -> None:
        self.target = target
        self.path = path
        self.rate = rate
        self.forwarded = {"up": 0, "down": 0}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._start(self._accept)

    def __enter__(self) -> "ThrottledRelay":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="throttled-relay")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
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
