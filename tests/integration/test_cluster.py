"""Rooms across nodes ([cluster], docs/cluster.md): three real roomd nodes and one real Redis,
started here on free loopback ports. One global order per room; Redis down means `unavailable`,
never a forked order; service comes back by itself."""
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import harness
from harness import WAIT, DaemonTest, LineLog, run
from test_textmode import Netcat

from redis_server import REDIS, Redis, RedisDaemonTest  # one helper for every suite (the others import it from here too)
if REDIS is None:
    print("SKIP: redis-server is not installed (apt-get install redis-server); the cluster tests need one")
    sys.exit(77)  # meson: skipped

# Messages each sender says in the ordering test (the figure is 1000).
N = int(os.environ.get("ROOMD_CLUSTER_N", "1000"))


def node_config(redis_port, node, extra=""):
    return f"""
[limits]
rate = 1000000
burst = 1000000
max_outbound_bytes = 268435456
[cluster]
redis = "127.0.0.1:{redis_port}"
node_id = "{node}"
heartbeat_ms = 200
[[rooms]]
name = "hall"
persist = false
[[rooms]]
name = "here"
persist = false
cluster = false
{extra}"""


HTTP = '[http]\nlisten = "127.0.0.1:0"\n'  # a node's /metrics, on a free port (config extra)
SERVING = r"http: serving /metrics, /healthz and /readyz on 127\.0\.0\.1:(\d+)"


def metrics(daemon):
    """A node's /metrics (started with HTTP): the body, and its samples by name (and labels)."""
    port = int(re.search(SERVING, daemon.log.wait_for(SERVING)).group(1))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        if response.status != 200:
            raise AssertionError(f"/metrics answered {response.status}")
        body = response.read().decode()
    finally:
        conn.close()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return body, samples


def promtool_check(test, body):
    """`promtool check metrics` passes the body (Debian package prometheus; skipped without it:
    test_http says so when it is missing)."""
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=body.encode(), capture_output=True, timeout=WAIT)
        test.assertEqual((r.returncode, r.stdout.decode() + r.stderr.decode()), (0, ""), body)


def alive(client):
    """The connection is up and served: a ping is answered (other frames skipped)."""
    client.send({"op": "ping", "id": "alive"})
    client.wait_for("pong", id="alive")


def read_messages(client, room, count, timeout, others=None):
    """The next `count` messages of `room` a client gets, in order; other frames go to `others`
    (a list) or are skipped."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(got)} of {count} messages within {timeout:.0f}s; last {got[-3:]}")
        msg = client.recv(timeout=left)
        if msg.get("op") == "message" and msg.get("room") == room:
            got.append(msg)
        elif others is not None:
            others.append(msg)
    return got


class ClusterTest(RedisDaemonTest):
    def node(self, name):
        d = self.start(node_config(self.redis.port, name))
        d.log.wait_for("cluster: connected to Redis")
        return d

    def say_until(self, client, room, code, start_id, limit):
        """Says (each with a new id) until the reply is `code` ("ok" or an error code), bounded
        by `limit` seconds; returns the reply."""
        deadline = time.monotonic() + limit
        i = start_id
        while time.monotonic() < deadline:
            i += 1
            client.send({"op": "say", "room": room, "text": f"try {i}", "id": i})
            while True:
                msg = client.recv()
                if msg.get("id") == i:
                    break
            if (msg["op"] == "ok" and code == "ok") or (msg["op"] == "error" and msg["code"] == code):
                return msg
            time.sleep(0.05)  # a retry interval, not a wait for an event
        raise AssertionError(f"no {code} within {limit}s; last {msg}")

    def test_three_nodes_one_order(self):
        nodes = [self.node(f"node-{i}") for i in range(3)]
        senders = [self.connect(d, nick=f"s{i}", join=["hall"]) for i, d in enumerate(nodes)]
        listeners = [self.connect(d, nick=f"l{i}", join=["hall"]) for i, d in enumerate(nodes)]
        # Everyone says at once: N lines each, as fast as the sockets take them.
        def send_all(i, client):
            lines = "".join('{"op":"say","room":"hall","text":"%d-%d","id":%d}\n' % (i, k, k) for k in range(N))
            client.send(lines)
        threads = [threading.Thread(target=send_all, args=(i, c)) for i, c in enumerate(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        budget = WAIT + N * 3 * 0.02  # generous: bounded, never asserted as a speed
        results = {}
        frames = {f"s{i}": [] for i in range(3)}
        def collect(name, client):
            results[name] = read_messages(client, "hall", 3 * N, budget, frames.get(name))
        readers = [threading.Thread(target=collect, args=(f"s{i}", c)) for i, c in enumerate(senders)]
        readers += [threading.Thread(target=collect, args=(f"l{i}", c)) for i, c in enumerate(listeners)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(budget + WAIT)
        self.assertEqual(len(results), 6, "a reader did not finish")
        reference = [(m["seq"], m["from"], m["text"]) for m in results["l0"]]
        self.assertEqual([s for s, _, _ in reference], list(range(1, 3 * N + 1)))
        for name, msgs in results.items():
            self.assertEqual([(m["seq"], m["from"], m["text"]) for m in msgs], reference, name)
        # Each sender's own messages in the order it sent them.
        for i in range(3):
            mine = [t for _, f, t in reference if f == f"s{i}"]
            self.assertEqual(mine, [f"{i}-{k}" for k in range(N)])
        # Every say was acknowledged with the seq its message got.
        for i, c in enumerate(senders):
            seqs = {t: s for s, f, t in reference if f == f"s{i}"}
            c.send({"op": "ping", "id": "end"})
            oks = [f for f in frames[f"s{i}"] if f.get("op") == "ok"]
            self.assertEqual([f for f in frames[f"s{i}"] if f.get("op") not in ("ok", "presence")], [])
            while True:
                msg = c.recv()
                if msg.get("op") == "pong":
                    break
                if msg.get("op") == "ok":
                    oks.append(msg)
            self.assertEqual([o["id"] for o in oks], list(range(N)))
            self.assertEqual([o["seq"] for o in oks], [seqs[f"{i}-{k}"] for k in range(N)])
        # A node-local room keeps its own seq.
        here = self.connect(nodes[1], join=["here"])
        here.call({"op": "say", "room": "here", "text": "local", "id": 1}, "message", seq=1)

    def test_redis_down_refuses_says_then_comes_back(self):
        a, b = self.node("node-a"), self.node("node-b")
        alice = self.connect(a, nick="alice", join=["hall"])
        bob = self.connect(b, nick="bob", join=["hall"])
        idle = self.connect(a, nick="idle", join=["hall"])
        alice.send({"op": "say", "room": "hall", "text": "before", "id": "x"})
        alice.wait_for("ok", id="x")
        self.assertEqual(read_messages(bob, "hall", 1, WAIT)[0]["text"], "before")
        self.assertEqual(read_messages(idle, "hall", 1, WAIT)[0]["text"], "before")
        late = self.connect(b)
        joined = late.call({"op": "join", "room": "hall"}, "joined")
        old_epoch, old_seq = joined["epoch"], joined["seq"]
        self.assertEqual(old_seq, 1)

        self.redis.kill()
        refused = self.say_until(alice, "hall", "unavailable", 100, WAIT)
        self.assertIn("unreachable", refused["message"])
        a.log.wait_for("cluster: Redis at .*reconnecting")
        # Node-local rooms and idle clients do not notice.
        alive(idle)
        alive(bob)
        here = self.connect(a, join=["here"])
        here.call({"op": "say", "room": "here", "text": "local", "id": 1}, "message", seq=1)

        self.redis.start()  # same port, no data: the room starts again under a new epoch
        ok = self.say_until(alice, "hall", "ok", 200, WAIT)
        msgs = read_messages(bob, "hall", 1, WAIT)
        self.assertEqual(msgs[0]["seq"], ok["seq"])
        self.assertEqual(msgs[0]["seq"], 1)
        again = self.connect(b)
        resumed = again.call({"op": "join", "room": "hall", "since": old_seq, "epoch": old_epoch}, "joined")
        self.assertFalse(resumed["resumed"])
        self.assertNotEqual(resumed["epoch"], old_epoch)
        alive(idle)

    def test_roomd_started_before_redis(self):
        self.redis.kill()
        d = self.start(node_config(self.redis.port, "early"))
        d.log.wait_for("cluster: Redis at .*refused")
        # Joined at once: nothing to wait for (and no nick: a nick waits for the cluster too).
        c = self.connect(d, join=["hall"])
        c.error({"op": "say", "room": "hall", "text": "too soon", "id": 1}, "unavailable")
        self.redis.start()
        ok = self.say_until(c, "hall", "ok", 10, WAIT)
        self.assertEqual(ok["seq"], 1)
        other = self.node("late")
        o = self.connect(other, join=["hall"])
        c.call({"op": "say", "room": "hall", "text": "both", "id": "b"})
        self.assertEqual(read_messages(o, "hall", 1, WAIT)[0]["text"], "both")

    def test_a_lost_subscription_is_filled_from_the_stream(self):
        a, b = self.node("node-a"), self.node("node-b")
        alice = self.connect(a, nick="alice", join=["hall"])
        bob = self.connect(b, nick="bob", join=["hall"])
        count = 50
        self.assertIn(":1", self.redis.kill_client("roomd:node-b:subscriber"))
        # node-a never noticed: it goes on ordering while node-b reconnects and catches up.
        for i in range(count):
            alice.send({"op": "say", "room": "hall", "text": str(i), "id": i})
        got = read_messages(alice, "hall", count, WAIT)
        b.log.wait_for("cluster: Redis at .*subscriber link reset")
        seen = read_messages(bob, "hall", count, WAIT)
        self.assertEqual([m["seq"] for m in seen], list(range(1, count + 1)))
        self.assertEqual([m["text"] for m in seen], [m["text"] for m in got])

    def test_frozen_redis_is_noticed_and_forgiven(self):
        a = self.node("node-a")
        c = self.connect(a, nick="c", join=["hall"])
        c.call({"op": "say", "room": "hall", "text": "1", "id": 1})
        c.wait_for("ok", id=1)
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            a.log.wait_for("cluster: Redis at .*timeout")
            c.error({"op": "say", "room": "hall", "text": "frozen", "id": 2}, "unavailable")
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        ok = self.say_until(c, "hall", "ok", 10, WAIT)
        self.assertEqual(ok["seq"], 2)  # same Redis, same room: the order goes on


class ReadmeWalkthrough(DaemonTest):
    """The README's three nodes on one machine: one Redis, three roomd with the README's
    config (a node_id each, [cluster] redis, the room lobby), a netcat user on node 1 and a
    roomcat user on node 3 chatting both ways, and a JSON client on node 2 seeing both lines
    in the same order. Free ports instead of the README's fixed ones."""

    def test_netcat_on_node_1_and_roomcat_on_node_3(self):
        if not shutil.which("nc"):
            self.fail("netcat-openbsd (nc) is required; ./quickstart.sh installs it")
        redis = Redis()
        self.addCleanup(redis.close)  # after tearDown has stopped the nodes
        nodes = []
        for n in (1, 2, 3):
            d = self.start(f'[cluster]\nredis = "127.0.0.1:{redis.port}"\nnode_id = "node-{n}"\n'
                           '[[rooms]]\nname = "lobby"\ntopic = "General"\n')
            d.log.wait_for(f"cluster: connected to Redis at .* as node node-{n};")
            nodes.append(d)
        watcher = self.connect(nodes[1], nick="watcher", join=["lobby"])

        carol = Netcat(nodes[0].port)
        self.addCleanup(carol.close)
        carol.screen.wait_for(r'^\{"op":"welcome"')
        self.assertEqual(carol.type("/nick carol", r"^\*"), "* you are now known as carol")
        self.assertTrue(carol.type("/join lobby", r"^\*").startswith("* you joined lobby (topic: General); members: "))

        roomcat = os.path.join(os.path.dirname(harness.ROOMD), "roomcat")
        ann = subprocess.Popen([roomcat, f"127.0.0.1:{nodes[2].port}", "--nick", "ann", "--join", "lobby"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ann_screen = LineLog(ann.stdout)
        ann_errors = LineLog(ann.stderr)
        def stop_ann():
            if ann.poll() is None:
                ann.kill()
                ann.wait()
            for f in (ann.stdin, ann.stdout, ann.stderr):
                if not f.closed:
                    f.close()
        self.addCleanup(stop_ann)
        ann_screen.wait_for(r"^\* you are now known as ann$")
        ann_screen.wait_for(r"^\* you joined lobby \(topic: General\); members: ")

        ann.stdin.write(b"hi from node 3\n")
        ann.stdin.flush()
        carol.screen.wait_for(r"^\[lobby\] ann: hi from node 3$")
        ann_screen.wait_for(r"^\[lobby\] ann: hi from node 3$")
        carol.type("hello ann, this is node 1", r"^\[lobby\] carol: hello ann, this is node 1$")
        ann_screen.wait_for(r"^\[lobby\] carol: hello ann, this is node 1$")

        said = read_messages(watcher, "lobby", 2, WAIT)
        self.assertEqual([(m["seq"], m["from"], m["text"]) for m in said],
                         [(1, "ann", "hi from node 3"), (2, "carol", "hello ann, this is node 1")])
        # ann leaves as roomcat does at the end of its input: everything answered, then bye.
        ann.stdin.close()
        self.assertEqual(ann.wait(timeout=WAIT), 0, ann_errors.text())
        ann_screen.wait_for(r"^\* bye$")
        carol.screen.wait_for(r"^\* ann left lobby$")  # presence crosses nodes
        self.assertEqual(carol.type("/quit", r"^\* bye$"), "* bye")


if __name__ == "__main__":
    run()
