"""The remote side of an SSH bootstrap: get the agent code in place, start the node, relay.

This file is not imported on the host: the controller sends its source through the SSH
exec channel to a one-line stub (``STUB``) that reads it from stdin and runs it. Standard
library only, and small, because it runs before anything is installed.

The conversation, one JSON line each way (the controller never sends ahead, so nothing
read by Python's buffered stdin is lost when the relay switches to raw reads):

1. controller -> ``{"code_id", "name", "agent_args", "cookie", "start", "run_dir"}``
2. boot -> ``{"python": "3.11.7", "need_code": bool}`` (or ``{"error": ...}``)
3. controller -> a length line: -1 to stop here (e.g. the Python versions differ), 0 to
   go on with the cached code, or the size of the bundle followed by its zip bytes;
   boot -> ``{"installed": true}`` or ``{"error": ...}`` after unpacking a bundle. The zip is unpacked under a
   temporary name and renamed into ``$XDG_CACHE_HOME/clusterctl/code/<code_id>``, so a
   second bootstrap ships nothing and a half-written bundle is never used.
4. boot starts the node if none answers (and ``start``), then answers
   ``{"node": "ready" | "running" | "absent"}``.
5. it passes the channel's own stdin and stdout to the node over the node's unix
   socket (``SCM_RIGHTS``), and the node serves the controller on them directly: no
   process copies bytes in between and no TCP forwarding is needed. The script waits
   until the node closes its connection, then exits. Where descriptors cannot be
   passed, it relays the bytes itself instead.
"""

# The first stage the controller runs remotely: read a length, then that much source, run it.
STUB = "import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))"

# Only what every bootstrap needs is imported here; a warm one (node running, code
# cached) imports nothing more, which keeps a `world` of many hosts quick.
import json  # noqa: E402 - the stub above must stay first: it is documentation too
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402


def _say(obj) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def _fail(message: str) -> None:
    _say({"error": message})
    sys.exit(1)


def _cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clusterctl")


def _run_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "clusterctl")
    return os.path.join("/tmp", "clusterctl-%d" % os.getuid())


def _install(code_dir: str, blob: bytes) -> None:
    import io
    import zipfile

    parent = os.path.dirname(code_dir)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    staging = "%s/.incoming-%d" % (parent, os.getpid())
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        archive.extractall(staging)
    try:
        os.rename(staging, code_dir)
    except OSError:  # another bootstrap installed the same code first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


def _connect(path: str):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return sock
    except OSError:
        sock.close()
        return None


def _splice(sock) -> None:
    """Pass the channel's own stdin and stdout to the node, which then serves the
    controller on them directly; wait until the node closes our connection, then exit
    (sshd closes the channel once the node has closed its copies too)."""
    head = json.dumps({"op": "splice"}, separators=(",", ":")).encode()
    frame = b"CC\x01\x00" + len(head).to_bytes(4, "big") + (0).to_bytes(4, "big") + head
    try:
        socket.send_fds(sock, [frame], [0, 1])
    except (AttributeError, OSError):  # no descriptor passing here: copy the bytes instead
        _relay(sock)
    os.close(0)
    os.close(1)
    try:
        while sock.recv(65536):  # the node's greeting to this connection, then its end
            pass
    except OSError:
        pass
    os._exit(0)


def _relay(sock) -> None:
    """Copy stdin -> node and node -> stdout until either side closes."""
    import threading

    def upstream():
        try:
            while True:
                data = os.read(0, 262144)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while True:
            data = sock.recv(262144)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    os._exit(0)


def main() -> None:
    params = json.loads(sys.stdin.buffer.readline())
    code_dir = os.path.join(_cache_root(), "code", params["code_id"])
    have = os.path.isfile(os.path.join(code_dir, "clusterctl_node", "agent.py"))
    _say({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
          "need_code": not have})
    line = sys.stdin.buffer.readline()  # the bundle's size, 0 for none, or no go at all
    if not line.strip() or int(line) < 0:
        return  # the controller declined (say, a Python version mismatch): start nothing
    size = int(line)
    if size:
        blob = sys.stdin.buffer.read(size)
        if len(blob) != size:
            _fail("the code bundle arrived truncated")
        try:
            _install(code_dir, blob)
        except OSError as exc:
            _fail("cannot write the code cache %s: %s" % (code_dir, exc.strerror or exc))
        _say({"installed": True})
    run_dir = params.get("run_dir") or _run_dir()
    path = os.path.join(run_dir, params["name"] + ".sock")
    sock = _connect(path)
    state = "running"
    if sock is None:
        if not params.get("start"):
            _say({"node": "absent"})
            return
        import subprocess

        launch = ("import sys; sys.path.insert(0, %r); from clusterctl_node.agent import main; main()"
                  % code_dir)
        try:
            proc = subprocess.Popen([sys.executable, "-c", launch] + params["agent_args"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    cwd=os.path.expanduser("~"))
            out, err = proc.communicate((params["cookie"] + "\n").encode(), timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _fail("cannot start the node: %s" % exc)
        line = (out.decode(errors="replace").strip().splitlines() or [""])[0]
        if line.startswith("error:"):
            _fail(line[len("error:"):].strip())
        if not (line.startswith("ready") or line == "running"):
            detail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            _fail("the node did not start: %s" % detail)
        sock = _connect(path)
        if sock is None:
            _fail("the node started but its socket %s refuses connections" % path)
        state = "ready"
    _say({"node": state})
    _splice(sock)


if __name__ == "__main__":  # run by the stub (its globals are __main__'s), not on import
    main()
