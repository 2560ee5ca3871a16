"""A redis-server of the test's own, for every test that needs one next to roomd (the cluster
suites, the cluster bench, the README's three-node walk-through): a free loopback port, in its
own temporary directory, stopped by its PID. Without persistence, or with `persist`: an
append-only file synced at every write, so a restart (even after SIGKILL) finds everything it
acknowledged. REDIS is None when redis-server is not installed: the callers skip (a whole
file with exit 77, or a test at a time)."""
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import WAIT, DaemonTest

REDIS = shutil.which("redis-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, port=None, persist=False):
        self.port = port or free_port()
        self.persist = persist
        self.dir = tempfile.TemporaryDirectory(prefix="roomd-redis-")
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self):
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability,
             "--dir", self.dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WAIT
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on {self.port}")
            time.sleep(0.02)  # polling a port that is not up yet; bounded by the deadline

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def command(self, *args):
        """One command over a socket of our own; returns the raw reply as text."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(payload.encode())
            data = b""
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                data += chunk
                if not chunk or data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    if data.startswith(b"$-1\r\n"):
                        break
                    size = int(data[1:data.index(b"\r\n")])
                    if len(data) >= data.index(b"\r\n") + 2 + size + 2:
                        break
            return data.decode()

    def get(self, key):
        """GET key: its value as text, or None."""
        reply = self.command("GET", key)
        if reply.startswith("$-1"):
            return None
        return reply.split("\r\n")[1]

    def kill_client(self, name):
        """CLIENT KILL of the connection named `name` (roomd names its own)."""
        for line in self.command("CLIENT", "LIST").splitlines():
            fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
            if fields.get("name") == name:
                return self.command("CLIENT", "KILL", "ID", fields["id"])
        raise AssertionError(f"no client named {name}")

    def close(self):
        self.kill()
        self.dir.cleanup()


class RedisDaemonTest(DaemonTest):
    """A DaemonTest with a Redis of its own, `self.redis` (made by `make_redis`), stopped after
    the test's daemons."""

    def make_redis(self):
        return Redis()

    def setUp(self):
        super().setUp()
        self.redis = self.make_redis()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.redis.close()
