"""roomd-bench must not rot: a tiny run of every scenario against the real roomd, of the
main ones over every transport (tls, ws, wss), and across the nodes of a cluster (three roomd
and a Redis). Asserts only that deliveries arrive and none is lost -- speed is the
benchmark's business, not a test's."""
import os
import re
import socket
import subprocess
import tempfile
import time

import harness
from harness import DaemonTest
from redis_server import REDIS, Redis

BENCH = os.path.join(os.path.dirname(harness.ROOMD), "roomd-bench")
CONFIG = os.path.join(os.path.dirname(__file__), "../../bench/bench.toml")


class BenchSmoke(DaemonTest):
    def setUp(self):
        super().setUp()
        with open(CONFIG) as f:
            self.d = self.start(f.read())

    def bench(self, *args):
        r = subprocess.run([BENCH, "--port", str(self.d.port), "--timeout", "60", *args], capture_output=True,
                           text=True, timeout=120)
        last = r.stdout.strip().splitlines()[-1]
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', last))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("error", kv, last)
        self.assertIn("figure", r.stdout)  # the human table comes first
        return kv

    def test_fanout(self):
        kv = self.bench("fanout", "--members", "5", "--messages", "50")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("250", "0"))

    def test_fanout_on_three_threads(self):
        # Receivers on three loops; the publisher must be woken by the others' progress.
        kv = self.bench("fanout", "--members", "7", "--messages", "300", "--window", "10", "--threads", "3")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("2100", "0"))

    def test_fanout_with_several_publishers(self):
        # Three talkers in the one room, each saying --messages.
        kv = self.bench("fanout", "--members", "5", "--messages", "40", "--publishers", "3")
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"]), ("120", "600", "0"))

    def test_fanout_at_a_capped_rate(self):
        kv = self.bench("fanout", "--members", "4", "--messages", "40", "--publish-rate", "400")
        # The cap's effect on time is the benchmark's to report, not a test's to assert.
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"]), ("40", "160", "0"))

    def test_rooms(self):
        kv = self.bench("rooms", "--rooms", "3", "--members", "3", "--publishers", "2", "--messages", "20")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("120", "0"))

    def test_latency(self):
        kv = self.bench("latency", "--members", "3", "--rate", "100", "--duration", "0.5")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("150", "0"))
        self.assertGreater(int(kv["p99_us"]), 0)

    def test_latency_against_a_versus_server_in_alternate_phases(self):
        # bench/compare's paired row: two servers in one run (here a second roomd, as an A/B
        # of two builds would be); each server's deliveries are counted and timed on their own.
        with open(CONFIG) as f:
            other = self.start(f.read())
        kv = self.bench("latency", "--members", "3", "--rate", "200", "--duration", "1", "--phases", "4",
                        "--versus-target", "roomd", "--versus-port", str(other.port))
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"], kv["versus_lost"]), ("200", "600", "0", "0"))
        self.assertEqual(kv["versus"], "roomd")
        for figure in ("p99_us", "versus_p99_us", "p50_ratio", "p99_ratio"):
            self.assertGreater(float(kv[figure]), 0, figure)
        # Both servers really got messages: each has said some of them in its room.
        for d in (self.d, other):
            c = self.connect(d)
            said = c.call({"op": "history", "room": "bench0", "limit": 500}, "history")["messages"]
            self.assertGreater(len(said), 0)
            self.assertLess(len(said), 200)

    def test_versus_is_refused_outside_the_latency_scenario(self):
        r = subprocess.run([BENCH, "--port", str(self.d.port), "fanout", "--versus-port", str(self.d.port)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--versus-port", r.stderr)

    def test_idle(self):
        kv = self.bench("idle", "--connections", "20", "--rooms", "4", "--server-pid", str(self.d.proc.pid))
        self.assertEqual(kv["ready"], "20")
        self.assertIn("bytes_per_conn", kv)

    def test_idle_in_one_room(self):
        # issue 17's big room, small: everyone joins one room; the generator reads all it is sent.
        kv = self.bench("idle", "--connections", "200", "--rooms", "1", "--server-pid", str(self.d.proc.pid))
        self.assertEqual(kv["ready"], "200")
        for figure in ("join_s", "bytes_per_conn", "bytes_read"):
            self.assertIn(figure, kv)

    def test_churn(self):
        kv = self.bench("churn", "--members", "200", "--churners", "4", "--churn-rate", "100", "--duration", "2")
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"], kv["gaps"]), ("200", "40000", "0", "0"))
        for figure in ("p50_us", "p99_us", "join_s", "presence_events", "presence_summaries", "churn_ops"):
            self.assertIn(figure, kv)
        self.assertGreater(int(kv["churn_ops"]), 0)
        # 200 members is below the presence threshold: the members hear each join and leave.
        self.assertGreater(int(kv["presence_events"]), 0)

    def test_churn_in_a_room_over_its_presence_threshold(self):
        # bench0 summarized from 50 members: the members get presence summaries, not single events.
        with open(CONFIG) as f:
            text = f.read()
        self.assertIn('name = "bench0"\n', text)
        self.d = self.start(text.replace('name = "bench0"\n', 'name = "bench0"\npresence_threshold = 50\n', 1)
                            .replace("[limits]\n", "[limits]\npresence_interval_ms = 200\n", 1))
        kv = self.bench("churn", "--members", "200", "--churners", "4", "--churn-rate", "100", "--duration", "2",
                        "--settle", "0.5")
        self.assertEqual((kv["deliveries"], kv["lost"], kv["gaps"]), ("40000", "0", "0"))
        self.assertGreater(int(kv["presence_summaries"]), 0)
        self.assertEqual(kv["presence_events"], "0")

    def test_churn_control_has_no_churn(self):
        kv = self.bench("churn", "--members", "50", "--churners", "2", "--churn-rate", "0", "--duration", "1",
                        "--settle", "0.2")
        self.assertEqual((kv["deliveries"], kv["lost"], kv["gaps"]), ("5000", "0", "0"))
        self.assertEqual((kv["churn_ops"], kv["presence_events"], kv["presence_summaries"]), ("0", "0", "0"))

    def test_storm(self):
        kv = self.bench("storm", "--members", "3", "--rate", "100", "--duration", "0.5", "--storm-clients", "2",
                        "--storm-phases", "4")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("150", "0"))
        self.assertGreater(int(kv["storm_requests"]), 0)
        # Quiet and storm phases alternate: both are measured, and compared.
        self.assertGreater(int(kv["quiet_p99_us"]), 0)
        self.assertGreater(float(kv["storm_p99_ratio"]), 0)

    def test_storm_searches_a_seeded_sqlite_history(self):
        # As bench/compare runs it: lobby's history in SQLite, seeded before the run.
        with open(CONFIG) as f:
            self.d = self.start(f.read().replace("[history]\n", '[history]\npath = "{tmp}/history.db"\n', 1))
        kv = self.bench("storm", "--members", "3", "--rate", "100", "--duration", "0.5", "--storm-clients", "3",
                        "--storm-mix", "searches", "--storm-seed", "40")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("150", "0"))
        self.assertGreater(int(kv["storm_requests"]), 0)
        c = self.connect(self.d)
        found = c.call({"op": "history", "room": "lobby", "search": "payload", "limit": 500}, "history")
        self.assertEqual(len(found["messages"]), 40)

    def test_storm_of_distinct_guesses_on_two_threads(self):
        kv = self.bench("storm", "--members", "3", "--rate", "100", "--duration", "0.5", "--storm-clients", "2",
                        "--storm-mix", "joins", "--storm-distinct-keys", "--threads", "2")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("150", "0"))
        self.assertGreater(int(kv["storm_requests"]), 0)


class BenchTransports(DaemonTest):
    """--transport tls, ws and wss: the same tiny runs over each of roomd's other listeners,
    against a self-signed certificate for 127.0.0.1 made for the test."""

    def setUp(self):
        super().setUp()
        self.certs = tempfile.TemporaryDirectory(prefix="roomd-bench-tls-")
        self.addCleanup(self.certs.cleanup)
        self.cert = os.path.join(self.certs.name, "cert.pem")
        key = os.path.join(self.certs.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-keyout", key, "-out", self.cert, "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        with open(CONFIG) as f:
            text = f.read()
        listen = ('listen = ["127.0.0.1:0", { address = "127.0.0.1:0", tls = true }, '
                  '{ address = "127.0.0.1:0", websocket = true }, { address = "127.0.0.1:0", websocket = true, tls = true }]')
        text = re.sub(r"^listen = .*$", listen, text, count=1, flags=re.M)
        self.text = text.replace("[limits]\n", f'[tls]\ncert = "{self.cert}"\nkey = "{key}"\n[limits]\n', 1)
        self.serve(self.text)

    def serve(self, text):
        self.d = self.start(text, listen=(), expect_listeners=4)
        ports = [int(a.rsplit(":", 1)[1]) for a in self.d.addresses]
        self.ports = dict(zip(("tcp", "tls", "ws", "wss"), ports))

    def bench(self, transport, *args, verify=False):
        tls = ["--insecure"] if transport in ("tls", "wss") and not verify else []
        if verify:
            tls = ["--ca", self.cert]
        r = subprocess.run([BENCH, "--port", str(self.ports[transport]), "--transport", transport, *tls,
                            "--timeout", "30", *args], capture_output=True, text=True, timeout=90)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', last))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("error", kv, last)
        self.assertEqual(kv["transport"], transport)
        return kv

    def has_websocket(self):
        """Whether this roomd answers a WebSocket upgrade (the bench may be ahead of the server)."""
        port = self.ports["ws"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      f"Origin: http://127.0.0.1:{port}\r\n\r\n".encode())
            try:
                return s.recv(64).startswith(b"HTTP/1.1 101")
            except OSError:
                return False

    def smoke(self, transport, verify=False):
        if transport in ("ws", "wss") and not self.has_websocket():
            self.skipTest("this roomd has no WebSocket listener yet")
        kv = self.bench(transport, "fanout", "--members", "5", "--messages", "50", verify=verify)
        self.assertEqual((kv["deliveries"], kv["lost"]), ("250", "0"))
        kv = self.bench(transport, "fanout", "--members", "4", "--messages", "100", "--window", "10", "--threads", "2")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("400", "0"))
        kv = self.bench(transport, "latency", "--members", "3", "--rate", "100", "--duration", "0.5")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("150", "0"))
        self.assertGreater(int(kv["p99_us"]), 0)
        kv = self.bench(transport, "idle", "--connections", "30", "--rooms", "3", "--server-pid", str(self.d.proc.pid))
        self.assertEqual(kv["ready"], "30")
        self.assertIn("bytes_per_conn", kv)
        # the storm's seed is many lines in one send: over ws, one message each
        kv = self.bench(transport, "storm", "--members", "2", "--rate", "100", "--duration", "0.5",
                        "--storm-clients", "2", "--storm-seed", "20", "--storm-phases", "4")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("100", "0"))

    def test_tls(self):
        self.smoke("tls")

    def test_tls_verified_against_the_certificate(self):
        kv = self.bench("tls", "fanout", "--members", "2", "--messages", "10", verify=True)
        self.assertEqual((kv["deliveries"], kv["lost"]), ("20", "0"))

    def test_tls_unverified_certificate_is_refused_without_insecure(self):
        r = subprocess.run([BENCH, "--port", str(self.ports["tls"]), "--transport", "tls", "--timeout", "10",
                            "fanout", "--members", "1", "--messages", "1"], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("certificate verify failed", r.stdout)

    def test_ws(self):
        self.smoke("ws")

    def test_wss(self):
        self.smoke("wss", verify=True)

    def test_ws_receivers_answer_pings(self):
        # A receiver only reads: roomd pings it after ping_interval_s of silence, and its pong
        # is the activity that keeps idle_timeout_s (3 s here) from closing it in a 5-s run.
        self.serve(self.text.replace("idle_timeout_s = 3600", "idle_timeout_s = 3") + "[websocket]\nping_interval_s = 1\n")
        if not self.has_websocket():
            self.skipTest("this roomd has no WebSocket listener yet")
        for transport in ("ws", "wss"):
            kv = self.bench(transport, "fanout", "--members", "2", "--messages", "6", "--publish-rate", "1")
            self.assertEqual((kv["deliveries"], kv["lost"]), ("12", "0"))

    def test_transport_is_refused_for_redis(self):
        r = subprocess.run([BENCH, "--target", "redis", "--transport", "tls", "fanout"], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--transport", r.stderr)


class BenchCluster(DaemonTest):
    """--member-port: three roomd nodes sharing bench0 through a Redis of the test's own; the
    publisher on node a, the members spread over b and c, so every delivery counted crossed
    nodes through Redis. --cpu-pid reads the processes' CPU time over the run."""

    def setUp(self):
        super().setUp()
        if REDIS is None:
            self.skipTest("redis-server is not installed (apt-get install redis-server)")
        self.redis = Redis()
        self.addCleanup(self.redis.close)  # after tearDown has stopped the nodes
        with open(CONFIG) as f:
            text = f.read()
        self.nodes = []
        for name in ("a", "b", "c"):
            d = self.start(text + f'\n[cluster]\nredis = "127.0.0.1:{self.redis.port}"\nnode_id = "bench-{name}"\n')
            d.log.wait_for("cluster: connected to Redis")
            self.nodes.append(d)

    def bench(self, *args, members_at=None):
        """roomd-bench with the publisher on node a and the members on members_at (b and c)."""
        a, b, c = self.nodes
        ports = ",".join(str(d.port) for d in (members_at or (b, c)))
        # --member-port right before the scenario: one value, the scenario is not taken for a port
        r = subprocess.run([BENCH, "--port", str(a.port), "--timeout", "60", "--member-port", ports, *args],
                           capture_output=True, text=True, timeout=120)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', last))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("error", kv, last)
        return kv

    @staticmethod
    def clients_of(node, expected):
        """How many clients a node has had (its log says each one's arrival), once that is
        `expected` or after a bounded wait for the log's lines to be read."""
        deadline = time.monotonic() + harness.WAIT
        with node.log.cond:
            while True:
                count = sum(1 for line in node.log.lines if re.search(r"client \S+ connected as ", line))
                left = deadline - time.monotonic()
                if count >= expected or left <= 0:
                    return count
                node.log.cond.wait(left)

    def test_fanout_across_nodes(self):
        a, b, c = self.nodes
        kv = self.bench("fanout", "--members", "6", "--messages", "50", "--cpu-pid", f"redis={self.redis.proc.pid}",
                        "--cpu-pid", f"node_a={a.proc.pid}", "--cpu-pid", f"node_b={b.proc.pid}")
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"]), ("50", "300", "0"))
        # Ordered by Redis: the room's seq there is the count of messages.
        self.assertEqual(self.redis.get("roomd:{bench0}:seq"), "50")
        for name in ("redis", "node_a", "node_b"):
            self.assertGreaterEqual(float(kv[f"{name}_cpu_s"]), 0, name)
            self.assertGreaterEqual(float(kv[f"{name}_cpu_us_per_msg"]), 0, name)
        self.assertNotIn("node_c_cpu_s", kv)
        # The publisher was node a's one client; the members were dealt to b and c.
        self.assertEqual([self.clients_of(d, n) for d, n in ((a, 1), (b, 3), (c, 3))], [1, 3, 3])

    def test_several_publishers_across_nodes(self):
        # Says from several sessions at once: Redis orders them together, the member nodes get
        # them in bursts.
        kv = self.bench("fanout", "--members", "4", "--messages", "30", "--publishers", "3", "--window", "5")
        self.assertEqual((kv["published"], kv["deliveries"], kv["lost"]), ("90", "360", "0"))
        self.assertEqual(self.redis.get("roomd:{bench0}:seq"), "90")

    def test_members_on_one_other_node(self):
        # Two nodes' worth: the members all on b, none where the publisher is.
        kv = self.bench("fanout", "--members", "3", "--messages", "20", members_at=[self.nodes[1]])
        self.assertEqual((kv["deliveries"], kv["lost"]), ("60", "0"))
        self.assertEqual([self.clients_of(d, n) for d, n in zip(self.nodes, (1, 3, 0))], [1, 3, 0])

    def test_latency_across_nodes_on_two_threads(self):
        kv = self.bench("latency", "--members", "4", "--rate", "100", "--duration", "0.5", "--threads", "2")
        self.assertEqual((kv["deliveries"], kv["lost"]), ("200", "0"))
        self.assertGreater(int(kv["p99_us"]), 0)

    def test_member_port_with_versus_port_is_refused(self):
        r = subprocess.run([BENCH, "--member-port", "7001", "--versus-port", "7002", "latency", "--phases", "2"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--member-port", r.stderr)

    def test_cpu_pid_is_checked(self):
        gone = subprocess.Popen(["true"])
        gone.wait()
        for bad in (f"x={gone.pid}", "x", "Bad=1", "x=1y"):
            r = subprocess.run([BENCH, "--cpu-pid", bad, "fanout"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("--cpu-pid", r.stderr, bad)


if __name__ == "__main__":
    harness.run()
