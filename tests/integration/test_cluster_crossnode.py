"""Topics and whispers across nodes ([cluster], docs/cluster.md): real roomd nodes and one real
Redis (test_cluster's helper), on free loopback ports. A room's topic set on one node reaches
the members on every node and is in `joined` and `rooms` everywhere, also on a node that
starts after it was set; a whisper finds its target on whichever node holds the nick. While
Redis is away, both are refused with `unavailable`."""
import time

import test_cluster as cluster  # exits 77 (skipped) when redis-server is missing
from harness import WAIT, run
from test_cluster_presence import Member, MembersTest, node_config

HALL_TOPIC = """
[[rooms]]
name = "lounge"
persist = false
topic = "welcome"
"""


class CrossNodeTest(MembersTest):
    def node(self, name):
        d = self.start(node_config(self.redis.port, name, 500, cluster.HTTP + HALL_TOPIC))
        d.log.wait_for("cluster: connected to Redis")
        return d

    def topics(self, m):
        return {r["name"]: r["topic"] for r in m.ask({"op": "rooms"})["rooms"]}

    def redis_away(self, *nodes):
        """Stops Redis and waits until every node has noticed."""
        marks = [d.log.mark() for d in nodes]
        self.redis.kill()
        for d, mark in zip(nodes, marks):
            d.log.wait_for("cluster: Redis at .*reconnecting", mark)

    def test_topic_reaches_every_node_and_later_joiners(self):
        a, b, c = self.node("node-a"), self.node("node-b"), self.node("node-c")
        alice = self.member(a, "alice")
        self.assertEqual(alice.ask({"op": "join", "room": "lounge"})["topic"], "welcome")  # the configured one
        bob = self.member(b, "bob")
        self.assertEqual(bob.ask({"op": "join", "room": "lounge"})["topic"], "welcome")
        alice.wait("presence", event="join", room="lounge", nick="bob")

        # Set on node A: the others hear it, the setter has its ok (and no presence).
        text = "news of the day  (with spaces) é"
        self.assertEqual(alice.ask({"op": "topic", "room": "lounge", "topic": text})["op"], "ok")
        self.assertEqual(self.topics(alice)["lounge"], text)  # the ok waits until her node shows it
        bob.wait("presence", event="topic", room="lounge", nick="alice", topic=text)
        # Node C has no member there: `rooms` asks Redis; its first member's `joined` has it.
        carol = self.member(c, "carol")
        self.assertEqual(self.topics(carol)["lounge"], text)
        joined = carol.ask({"op": "join", "room": "lounge"})
        self.assertEqual(joined["topic"], text)
        for m in (alice, bob, carol):
            self.assertEqual(self.topics(m)["lounge"], text, m.client.welcome)

        # Set on node B: A and C hear it, in the same order everywhere.
        self.assertEqual(bob.ask({"op": "topic", "room": "lounge", "topic": "second"})["op"], "ok")
        self.assertEqual(bob.ask({"op": "join", "room": "lounge"})["topic"], "second")  # joined again: his node's
        for m in (alice, carol):
            m.wait("presence", event="topic", room="lounge", nick="bob", topic="second")
        for m in (alice, bob, carol):
            self.assertEqual(self.topics(m)["lounge"], "second")
        # Nobody was told twice, and the setters heard nothing of their own.
        for m in (alice, bob, carol):
            frames = [f for f in m.drain() if f.get("event") == "topic"]
            self.assertEqual(frames, [], frames)

        # A configured room keeps its topic while nobody is in it, and a node started since
        # (as after a restart) sees it too.
        for m in (alice, bob, carol):
            self.assertEqual(m.ask({"op": "leave", "room": "lounge"})["op"], "left")
        c.stop()
        d = self.node("node-d")
        dee = self.member(d, "dee")
        self.assertEqual(self.topics(dee)["lounge"], "second")
        self.assertEqual(dee.ask({"op": "join", "room": "lounge"})["topic"], "second")

        # A dynamic room's topic goes with its last member, as on one node.
        self.assertEqual(dee.ask({"op": "join", "room": "side"})["op"], "joined")
        self.assertEqual(dee.ask({"op": "topic", "room": "side", "topic": "brief"})["op"], "ok")
        self.assertEqual(self.topics(alice).get("side"), "brief")
        self.assertEqual(dee.ask({"op": "leave", "room": "side"})["op"], "left")
        deadline = time.monotonic() + WAIT
        while "side" in self.topics(alice):  # bounded: until node D's leave is in Redis (sent as it left)
            self.assertLess(time.monotonic(), deadline, "the room's last leave never reached Redis")
            time.sleep(0.02)  # a retry interval, not a wait for an event
        self.assertEqual(alice.ask({"op": "join", "room": "side"})["topic"], "")

        # Counted where they were set, on /metrics.
        self.assertEqual(cluster.metrics(a)[1]["roomd_cluster_topics_total"], 1)
        self.assertEqual(cluster.metrics(b)[1]["roomd_cluster_topics_total"], 1)
        self.assertEqual(cluster.metrics(d)[1]["roomd_cluster_topics_total"], 1)

        # Redis away: the topic is not changed anywhere (each node would have its own).
        self.assertEqual(alice.ask({"op": "join", "room": "lounge"})["topic"], "second")
        self.redis_away(a, b, d)
        self.assertEqual(alice.ask({"op": "topic", "room": "lounge", "topic": "split"})["code"], "unavailable")
        self.assertEqual(self.topics(alice)["lounge"], "second")

    def test_whisper_finds_the_node_holding_the_nick(self):
        a, b, c = self.node("node-a"), self.node("node-b"), self.node("node-c")
        alice = self.member(a, "alice")
        self.member(b, "bob")
        carol = self.member(c, "Carol")

        # To a client of node C, by any case of its nick; the target sees its own spelling.
        reply = alice.ask({"op": "whisper", "to": "carol", "text": "psst  é "})
        self.assertEqual(reply["op"], "ok", reply)
        w = carol.wait("whisper")
        self.assertEqual((w["from"], w["to"], w["text"]), ("alice", "Carol", "psst  é "))
        self.assertIsInstance(w["ts"], int)
        reply = carol.ask({"op": "whisper", "to": "ALICE", "text": "back"})
        self.assertEqual(reply["op"], "ok", reply)
        self.assertEqual(alice.wait("whisper", **{"from": "Carol"})["text"], "back")

        # A text-mode client on node B gets it as on one node, and answers with /msg.
        dave = self.connect(b)
        dave.send("/nick dave\n")
        self.assertEqual(dave.recv_line(), "* you are now known as dave")
        self.assertEqual(alice.ask({"op": "whisper", "to": "dave", "text": "secret"})["op"], "ok")
        self.assertEqual(dave.recv_line(), "*alice* secret")
        dave.send("/msg alice from text mode\n")
        self.assertEqual(alice.wait("whisper", **{"from": "dave"})["text"], "from text mode")

        # Held by nobody: no_such_nick, from any node.
        self.assertEqual(alice.ask({"op": "whisper", "to": "nobody", "text": "x"})["code"], "no_such_nick")
        # A nick let go is nobody's again: the rename freed it in the step that took the new one.
        self.assertEqual(carol.ask({"op": "nick", "nick": "carla"})["op"], "ok")
        self.assertEqual(alice.ask({"op": "whisper", "to": "carol", "text": "x"})["code"], "no_such_nick")
        self.assertEqual(alice.ask({"op": "whisper", "to": "carla", "text": "again"})["op"], "ok")
        self.assertEqual(carol.wait("whisper")["text"], "again")
        self.assertEqual([f for f in carol.drain() if f.get("op") == "whisper"], [])

        # Counted on /metrics: out where they were sent, in where they were delivered.
        self.assertEqual(cluster.metrics(a)[1]["roomd_cluster_whispers_out_total"], 3)  # carol, dave, carla
        self.assertEqual(cluster.metrics(b)[1]["roomd_cluster_whispers_in_total"], 1)
        self.assertEqual(cluster.metrics(c)[1]["roomd_cluster_whispers_in_total"], 2)

        # Redis away: whispers to other nodes are unavailable; to a client of this node they go.
        local = self.member(a, "lee")
        self.redis_away(a, b, c)
        self.assertEqual(alice.ask({"op": "whisper", "to": "carla", "text": "x"})["code"], "unavailable")
        self.assertEqual(alice.ask({"op": "whisper", "to": "lee", "text": "near"})["op"], "ok")
        self.assertEqual(local.wait("whisper")["text"], "near")

    def test_whisper_finds_another_nodes_guest(self):
        a, c = self.node("node-a"), self.node("node-c")
        alice = self.member(a, "alice")
        guest = Member(self.connect(c))
        name = guest.client.welcome["nick"]
        self.assertRegex(name, r"^guest-[a-z0-9]{4}-1$")
        # Registered after the welcome (which does not wait for it), on node C's link to Redis:
        # `rooms` asks Redis on that link, so its answer comes after the registration's.
        guest.ask({"op": "rooms"})
        reply = alice.ask({"op": "whisper", "to": name.upper(), "text": "hello guest"})
        self.assertEqual(reply["op"], "ok", reply)
        w = guest.wait("whisper")
        self.assertEqual((w["from"], w["to"], w["text"]), ("alice", name, "hello guest"))
        self.assertEqual(guest.ask({"op": "whisper", "to": "alice", "text": "hi"})["op"], "ok")
        self.assertEqual(alice.wait("whisper", **{"from": name})["text"], "hi")

        # Renamed: the guest nick is freed in the step that took the new one.
        self.assertEqual(guest.ask({"op": "nick", "nick": "gus"})["op"], "ok")
        self.assertEqual(alice.ask({"op": "whisper", "to": name, "text": "x"})["code"], "no_such_nick")
        self.assertEqual(alice.ask({"op": "whisper", "to": "gus", "text": "renamed"})["op"], "ok")
        self.assertEqual(guest.wait("whisper")["text"], "renamed")

        # A guest who left is nobody: no_such_nick from another node, not a silent ok (its
        # release goes to Redis as it leaves, so the answer changes within the wait).
        other = Member(self.connect(c))
        gone = other.client.welcome["nick"]
        other.ask({"op": "rooms"})
        self.assertEqual(alice.ask({"op": "whisper", "to": gone, "text": "there?"})["op"], "ok")
        self.assertEqual(other.wait("whisper")["text"], "there?")
        other.client.close()
        deadline = time.monotonic() + WAIT
        while alice.ask({"op": "whisper", "to": gone, "text": "x"}).get("code") != "no_such_nick":
            self.assertLess(time.monotonic(), deadline, "a guest who left still got whispers")
            time.sleep(0.02)  # a retry interval, not a wait for an event
        # A guest nick of node C's own prefix that nobody there has: answered by node C itself.
        prefix = name.rsplit("-", 1)[0]
        self.assertEqual(guest.ask({"op": "whisper", "to": prefix + "-99", "text": "x"})["code"], "no_such_nick")

    def test_whisper_msg_id_delivers_once_through_any_node(self):
        a, c = self.node("node-a"), self.node("node-c")
        alice = self.member(a, "alice")
        carol = self.member(c, "carol")
        lee = self.member(a, "lee")

        def whispers(m):
            return [f["text"] for f in m.drain() if f.get("op") == "whisper"]

        # Across nodes: Redis remembers the id; the resend is answered duplicate, not handed on.
        w = {"op": "whisper", "to": "carol", "text": "once", "msg_id": "w 1"}
        first = alice.ask(w)
        self.assertEqual((first["op"], first.get("duplicate")), ("ok", None), first)
        carol.wait("whisper", text="once")
        again = alice.ask(dict(w, to="CAROL", text="twice?"))
        self.assertEqual((again["op"], again.get("duplicate")), ("ok", True), again)
        self.assertEqual(alice.ask(dict(w, msg_id="w 2", text="another"))["op"], "ok")
        carol.wait("whisper", text="another")
        self.assertEqual(whispers(carol), [])  # and not "twice?"
        # On one node: the node remembers it.
        self.assertEqual(alice.ask({"op": "whisper", "to": "lee", "text": "near", "msg_id": "w 1"})["op"], "ok")
        near = alice.ask({"op": "whisper", "to": "lee", "text": "near", "msg_id": "w 1"})
        self.assertEqual(near.get("duplicate"), True, near)
        self.assertEqual(whispers(lee), ["near"])

        # The resend through the target's own node (the sender reconnected there): that node
        # delivered the first, so it is a duplicate there too.
        alice.client.close()
        deadline = time.monotonic() + WAIT
        while True:  # alice's nick is free once node A's release reached Redis (sent as she left)
            back = Member(self.connect(c))
            if back.ask({"op": "nick", "nick": "alice"})["op"] == "ok":
                break
            back.client.close()
            self.assertLess(time.monotonic(), deadline, "alice's nick was never released")
            time.sleep(0.02)  # a retry interval, not a wait for an event
        resent = back.ask(w)
        self.assertEqual((resent["op"], resent.get("duplicate")), ("ok", True), resent)
        self.assertEqual(whispers(carol), [])
        self.assertEqual(cluster.metrics(c)[1]["roomd_whispers_duplicate_total"], 1)
        self.assertEqual(cluster.metrics(a)[1]["roomd_whispers_duplicate_total"], 2)


if __name__ == "__main__":
    run()
