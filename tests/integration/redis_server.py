"""A redis-server of the test's own, for the tests that need one next to roomd (the cluster
bench, the README's three-node walk-through): a free loopback port, no persistence, stopped
by its PID. REDIS is None when redis-server is not installed; such tests skip."""
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import WAIT

REDIS = shutil.which("redis-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="roomd-redis-")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + WAIT
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"redis-server did not start on {self.port}")
            time.sleep(0.02)  # polling a port that is not up yet; bounded by the deadline

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def get(self, key):
        """GET key: its value as text, or None."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT) as s:
            s.sendall(f"*2\r\n$3\r\nGET\r\n${len(key.encode())}\r\n{key}\r\n".encode())
            data = b""
            while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2
                                                  and not data.startswith(b"$-1")):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        if data.startswith(b"$-1"):
            return None
        return data.split(b"\r\n")[1].decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()
