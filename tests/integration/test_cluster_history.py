"""Persisted rooms across nodes (docs/cluster.md, "Persisted rooms"): every node stores every
message of a persisted clustered room in its own SQLite file, so `history` pages and searches
are the same from any node; an `ok` means the message is in the sending node's store, and Redis
runs with its AOF written before every answer. Real roomd nodes and a real Redis on loopback:
a node that was down catches up from the stream, `kill -9` of a node or of Redis loses no
acknowledged message, and a Redis that comes back empty never gives a stored seq again."""
import os
import shutil
import signal
import sys
import tempfile
import time

from harness import WAIT, run
from windowed_writer import WindowedWriter, pump_once
from test_cluster import HTTP as metrics_http  # exits 77 (skipped) without redis-server
from test_cluster import Redis, RedisDaemonTest, metrics, promtool_check, read_messages

WINDOW = 16  # says a writer has in flight


def node_config(redis_port, node, db, extra=""):
    return f"""
[limits]
rate = 1000000
burst = 1000000
query_rate = 0
address_history_rate = 0
[cluster]
redis = "127.0.0.1:{redis_port}"
node_id = "{node}"
heartbeat_ms = 200
[history]
path = "{db}"
replay = 5
[[rooms]]
name = "log"
[[rooms]]
name = "mine"
cluster = false
{extra}"""


class Writer(WindowedWriter):
    """Says numbered messages with ids into `log`, WINDOW in flight, once joined."""

    def __init__(self, port, nick, count):
        super().__init__(port, nick, "log", count, WINDOW)
        self.joined = None
        self.stopped = False  # sends no more

    def text(self, i):
        # A word of its own (searched for), the common word, and one of seven shared ones.
        return f"durable {self.nick}x{i} word{i % 7} from {self.nick}"

    def may_send(self):
        return self.joined is not None and not self.eof and not self.stopped

    def on_line(self, m):
        if m.get("op") == "joined":
            self.joined = m

    def done(self):
        return self.eof or (self.joined is not None and self.answered() == (self.sent if self.stopped else self.count))


def pump(writers, until, limit=WAIT * 4):
    """Runs the writers until `until()` (checked between reads), bounded by `limit` seconds."""
    deadline = time.monotonic() + limit
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("writers: " + ", ".join(f"{w.nick} sent {w.sent} acked {len(w.acked)} "
                                                          f"failed {len(w.failed)} eof {w.eof}" for w in writers))
        if all(w.eof for w in writers):
            return
        pump_once(writers, 0.2)


class ClusterHistoryTest(RedisDaemonTest):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="roomd-clhistory-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)  # after Redis and the nodes
        super().setUp()

    def node(self, name, wait_connected=True, extra=""):
        """A node whose store is `name`.db in the test's directory, kept across its restarts."""
        d = self.start(node_config(self.redis.port, name, os.path.join(self.dir, name + ".db"), extra))
        if wait_connected:
            d.log.wait_for("cluster: connected to Redis")
        return d

    @staticmethod
    def history(client, request):
        """A history page. It is read in an idle-priority helper, which a machine busy with other
        work (a build beside the tests) may starve for a while: waited for longer than a line. A
        member's presence may come first (another node's members are known to a node from its
        start, so a restarted node's member hears the sweep of its old self's): skipped."""
        client.send(request)
        deadline = time.monotonic() + WAIT * 4
        while True:
            reply = client.recv(timeout=max(0.01, deadline - time.monotonic()))
            if reply.get("op") != "presence":
                break
        assert reply.get("op") == "history", reply
        return reply

    def pages(self, client, room="log", search=None, limit=17):
        """Every stored message (matching `search`), oldest first, read a page at a time from the
        newest back: the paging a client does."""
        found, before = [], None
        for _ in range(10000):  # bounded: each page moves `before` back
            req = {"op": "history", "room": room, "limit": limit}
            if search is not None:
                req["search"] = search
            if before is not None:
                req["before"] = before
            h = self.history(client, req)
            found = h["messages"] + found
            if not h["more"] or not h["messages"]:
                return found
            before = h["messages"][0]["seq"]
        raise AssertionError("history paging did not end")

    def say_once_reconnected(self, client, text):
        """Says `text` into `log` until its `ok`, bounded: while the node reconnects to Redis the
        say may be refused `unavailable`, and nothing else is allowed."""
        deadline = time.monotonic() + WAIT
        while True:
            r = client.call({"op": "say", "room": "log", "text": text, "id": "once"})
            while r.get("id") != "once":
                r = client.recv()
            self.assertTrue(r["op"] == "ok" or r["code"] == "unavailable", r)  # only the reconnect may refuse
            if r["op"] == "ok":
                return r
            self.assertLess(time.monotonic(), deadline, r)

    def wait_stored(self, client, seq, room="log"):
        """Until the node's store holds `seq` (its commit runs on the node's own time)."""
        deadline = time.monotonic() + WAIT
        while True:
            h = self.history(client, {"op": "history", "room": room, "limit": 1})
            if h["messages"] and h["messages"][-1]["seq"] >= seq:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the store did not reach seq {seq}: {h}")
            time.sleep(0.02)  # a retry interval while polling, bounded by the deadline

    def acked_texts(self, writers):
        """seq -> (nick, text) of every acknowledged say; a seq acknowledged twice fails."""
        out = {}
        for w in writers:
            for i, seq in w.acked.items():
                self.assertNotIn(seq, out, f"seq {seq} acknowledged twice")
                out[seq] = (w.nick, w.text(i))
        return out

    def assert_holds(self, messages, acked):
        by_seq = {m["seq"]: m for m in messages}
        for seq, (nick, text) in acked.items():
            m = by_seq.get(seq)
            self.assertIsNotNone(m, f"acknowledged seq {seq} ({text!r}) is not in history")
            self.assertEqual((m["from"], m["text"]), (nick, text), f"seq {seq}")


class Everywhere(ClusterHistoryTest):
    def test_history_and_search_are_the_same_from_every_node(self):
        nodes = [self.node(f"n{i}") for i in range(3)]
        writers = [Writer(d.port, f"w{i}", 40) for i, d in enumerate(nodes)]
        reader = self.connect(nodes[2])  # a client that never joins: history needs no membership
        pump(writers, lambda: all(w.done() for w in writers))
        for w in writers:
            self.assertEqual(w.failed, {})
            w.close()
        acked = self.acked_texts(writers)
        self.assertEqual(sorted(acked), list(range(1, 121)))
        readers = [reader] + [self.connect(d) for d in nodes[:2]]
        for c in readers:
            self.wait_stored(c, 120)
        reference = self.pages(readers[0])
        self.assertEqual([m["seq"] for m in reference], list(range(1, 121)))
        self.assert_holds(reference, acked)
        for c in readers[1:]:
            self.assertEqual(self.pages(c), reference, "history differs between nodes")
            self.assertEqual(self.pages(c, limit=500), reference)
        for words in ("word3", "DURABLE", "wor*", "w1x3"):
            expected = self.pages(readers[0], search=words, limit=5)
            self.assertTrue(expected, words)
            for c in readers[1:]:
                self.assertEqual(self.pages(c, search=words, limit=5), expected, f"search {words!r} differs")
        self.assertEqual([m["seq"] for m in self.pages(readers[1], search="word3")],
                         [m["seq"] for m in reference if "word3" in m["text"]])
        self.assertEqual(len(self.pages(readers[2], search="durable", limit=500)), 120)
        # A paged `before` in the middle is the same slice everywhere.
        for c in readers:
            h = self.history(c, {"op": "history", "room": "log", "before": 61, "limit": 10})
            self.assertEqual(h["messages"], reference[50:60])
            self.assertTrue(h["more"])
        # Redis here has no AOF: each node said so once, loudly.
        for d in nodes:
            self.assertEqual(d.log.text().count("may answer before its data is on disk"), 1)
        # A persisted room kept on its node (cluster = false) is that node's own, as before.
        mine = self.connect(nodes[0], join=["mine"])
        mine.call({"op": "say", "room": "mine", "text": "only here", "id": 1}, "message", seq=1)
        mine.wait_for("ok", id=1)
        self.assertEqual([m["text"] for m in self.pages(mine, room="mine")], ["only here"])
        self.assertEqual(self.pages(readers[2], room="mine"), [])

    def test_a_node_that_was_down_catches_up_from_the_stream(self):
        a, b = self.node("a"), self.node("b")
        w = Writer(a.port, "early", 10)
        pump([w], w.done)
        c = self.connect(b, join=["log"])
        epoch = c.call({"op": "join", "room": "log", "id": "e"}, "joined")["epoch"]
        self.wait_stored(c, 10)
        b.stop()
        self.daemons.remove(b)
        # While b is down, the room goes on.
        w2 = Writer(a.port, "later", 50)
        pump([w2], w2.done)
        w.close()
        w2.close()
        acked = self.acked_texts([w, w2])
        self.assertEqual(sorted(acked), list(range(1, 61)))
        b = self.node("b")
        b.log.wait_for(r"cluster: 'log' reading seqs 11\.\.60 from its stream")
        # The join waits for the catch-up and its commit: then history has every message.
        c = self.connect(b)
        j = c.call({"op": "join", "room": "log", "since": 10, "epoch": epoch}, "joined")
        self.assertEqual((j["seq"], j["epoch"], j["resumed"]), (60, epoch, True))
        self.assertEqual([m["seq"] for m in j["history"]], list(range(11, 61)))
        self.assertEqual(self.pages(c), self.pages(self.connect(a)))
        self.assert_holds(self.pages(c), acked)
        # It serves as a node again: a say from it goes on after 60, and a hears it.
        listener = self.connect(a, join=["log"])
        c.send({"op": "say", "room": "log", "text": "back", "id": "b"})
        c.wait_for("message", seq=61)  # after the listener's join (presence crosses nodes)
        c.wait_for("ok", id="b", seq=61)
        self.assertEqual(read_messages(listener, "log", 1, WAIT)[0]["text"], "back")

    def test_kill_9_of_a_node_right_after_acks(self):
        # k2 never has a member in the room: it stores it all the same (followed from its start).
        nodes = [self.node(f"k{i}") for i in range(3)]
        victim = nodes[0]
        before = self.connect(nodes[1]).call({"op": "join", "room": "log"}, "joined")["epoch"]
        w = Writer(victim.port, "doomed", 400)
        pump([w], lambda: len(w.acked) >= 60)
        victim.proc.send_signal(signal.SIGKILL)  # right after an ack, with up to 16 says in flight
        pump([w], lambda: w.eof)  # what was sent before the kill: read to EOF
        w.close()
        victim.proc.wait(timeout=WAIT)
        victim.check_sanitizers()
        victim.kill()
        self.daemons.remove(victim)
        acked = self.acked_texts([w])
        self.assertGreaterEqual(len(acked), 60)
        # A say after the kill comes after everything Redis ordered, acked or not: once each
        # node has stored it, each has all.
        survivors = [self.connect(d) for d in nodes[1:]]
        fence = self.connect(nodes[1], join=["log"])
        fence.send({"op": "say", "room": "log", "text": "fence", "id": "f"})
        last = fence.wait_for("ok", id="f")["seq"]
        self.assertGreater(last, max(acked))
        for c in survivors:
            self.wait_stored(c, last)
            stored = self.pages(c)
            self.assertEqual([m["seq"] for m in stored], list(range(1, len(stored) + 1)))
            self.assert_holds(stored, acked)
            self.assert_holds(self.pages(c, search="durable", limit=50), acked)
        self.assertEqual(self.pages(survivors[0]), self.pages(survivors[1]))
        # ... and on the restarted node, which keeps the cluster's epoch (its seqs are Redis').
        again = self.node("k0")
        again.log.wait_for("was not closed cleanly")
        c = self.connect(again)
        j = c.call({"op": "join", "room": "log"}, "joined")
        self.assertEqual(j["epoch"], before)
        restarted = self.pages(c)
        self.assertEqual(restarted, self.pages(survivors[0]))
        self.assert_holds(restarted, acked)
        for seq in sorted(acked)[::20]:
            word = acked[seq][1].split()[1]
            self.assertEqual([m["seq"] for m in self.pages(c, search=word)], [seq])
        print(f"\nkill -9 of a node: acked={len(acked)} sent={w.sent} stored={len(restarted)} "
              f"(the fence is the last)", file=sys.stderr)

    def test_redis_restarted_empty_never_gives_a_stored_seq_again(self):
        a, b = self.node("a"), self.node("b")
        w = Writer(a.port, "before", 20)
        pump([w], w.done)
        w.close()
        cb = self.connect(b)
        self.wait_stored(cb, 20)  # b has it all, so either node may begin the room again
        j = cb.call({"op": "join", "room": "log"}, "joined")
        old_epoch = j["epoch"]
        self.assertEqual(j["seq"], 20)
        mark_a, mark_b = a.log.mark(), b.log.mark()
        self.redis.kill()
        self.redis.start()  # empty: no persistence
        for d, mark in ((a, mark_a), (b, mark_b)):
            d.log.wait_for("cluster: connected to Redis", start=mark)
            d.log.wait_for("'log' began again in Redis .* this node holds it up to seq 20", start=mark)
        ca = self.connect(a, join=["log"])
        ok = self.say_once_reconnected(ca, "after the loss")
        self.assertEqual(ok["seq"], 21, "the seq goes on after the stored ones, never back to 1")
        self.assertEqual(read_messages(cb, "log", 1, WAIT)[0]["seq"], 21)
        resume = self.connect(b).call({"op": "join", "room": "log", "since": 20, "epoch": old_epoch}, "joined")
        self.assertFalse(resume["resumed"])
        self.assertNotEqual(resume["epoch"], old_epoch)
        self.assertEqual(resume["seq"], 21)
        readers = [self.connect(a), self.connect(b)]  # members hear presence: these ask only
        for c in readers:
            self.wait_stored(c, 21)
        for c in readers:
            stored = self.pages(c)
            self.assertEqual([m["seq"] for m in stored], list(range(1, 22)))
            self.assert_holds(stored, self.acked_texts([w]))
            self.assertEqual(stored[-1]["text"], "after the loss")

    def test_seqs_given_twice_are_kept_as_stored_and_counted(self):
        # The case written plainly in docs/cluster.md: Redis comes back empty while the node
        # holding the most is away, and a node holding less begins the room again and says.
        a, b = self.node("a", extra=metrics_http), self.node("b")
        w = Writer(a.port, "first", 5)
        pump([w], w.done)
        self.wait_stored(self.connect(b), 5)
        b.stop()
        self.daemons.remove(b)
        w2 = Writer(a.port, "only-a", 5)  # seqs 6..10: a holds 10, b 5
        pump([w2], w2.done)
        self.wait_stored(self.connect(a), 10)
        self.assertEqual(sorted(self.acked_texts([w, w2])), list(range(1, 11)))
        mark = a.log.mark()
        a.proc.send_signal(signal.SIGSTOP)  # away: it cannot pass its floor of 10
        try:
            self.redis.kill()
            self.redis.start()  # empty
            b = self.node("b")
            w3 = Writer(b.port, "from-b", 7)  # begins again after b's 5: seqs 6..12, a new epoch
            pump([w3], w3.done)
            self.assertEqual(sorted(w3.acked.values()), list(range(6, 13)))
        finally:
            a.proc.send_signal(signal.SIGCONT)
        a.log.wait_for(r"'log' began again in Redis .*the new epoch's seqs 6\.\.10 are not stored here", start=mark)
        ca = self.connect(a)
        self.wait_stored(ca, 12)  # 11 and 12 are new here: stored
        stored = {m["seq"]: m["from"] for m in self.pages(ca)}
        self.assertEqual([stored[s] for s in range(1, 13)], ["first"] * 5 + ["only-a"] * 5 + ["from-b"] * 2)
        body, samples = metrics(a)
        self.assertEqual(samples["roomd_cluster_conflicts_total"], 5)
        promtool_check(self, body)
        for c in (w, w2, w3):
            c.close()


class DurableRedisTest(ClusterHistoryTest):
    def make_redis(self):
        return Redis(persist=True)  # its AOF written and fsynced before every answer

    def test_kill_9_of_redis_loses_no_acked_message_and_keeps_the_order(self):
        a, b = self.node("a"), self.node("b")
        for d in (a, b):
            d.log.wait_for("cluster: Redis persistence: appendonly yes, appendfsync always")
        listeners = [self.connect(d, join=["log"]) for d in (a, b)]
        epoch = listeners[0].call({"op": "join", "room": "log", "id": "e"}, "joined")["epoch"]
        writers = [Writer(a.port, "wa", 400), Writer(b.port, "wb", 400)]
        pump(writers, lambda: sum(len(w.acked) for w in writers) >= 100)
        self.redis.proc.send_signal(signal.SIGKILL)
        self.redis.proc.wait()
        for w in writers:
            w.stopped = True  # nothing new; what is in flight is settled or refused
        self.redis.start()  # the same port and directory: its AOF
        pump(writers, lambda: all(w.done() for w in writers))
        for w in writers:
            self.assertTrue(set(w.failed.values()) <= {"unavailable"}, w.failed)
            w.close()
        acked = self.acked_texts(writers)
        top = max(acked)
        # The order goes on in the same epoch: seq after the last stored one.
        sayer = self.connect(a, join=["log"])
        after = self.say_once_reconnected(sayer, "after the kill")
        self.assertGreater(after["seq"], top)
        last = after["seq"]
        readers = [self.connect(d) for d in (a, b)]
        for c in readers:
            self.wait_stored(c, last)
        stored = self.pages(readers[0])
        self.assertEqual([m["seq"] for m in stored], list(range(1, last + 1)), "no seq lost or given twice")
        self.assertEqual(self.pages(readers[1]), stored, "the nodes' histories forked")
        self.assert_holds(stored, acked)
        # What the members heard live is that same order.
        for c in listeners:
            heard = {}
            while len(heard) < last:
                m = c.recv()
                if m.get("op") == "message":
                    heard[m["seq"]] = (m["from"], m["text"])
            self.assertEqual(heard, {m["seq"]: (m["from"], m["text"]) for m in stored})
        j = self.connect(b).call({"op": "join", "room": "log", "since": top, "epoch": epoch}, "joined")
        self.assertEqual(j["epoch"], epoch, "Redis kept the room: the epoch stays")
        self.assertTrue(j["resumed"])
        for d in (a, b):
            self.assertNotIn("may answer before its data is on disk", d.log.text())
        refused = sum(len(w.failed) for w in writers)
        print(f"\nkill -9 of Redis: acked={len(acked)} refused={refused} "
              f"sent={sum(w.sent for w in writers)} stored={len(stored)} (with the say after)", file=sys.stderr)


if __name__ == "__main__":
    run()
