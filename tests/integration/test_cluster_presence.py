"""Members, presence and nicks across nodes ([cluster], docs/cluster.md): real roomd nodes and
one real Redis (test_cluster's helper), on free loopback ports. A nick is one client's on the
whole cluster; `who`, `rooms` and presence cover every node's members; a node killed with
SIGKILL has its members' leave sent by the others within two heartbeats, and its clients
resume on another node with nothing missed."""
import signal
import time

import test_cluster as cluster  # exits 77 (skipped) when redis-server is missing
from harness import WAIT, run

# Rounds of the nick race (the figure is 100).
ROUNDS = 100


def node_config(redis_port, node, heartbeat_ms=500, extra=""):
    return f"""
[limits]
rate = 1000000
burst = 1000000
churn_rate = 1000000
churn_burst = 1000000
query_rate = 1000000
query_burst = 1000000
presence_interval_ms = 50
[cluster]
redis = "127.0.0.1:{redis_port}"
node_id = "{node}"
heartbeat_ms = {heartbeat_ms}
[[rooms]]
name = "hall"
persist = false
[[rooms]]
name = "big"
persist = false
presence_threshold = 2
{extra}"""


class Member:
    """A client, and the frames it got that the test has not looked at yet (presence comes
    between replies, from other nodes, at any time)."""

    def __init__(self, client):
        self.client = client
        self.pending = []
        self.asked = 0

    def ask(self, body):
        """Sends a request with an id of its own and returns its reply."""
        self.asked += 1
        rid = f"q{self.asked}"
        self.client.send(dict(body, id=rid))
        return self.reply(rid)

    def reply(self, rid):
        """The reply to the request with id `rid`, sent already."""
        deadline = time.monotonic() + WAIT
        while True:
            msg = self.client.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("id") == rid:
                return msg
            self.pending.append(msg)

    def wait(self, op, timeout=WAIT, match=None, **fields):
        """The first frame (pending or to come) with this op and fields, for which `match` (if
        given) is true."""
        def fits(msg):
            return (msg.get("op") == op and all(msg.get(k) == v for k, v in fields.items())
                    and (match is None or match(msg)))
        for i, msg in enumerate(self.pending):
            if fits(msg):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {op} {fields} within {timeout:.2f}s; got {self.pending[-10:]}")
            msg = self.client.recv(timeout=left)
            if fits(msg):
                return msg
            self.pending.append(msg)

    def drain(self):
        """Everything that came until now (a ping's round trip marks now)."""
        self.ask({"op": "ping"})
        frames, self.pending = self.pending, []
        return frames


class MembersTest(cluster.RedisDaemonTest):
    """Nodes with one Redis, and members that keep what came between replies."""

    def member(self, daemon, nick=None, join=()):
        m = Member(self.connect(daemon))
        if nick:
            reply = m.ask({"op": "nick", "nick": nick})
            self.assertEqual(reply["op"], "ok", reply)
        for room in join:
            self.assertEqual(m.ask({"op": "join", "room": room})["op"], "joined")
        return m


class PresenceTest(MembersTest):
    def node(self, name, heartbeat_ms=500, extra=""):
        # Half a second: a node is taken for dead only after about that long without a beat,
        # which a loaded CI machine (sanitizers, two cores) is not expected to reach; shorter would make
        # its members leave and join again, and the exact presence checked here would not hold.
        d = self.start(node_config(self.redis.port, name, heartbeat_ms, cluster.HTTP + extra))
        d.log.wait_for("cluster: connected to Redis")
        return d

    def figure_reaches(self, daemon, name, value):
        """Until the node's /metrics figure `name` is at least `value` (bounded)."""
        deadline = time.monotonic() + WAIT
        while cluster.metrics(daemon)[1][name] < value:
            self.assertLess(time.monotonic(), deadline, f"{name} stayed below {value}")
            time.sleep(0.02)  # a poll interval, not a wait for an event

    def test_nick_race_one_winner_each_time(self):
        a, b = self.node("node-a"), self.node("node-b")
        x, y = self.member(a), self.member(b)
        wins = {"x": 0, "y": 0}
        for i in range(ROUNDS):
            nick = f"race{i}"
            # Both at once, in turn first, through two nodes to one Redis.
            first, second = (x, y) if i % 2 == 0 else (y, x)
            first.client.send({"op": "nick", "nick": nick, "id": f"r{i}"})
            second.client.send({"op": "nick", "nick": nick, "id": f"r{i}"})
            replies = {"x": x.reply(f"r{i}"), "y": y.reply(f"r{i}")}
            winners = [n for n, r in replies.items() if r["op"] == "ok"]
            self.assertEqual(len(winners), 1, f"round {i}: {replies}")
            loser = "y" if winners[0] == "x" else "x"
            self.assertEqual(replies[loser]["code"], "nick_taken", replies)
            wins[winners[0]] += 1
            if i % 10 == 9:
                # The winner moves on: its old nick is free again, compared and deleted.
                winner, other = (x, y) if winners[0] == "x" else (y, x)
                self.assertEqual(winner.ask({"op": "nick", "nick": f"moved{i}"})["op"], "ok")
                self.assertEqual(other.ask({"op": "nick", "nick": nick})["op"], "ok")
        self.assertEqual(sum(wins.values()), ROUNDS)
        # Each round two claims, one refused as taken; every tenth round two more, both granted.
        figures = [cluster.metrics(d) for d in (a, b)]
        for body, _ in figures:
            cluster.promtool_check(self, body)
        total = {k: sum(f[1][k] for f in figures) for k in
                 ("roomd_cluster_nick_claims_total", "roomd_cluster_nicks_taken_total", "roomd_cluster_nicks_refused_total")}
        self.assertEqual(total, {"roomd_cluster_nick_claims_total": 2 * ROUNDS + 2 * (ROUNDS // 10),
                                 "roomd_cluster_nicks_taken_total": ROUNDS, "roomd_cluster_nicks_refused_total": 0})
        print(f"nick race: {wins}")
        # Two clients of one node at once: one gets it, the other is told at once.
        u, v = self.member(a), self.member(a)
        for i in range(10):
            u.client.send({"op": "nick", "nick": f"same{i}", "id": "s"})
            v.client.send({"op": "nick", "nick": f"same{i}", "id": "s"})
            replies = [m.reply("s") for m in (u, v)]
            self.assertEqual(sorted(r["op"] if r["op"] == "ok" else r["code"] for r in replies), ["nick_taken", "ok"])
        # A nick held on a node is taken on the others; guests' names are the nodes' own.
        self.assertEqual(self.member(b).ask({"op": "nick", "nick": f"Race{ROUNDS - 1}"})["code"], "nick_taken")
        self.assertEqual(self.member(b).ask({"op": "nick", "nick": "guest-1"})["code"], "nick_taken")
        self.assertNotEqual(x.client.welcome["nick"], y.client.welcome["nick"])

    def test_who_rooms_and_presence_across_nodes(self):
        a, b, c = self.node("node-a"), self.node("node-b"), self.node("node-c")
        alice = self.member(a, "alice", ["hall"])
        bob = self.member(b, "bob", ["hall"])
        alice.wait("presence", event="join", room="hall", nick="bob")
        carol = Member(self.connect(c))
        carol.ask({"op": "nick", "nick": "carol"})
        joined = carol.ask({"op": "join", "room": "hall"})
        self.assertEqual(joined["members"], ["alice", "bob", "carol"])
        self.assertEqual(joined["count"], 3)
        for m in (alice, bob):
            m.wait("presence", event="join", room="hall", nick="carol")

        dave = self.member(a, "dave")  # in no room
        who = dave.ask({"op": "who", "room": "hall"})
        self.assertEqual((who["members"], who["count"], who["more"]), (["alice", "bob", "carol"], 3, False))
        page = dave.ask({"op": "who", "room": "hall", "limit": 2})
        self.assertEqual((page["members"], page["more"]), (["alice", "bob"], True))
        page = dave.ask({"op": "who", "room": "hall", "after": "bob", "limit": 2})
        self.assertEqual((page["members"], page["more"]), (["carol"], False))
        for m in (dave, bob, carol):
            rooms = {r["name"]: r["members"] for r in m.ask({"op": "rooms"})["rooms"]}
            self.assertEqual(rooms["hall"], 3, rooms)

        # A room made on one node is listed, counted and paged on the others.
        self.assertEqual(bob.ask({"op": "join", "room": "side"})["op"], "joined")
        rooms = {r["name"]: r["members"] for r in dave.ask({"op": "rooms"})["rooms"]}
        self.assertEqual(rooms.get("side"), 1, rooms)
        self.assertEqual(dave.ask({"op": "who", "room": "side"})["members"], ["bob"])
        self.assertEqual(dave.ask({"op": "who", "room": "nowhere"})["code"], "no_such_room")

        # A rename and a leave reach the other nodes as presence.
        self.assertEqual(bob.ask({"op": "nick", "nick": "robert"})["op"], "ok")
        for m in (alice, carol):
            m.wait("presence", event="nick", room="hall", nick="robert", old="bob")
        self.assertEqual(dave.ask({"op": "who", "room": "hall"})["members"], ["alice", "carol", "robert"])
        self.assertEqual(carol.ask({"op": "leave", "room": "hall"})["op"], "left")
        for m in (alice, bob):
            m.wait("presence", event="leave", room="hall", nick="carol")
        # Node C has no member in hall now: its answers are the cluster's.
        eve = self.member(c, "eve")
        self.assertEqual(eve.ask({"op": "who", "room": "hall"})["members"], ["alice", "robert"])
        rooms = {r["name"]: r["members"] for r in eve.ask({"op": "rooms"})["rooms"]}
        self.assertEqual((rooms["hall"], rooms["side"]), (2, 1), rooms)
        # Nothing was told twice.
        for m in (alice,):
            frames = [f for f in m.drain() if f.get("op") == "presence"]
            self.assertEqual(frames, [], frames)

    def test_big_room_summaries_across_nodes(self):
        nodes = [self.node(f"node-{i}") for i in range(3)]
        members = [self.member(nodes[i], f"m{i}", ["big"]) for i in range(2)]
        members[0].wait("presence", event="join", room="big", nick="m1")  # 2 members: one event
        members.append(self.member(nodes[2], "m2", ["big"]))  # 3 > presence_threshold 2: summaries
        for m in members[:2]:
            m.wait("presence", event="summary", room="big", match=lambda f: "m2" in f["joined"])
        m3 = self.member(nodes[0], "m3", ["big"])
        for m in members:
            s = m.wait("presence", event="summary", room="big", match=lambda f: "m3" in f["joined"])
            self.assertEqual(s["count"], 4, s)
        self.member(nodes[1], "m4", ["big"])
        for m in (members[0], members[2], m3):
            s = m.wait("presence", event="summary", room="big", match=lambda f: "m4" in f["joined"])
            self.assertEqual(s["count"], 5, s)
        self.assertEqual(m3.ask({"op": "leave", "room": "big"})["op"], "left")
        for m in members:
            s = m.wait("presence", event="summary", room="big", match=lambda f: "m3" in f["left"])
            self.assertEqual(s["count"], 4, s)
        # No single events in a summarized room, from any node.
        for m in members:
            singles = [f for f in m.drain() if f.get("op") == "presence" and f.get("room") == "big"
                       and f.get("event") != "summary"]
            self.assertEqual(singles, [])

    def test_persisted_room_members_known_to_a_nodes_first_member(self):
        # A persisted clustered room is followed by every node from its start (to store its
        # history), not watched: its other nodes' members must be known here all along, so the
        # first member here is told of those who came before.
        extra = '[history]\npath = "{tmp}/history.db"\n[[rooms]]\nname = "log"\n'
        a, b = self.node("node-a", extra=extra), self.node("node-b", extra=extra)
        # Node B has read log's members (nobody yet) before ann joins, so it hears of her only
        # as presence, which it has no member to tell of.
        self.figure_reaches(b, "roomd_cluster_member_reads_total", 1)
        ann = self.member(a, "ann", ["log"])
        self.figure_reaches(b, "roomd_cluster_presence_in_total", 1)
        bob = Member(self.connect(b))
        bob.ask({"op": "nick", "nick": "bob"})
        joined = bob.ask({"op": "join", "room": "log"})
        self.assertEqual((joined["members"], joined["count"]), (["ann", "bob"], 2), joined)
        ann.wait("presence", event="join", room="log", nick="bob")
        self.assertEqual(bob.ask({"op": "who", "room": "log"})["members"], ["ann", "bob"])
        for m in (ann, bob):
            rooms = {r["name"]: r["members"] for r in m.ask({"op": "rooms"})["rooms"]}
            self.assertEqual(rooms["log"], 2, rooms)
        # A node started after both joined reads them at its start (a join waits for the
        # catch-up, and the members are read before it): its first member has both.
        c = self.node("node-c", extra=extra)
        carol = Member(self.connect(c))
        carol.ask({"op": "nick", "nick": "carol"})
        joined = carol.ask({"op": "join", "room": "log"})
        self.assertEqual(joined["members"], ["ann", "bob", "carol"], joined)
        # ann leaving reaches the members on both other nodes.
        self.assertEqual(ann.ask({"op": "leave", "room": "log"})["op"], "left")
        for m in (bob, carol):
            m.wait("presence", event="leave", room="log", nick="ann")
        self.assertEqual(carol.ask({"op": "who", "room": "log"})["members"], ["bob", "carol"])
        body, samples = cluster.metrics(b)
        cluster.promtool_check(self, body)
        self.assertGreaterEqual(samples["roomd_cluster_presence_in_total"], 3)  # ann, carol, ann's leave
        self.assertEqual(samples["roomd_cluster_redis_durable"], 0)  # a Redis without its AOF: warned of

    def test_a_stalled_node_swept_registers_again(self):
        # Heartbeats of 2 s: a command is given up after 6 s, far beyond the stall, so the
        # stalled node finds itself swept at its next beat rather than through a reconnect.
        a, b = self.node("node-a", 2000), self.node("node-b", 2000)
        alice = self.member(a, "alice", ["hall"])
        self.member(b, "bob", ["hall"])
        alice.wait("presence", event="join", room="hall", nick="bob")
        mark = a.log.mark()
        b.proc.send_signal(signal.SIGSTOP)
        try:
            a.log.wait_for("cluster: node node-b:.* stopped beating", mark)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        # The truth, late: bob left with his node's lease, and is back once it registers again.
        alice.wait("presence", event="leave", room="hall", nick="bob")
        alice.wait("presence", event="join", room="hall", nick="bob")
        b.log.wait_for("cluster: this node's lease had run out")
        self.assertEqual(alice.ask({"op": "who", "room": "hall"})["members"], ["alice", "bob"])
        fa, fb = cluster.metrics(a)[1], cluster.metrics(b)[1]
        self.assertEqual((fa["roomd_cluster_sweeps_total"], fa["roomd_cluster_swept_members_total"]), (1, 1), fa)
        self.assertEqual((fb["roomd_cluster_reregistered_total"], fb["roomd_cluster_sweeps_total"]), (1, 0), fb)
        self.assertEqual(fa["roomd_cluster_reregistered_total"], 0)

    def test_killed_node_members_leave_within_two_heartbeats_and_resume_elsewhere(self):
        heartbeat_ms = 1000
        a = self.node("node-a", heartbeat_ms)
        b = self.node("node-b", heartbeat_ms)
        c = self.node("node-c", heartbeat_ms)
        alice = self.member(a, "alice", ["hall"])
        bob = self.member(b, "bob", ["hall"])
        dee = self.member(c, "dee")
        joined = dee.ask({"op": "join", "room": "hall"})
        epoch = joined["epoch"]
        for m in (alice, bob):
            m.wait("presence", event="join", room="hall", nick="dee")
        for i in range(10):
            alice.ask({"op": "say", "room": "hall", "text": f"before {i}"})
        seen = [dee.wait("message", room="hall") for _ in range(10)]
        last = seen[-1]["seq"]

        killed_at = time.monotonic()
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait()
        c.kill()  # reaped; its pipes and files go
        for m in (alice, bob):
            m.wait("presence", event="leave", room="hall", nick="dee",
                   timeout=max(0.01, killed_at + 2 * heartbeat_ms / 1000 - time.monotonic()))
        took = time.monotonic() - killed_at
        print(f"kill -9: the leave reached both other nodes' members {took * 1000:.0f} ms after (heartbeat {heartbeat_ms} ms)")

        for i in range(5):
            alice.ask({"op": "say", "room": "hall", "text": f"while away {i}"})
        # The client comes back on another node: its nick was freed with its members, and the
        # room goes on from where it was.
        back = Member(self.connect(b))
        self.assertEqual(back.ask({"op": "nick", "nick": "dee"})["op"], "ok")
        resumed = back.ask({"op": "join", "room": "hall", "since": last, "epoch": epoch})
        self.assertTrue(resumed["resumed"], resumed)
        self.assertEqual([m["seq"] for m in resumed["history"]], list(range(last + 1, last + 6)))
        for i in range(5):
            alice.ask({"op": "say", "room": "hall", "text": f"after {i}"})
        live = [back.wait("message", room="hall") for _ in range(5)]
        self.assertEqual([m["seq"] for m in live], list(range(last + 6, last + 11)))
        alice.wait("presence", event="join", room="hall", nick="dee")
        # One leave, told once, though two nodes saw the lease run out.
        for m in (alice, bob):
            leaves = [f for f in m.drain() if f.get("op") == "presence" and f.get("event") == "leave"]
            self.assertEqual(leaves, [])
        figures = [cluster.metrics(d)[1] for d in (a, b)]
        self.assertEqual(sum(f["roomd_cluster_sweeps_total"] for f in figures), 1, figures)
        self.assertEqual(sum(f["roomd_cluster_swept_members_total"] for f in figures), 1, figures)
        swept = [d for d in (a, b) if "cluster: node node-c:" in d.log.text()]
        self.assertEqual(len(swept), 1, "one node swept node-c")
        self.assertIn("its 1 members left their rooms", swept[0].log.text())

    def test_clean_stop_releases_at_once(self):
        # Heartbeats so long that only the stopping node itself can have said it.
        a = self.node("node-a", 10000)
        b = self.node("node-b", 10000)
        alice = self.member(a, "alice", ["hall"])
        self.member(b, "bob", ["hall"])
        alice.wait("presence", event="join", room="hall", nick="bob")
        b.stop()
        alice.wait("presence", event="leave", room="hall", nick="bob", timeout=WAIT / 2)
        self.assertEqual(self.member(a).ask({"op": "nick", "nick": "bob"})["op"], "ok")

    def test_members_and_nicks_registered_again_after_redis_restart(self):
        a, b = self.node("node-a"), self.node("node-b")
        alice = self.member(a, "alice", ["hall"])
        self.member(b, "bob", ["hall"])  # held open by the test: its presence is what is checked
        alice.wait("presence", event="join", room="hall", nick="bob")
        mark_a, mark_b = a.log.mark(), b.log.mark()
        self.redis.kill()
        a.log.wait_for("cluster: Redis at .*reconnecting", mark_a)
        # Nicks do not change while the cluster cannot say whose they are.
        self.assertEqual(alice.ask({"op": "nick", "nick": "alicia"})["code"], "unavailable")
        self.assertEqual(cluster.metrics(a)[1]["roomd_cluster_nicks_refused_total"], 1)
        self.redis.start()  # same port, nothing kept: the nodes register everything again
        a.log.wait_for("cluster: connected to Redis", mark_a)
        b.log.wait_for("cluster: connected to Redis", mark_b)
        deadline = time.monotonic() + WAIT
        carl = self.member(a, "carl")
        while True:  # bounded: until node B's registration is in (it is sent as B connects)
            who = carl.ask({"op": "who", "room": "hall"})
            if who.get("members") == ["alice", "bob"] or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # a retry interval, not a wait for an event
        self.assertEqual(who.get("members"), ["alice", "bob"], who)
        self.assertEqual(carl.ask({"op": "nick", "nick": "bob"})["code"], "nick_taken")
        self.assertEqual(self.member(b).ask({"op": "nick", "nick": "Alice"})["code"], "nick_taken")


if __name__ == "__main__":
    run()
