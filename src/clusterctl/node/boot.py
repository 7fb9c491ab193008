"""The remote side of an SSH bootstrap: get the agent code in place, start the node, relay.

Sent as source to ``STUB`` and run before anything is installed, so standard library only.
It also holds the checks of places on disk (run directory, socket, code cache) that the
node and the local transport use. See docs/how-it-works.md, sections "Booting a node over
SSH" through "The splice".
"""

# The first stage the controller runs remotely: read a length, then that much source, run it.
STUB = "import sys;exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))"

# Only what every bootstrap needs is imported here; a warm one (node running, code
# cached) imports nothing more, which keeps a `world` of many hosts quick.
import json  # noqa: E402 - the stub above must stay first: it is documentation too
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


def _say(obj) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def _fail(message: str) -> None:
    _say({"error": message})
    sys.exit(1)


# -- places on disk -----------------------------------------------------------------------
#
# One set of checks for the host side: the node (daemon/node.py) imports them from here, and this
# script uses them before it connects to a socket or runs code from the cache. Another local
# user who made the run directory first would otherwise receive the SSH channel, and one who
# can write to the cache would run code as us.

MANIFEST = "MANIFEST"  # in a code directory: its files' names, in the order of the code id
STALE_SECONDS = 3600.0  # a staging directory this old is a crashed install's, not one under way


def cache_root() -> str:
    """Where shipped code is kept, content-addressed: ``$XDG_CACHE_HOME/clusterctl``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clusterctl")


def run_dir() -> str:
    """The per-user directory for sockets, pid files and logs (0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "clusterctl")
    return os.path.join("/tmp", "clusterctl-%d" % os.getuid())


def socket_path(directory: str, name: str) -> str:
    """The unix socket of the node called ``name`` in the run directory ``directory``."""
    return os.path.join(directory, name + ".sock")


def _check_owner(path: str, st, what: str) -> None:
    if st.st_uid != os.getuid():
        raise RuntimeError("%s %s belongs to uid %d, not to us (uid %d): remove it, or use "
                           "another directory" % (what, path, st.st_uid, os.getuid()))


def _check_place(path: str, st, what: str, forbidden: int) -> None:
    """``path`` (already lstat'ed) must be a real directory of ours without ``forbidden``
    mode bits."""
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError("%s %s is not a directory" % (what, path))
    _check_owner(path, st, what)
    if st.st_mode & forbidden:
        raise RuntimeError("%s %s is %s group or others (mode %03o): chmod go-rwx %s"
                           % (what, path, "open to" if forbidden == 0o077 else "writable by",
                              st.st_mode & 0o777, path))


def _mkdirs(path: str) -> None:
    """``os.makedirs`` with mode 0700 for every directory it creates (makedirs gives the
    missing parents the umask's mode, which may let the group write)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _mkdirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def private_dir(path: str, create: bool = True) -> bool:
    """Check that ``path`` is a directory of ours that group and others cannot enter,
    creating it (0700) when it is missing and ``create``. True if it is there, False if
    it is missing (and not ``create``); RuntimeError, naming the path and its owner,
    if it is not ours or not private: nothing in it can then be trusted."""
    if create:
        try:
            _mkdirs(path)
        except OSError as exc:
            raise RuntimeError("cannot create %s: %s" % (path, exc.strerror or exc)) from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise RuntimeError("cannot use %s: %s" % (path, exc.strerror or exc)) from None
    _check_place(path, st, "the run directory", 0o077)
    return True


def check_private_stat(path: str, st) -> None:
    """``private_dir``'s check, in its words, of a directory already looked at: ``st``
    from ``os.lstat``, or ``os.fstat`` of a descriptor opened without following a link
    (the controller's hub checks the very directory it then uses that way)."""
    _check_place(path, st, "the run directory", 0o077)


def check_socket(path: str) -> None:
    """Before connecting to ``path``: a socket there must be ours (absent is fine)."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return  # the connect reports it
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError("%s is not a socket" % path)
    _check_owner(path, st, "the socket")


LARGE_FILE = 1 << 18  # bytes from which a file is hashed with hashlib's sha256


def code_digest(files) -> str:
    """The code id of ``(relative path, bytes)`` pairs, in their order."""
    try:  # the built-in module: hashlib loads OpenSSL, which costs a warm start ~5 ms
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:
            from hashlib import sha256
    digest = sha256()
    large = None
    for rel, data in files:
        if len(data) < LARGE_FILE:
            digest.update(rel.encode() + b"\0" + sha256(data).digest())
            continue
        if large is None:  # (OpenSSL's is six times faster: a shipped numpy's 57 MB)
            from hashlib import sha256 as large
        digest.update(rel.encode() + b"\0" + large(data).digest())
    return digest.hexdigest()[:16]


def _read_files(root: str, names):
    for rel in names:
        with open(os.path.join(root, rel), "rb") as fh:
            yield rel, fh.read()


def _check_cache_dirs(code_dir: str) -> bool:
    """The cache root and its ``code`` directory: ours and not writable by others.
    False if one is missing."""
    parent = os.path.dirname(code_dir)
    for place in (os.path.dirname(parent), parent):
        try:
            st = os.lstat(place)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise RuntimeError("cannot use the code cache %s: %s" % (place, exc.strerror or exc)) from None
        _check_place(place, st, "the code cache", 0o022)
    return True


def code_ok(code_dir: str, code_id: str) -> bool:
    """True if ``code_dir`` holds exactly the files of ``code_id`` (checked against their
    hash); False if it is missing, incomplete or altered, so it is installed again.
    RuntimeError if the cache or anything in it is not ours or is writable by others:
    code is never run from there."""
    import stat

    if not _check_cache_dirs(code_dir):
        return False
    try:
        st = os.lstat(code_dir)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    _check_place(code_dir, st, "the code directory", 0o022)
    present = set()
    for top, dirs, files in os.walk(code_dir):
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                if os.path.basename(top) == "__pycache__":
                    continue  # a running node's Python writing its bytecode (renamed into place)
                return False  # gone meanwhile: being replaced
            if stat.S_ISLNK(st.st_mode):
                return False
            what = "the cached directory" if stat.S_ISDIR(st.st_mode) else "the cached file"
            _check_owner(path, st, what)
            if st.st_mode & 0o022:
                raise RuntimeError("%s %s is writable by group or others (mode %03o): remove %s"
                                   % (what, path, st.st_mode & 0o777, code_dir))
        if os.path.basename(top) != "__pycache__":  # Python's own, checked above
            rel_top = os.path.relpath(top, code_dir)
            present.update(name if rel_top == "." else rel_top + "/" + name for name in files)
    try:
        with open(os.path.join(code_dir, MANIFEST)) as fh:
            names = fh.read().split()
        if present != set(names) | {MANIFEST}:
            return False
        return code_digest(_read_files(code_dir, names)) == code_id
    except (OSError, ValueError):
        return False


def _unique(prefix: str) -> str:
    """A name no other start uses, also on another host sharing this directory (NFS)."""
    host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())
    return "%s-%s-%d-%s" % (prefix, host, os.getpid(), os.urandom(4).hex())


def remove_tree(path: str) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def _remove_stale(parent: str) -> None:
    """Staging and set-aside directories left by installs that crashed long ago."""

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if name.startswith((".incoming-", ".broken-")):
            path = os.path.join(parent, name)
            try:
                if os.lstat(path).st_mtime < time.time() - STALE_SECONDS:
                    remove_tree(path)
            except OSError:
                pass


def _safe_name(rel: str) -> bool:
    """A relative path that stays inside its directory (a shipped package may hold
    dotfiles: data files of its own)."""
    parts = rel.split("/")
    return all(p and p not in (".", "..") and "\\" not in p and "\0" not in p
               for p in parts) and rel != MANIFEST


def install_code(code_dir: str, code_id: str, files) -> None:
    """Put the ``(relative path, bytes)`` pairs ``files`` in place as ``code_dir``, private
    whatever the umask. They are written under a staging name unique across hosts, checked
    against ``code_id`` and renamed into place; a broken ``code_dir`` is set aside first.
    A failed install removes its staging directory (ValueError: the files are not those of
    ``code_id``; OSError: the disk refused; RuntimeError: the cache is not ours). Files in
    a ``__pycache__`` (bytecode a controller sent along, checked by Python against its
    source's hash) are written too, but are not part of the id or the manifest."""
    parent = os.path.dirname(code_dir)
    _mkdirs(parent)
    _check_cache_dirs(code_dir)
    _remove_stale(parent)
    staging = os.path.join(parent, _unique(".incoming"))
    os.mkdir(staging, 0o700)
    try:
        names = []

        def written():  # (each file is hashed as it is written: nothing is read back)
            for rel, data in files:
                if not _safe_name(rel):
                    raise ValueError("the code bundle holds a bad file name %r" % rel)
                path = os.path.join(staging, rel)
                folder = os.path.dirname(path)
                if not os.path.isdir(folder):
                    _mkdirs(folder)
                    if os.path.basename(folder) != "__pycache__":
                        os.mkdir(os.path.join(folder, "__pycache__"), 0o700)  # else the umask's mode
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                if "__pycache__" in rel.split("/")[:-1]:
                    continue  # bytecode that came along: Python checks it, the id leaves it out
                names.append(rel)
                yield rel, data

        if code_digest(written()) != code_id:
            raise ValueError("the code bundle does not match its id %s" % code_id)
        fd = os.open(os.path.join(staging, MANIFEST), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(names) + "\n")
        _move_into_place(staging, code_dir, code_id)
    finally:
        if os.path.lexists(staging):
            remove_tree(staging)


def _move_into_place(staging: str, code_dir: str, code_id: str) -> None:
    try:
        os.rename(staging, code_dir)
        return
    except OSError:
        pass  # something is there already: replace it, one starter at a time
    import fcntl

    fd = os.open(os.path.join(os.path.dirname(code_dir), ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this file system: the checks below still hold
        if code_ok(code_dir, code_id):
            return  # another start installed the same code meanwhile
        aside = os.path.join(os.path.dirname(code_dir), _unique(".broken"))
        try:
            os.rename(code_dir, aside)
        except FileNotFoundError:
            aside = None
        try:
            os.rename(staging, code_dir)
        except OSError:
            if not code_ok(code_dir, code_id):
                raise OSError("could not replace the damaged %s" % code_dir) from None
        if aside:
            remove_tree(aside)
    finally:
        os.close(fd)


def unzip(blob: bytes):
    """The bundle's files from its zip, in order; ValueError if it is damaged."""
    import io
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for name in archive.namelist():
                yield name, archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ValueError("the code bundle is damaged: %s" % exc) from None


def _connect(directory: str, path: str):
    """A connection to the node's socket; None if none listens. RuntimeError if the run
    directory or the socket is not ours: no connection is made then."""
    if not private_dir(directory, create=False):
        return None
    check_socket(path)
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


def launch_line(code_dir: str) -> str:
    """The one line a host's Python runs to start a node from the code in ``code_dir``."""
    return ("import sys; sys.path.insert(0, %r); from clusterctl_node.daemon.node import main; main()"
            % code_dir)


def main() -> None:
    """Stage 2 on a host: say what is cached, take the code if sent, find or start the
    node, and hand it this channel (see docs/how-it-works.md, "Boot stages")."""
    params = json.loads(sys.stdin.buffer.readline())
    if "wait_stopped" in params:
        wait_stopped(params)
        return
    code_id = str(params["code_id"])
    if not code_id.isalnum():
        _fail("bad code id %r" % code_id)
    code_dir = os.path.join(cache_root(), "code", code_id)
    if not _take_code(code_dir, code_id):
        return  # the controller declined (say, a Python version mismatch): start nothing
    cookie = read_key()
    directory = params.get("run_dir") or run_dir()
    path = socket_path(directory, params["name"])
    state = "running"
    sock = _connect_or_fail(directory, path)
    if sock is None:
        if not params.get("start"):
            _say({"node": "absent"})
            return
        start_node([sys.executable, "-c", launch_line(code_dir)] + params["agent_args"], cookie)
        sock = _connect_or_fail(directory, path)
        if sock is None:
            _fail("the node started but its socket %s refuses connections" % path)
        state = "ready"
    _say({"node": state, "socket": os.path.abspath(path)})
    _splice(sock)


def read_key() -> str:
    """The key the node proves itself with, in hex on a line of its own: the cluster's
    cookie, sent only once the host said what it is (a restricted host's agent gets a
    key derived for its node instead: it never holds the cookie)."""
    key = sys.stdin.buffer.readline(1024).strip().decode("ascii", "replace")
    if not 32 <= len(key) <= 256 or any(c not in "0123456789abcdef" for c in key):
        _fail("no valid key after the boot parameters")
    return key


def _take_code(code_dir: str, code_id: str) -> bool:
    """Tell the controller our Python and whether the code is cached; install the bundle
    if it sends one. False if it declined to go on."""
    try:
        have = code_ok(code_dir, code_id)
    except RuntimeError as exc:
        _fail(str(exc))
    _say({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
          "need_code": not have})
    line = sys.stdin.buffer.readline()  # the bundle's size, 0 for none, or no go at all
    if not line.strip() or int(line) < 0:
        return False
    size = int(line)
    if size:
        blob = sys.stdin.buffer.read(size)
        if len(blob) != size:
            _fail("the code bundle arrived truncated")
        try:
            install_code(code_dir, code_id, unzip(blob))
        except (RuntimeError, ValueError) as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail("cannot write the code cache %s: %s" % (code_dir, exc.strerror or exc))
        _say({"installed": True})
    return True


def _connect_or_fail(directory: str, path: str):
    try:
        return _connect(directory, path)
    except RuntimeError as exc:
        _fail(str(exc))


def wait_stopped(params: dict) -> None:
    """After a stop: wait until process ``wait_stopped`` is gone (at most ``timeout``
    seconds), and say whether it went."""
    pid, timeout = params["wait_stopped"], params.get("timeout", 10)
    if type(pid) is not int or pid <= 0 or type(timeout) not in (int, float):
        _fail("bad wait_stopped request")
    _say({"stopped": wait_exited(pid, min(max(timeout, 0), 600))})


# -- processes and locks: once for the whole tree (this module runs alone on a host, so
# the node, the agent and the controller take them from here) ----------------------------

def process_exited(pid: int) -> bool:
    """Whether process ``pid`` is gone, or has exited and waits to be reaped (a zombie: one
    adopted by an init that reaps late is gone all the same). Another user's process that
    runs counts as running."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc to read: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def wait_exited(pid: int, timeout: float, interval: float = 0.02) -> bool:
    """Wait at most ``timeout`` seconds until ``process_exited(pid)``: whether it did."""
    deadline = time.monotonic() + timeout
    while not process_exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def lock_within(fd: int, deadline: float, what: str, interval: float = 0.01) -> None:
    """An exclusive ``flock`` on ``fd`` by ``deadline`` (a ``time.monotonic()``), polling
    so a wait is bounded; TimeoutError naming ``what`` if another holds it past then."""
    import fcntl

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("waited too long for the lock on %s" % what) from None
            time.sleep(interval)


def start_node(argv: list, cookie: str) -> None:
    """Start a detached node with ``argv`` and wait for its ready line (it forks off and
    goes on); the cookie goes on its standard input."""
    import subprocess

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                cwd=os.path.expanduser("~"))
        out, err = proc.communicate((cookie + "\n").encode(), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _fail("cannot start the node: %s" % exc)
    line = (out.decode(errors="replace").strip().splitlines() or [""])[0]
    if line.startswith("error:"):
        _fail(line[len("error:"):].strip())
    if not (line.startswith("ready") or line == "running"):
        detail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        _fail("the node did not start: %s" % detail)


if __name__ == "__main__":  # run by the stub (its globals are __main__'s), not on import
    main()
