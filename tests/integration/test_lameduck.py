"""Lame duck (SIGUSR2) for rolling restarts (docs/operations.md, "Lame duck"): the node stops
accepting, tells every client when it will be closed, closes them one at a time after the
grace period, and exits 0 once they are gone. In a cluster, roomcat --reconnect clients given
the list of nodes move to the others and resume with nothing lost; and when a node is killed
under them, the says it left unanswered are sent again through another node, each published
exactly once (their msg_id).

Real daemons over real sockets; no test asserts a speed: a close may come late on a loaded
machine, never early, so times are only checked from below."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from harness import WAIT, Client, Closed, DaemonTest, Gate, LineLog, run
from wsclient import WsClient

ROOMCAT = os.path.join(os.path.dirname(os.environ.get("ROOMD_BIN", os.path.join(os.path.dirname(__file__),
                                                                                  "../../build/roomd"))), "roomcat")
GRACE_S, DURATION_S = 2, 5


def single_config(grace=GRACE_S, duration=DURATION_S):
    return f"""
[server]
listen = ["127.0.0.1:0", {{ address = "127.0.0.1:0", websocket = true }}]
lame_duck_grace_s = {grace}
lame_duck_duration_s = {duration}
[http]
listen = "127.0.0.1:0"
[[rooms]]
name = "lobby"
persist = false
"""


def http_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def refused(port):
    """True when nothing accepts on the port any more (the listener is closed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT):
            return False
    except ConnectionRefusedError:
        return True


class Recorder:
    """Reads one client's frames in a thread until EOF and notes when the EOF was seen."""

    def __init__(self, name, client):
        self.name, self.client = name, client
        self.frames = []
        self.eof_at = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        deadline = time.monotonic() + WAIT + DURATION_S
        try:
            while time.monotonic() < deadline:
                self.frames.append(self.client.recv(timeout=max(0.01, deadline - time.monotonic())))
        except Closed:
            self.eof_at = time.monotonic()
            self.client.close()  # as a real client does: the server waits for our FIN (2 s at most)
        except (TimeoutError, OSError):
            pass

    def lame_duck(self):
        events = [f for f in self.frames if f.get("op") == "system" and f.get("event") == "lame_duck"]
        assert len(events) == 1, f"{self.name}: {events}"
        return events[0]["reconnect_ms"]

    def leaves(self):
        return [f["nick"] for f in self.frames if f.get("op") == "presence" and f.get("event") == "leave"]


class LameDuckTest(DaemonTest):
    def start_node(self, **kw):
        d = self.start(single_config(**kw), listen=(), expect_listeners=2)
        d.chat_port = int(d.addresses[0].rsplit(":", 1)[1])
        d.ws_port = int(d.addresses[1].rsplit(":", 1)[1])
        d.http_port = int(d.log.wait_for(r"http: serving").rsplit(":", 1)[1])
        return d

    def test_a_node_drains_one_client_at_a_time_and_exits_0(self):
        d = self.start_node()
        clients = {f"c{i}": self.connect(d, nick=f"c{i}", join=["lobby"]) for i in range(5)}
        ws = WsClient(d.ws_port)
        self.clients.append(ws)
        ws.call({"op": "nick", "nick": "w"}, "ok")
        ws.call({"op": "join", "room": "lobby"}, "joined")
        clients["w"] = ws
        first = clients["c0"]
        first.send({"op": "who", "room": "lobby", "id": "who"})
        self.assertEqual(first.wait_for("who", id="who")["count"], 6)
        status, body = http_get(d.http_port, "/readyz")
        self.assertEqual((status, body.strip()), (200, "ready"))

        signalled = time.monotonic()
        d.signal(signal.SIGUSR2)
        recorders = {name: Recorder(name, c) for name, c in clients.items()}
        d.log.wait_for(r"lame duck \(SIGUSR2\): listeners closed; 6 connections")
        # No new connections, on any listener; the operators' endpoint stays and says why.
        self.assertTrue(refused(d.chat_port))
        self.assertTrue(refused(d.ws_port))
        status, body = http_get(d.http_port, "/readyz")
        self.assertEqual(status, 503)
        self.assertTrue(body.startswith("lame_duck"), body)
        self.assertEqual(http_get(d.http_port, "/healthz"), (200, "ok\n"))
        metrics = http_get(d.http_port, "/metrics")[1]
        self.assertIn("\nroomd_lame_duck 1\n", metrics)
        d.signal(signal.SIGUSR2)  # a second one changes nothing
        d.log.wait_for(r"lame duck: already draining")

        self.assertEqual(d.wait_exit(WAIT + DURATION_S), 0)
        for r in recorders.values():
            r.thread.join(WAIT)
        d.log.wait_for(r"lame duck: every connection is closed")

        # Each was told its own time: none within the grace, all within the duration, apart.
        told = {name: r.lame_duck() for name, r in recorders.items()}
        order = sorted(told, key=told.get)
        times = [told[n] for n in order]
        self.assertGreaterEqual(times[0], GRACE_S * 1000 - 50, told)
        self.assertLess(times[-1], DURATION_S * 1000, told)
        self.assertEqual(len(set(times)), len(times), told)
        for name, r in recorders.items():
            self.assertIsNotNone(r.eof_at, f"{name} was not closed")
            # Never before its time (a loaded machine may close later, never earlier).
            self.assertGreaterEqual(r.eof_at - signalled, told[name] / 1000 - 0.05, (name, told))
            # The ones closed before it, in the order of their times: one at a time.
            earlier = order[:order.index(name)]
            seen = r.leaves()
            self.assertEqual(seen, [n for n in earlier if n in seen], (name, seen, order))
        self.assertTrue(recorders[order[-1]].leaves(), "the last one closed saw nobody leave before it")
        self.assertEqual(ws.closed_with, (1001, "lame_duck"))

    def test_sigterm_during_lame_duck_stops_at_once(self):
        d = self.start_node(grace=60, duration=120)
        c = self.connect(d, nick="c", join=["lobby"])
        d.signal(signal.SIGUSR2)
        self.assertGreaterEqual(c.wait_for("system", event="lame_duck")["reconnect_ms"], 59000)
        d.signal(signal.SIGTERM)
        c.wait_for("system", event="shutdown")
        c.wait_closed()
        self.assertEqual(d.wait_exit(), 0)  # well within the grace: the lame duck did not hold it

    def test_roomcat_without_reconnect_says_why_it_ended(self):
        d = self.start_node(grace=0, duration=1)
        p = subprocess.Popen([ROOMCAT, f"127.0.0.1:{d.chat_port}", "--join", "lobby"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = LineLog(p.stdout)
        try:
            out.wait_for(r"you joined lobby")
            d.signal(signal.SIGUSR2)
            self.assertEqual(p.wait(timeout=WAIT), 1)
            self.assertIn("server went away (lame duck", p.stderr.read().decode())
            out.wait_for(r"! system: lame_duck: this server is going away")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.thread.join(WAIT)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        self.assertEqual(d.wait_exit(), 0)

    def test_a_node_without_clients_exits_at_once(self):
        d = self.start_node(grace=60, duration=120)
        d.signal(signal.SIGUSR2)
        self.assertEqual(d.wait_exit(), 0)
        d.log.wait_for("lame duck: every connection is closed")


class LameDuckClusterTest(DaemonTest):
    """Three nodes and one Redis (test_cluster's helpers); node 1 drains into nodes 2 and 3, or
    is killed under a roomcat that moves to node 2."""

    def setUp(self):
        super().setUp()
        if shutil.which("redis-server") is None:
            self.skipTest("redis-server is not installed (apt-get install redis-server)")
        import test_cluster  # its Redis and node config (it exits 77 when Redis is missing)
        self.cluster = test_cluster
        self.redis = test_cluster.Redis()
        self.addCleanup(self.redis.close)

    def node(self, name, extra=""):
        d = self.start(self.cluster.node_config(self.redis.port, name, extra))
        d.log.wait_for("cluster: connected to Redis")
        return d

    def roomcat(self, targets):
        p = subprocess.Popen([ROOMCAT, *targets, "--json", "--reconnect"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.out, p.err = LineLog(p.stdout), LineLog(p.stderr)

        def cleanup():
            if p.poll() is None:
                p.kill()
                p.wait()
            p.out.thread.join(WAIT)
            p.err.thread.join(WAIT)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        self.addCleanup(cleanup)
        p.stdin.write(b'{"op":"join","room":"hall","id":"j"}\n')
        p.stdin.flush()
        p.out.wait_for(r'"op":"joined"')
        return p

    def test_roomcat_moves_to_the_other_nodes_and_misses_nothing(self):
        grace_ms = "[server]\nlame_duck_grace_s = 1\nlame_duck_duration_s = 3\n"
        n1 = self.node("node-1", grace_ms)
        n2, n3 = self.node("node-2"), self.node("node-3")
        a1, a2, a3 = (f"127.0.0.1:{n.port}" for n in (n1, n2, n3))
        cats = {"via2": self.roomcat([a1, a2, a3]), "via3": self.roomcat([a1, a3, a2])}
        sender = self.connect(n2, nick="s", join=["hall"])

        # The sender says on and on (bounded) while node 1 drains.
        sent = {}  # seq -> text, from the acks
        progress = threading.Condition()
        stop = threading.Event()
        failure = []

        def say():
            try:
                for i in range(5000):  # bounded; it stops long before
                    if stop.is_set():
                        return
                    sender.send({"op": "say", "room": "hall", "text": f"m{i}", "id": i})
                    ok = sender.wait_for("ok", id=i)
                    with progress:
                        sent[ok["seq"]] = f"m{i}"
                        progress.notify_all()
                    time.sleep(0.005)  # a pace, not a wait for an event: a steady stream
            except Exception as e:  # reported by the test below
                failure.append(e)
            finally:
                with progress:
                    progress.notify_all()
        talker = threading.Thread(target=say, daemon=True)
        talker.start()
        for p in cats.values():
            p.out.wait_for(r'"op":"message"')

        n1.signal(signal.SIGUSR2)
        for p in cats.values():
            p.out.wait_for(r'"event":"lame_duck"')
        line2 = cats["via2"].err.wait_for(r"reconnected", timeout=WAIT + 3)
        line3 = cats["via3"].err.wait_for(r"reconnected", timeout=WAIT + 3)
        self.assertTrue(line2.startswith(f"roomcat: reconnected to {a2} as guest-"), line2)
        self.assertTrue(line3.startswith(f"roomcat: reconnected to {a3} as guest-"), line3)
        for line in (line2, line3):
            self.assertIn("hall: resumed", line)
        # Node 1 is empty now and exits by itself, cleanly.
        self.assertEqual(n1.wait_exit(WAIT), 0)
        self.assertIn("lame duck: every connection is closed", n1.log.text())

        # Some more after the move, then the stream ends.
        with progress:
            after = len(sent)
            progress.wait_for(lambda: len(sent) >= after + 20 or failure or not talker.is_alive(), WAIT)
        stop.set()
        talker.join(WAIT)
        self.assertEqual(failure, [])
        last = max(sent)
        self.assertEqual(sorted(sent), list(range(1, last + 1)))

        for name, p in cats.items():
            p.out.wait_for(r'"seq":%d\b' % last)
            p.stdin.close()
            self.assertEqual(p.wait(WAIT), 0, p.err.text())
            p.out.thread.join(WAIT)
            # What it printed (live messages and the resume's history), each seq once, in order.
            printed = []
            for line in p.out.lines:
                frame = json.loads(line)
                batch = frame.get("history", []) if frame.get("op") == "joined" else [frame]
                printed += [(m["seq"], m["text"]) for m in batch if m.get("op", "message") == "message"
                            and "seq" in m and "text" in m]
            seen, unique = set(), []
            for seq, text in printed:
                if seq not in seen:
                    seen.add(seq)
                    unique.append((seq, text))
            self.assertEqual(unique, sorted(sent.items()), name)

    def test_roomcat_sends_unanswered_says_again_through_another_node_once_each(self):
        n1, n2 = self.node("node-1"), self.node("node-2")
        gate = Gate(n1.port)  # in front of node 1: what is lost in flight when it dies
        self.addCleanup(gate.close)
        reader = self.connect(n2, nick="reader", join=["hall"])
        p = subprocess.Popen([ROOMCAT, f"127.0.0.1:{gate.port}", f"127.0.0.1:{n2.port}", "--reconnect",
                              "--nick", "ann", "--join", "hall"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = LineLog(p.stdout), LineLog(p.stderr)

        def cleanup():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.thread.join(WAIT)
            err.thread.join(WAIT)
            for f in (p.stdin, p.stdout, p.stderr):
                f.close()
        self.addCleanup(cleanup)

        def type_lines(texts):
            p.stdin.write("".join(t + "\n" for t in texts).encode())
            p.stdin.flush()
        got = []

        def read_until(text):
            while not got or got[-1][1] != text:
                m = reader.recv()
                if m["op"] == "message":  # one published twice would be here
                    got.append((m["from"], m["text"]))

        out.wait_for(r"you joined hall")
        lines = [f"line {i}" for i in range(20)]
        type_lines(lines[0:5])
        read_until("line 4")
        type_lines(["/ping"])  # answered after line 4's ok: nothing of theirs is in flight now
        out.wait_for(r"^\* pong$")
        # Node 1 publishes these (node 2's reader gets them) but its answers never arrive.
        gate.drop_replies.set()
        type_lines(lines[5:10])
        read_until("line 9")
        # These reach node 1's socket, frozen, and die with it unread.
        before = gate.requests
        n1.signal(signal.SIGSTOP)
        type_lines(lines[10:15])
        gate.wait_count(lambda g: g.requests >= before + 5)
        n1.signal(signal.SIGKILL)
        n1.kill()
        lost = out.wait_for(r"connection lost")
        self.assertTrue(lost.endswith("reconnecting (10 says unanswered, to be sent again)"), lost)
        # Node 1's nick ann is node 1's until node 2 sweeps it: roomcat asks again meanwhile,
        # since the msg_ids count under ann only.
        back = out.wait_for(r"reconnected")
        self.assertEqual(back, f"* reconnected to 127.0.0.1:{n2.port} as ann; hall: resumed, "
                               "5 missed messages replayed")
        type_lines(lines[15:20])
        read_until("line 19")
        p.stdin.close()
        self.assertEqual(p.wait(WAIT), 0, err.text())
        reader.send({"op": "say", "room": "hall", "text": "the end", "id": "end"})
        read_until("the end")  # every message published before it has been read
        self.assertEqual(got, [("ann", t) for t in lines] + [("reader", "the end")])
        out.thread.join(WAIT)
        shown = [l for l in out.lines if l.startswith("[hall] ann: ")]
        self.assertEqual(shown, [f"[hall] ann: {t}" for t in lines])


if __name__ == "__main__":
    run()
