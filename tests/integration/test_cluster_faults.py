"""Redis faults through real roomd nodes (docs/cluster.md, Failures), and a client's msg_id
across nodes (docs/protocol.md, Resending a say). Two nodes and one Redis of our own, on free
loopback ports. While a sender on each node says numbered messages, one at a time, each with
its msg_id, Redis is hit: its subscriber connections killed, its clients paused, frozen with
SIGSTOP, killed and restarted with its append-only file. For each fault:

- no crash: every node exits 0 at the end (and sanitizer builds report nothing);
- one order: the listeners on both nodes and every sender see the same messages under the
  same seqs, consecutive from 1, none twice;
- a say is answered `ok` with the seq its message got, or refused `unavailable` and only
  while its node is not (yet) back on Redis;
- service comes back within a bounded wait, and says refused meanwhile, sent again with the
  same msg_id through the other node (as a client that reconnects elsewhere would), are
  there exactly once at the end: nothing lost, nothing doubled.

A Redis restart without persistence (the room starts again under a new epoch) is in
test_cluster.py, as is a frozen Redis with one node."""
import json
import re
import signal
import time

import test_cluster as base  # its Redis and node config (its tests are not run from here)
from harness import WAIT, Gate, run


def logged(daemon, pattern, start):
    """Whether the daemon logged a line matching `pattern` at or after line `start` (no wait)."""
    rx = re.compile(pattern)
    with daemon.log.cond:
        return any(rx.search(line) for line in daemon.log.lines[start:])


class Member:
    """A client of one node in room `hall` that keeps every message of the room it reads."""

    def __init__(self, client, node, nick):
        self.c = client
        self.node = node
        self.nick = nick
        self.messages = []
        self.requests = 0
        self.count = 0  # its numbered says

    def take(self, msg):
        if msg.get("op") == "message" and msg.get("room") == "hall":
            self.messages.append(msg)

    def say(self, text, msg_id):
        """Says `text` with `msg_id`; returns the reply (messages read meanwhile are kept)."""
        self.requests += 1
        rid = f"{self.nick}:{self.requests}"
        self.c.send({"op": "say", "room": "hall", "text": text, "id": rid, "msg_id": msg_id})
        while True:
            msg = self.c.recv()
            if msg.get("id") == rid:
                return msg
            self.take(msg)

    def read_until(self, text):
        """Reads the room's messages until the one with `text`."""
        deadline = time.monotonic() + WAIT
        while not (self.messages and self.messages[-1]["text"] == text):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.nick}: no message {text!r}; last {self.messages[-3:]}")
            self.take(self.c.recv(timeout=left))


class FaultTest(base.RedisDaemonTest):
    def setUp(self):
        super().setUp()
        self.said = {}        # text -> the reply that settled it (ok), or the last refusal
        self.marks = {}       # node -> its log's length when the fault began
        self.members = []     # everyone whose messages are checked at the end
        self.refused_first = {}  # text -> its refusal, for the summary

    # -- the cast ---------------------------------------------------------------------------

    def member(self, node, nick):
        m = Member(self.connect(node, nick=nick, join=["hall"]), node, nick)
        self.members.append(m)
        return m

    def rejoin(self, node, nick):
        """`nick` connects to `node` again, as a client that lost its connection does."""
        c = self.connect(node)
        deadline = time.monotonic() + WAIT
        while True:
            reply = c.call({"op": "nick", "nick": nick})
            if reply["op"] == "ok":
                break
            # Once nicks span the cluster, the old session's may take a moment to be let go.
            self.assertEqual(reply.get("code"), "nick_taken", reply)
            self.assertLess(time.monotonic(), deadline, f"{nick} stays taken")
            time.sleep(0.05)  # a retry interval, not a wait for an event
        c.call({"op": "join", "room": "hall"}, "joined")
        m = Member(c, node, nick)
        self.members.append(m)
        return m

    def cluster(self, persist=False, http=False):
        if persist:
            self.redis.close()
            self.redis = base.Redis(persist=True)
        self.a = self.start(base.node_config(self.redis.port, "node-a", base.HTTP if http else ""))
        self.b = self.start(base.node_config(self.redis.port, "node-b"))
        for d in (self.a, self.b):
            d.log.wait_for("cluster: connected to Redis")
        self.listeners = [self.member(self.a, "la"), self.member(self.b, "lb")]
        self.senders = [self.member(self.a, "sa"), self.member(self.b, "sb")]

    # -- saying -----------------------------------------------------------------------------

    def back(self, node):
        """The node is on Redis again since the fault (before it: it never left)."""
        mark = self.marks.get(node)
        return mark is None or logged(node, "cluster: connected to Redis", mark)

    def say(self, m, text=None):
        """The member's next numbered say (or `text` again), checked and recorded."""
        if text is None:
            m.count += 1
            text = f"{m.nick}-{m.count}"
        back = self.back(m.node)  # before sending: a say sent once the node is back must be taken
        reply = m.say(text, text)
        if reply["op"] == "ok":
            self.said[text] = reply
        else:
            self.assertEqual((reply["op"], reply.get("code")), ("error", "unavailable"), reply)
            self.assertFalse(back, f"{text} refused although {m.nick}'s node was back on Redis: {reply}")
            self.said.setdefault(text, reply)
        return reply

    def chat(self, until, limit=WAIT):
        """The senders take turns until `until()`, within `limit` seconds."""
        deadline = time.monotonic() + limit
        while not until():
            self.assertLess(time.monotonic(), deadline, "the fault did not show within the wait")
            for m in self.senders:
                self.say(m)

    def fault(self):
        """Marks the start of a fault in each node's log."""
        for d in (self.a, self.b):
            self.marks[d] = d.log.mark()

    def service_back(self):
        """Each sender's says are taken again within the wait, and go on being taken."""
        for m in self.senders:
            deadline = time.monotonic() + WAIT
            while self.say(m)["op"] != "ok":
                self.assertLess(time.monotonic(), deadline, f"{m.nick}: says still refused after {WAIT}s")
                time.sleep(0.05)  # a retry interval, not a wait for an event
        for _ in range(5):
            for m in self.senders:
                self.assertEqual(self.say(m)["op"], "ok")

    def resend_elsewhere(self):
        """Each sender reconnects to the other node and says again, with the same msg_id,
        whatever was refused: each is then there exactly once."""
        moved = []
        for m, other in zip(self.senders, (self.b, self.a)):
            refused = [t for t, r in self.said.items() if r["op"] == "error" and t.startswith(m.nick + "-")]
            self.refused_first.update({t: self.said[t] for t in refused})
            m.c.close()
            again = self.rejoin(other, m.nick)
            for text in refused:
                first = self.said[text]
                reply = again.say(text, text)
                self.assertEqual(reply["op"], "ok", reply)
                if "may not" not in first["message"]:  # refused before it went to Redis
                    self.assertNotIn("duplicate", reply, f"{text} was refused as not sent: {first}")
                self.said[text] = reply
            moved.append(again)
        self.senders = moved
        self.resent = {t: r for t, r in self.said.items() if t in self.refused_first}

    def check_one_order(self):
        """Everyone saw the same consecutive seqs; every say is there once, with its ok's seq."""
        self.assertEqual(self.senders[0].say("end", "end")["op"], "ok")
        for m in self.listeners + self.senders:
            m.read_until("end")
        reference = self.listeners[0].messages
        self.assertEqual([m["seq"] for m in reference], list(range(1, len(reference) + 1)))
        texts = [m["text"] for m in reference]
        self.assertEqual(len(texts), len(set(texts)), "a message was delivered twice")
        for member in self.members:
            if member.messages:
                start = member.messages[0]["seq"] - 1
                self.assertEqual(member.messages, reference[start:start + len(member.messages)], member.nick)
        self.assertEqual(set(texts), set(self.said) | {"end"}, "said and delivered differ")
        seq_of = {m["text"]: m["seq"] for m in reference}
        for text, reply in self.said.items():
            self.assertEqual(reply["op"], "ok", f"{text} never taken: {reply}")
            self.assertEqual(reply["seq"], seq_of[text], text)
        maybe = [t for t, r in self.refused_first.items() if "may not" in r["message"]]
        duplicates = [t for t in self.refused_first if self.said[t].get("duplicate")]
        print(f"\n{self._testMethodName}: {len(reference)} messages in one order; {len(self.refused_first)} says "
              f"refused ({len(maybe)} 'may not have been sent'), resent through the other node: "
              f"{len(duplicates)} were there already", flush=True)
        return reference

    # -- the faults -------------------------------------------------------------------------

    def test_subscribers_killed_catch_up_from_the_stream(self):
        self.cluster(http=True)
        for _ in range(10):
            for m in self.senders:
                self.assertEqual(self.say(m)["op"], "ok")
        self.fault()
        killed = self.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        self.assertEqual(killed.strip(), ":2", "each node's subscriber connection")  # and no one else's
        self.chat(lambda: self.back(self.a) and self.back(self.b))
        self.assertTrue(logged(self.a, "cluster: Redis at .*subscriber link", self.marks[self.a]))
        self.service_back()
        self.resend_elsewhere()
        self.check_one_order()
        # The node's figures, as Prometheus reads them.
        body, samples = base.metrics(self.a)
        self.assertEqual(samples["roomd_cluster_available"], 1)
        self.assertGreaterEqual(samples["roomd_cluster_connects_total"], 2)
        self.assertGreaterEqual(samples["roomd_cluster_link_failures_total"], 1)
        self.assertGreaterEqual(samples["roomd_cluster_says_total"], 16)  # sa's: 10 before, 6 after at least
        self.assertGreater(samples["roomd_cluster_delivered_total"], 32)  # everyone's, once each
        for name in ("roomd_cluster_says_refused_total", "roomd_cluster_says_retried_total",
                     "roomd_cluster_gap_fills_total", "roomd_cluster_skipped_total", "roomd_cluster_sweeps_total",
                     "roomd_cluster_swept_members_total", "roomd_cluster_reregistered_total",
                     "roomd_cluster_conflicts_total", "roomd_cluster_nicks_lost_total"):
            self.assertIn(f"# TYPE {name} counter", body)
        self.assertEqual(samples["roomd_cluster_skipped_total"], 0)
        # Members and nicks: la and sa claimed theirs at the start, sa again on node b (its
        # resend), and hall's members were read at each (re)connect.
        self.assertGreaterEqual(samples["roomd_cluster_nick_claims_total"], 2)
        self.assertEqual(samples["roomd_cluster_nicks_refused_total"], 0)
        self.assertGreaterEqual(samples["roomd_cluster_member_reads_total"], 2)
        self.assertGreaterEqual(samples["roomd_cluster_presence_in_total"], 2)  # lb and sb joining
        self.assertEqual(samples["roomd_cluster_redis_durable"], 0)  # this Redis keeps nothing on disk
        self.assertEqual(samples["roomd_cluster_conflicts_total"], 0)
        base.promtool_check(self, body)

    def paused(self, mode):
        self.cluster()
        for _ in range(10):
            for m in self.senders:
                self.assertEqual(self.say(m)["op"], "ok")
        self.fault()
        pause_ms = 2500
        self.assertIn("+OK", self.redis.command("CLIENT", "PAUSE", str(pause_ms), mode))
        over = time.monotonic() + pause_ms / 1000
        self.chat(lambda: time.monotonic() > over)
        # sa's say waited in the paused Redis past the link's deadline: the link was ended, and
        # the say sent again with its id once the pause was over (answered ok, or refused).
        self.assertTrue(logged(self.a, "cluster: Redis at .*timeout", self.marks[self.a]))
        self.service_back()
        self.resend_elsewhere()
        self.check_one_order()

    def test_client_pause_write(self):
        self.paused("WRITE")

    def test_client_pause_all(self):
        self.paused("ALL")

    def test_frozen_redis_with_says_in_flight(self):
        self.cluster()
        for _ in range(10):
            for m in self.senders:
                self.assertEqual(self.say(m)["op"], "ok")
        self.fault()
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            self.chat(lambda: all(logged(d, "cluster: Redis at .*timeout", self.marks[d]) for d in (self.a, self.b)))
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.service_back()
        self.resend_elsewhere()
        self.check_one_order()

    def test_restart_with_persistence_keeps_the_room(self):
        self.cluster(persist=True, http=True)
        _, samples = base.metrics(self.a)
        self.assertEqual(samples["roomd_cluster_redis_durable"], 1)  # appendonly yes, appendfsync always
        self.assertEqual(samples["roomd_cluster_nicks_refused_total"], 0)
        for _ in range(10):
            for m in self.senders:
                self.assertEqual(self.say(m)["op"], "ok")
        late = self.connect(self.b)
        before = late.call({"op": "join", "room": "hall"}, "joined")
        late.close()
        self.fault()
        self.redis.kill()  # SIGKILL: what it acknowledged is in its append-only file
        self.chat(lambda: all(logged(d, "cluster: Redis at .*reconnecting", self.marks[d]) for d in (self.a, self.b)))
        # A nick cannot change while the cluster cannot say whose it is: refused, and counted.
        self.assertEqual(self.connect(self.a).call({"op": "nick", "nick": "newcomer"}).get("code"), "unavailable")
        self.assertEqual(base.metrics(self.a)[1]["roomd_cluster_nicks_refused_total"], 1)
        self.redis.start()
        self.service_back()
        self.resend_elsewhere()
        reference = self.check_one_order()  # seqs went on from where they were: no second 1
        # Same room, same epoch: a client resuming from before the restart gets what it missed.
        c = self.connect(self.a)
        resumed = c.call({"op": "join", "room": "hall", "since": before["seq"], "epoch": before["epoch"]}, "joined")
        self.assertEqual(resumed["epoch"], before["epoch"])
        self.assertTrue(resumed["resumed"])
        self.assertEqual(resumed["history"], reference[before["seq"]:])

    # -- a client's msg_id across nodes -----------------------------------------------------

    def test_a_resend_through_another_node_is_not_doubled(self):
        self.cluster()
        alice = self.member(self.a, "alice")
        first = alice.say("hello", "c7f3-1")
        self.assertEqual((first["op"], first["seq"]), ("ok", 1))
        self.assertNotIn("duplicate", first)
        # alice lost her connection before the ok reached her; she says it again elsewhere.
        alice.c.close()
        alice = self.rejoin(self.b, "Alice")  # nicks are one ignoring case: the same sender
        again = alice.say("hello (again)", "c7f3-1")
        self.assertEqual({k: again[k] for k in ("op", "seq", "duplicate")}, {"op": "ok", "seq": 1, "duplicate": True})
        bob = self.member(self.b, "bob")
        self.assertEqual(bob.say("bob's own", "c7f3-1")["seq"], 2)  # another sender's id is its own
        self.assertEqual(alice.say("next", "c7f3-2")["seq"], 3)
        for m in self.listeners:
            m.read_until("next")
            self.assertEqual([(x["seq"], x["text"]) for x in m.messages], [(1, "hello"), (2, "bob's own"), (3, "next")])
        # Redis keeps the id for the window (10 minutes), scoped by room and nick.
        ttl = int(self.redis.command("PTTL", "roomd:{hall}:said:c:alice:c7f3-1").strip()[1:])
        self.assertTrue(0 < ttl <= 600000, ttl)


class PipelineTest(base.RedisDaemonTest):
    """Pipelined says (docs/cluster.md): a client sends its says into clustered rooms without
    waiting for their oks; they go to Redis back to back, and the answers come in the order of
    its requests, across rooms, each exactly once, even when Redis dies with some in flight."""

    ROOMS = ("hall", "porch")  # both clustered: hall configured, porch dynamic

    def make_redis(self):
        return base.Redis(persist=True)  # what it acknowledged survives a kill -9

    def nodes(self):
        self.a = self.start(base.node_config(self.redis.port, "node-a"))
        self.b = self.start(base.node_config(self.redis.port, "node-b"))
        for d in (self.a, self.b):
            d.log.wait_for("cluster: connected to Redis")
        self.pub = self.connect(self.a, nick="piper", join=self.ROOMS)
        self.listener = self.connect(self.b, nick="ear", join=self.ROOMS)
        self.heard = []  # the listener's messages, in the order it read them

    def send(self, first, count):
        """Says first..first+count-1, all at once, alternating rooms, each with an id and a msg_id."""
        lines = "".join(json.dumps({"op": "say", "room": self.ROOMS[i % 2], "text": f"m{i}", "id": i,
                                    "msg_id": f"m{i}"}) + "\n" for i in range(first, first + count))
        self.pub.send(lines)

    def answers(self, count, limit=WAIT):
        """The publisher's next `count` answers (ok or error), in the order they came."""
        got = []
        deadline = time.monotonic() + limit
        while len(got) < count:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"{len(got)} of {count} answers within {limit}s; last {got[-3:]}")
            msg = self.pub.recv(timeout=left)
            if msg.get("op") in ("ok", "error"):
                got.append(msg)
        return got

    def hear(self, texts):
        """Reads the listener's messages until every text in `texts` is heard."""
        want = set(texts)
        deadline = time.monotonic() + WAIT
        while not want <= {m["text"] for m in self.heard}:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"the listener lacks {sorted(want - {m['text'] for m in self.heard})[:5]}")
            msg = self.listener.recv(timeout=left)
            if msg.get("op") == "message":
                self.heard.append(msg)

    def check_rooms(self, oks):
        """Each room's messages: consecutive seqs from 1, none twice, each ok's seq its message's."""
        for room in self.ROOMS:
            mine = [m for m in self.heard if m["room"] == room]
            self.assertEqual([m["seq"] for m in mine], list(range(1, len(mine) + 1)), room)
            texts = [m["text"] for m in mine]
            self.assertEqual(len(texts), len(set(texts)), f"{room}: a message twice")
        where = {m["text"]: (m["room"], m["seq"]) for m in self.heard}
        for i, ok in oks.items():
            self.assertEqual(where[f"m{i}"], (self.ROOMS[i % 2], ok["seq"]), ok)

    def fcalls(self):
        """How many FCALLs Redis has run (every function: says, beats, members...)."""
        info = self.redis.command("INFO", "commandstats")
        found = re.search(r"cmdstat_fcall:calls=(\d+)", info)
        return int(found.group(1)) if found else 0

    def test_says_of_one_turn_go_as_one_call(self):
        # Batched says (docs/cluster.md): pipelined says into one room go to Redis as a few
        # calls, not one a say; a msg_id repeated within a batch is answered as a duplicate of
        # the first, and the listener hears each once.
        self.nodes()
        before = self.fcalls()
        lines = "".join(json.dumps({"op": "say", "room": "hall", "text": f"m{i}", "id": i, "msg_id": f"m{i}"}) + "\n"
                        for i in range(0, 200, 2))
        lines += json.dumps({"op": "say", "room": "hall", "text": "m4 again", "id": "again", "msg_id": "m4"}) + "\n"
        self.pub.send(lines)
        got = self.answers(101)
        self.assertEqual([m["id"] for m in got], list(range(0, 200, 2)) + ["again"])
        self.assertEqual({m["op"] for m in got}, {"ok"}, [m for m in got if m["op"] != "ok"][:3])
        self.assertEqual([m["seq"] for m in got[:100]], list(range(1, 101)))
        self.assertEqual((got[100]["seq"], got[100].get("duplicate")), (got[2]["seq"], True), got[100])
        calls = self.fcalls() - before
        # Without batching: 101 calls for the says alone. With it: a few batches, plus the
        # nodes' beats (four a second each) and member reads.
        self.assertLess(calls, 60, f"{calls} FCALLs for 101 says")
        self.hear(f"m{i}" for i in range(0, 200, 2))
        self.assertEqual([m["seq"] for m in self.heard], list(range(1, 101)))
        self.assertNotIn("m4 again", [m["text"] for m in self.heard])

    def wait_metric(self, name, value):
        """Waits (bounded) until node a's /metrics shows `name` at `value` or above."""
        deadline = time.monotonic() + WAIT
        while base.metrics(self.a)[1][name] < value:
            self.assertLess(time.monotonic(), deadline, f"{name} did not reach {value}")
            time.sleep(0.02)

    def test_says_wait_for_their_rooms_batch_in_flight(self):
        # While a room's batch is in flight, the says that come wait for its answer and then go
        # together, however many loop turns read them: batches grow with the load.
        self.a = self.start(base.node_config(self.redis.port, "node-a", base.HTTP))
        self.a.log.wait_for("cluster: connected to Redis")
        self.pub = self.connect(self.a, nick="piper", join=("hall",))
        self.listener = self.connect(self.a, nick="ear", join=("hall",))
        self.heard = []
        before = base.metrics(self.a)[1]["roomd_cluster_say_batches_total"]
        # Redis holds every write for up to 1.5 s (less than the link's 2 s deadline) ...
        self.assertIn("+OK", self.redis.command("CLIENT", "PAUSE", "1500", "WRITE"))
        try:
            self.pub.send(json.dumps({"op": "say", "room": "hall", "text": "m0", "id": 0}) + "\n")
            self.wait_metric("roomd_cluster_say_batches_total", before + 1)  # m0's, held by Redis
            # ... while m1..m100 come, one line a write.
            for i in range(1, 101):
                self.pub.send(json.dumps({"op": "say", "room": "hall", "text": f"m{i}", "id": i}) + "\n")
            self.wait_metric("roomd_cluster_says_queued", 100)
        finally:
            self.redis.command("CLIENT", "UNPAUSE")
        got = self.answers(101)
        self.assertEqual([(m["op"], m["id"], m["seq"]) for m in got], [("ok", i, i + 1) for i in range(101)])
        self.assertEqual(base.metrics(self.a)[1]["roomd_cluster_say_batches_total"] - before, 2)
        self.assertEqual(base.metrics(self.a)[1]["roomd_cluster_says_queued"], 0)
        self.hear(f"m{i}" for i in range(101))
        self.assertEqual([m["seq"] for m in self.heard if m["room"] == "hall"], list(range(1, 102)))

    def test_a_say_retried_by_its_node_is_ordered_once(self):
        # A say without msg_id whose answer from Redis is lost: its node sends it again with
        # its own id (a field of the node's hash in Redis) and Redis answers it as the message
        # it already ordered: one seq, one message.
        gate = Gate(self.redis.port)  # node a reaches Redis through it; node b directly
        self.addCleanup(gate.close)
        self.a = self.start(base.node_config(gate.port, "node-a", base.HTTP))
        self.b = self.start(base.node_config(self.redis.port, "node-b"))
        for d in (self.a, self.b):
            d.log.wait_for("cluster: connected to Redis")
        self.pub = self.connect(self.a, nick="piper", join=("hall",))
        self.listener = self.connect(self.b, nick="ear", join=("hall",))
        self.heard = []
        gate.drop_replies.set()  # what Redis answers node a is lost from now on
        self.pub.send(json.dumps({"op": "say", "room": "hall", "text": "m0", "id": 0}) + "\n")
        self.hear(["m0"])  # Redis ordered it: node b delivered it
        gate.cut()
        gate.drop_replies.clear()
        gate.release()
        got = self.answers(1)
        self.assertEqual((got[0]["op"], got[0].get("seq")), ("ok", 1), got)
        self.assertGreaterEqual(base.metrics(self.a)[1]["roomd_cluster_says_retried_total"], 1)
        self.pub.send(json.dumps({"op": "say", "room": "hall", "text": "m1", "id": 1}) + "\n")
        self.assertEqual(self.answers(1)[0].get("seq"), 2)
        self.hear(["m1"])
        self.assertEqual([(m["text"], m["seq"]) for m in self.heard], [("m0", 1), ("m1", 2)])

    def test_pipelined_says_are_answered_in_request_order(self):
        self.nodes()
        self.send(0, 200)
        got = self.answers(200)
        self.assertEqual([m["id"] for m in got], list(range(200)))
        self.assertEqual({m["op"] for m in got}, {"ok"}, [m for m in got if m["op"] != "ok"][:3])
        # Request order is seq order in each room: Redis took them in the order they came.
        for r in (0, 1):
            self.assertEqual([m["seq"] for m in got if m["id"] % 2 == r], list(range(1, 101)))
        self.hear(f"m{i}" for i in range(200))
        self.check_rooms({m["id"]: m for m in got})
        # A request that is not a say waits for the says before it: its reply comes after theirs.
        self.send(200, 20)
        self.pub.send({"op": "who", "room": "porch", "id": "w"})
        self.send(220, 2)
        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < 23:
            msg = self.pub.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("op") in ("ok", "who"):
                got.append(msg["id"])
        self.assertEqual(got, [*range(200, 220), "w", 220, 221])

    def test_redis_killed_mid_pipeline_answers_each_say_once_in_order(self):
        self.nodes()
        self.send(0, 100)
        first = self.answers(10)  # the pipeline is running ...
        self.redis.proc.send_signal(signal.SIGSTOP)  # ... and Redis stops answering mid-way
        self.send(100, 100)
        self.redis.kill()
        got = first + self.answers(190, limit=2 * WAIT)
        self.assertEqual([m["id"] for m in got], list(range(200)), "each say answered once, in order")
        refused = []
        for m in got:
            if m["op"] == "error":
                self.assertEqual(m["code"], "unavailable", m)
                refused.append(m["id"])
        # Some were in flight when it died (sent, their reply lost): "may not have been sent".
        in_flight = [m["id"] for m in got if m["op"] == "error" and "may not" in m["message"]]
        self.assertTrue(in_flight, "Redis died with nothing in flight")
        oks = {m["id"]: m for m in got if m["op"] == "ok"}
        # Redis back with its file: the refused says, sent again with their msg_id, are there
        # once, whether or not Redis had taken them before it died.
        mark = self.a.log.mark()
        self.redis.start()
        self.a.log.wait_for("cluster: connected to Redis", start=mark)
        pending = refused
        deadline = time.monotonic() + WAIT
        while pending:
            self.assertLess(time.monotonic(), deadline, f"still refused: {pending[:5]}")
            lines = "".join(json.dumps({"op": "say", "room": self.ROOMS[i % 2], "text": f"m{i}", "id": i,
                                        "msg_id": f"m{i}"}) + "\n" for i in pending)
            self.pub.send(lines)
            again = self.answers(len(pending))
            self.assertEqual([m["id"] for m in again], pending)
            for m in again:
                if m["op"] == "ok":
                    oks[m["id"]] = m
                else:
                    self.assertEqual(m["code"], "unavailable", m)
            pending = [m["id"] for m in again if m["op"] != "ok"]
        self.assertEqual(sorted(oks), list(range(200)))
        self.hear(f"m{i}" for i in range(200))
        self.check_rooms(oks)
        print(f"\n{self._testMethodName}: {len(refused)} of 200 refused when Redis died ({len(in_flight)} in "
              f"flight), {sum(1 for i in refused if oks[i].get('duplicate'))} of them were there already", flush=True)

    def test_says_in_flight_is_the_configured_window_and_a_gauge(self):
        config = base.node_config(self.redis.port, "node-a", base.HTTP)
        self.a = self.start(config.replace("[limits]\n", "[limits]\nsays_in_flight = 4\n", 1))
        self.a.log.wait_for("cluster: connected to Redis")
        self.pub = self.connect(self.a, nick="piper", join=self.ROOMS)
        self.assertEqual(base.metrics(self.a)[1]["roomd_says_in_flight"], 0)
        # Redis frozen: the says sent stay in flight; at 4 the client is not read any more.
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            self.send(0, 10)
            deadline = time.monotonic() + WAIT
            while (held := base.metrics(self.a)[1]["roomd_says_in_flight"]) == 0:
                self.assertLess(time.monotonic(), deadline, "no say ever went to Redis")
                time.sleep(0.02)  # a retry interval, not a wait for an event
            self.assertEqual(held, 4)  # the window, not the 128 of old
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        got = self.answers(10, limit=2 * WAIT)
        self.assertEqual([m["id"] for m in got], list(range(10)), "each say answered once, in order")
        # ok, or (a machine slow enough for the node to give up on the frozen link) unavailable
        self.assertTrue({m["op"] for m in got} <= {"ok", "error"}, got)
        self.assertTrue(all(m.get("code", "unavailable") == "unavailable" for m in got), got)
        self.assertEqual(base.metrics(self.a)[1]["roomd_says_in_flight"], 0)


if __name__ == "__main__":
    run()
