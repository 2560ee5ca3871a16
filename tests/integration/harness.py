"""Test harness: start the real roomd binary and talk to it over real sockets.

Every wait is bounded (WAIT seconds, generous so sanitizer builds pass) and waits on an
event -- a line arriving, a process exiting -- never on a fixed sleep.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

ROOMD = os.path.abspath(os.environ.get("ROOMD_BIN", os.path.join(os.path.dirname(__file__), "../../build/roomd")))
WAIT = float(os.environ.get("ROOMD_TEST_WAIT", "15"))


class LineLog:
    """Collects the lines of a stream in a thread; tests wait for a line to match."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pattern, start=0, timeout=WAIT):
        """Returns the first line at or after index `start` that matches `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines[-30:]))
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.lines)

    def text(self):
        with self.cond:
            return "\n".join(self.lines)


class Daemon:
    """One roomd process. `config` is TOML text (None: the embedded default)."""

    def __init__(self, config=None, listen=("127.0.0.1:0",), args=(), stdin=subprocess.DEVNULL, env=None,
                 expect_listeners=None, preexec_fn=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="roomd-test-")
        self.config_path = None
        cmd = [ROOMD]
        if config is not None:
            self.config_path = os.path.join(self.tmp.name, "roomd.toml")
            self.write_config(config.replace("{tmp}", self.tmp.name))
            cmd += ["-c", self.config_path]
        for addr in listen:
            cmd += ["--listen", addr.replace("{tmp}", self.tmp.name)]
        cmd += list(args)
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                     preexec_fn=preexec_fn)
        self.log = LineLog(self.proc.stderr)
        self.out = LineLog(self.proc.stdout)
        self.addresses = []
        wanted = len(listen) if expect_listeners is None else expect_listeners
        deadline = time.monotonic() + WAIT
        while len(self.addresses) < wanted:
            with self.log.cond:
                self.addresses = [l.split("listening on ", 1)[1].split(" ")[0]
                                  for l in self.log.lines if "listening on " in l]
                if len(self.addresses) >= wanted or self.proc.poll() is not None:
                    break
                self.log.cond.wait(max(0.01, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                break
        if len(self.addresses) < wanted:
            raise AssertionError("roomd did not start:\n" + self.log.text())
        self.stopped = False

    def write_config(self, text):
        with open(self.config_path, "w") as f:
            f.write(text)

    @property
    def port(self):
        for a in self.addresses:
            if not a.startswith("unix:") and not a.startswith("["):
                return int(a.rsplit(":", 1)[1])
        raise AssertionError("no IPv4 listener")

    def client(self, nick=None, join=(), **kw):
        return introduce(Client(("127.0.0.1", self.port), **kw), nick, join)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=WAIT):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        """SIGTERM and check a clean exit: status 0 and no sanitizer report."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("roomd did not exit after SIGTERM:\n" + self.log.text())
        self.log.thread.join(WAIT)
        self.out.thread.join(WAIT)
        self.close_pipes()
        self.check_sanitizers()
        if rc != 0:
            raise AssertionError(f"roomd exited {rc}:\n" + self.log.text())
        self.tmp.cleanup()

    def check_sanitizers(self):
        text = self.log.text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ThreadSanitizer"):
            if marker in text:
                raise AssertionError("sanitizer report:\n" + text)

    def close_pipes(self):
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopped = True
        self.close_pipes()
        self.tmp.cleanup()


def introduce(client, nick=None, join=()):
    """Takes `nick` and joins `join` with any client that has call(); returns it."""
    if nick:
        client.call({"op": "nick", "nick": nick}, "ok")
    for room in join:
        client.call({"op": "join", "room": room}, "joined")
    return client


def say_until_cut(daemon, writer, text, count, every=10, room="lobby"):
    """`writer` says `text` (numbered) up to `count` times, each acknowledged, until the daemon
    logs a slow consumer; returns how many it said (the last index), or fails."""
    for i in range(count):  # bounded by count
        writer.send({"op": "say", "room": room, "text": f"{i}:{text}", "id": i})
        writer.wait_for("ok", id=i)
        if i % every == 0 and "is a slow consumer" in daemon.log.text():
            return i
    raise AssertionError(f"no slow consumer after {count} messages")


class Closed(Exception):
    pass


class Client:
    """A JSON-lines (or raw) client over a real socket."""

    def __init__(self, address, family=None, welcome=True, rcvbuf=None, source=None):
        if family is None:
            family = socket.AF_UNIX if isinstance(address, str) else (
                socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(WAIT)
        self.sock.connect(address)
        self.buf = b""
        self.eof = False
        self.welcome = self.recv() if welcome else None

    # -- sending
    def send(self, obj):
        if isinstance(obj, dict):
            data = (json.dumps(obj) + "\n").encode()
        elif isinstance(obj, str):
            data = obj.encode()
        else:
            data = obj
        self.sock.sendall(data)

    # -- receiving
    def recv_line(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed("connection closed; buffered: %r" % self.buf[:200])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line within %.1fs; buffered: %r" % (timeout, self.buf[:200]))
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8")

    def recv(self, timeout=WAIT):
        return json.loads(self.recv_line(timeout))

    def expect(self, op, **fields):
        """The next frame must have this op and these fields."""
        msg = self.recv()
        assert msg.get("op") == op, f"expected op {op!r} with {fields}, got {msg}"
        for k, v in fields.items():
            assert msg.get(k) == v, f"expected {k}={v!r} in {msg}"
        return msg

    def wait_for(self, op, **fields):
        """Skips frames until one has this op and fields."""
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("op") == op and all(msg.get(k) == v for k, v in fields.items()):
                return msg
            seen.append(msg)
        raise AssertionError(f"no {op} {fields}; saw {seen[-10:]}")

    def call(self, request, op=None, **fields):
        """Sends a request and returns the next frame (checked against op/fields)."""
        self.send(request)
        return self.expect(op, **fields) if op else self.recv()

    def error(self, request, code):
        reply = self.call(request, "error")
        assert reply["code"] == code, f"expected {code}, got {reply}"
        assert reply.get("message"), reply
        return reply

    def wait_closed(self, timeout=WAIT):
        """Reads (and returns) everything until EOF; fails if EOF does not come in time."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                lines.append(self.recv_line(timeout=max(0.01, deadline - time.monotonic())))
            except Closed:
                return lines
            except TimeoutError:
                raise AssertionError(f"connection still open after {timeout}s; got {lines[-5:]}")

    def assert_quiet(self):
        """Nothing is pending right now (checked with a ping round trip, not a sleep)."""
        self.send({"op": "ping", "id": "quiet"})
        msg = self.recv()
        assert msg == {"op": "pong", "id": "quiet"}, f"unexpected frame before pong: {msg}"

    def reset(self):
        """Closes with a TCP reset instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Gate:
    """A TCP forwarder in front of a daemon: cut() ends every forwarded connection (the daemon
    sees its client go, the client sees the server go) and holds new ones, unforwarded, until
    release(). For reconnect tests (roomcat --reconnect, the web client).

    drop_replies / drop_requests (Events): while set, what the daemon sends (what the client
    sends) is thrown away instead of forwarded, as a connection that dies with data in flight
    loses it; `requests` and `dropped_requests` count the lines forwarded and thrown away,
    `dropped_request_bytes` the bytes (a WebSocket's frames are not lines)."""

    def __init__(self, port):
        self.upstream = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.live = []  # sockets of the forwarded connections now
        self.all = []
        self.drop_replies = threading.Event()
        self.drop_requests = threading.Event()
        self.counted = threading.Condition(self.lock)
        self.requests = 0
        self.dropped_requests = 0
        self.dropped_request_bytes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.all.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        self.open.wait()
        up = socket.create_connection(self.upstream)
        with self.lock:
            self.all.append(up)
            self.live += [client, up]
        threading.Thread(target=self._pump, args=(up, client, self.drop_replies, False), daemon=True).start()
        self._pump(client, up, self.drop_requests, True)

    def _pump(self, src, dst, drop, requests):
        try:
            while data := src.recv(65536):
                dropped = drop.is_set()
                if not dropped:
                    dst.sendall(data)
                if requests:
                    with self.counted:
                        if dropped:
                            self.dropped_requests += data.count(b"\n")
                            self.dropped_request_bytes += len(data)
                        else:
                            self.requests += data.count(b"\n")
                        self.counted.notify_all()
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_count(self, predicate, timeout=WAIT):
        """Waits until predicate(gate) holds, for the request counters."""
        with self.counted:
            if not self.counted.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"gate: requests {self.requests}, dropped {self.dropped_requests} "
                                     f"({self.dropped_request_bytes} bytes)")

    def cut(self):
        self.open.clear()
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def release(self):
        self.open.set()

    def close(self):
        self.listener.close()
        self.cut()
        self.release()
        with self.lock:
            for s in self.all:
                s.close()


class DaemonTest(unittest.TestCase):
    """Base class: tracks daemons and clients and stops them cleanly after each test."""

    def setUp(self):
        self.daemons = []
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        errors = []
        for d in self.daemons:
            try:
                d.stop()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n".join(errors))

    def start(self, *args, **kw):
        d = Daemon(*args, **kw)
        self.daemons.append(d)
        return d

    def connect(self, daemon, nick=None, join=(), **kw):
        c = daemon.client(nick=nick, join=join, **kw)
        self.clients.append(c)
        return c

    def raw(self, address, **kw):
        c = Client(address, **kw)
        self.clients.append(c)
        return c


def run():
    unittest.main(verbosity=2)
