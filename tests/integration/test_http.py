"""The operators' HTTP endpoint (issue 18): /metrics in the Prometheus text format, /healthz,
/readyz, and requests kept within bounds (head size, idle timeout, methods, paths)."""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import unittest

import harness
from harness import DaemonTest

CONFIG = """
[http]
listen = "127.0.0.1:0"
idle_timeout_s = 2
[limits]
rate = 1000
burst = 1000
[[rooms]]
name = "lobby"
"""

SERVING = r"http: serving /metrics, /healthz and /readyz on 127\.0\.0\.1:(\d+)"


class HttpConn:
    """One HTTP/1.1 connection over a real socket; every read is bounded."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=harness.WAIT)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nothing from the endpoint in time; buffered {self.buf[:200]!r}")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return
        try:
            chunk = self.sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    def response(self, head_only=False, timeout=harness.WAIT):
        """(status, headers with lower-case names, body) of the next response."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if self.eof:
                raise ConnectionError(f"closed before a response; got {self.buf[:200]!r}")
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(self.buf) < length:
            if self.eof:
                raise ConnectionError("closed inside a body")
            self._fill(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body.decode()

    def wait_eof(self, timeout=harness.WAIT):
        """Waits for the endpoint's FIN (or reset); fails if it does not come in time."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        return self.buf

    def close(self):
        self.sock.close()


def get(port, path, method="GET"):
    c = HttpConn(port)
    try:
        c.send(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return c.response(head_only=(method == "HEAD"))
    finally:
        c.close()


def parse_metrics(text):
    """{'name{labels}': value} of every sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def listening_sockets(pid):
    """The TCP sockets in LISTEN state that process `pid` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    found.append(cols[1])
    return found


class HttpTest(DaemonTest):
    def start_http(self, config=CONFIG, **kw):
        d = self.start(config, **kw)
        d.http_port = int(re.search(SERVING, d.log.wait_for(SERVING)).group(1))
        return d

    def conn(self, d):
        c = HttpConn(d.http_port)
        self.clients.append(c)
        return c


class Metrics(HttpTest):
    def test_promtool_accepts_the_metrics(self):
        d = self.start_http()
        self.connect(d, nick="alice", join=["lobby"]).call({"op": "say", "room": "lobby", "text": "hi"}, "message")
        status, headers, body = get(d.http_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        for name in ("roomd_connections_open", "roomd_connections_accepted_total", "roomd_rooms", "roomd_room_members",
                     "roomd_messages_in_total", "roomd_messages_delivered_total", "roomd_bytes_out_total",
                     "roomd_slow_consumers_total", "roomd_dropped_messages_total", "roomd_rate_limited_total",
                     "roomd_key_checks_total", "roomd_worker_tasks", "roomd_loop_lag_seconds",
                     "roomd_tls_handshakes_total", "roomd_tls_handshake_failures_total",
                     "roomd_process_resident_memory_bytes", "roomd_process_open_fds", "roomd_uptime_seconds",
                     "roomd_says_duplicate_total"):
            self.assertIn(f"# TYPE {name} ", body)
        self.assertNotIn("roomd_cluster_", body)  # only with [cluster] (test_cluster_faults checks those)
        samples = parse_metrics(body)
        self.assertGreater(samples["roomd_process_resident_memory_bytes"], 1 << 20)
        self.assertGreaterEqual(samples["roomd_process_open_fds"], 5)
        # The lag probe feeds the histogram: buckets are cumulative and +Inf is the count.
        self.assertEqual(samples['roomd_loop_lag_seconds_bucket{le="+Inf"}'], samples["roomd_loop_lag_seconds_count"])
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool is missing (Debian package prometheus; quickstart.sh installs it)")
        r = subprocess.run([promtool, "check", "metrics"], input=body.encode(), capture_output=True,
                           timeout=harness.WAIT)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode() + "\n" + body)
        self.assertEqual(r.stdout.decode() + r.stderr.decode(), "", "promtool lint findings")

    def test_figures_move_when_clients_chat(self):
        d = self.start_http(listen=("127.0.0.1:0", "unix:{tmp}/roomd.sock"))
        before = parse_metrics(get(d.http_port, "/metrics")[2])
        self.assertEqual(before['roomd_connections_open{transport="tcp"}'], 0)
        a = self.connect(d, nick="alice", join=["lobby"])
        b = self.connect(d, nick="bob", join=["lobby"])
        u = self.raw(os.path.join(d.tmp.name, "roomd.sock"))
        u.call({"op": "join", "room": "lobby"}, "joined")
        for i in range(5):
            a.send({"op": "say", "room": "lobby", "text": f"m{i}"})
            a.wait_for("message", text=f"m{i}")
        for _ in range(5):
            b.wait_for("message", **{"from": "alice"})
            u.wait_for("message", **{"from": "alice"})
        after = parse_metrics(get(d.http_port, "/metrics")[2])
        self.assertEqual(after["roomd_messages_in_total"] - before["roomd_messages_in_total"], 5)
        # Each say goes to the three members (the sender hears its own).
        self.assertEqual(after["roomd_messages_delivered_total"] - before["roomd_messages_delivered_total"], 15)
        self.assertGreater(after["roomd_bytes_out_total"], before["roomd_bytes_out_total"] + 5 * 3 * 20)
        self.assertEqual(after['roomd_connections_open{transport="tcp"}'], 2)
        self.assertEqual(after['roomd_connections_open{transport="unix"}'], 1)
        self.assertEqual(after['roomd_connections_accepted_total{transport="tcp"}'], 2)
        self.assertEqual(after['roomd_connections_accepted_total{transport="unix"}'], 1)
        self.assertEqual(after['roomd_connections_open{transport="wss"}'], 0)
        self.assertEqual(after["roomd_rooms"], 1)
        self.assertEqual(after["roomd_room_members"], 3)
        self.assertEqual(after["roomd_clients"], 3)
        mark = d.log.mark()
        b.close()
        d.log.wait_for(r"client .* disconnected", start=mark)
        gone = parse_metrics(get(d.http_port, "/metrics")[2])
        self.assertEqual(gone['roomd_connections_open{transport="tcp"}'], 1)
        self.assertEqual(gone['roomd_connections_accepted_total{transport="tcp"}'], 2)
        self.assertEqual(gone["roomd_room_members"], 2)

    def test_rate_limit_refusals_are_counted(self):
        d = self.start_http(CONFIG.replace("rate = 1000\nburst = 1000", "rate = 1\nburst = 2"))
        a = self.connect(d, nick="alice", join=["lobby"])
        for i in range(2):
            a.call({"op": "say", "room": "lobby", "text": f"ok{i}"}, "message")
        a.error({"op": "say", "room": "lobby", "text": "too many"}, "rate_limited")
        self.assertEqual(parse_metrics(get(d.http_port, "/metrics")[2])["roomd_rate_limited_total"], 1)


class Health(HttpTest):
    def test_healthz_and_readyz(self):
        d = self.start_http()
        self.assertEqual(get(d.http_port, "/healthz")[::2], (200, "ok\n"))
        self.assertEqual(get(d.http_port, "/readyz")[::2], (200, "ready\n"))
        status, headers, body = get(d.http_port, "/metrics", method="HEAD")
        self.assertEqual((status, body), (200, ""))
        self.assertGreater(int(headers["content-length"]), 1000)

    def test_readyz_says_shutting_down_while_connections_drain(self):
        d = self.start_http()
        chat = self.connect(d, nick="alice", join=["lobby"])  # not closed: the drain waits for its FIN
        mark = d.log.mark()
        d.signal(signal.SIGTERM)
        d.log.wait_for("shutting down", start=mark)
        status, _, body = get(d.http_port, "/readyz")
        self.assertEqual((status, body), (503, "shutting down\n"))
        self.assertEqual(get(d.http_port, "/healthz")[0], 200)
        chat.wait_for("system", event="shutdown")
        chat.close()
        self.assertEqual(d.wait_exit(), 0)

    def test_with_history_store(self):
        d = self.start_http(CONFIG + '[history]\npath = "{tmp}/history.db"\n')
        self.assertEqual(get(d.http_port, "/readyz")[::2], (200, "ready\n"))


class Bounds(HttpTest):
    def test_unknown_path_404_other_methods_405_keep_alive(self):
        d = self.start_http()
        c = self.conn(d)
        c.send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = c.response()
        self.assertEqual((status, headers["connection"]), (404, "keep-alive"))
        c.send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        status, headers, _ = c.response()
        self.assertEqual((status, headers["allow"]), (405, "GET, HEAD"))
        # Pipelined: answered in order on the same connection.
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(c.response()[::2], (200, "ok\n"))
        self.assertEqual(c.response()[::2], (200, "ready\n"))
        status, headers, _ = c.response()
        self.assertEqual((status, headers["connection"]), (200, "close"))
        self.assertEqual(c.wait_eof(), b"")

    def test_a_body_is_not_read_the_connection_closes(self):
        d = self.start_http()
        c = self.conn(d)
        c.send("PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
        status, headers, _ = c.response()
        self.assertEqual((status, headers["connection"]), (405, "close"))
        c.wait_eof()

    def test_malformed_request_400_then_close(self):
        d = self.start_http()
        for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"GET /metrics HTTP/9.Z\r\n\r\n",
                        b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n"):
            c = self.conn(d)
            c.send(garbage)
            status, headers, _ = c.response()
            self.assertEqual((status, headers["connection"]), (400, "close"), garbage)
            self.assertEqual(c.wait_eof(), b"")
        self.assertEqual(get(d.http_port, "/healthz")[0], 200)

    def test_head_over_8k_431_then_close(self):
        d = self.start_http()
        c = self.conn(d)
        c.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 9000 + "\r\n\r\n")
        status, headers, _ = c.response()
        self.assertEqual((status, headers["connection"]), (431, "close"))
        c.wait_eof()
        # Arriving in small pieces makes no difference.
        c = self.conn(d)
        c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(90):
                c.send("X-Piece: " + "b" * 100 + "\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and shut already
        self.assertEqual(c.response()[0], 431)
        c.wait_eof()
        # A head just under the bound is served.
        c = self.conn(d)
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 7900 + "\r\n\r\n")
        self.assertEqual(c.response()[0], 200)

    def test_idle_and_slow_connections_are_closed_after_the_timeout(self):
        d = self.start_http()
        silent = self.conn(d)
        partial = self.conn(d)
        partial.send("GET /metrics HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        self.assertEqual(silent.wait_eof(), b"")
        self.assertEqual(partial.wait_eof(), b"")
        self.assertGreater(time.monotonic() - started, 1.0)  # idle_timeout_s = 2, not at once
        # After an answer the next request has its own timeout; then the idle connection closes.
        c = self.conn(d)
        c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(c.response()[0], 200)
        self.assertEqual(c.wait_eof(), b"")

    def test_slow_loris_does_not_disturb_chat(self):
        d = self.start_http(CONFIG.replace("idle_timeout_s = 2", "idle_timeout_s = 60"))
        loris = [self.conn(d) for _ in range(20)]
        for c in loris:
            c.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        a = self.connect(d, nick="alice", join=["lobby"])
        b = self.connect(d, nick="bob", join=["lobby"])
        for i in range(20):
            a.send({"op": "say", "room": "lobby", "text": f"m{i}"})
            a.wait_for("message", text=f"m{i}")
            self.assertEqual(b.wait_for("message", **{"from": "alice"})["text"], f"m{i}")
            loris[i].send("z")
        self.assertEqual(get(d.http_port, "/healthz")[0], 200)
        for c in loris:
            c.send("\r\n\r\n")
            self.assertEqual(c.response()[0], 200)


class Setup(HttpTest):
    def test_off_by_default(self):
        d = self.start("[[rooms]]\nname = \"lobby\"\n")
        self.connect(d, nick="alice")  # up and serving
        self.assertNotIn("http:", d.log.text())
        self.assertEqual(len(listening_sockets(d.proc.pid)), 1, "only the chat listener")

    def test_bind_failure_is_a_startup_error_naming_the_address(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        try:
            d = self.start()  # only for a temp dir
            path = os.path.join(d.tmp.name, "busy.toml")
            with open(path, "w") as f:
                f.write(f'[http]\nlisten = "127.0.0.1:{port}"\n[[rooms]]\nname = "lobby"\n')
            r = subprocess.run([harness.ROOMD, "-c", path, "--listen", "127.0.0.1:0"], capture_output=True,
                               timeout=harness.WAIT, stdin=subprocess.DEVNULL)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(f"127.0.0.1:{port}", r.stderr.decode())
            self.assertIn("http", r.stderr.decode())
        finally:
            holder.close()

    def test_reload_of_http_listen_needs_a_restart(self):
        d = self.start_http()
        mark = d.log.mark()
        d.write_config(CONFIG.replace('"127.0.0.1:0"', '"127.0.0.1:1"').replace("idle_timeout_s = 2",
                                                                                "idle_timeout_s = 30"))
        d.signal(signal.SIGHUP)
        d.log.wait_for("http.listen takes effect at the next restart", start=mark)
        d.log.wait_for("reloaded", start=mark)
        self.assertEqual(get(d.http_port, "/healthz")[0], 200)  # still served where it was


if __name__ == "__main__":
    harness.run()
