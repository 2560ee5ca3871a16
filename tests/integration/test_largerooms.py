"""Large rooms (issue 17): member lists that page, presence summaries above a threshold,
resume with since/epoch after a reconnect, and the bound on dynamic rooms."""
import os

import harness
from harness import DaemonTest

CONFIG = """
[server]
max_rooms = 3
[limits]
rate = 1000
burst = 1000
member_page = 3
presence_threshold = 5
presence_interval_ms = 200
[history]
replay = 2
max_messages_per_room = 6
[[rooms]]
name = "lobby"
[[rooms]]
name = "big"
max_members = 100
[[rooms]]
name = "solo"
presence_threshold = 1
"""


def seqs(messages):
    return [m["seq"] for m in messages]


_ids = iter(range(1, 1 << 30))


def ask(client, request, op, **fields):
    """Sends `request` with a fresh id and returns its reply, skipping room traffic before it."""
    rid = f"q{next(_ids)}"
    client.send(dict(request, id=rid))
    reply = client.wait_for(op, id=rid)
    for k, v in fields.items():
        assert reply.get(k) == v, f"expected {k}={v!r} in {reply}"
    return reply


def fails(client, request, code):
    reply = ask(client, request, "error")
    assert reply["code"] == code, reply
    return reply


class Paging(DaemonTest):
    def test_joined_lists_a_page_and_who_pages_through_everyone(self):
        d = self.start(CONFIG)
        nicks = ["dora", "Carl", "bob", "ann", "eve"]
        clients = []
        for i, nick in enumerate(nicks):
            c = self.connect(d, nick=nick)
            j = ask(c, {"op": "join", "room": "lobby"}, "joined")
            clients.append(c)
            self.assertEqual(j["count"], i + 1)
            if i + 1 <= 3:  # a room within one page: the whole list, as always
                self.assertEqual(j["members"], sorted(nicks[: i + 1]))
                self.assertFalse(j["more"])
            else:
                self.assertEqual(j["members"], sorted(nicks[: i + 1])[:3])
                self.assertTrue(j["more"])
        a = clients[0]
        a.send({"op": "ping", "id": "sync"})
        a.wait_for("pong", id="sync")
        pages, after = [], None
        for _ in range(10):
            req = {"op": "who", "room": "lobby"}
            if after:
                req["after"] = after
            w = ask(a, req, "who", count=5)
            pages.append(w["members"])
            if not w["more"]:
                break
            after = w["members"][-1]
        self.assertEqual(pages, [["Carl", "ann", "bob"], ["dora", "eve"]])
        w = ask(a, {"op": "who", "room": "lobby", "after": "b", "limit": 1}, "who")
        self.assertEqual((w["members"], w["more"]), (["bob"], True))
        fails(a, {"op": "who", "room": "lobby", "limit": 0}, "bad_request")
        fails(a, {"op": "who", "room": "lobby", "after": 7}, "bad_request")
        # Text mode says there is more and how to get it.
        t = self.raw(("127.0.0.1", d.port))
        t.send("/who lobby\n")
        self.assertEqual(t.recv_line(), "* lobby: Carl, ann, bob, ... (5 members; /who lobby bob for more)")
        t.send("/who lobby bob\n")
        self.assertEqual(t.recv_line(), "* lobby: dora, eve")


class Presence(DaemonTest):
    def test_a_big_room_gets_summaries_that_add_up_and_a_small_one_single_events(self):
        d = self.start(CONFIG)
        watcher = self.connect(d, nick="watcher", join=["big", "lobby"])
        small_peer = self.connect(d, nick="peer", join=["lobby"])
        self.assertEqual(watcher.wait_for("presence", room="lobby", event="join")["nick"], "peer")
        members = [self.connect(d, nick=f"m{i}", join=["big"]) for i in range(4)]  # 5 members: at the threshold
        for i in range(4):
            self.assertEqual(watcher.wait_for("presence", room="big", event="join")["nick"], f"m{i}")
        # Over the threshold now: joins, leaves and a rename are summarized.
        joins, leaves = 12, 5
        more = [self.connect(d, nick=f"n{i}", join=["big"]) for i in range(joins)]
        for c in more[:leaves]:
            ask(c, {"op": "leave", "room": "big"}, "left")
        ask(more[-1], {"op": "nick", "nick": "renamed"}, "ok")
        got = {"joins": 0, "leaves": 0, "renames": 0}
        joined, left, singles, last_count = [], [], [], None
        while got["joins"] < joins or got["leaves"] < leaves or got["renames"] < 1:
            m = watcher.recv()
            if m["op"] != "presence" or m["room"] != "big":
                continue
            if m["event"] != "summary":
                singles.append(m)
                continue
            for k in got:
                got[k] += m[k]
            joined += m["joined"]
            left += m["left"]
            last_count = m["count"]
        self.assertEqual(singles, [])
        self.assertEqual(got, {"joins": joins, "leaves": leaves, "renames": 1})
        self.assertEqual(joined, [f"n{i}" for i in range(joins)])
        self.assertEqual(left, [f"n{i}" for i in range(leaves)])
        self.assertEqual(last_count, 5 + joins - leaves)
        who = ask(watcher, {"op": "who", "room": "big", "limit": 100}, "who")
        self.assertEqual(who["count"], 5 + joins - leaves)
        self.assertIn("renamed", who["members"])
        # The small room still hears each change at once.
        ask(small_peer, {"op": "leave", "room": "lobby"}, "left")
        self.assertEqual(watcher.wait_for("presence", room="lobby", event="leave")["nick"], "peer")
        # A room's own presence_threshold: "solo" summarizes above one member.
        ask(watcher, {"op": "join", "room": "solo"}, "joined")
        ask(members[0], {"op": "join", "room": "solo"}, "joined")
        s = watcher.wait_for("presence", room="solo")
        self.assertEqual((s["event"], s["joins"], s["joined"], s["count"]), ("summary", 1, ["m0"], 2))
        t = self.raw(("127.0.0.1", d.port))
        t.send("/join solo\n")
        self.assertTrue(t.recv_line().startswith("* you joined solo"))
        # Its own join is in the room's next summary, which goes to every member.
        self.assertRegex(t.recv_line(), r"^\* solo: 1 joined \(guest-\d+\); 3 members$")
        ask(members[1], {"op": "join", "room": "solo"}, "joined")
        line = t.recv_line()
        self.assertEqual(line, "* solo: 1 joined (m1); 4 members")


class Resume(DaemonTest):
    def test_since_replays_exactly_the_missed_messages_then_live_ones(self):
        d = self.start(CONFIG)
        a = self.connect(d, nick="alice", join=["lobby"])
        b = self.connect(d, nick="bob")
        j = ask(b, {"op": "join", "room": "lobby"}, "joined", seq=0, resumed=None)
        epoch = j["epoch"]
        ask(a, {"op": "say", "room": "lobby", "text": "one"}, "ok", seq=1)
        self.assertEqual(b.wait_for("message")["seq"], 1)
        b.close()
        for i in range(2, 6):
            a.send({"op": "say", "room": "lobby", "text": f"missed {i}", "id": i})
            a.wait_for("ok", id=i)
        b2 = self.connect(d, nick="bob2")
        j = ask(b2, {"op": "join", "room": "lobby", "since": 1, "epoch": epoch}, "joined", resumed=True, seq=5)
        self.assertEqual(seqs(j["history"]), [2, 3, 4, 5])
        self.assertEqual([m["text"] for m in j["history"]], [f"missed {i}" for i in range(2, 6)])
        ask(a, {"op": "say", "room": "lobby", "text": "live"}, "ok", seq=6)
        self.assertEqual(b2.wait_for("message")["seq"], 6)
        # Nothing missed: resumed, nothing replayed.
        b3 = self.connect(d)
        j = ask(b3, {"op": "join", "room": "lobby", "since": 6, "epoch": epoch}, "joined", resumed=True)
        self.assertEqual(j["history"], [])
        fails(b3, {"op": "join", "room": "lobby", "since": -1}, "bad_request")
        fails(b3, {"op": "join", "room": "lobby", "since": 1, "epoch": 5}, "bad_request")

    def test_resumed_false_when_the_messages_are_gone_or_the_room_is_another(self):
        d = self.start(CONFIG)
        a = self.connect(d, nick="alice", join=["lobby"])
        j = ask(a, {"op": "join", "room": "lobby"}, "joined")
        epoch = j["epoch"]
        for i in range(1, 11):  # the ring keeps 6 (max_messages_per_room)
            a.send({"op": "say", "room": "lobby", "text": f"m{i}", "id": i})
        a.wait_for("ok", id=10)
        b = self.connect(d)
        j = ask(b, {"op": "join", "room": "lobby", "since": 2, "epoch": epoch}, "joined", resumed=False, seq=10)
        self.assertEqual(seqs(j["history"]), [9, 10])  # a plain join's replay
        j = ask(b, {"op": "join", "room": "lobby", "since": 4, "epoch": epoch}, "joined", resumed=True)
        self.assertEqual(seqs(j["history"]), [5, 6, 7, 8, 9, 10])
        ask(b, {"op": "join", "room": "lobby", "since": 11, "epoch": epoch}, "joined", resumed=False)
        ask(b, {"op": "join", "room": "lobby", "since": 9, "epoch": "other"}, "joined", resumed=False)
        # A dynamic room made again is another room: same seq numbers, another epoch.
        ask(a, {"op": "join", "room": "tmp"}, "joined")
        ask(a, {"op": "say", "room": "tmp", "text": "x"}, "ok", seq=1)
        old = ask(a, {"op": "join", "room": "tmp"}, "joined")["epoch"]
        ask(a, {"op": "leave", "room": "tmp"}, "left")
        j = ask(a, {"op": "join", "room": "tmp", "since": 1, "epoch": old}, "joined", resumed=False, seq=0)
        self.assertNotEqual(j["epoch"], old)

    def test_memory_room_after_restart_is_not_resumed_a_persisted_one_is(self):
        state = "/tmp/roomd-resume-%d" % os.getpid()
        conf = CONFIG + """
[[rooms]]
name = "kept"
persist = true
"""
        conf = conf.replace("[history]\n", f'[history]\npath = "{state}/h.db"\n')
        conf = conf.replace('name = "lobby"\n', 'name = "lobby"\npersist = false\n')
        os.system(f"rm -rf {state}")
        try:
            d = self.start(conf)
            a = self.connect(d, join=["lobby", "kept"])
            epochs = {}
            for room in ("lobby", "kept"):
                epochs[room] = ask(a, {"op": "join", "room": room}, "joined")["epoch"]
                for i in range(1, 4):
                    a.send({"op": "say", "room": room, "text": f"{room} {i}", "id": f"{room}{i}"})
                a.wait_for("ok", id=f"{room}3")
            d.stop()  # clean: a kill -9 would give the persisted room a new epoch too (test_history)
            self.daemons.remove(d)
            d = self.start(conf)
            b = self.connect(d)
            j = ask(b, {"op": "join", "room": "lobby", "since": 1, "epoch": epochs["lobby"]}, "joined",
                       resumed=False, seq=0)
            self.assertNotEqual(j["epoch"], epochs["lobby"])
            j = ask(b, {"op": "join", "room": "kept", "since": 1, "epoch": epochs["kept"]}, "joined",
                       resumed=True, seq=3, epoch=epochs["kept"])
            self.assertEqual([m["text"] for m in j["history"]], ["kept 2", "kept 3"])
        finally:
            os.system(f"rm -rf {state}")


class Rooms(DaemonTest):
    def test_max_rooms_bounds_dynamic_rooms_only(self):
        d = self.start(CONFIG)
        a = self.connect(d, join=["lobby"])
        other = self.connect(d, join=["lobby"])
        for name in ("r1", "r2", "r3"):
            ask(a, {"op": "join", "room": name}, "joined")
        e = fails(a, {"op": "join", "room": "r4"}, "no_such_room")
        self.assertIn("maximum of 3 rooms", e["message"])
        ask(a, {"op": "join", "room": "big"}, "joined")  # configured rooms are not counted
        ask(a, {"op": "say", "room": "lobby", "text": "still fine"}, "ok")
        self.assertEqual(other.wait_for("message")["text"], "still fine")
        ask(a, {"op": "leave", "room": "r1"}, "left")  # its last member: the room is gone
        ask(a, {"op": "join", "room": "r4"}, "joined")


if __name__ == "__main__":
    harness.run()
