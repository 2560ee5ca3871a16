"""Every op of the JSON protocol and every error code reachable from the wire (SPEC §2)."""
import harness
from harness import DaemonTest

CONFIG = """
[server]
dynamic_rooms = true
[limits]
rate = 1000
burst = 1000
[history]
replay = 3
[[rooms]]
name = "lobby"
topic = "General"
[[rooms]]
name = "tiny"
max_members = 1
[[rooms]]
name = "news"
read_only = true
speakers = ["Editor"]
[[rooms]]
name = "vault"
key = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$aGFzaA"
"""


class Protocol(DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.start(CONFIG)

    def test_welcome(self):
        c = self.connect(self.d)
        w = c.welcome
        self.assertEqual(w["op"], "welcome")
        self.assertEqual(w["server"], "roomd")
        self.assertEqual(w["proto"], 1)
        self.assertTrue(w["nick"].startswith("guest-"))
        self.assertIn("motd", w)
        self.assertIn("hint", w)
        self.assertTrue(w["version"])

    def test_nick(self):
        a = self.connect(self.d, join=["lobby"])
        b = self.connect(self.d, join=["lobby"])
        a.wait_for("presence", event="join")
        old = b.welcome["nick"]
        self.assertEqual(b.call({"op": "nick", "nick": "Bob", "id": 7}, "ok"), {"op": "ok", "id": 7, "nick": "Bob"})
        p = a.expect("presence", event="nick", nick="Bob", old=old, room="lobby")
        self.assertNotIn("id", p)
        a.error({"op": "nick", "nick": "bob"}, "nick_taken")   # unique ignoring case
        a.error({"op": "nick", "nick": "SERVER"}, "nick_taken")  # reserved
        a.error({"op": "nick", "nick": ""}, "bad_nick")
        a.error({"op": "nick", "nick": "1abc"}, "bad_nick")
        a.error({"op": "nick", "nick": "a" * 33}, "bad_nick")
        a.error({"op": "nick", "nick": "sp ace"}, "bad_nick")
        a.error({"op": "nick", "nick": 5}, "bad_request")
        a.error({"op": "nick"}, "bad_request")
        b.call({"op": "nick", "nick": "BOB"}, "ok", nick="BOB")  # own nick, other case

    def test_rooms(self):
        a = self.connect(self.d, join=["lobby"])
        reply = a.call({"op": "rooms", "id": "r"}, "rooms", id="r")
        by_name = {r["name"]: r for r in reply["rooms"]}
        self.assertEqual(by_name["lobby"], {"name": "lobby", "topic": "General", "members": 1, "keyed": False})
        self.assertTrue(by_name["vault"]["keyed"])
        self.assertEqual(by_name["tiny"]["members"], 0)

    def test_join_leave_presence(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob")
        j = b.call({"op": "join", "room": "lobby", "id": 1}, "joined", id=1, room="lobby", topic="General")
        self.assertEqual(j["members"], ["alice", "bob"])
        self.assertEqual(j["history"], [])
        a.expect("presence", room="lobby", event="join", nick="bob")
        # Joining again: joined, no presence to others.
        b.call({"op": "join", "room": "lobby"}, "joined", room="lobby")
        a.assert_quiet()
        b.call({"op": "leave", "room": "lobby", "id": 2}, "left", id=2, room="lobby")
        a.expect("presence", room="lobby", event="leave", nick="bob")
        b.error({"op": "leave", "room": "lobby"}, "not_member")
        b.error({"op": "join", "room": "bad room"}, "bad_room_name")
        b.error({"op": "join", "room": ""}, "bad_room_name")
        b.error({"op": "join", "room": "-x"}, "bad_room_name")
        b.error({"op": "join"}, "bad_request")
        b.error({"op": "leave", "room": "nowhere"}, "no_such_room")

    def test_history_replay_on_join(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        for i in range(5):
            a.call({"op": "say", "room": "lobby", "text": f"m{i}"}, "message")
        b = self.connect(self.d)
        j = b.call({"op": "join", "room": "lobby"}, "joined")
        self.assertEqual([m["text"] for m in j["history"]], ["m2", "m3", "m4"])  # replay = 3, oldest first
        self.assertEqual([m["seq"] for m in j["history"]], [3, 4, 5])

    def test_dynamic_room_lifecycle(self):
        a = self.connect(self.d, join=["scratch"])
        a.call({"op": "say", "room": "scratch", "text": "one"}, "message", seq=1)
        a.call({"op": "leave", "room": "scratch"}, "left")
        rooms = [r["name"] for r in a.call({"op": "rooms"}, "rooms")["rooms"]]
        self.assertNotIn("scratch", rooms)  # vanished with its last member
        a.call({"op": "join", "room": "scratch"}, "joined", history=[])
        a.call({"op": "say", "room": "scratch", "text": "again"}, "message", seq=1)  # a new room

    def test_say(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.wait_for("presence", event="join")
        a.send({"op": "say", "room": "lobby", "text": "hello", "id": "s1"})
        m = a.expect("message", room="lobby", seq=1, **{"from": "alice"}, text="hello")
        self.assertNotIn("id", m)  # the sender's copy carries no id
        self.assertIsInstance(m["ts"], int)
        a.expect("ok", id="s1", seq=1)  # after the message
        self.assertEqual(b.expect("message", seq=1), m)
        # data: any JSON value, routed as is
        b.send({"op": "say", "room": "lobby", "data": {"k": [1, 2, {"x": None}]}})
        self.assertEqual(a.expect("message", seq=2)["data"], {"k": [1, 2, {"x": None}]})
        self.assertNotIn("text", b.expect("message", seq=2))
        # No id: no ok.
        b.assert_quiet()
        a.error({"op": "say", "room": "lobby"}, "bad_request")
        a.error({"op": "say", "room": "lobby", "data": None}, "bad_request")
        a.error({"op": "say", "room": "lobby", "text": 5}, "bad_request")
        a.error({"op": "say", "text": "x"}, "bad_request")
        a.error({"op": "say", "room": "tiny", "text": "x"}, "not_member")
        a.error({"op": "say", "room": "nowhere", "text": "x"}, "no_such_room")
        a.error({"op": "say", "room": "no way", "text": "x"}, "bad_room_name")

    def test_say_resent_with_its_msg_id_is_not_doubled(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.wait_for("presence", event="join")
        a.send({"op": "say", "room": "lobby", "text": "once", "id": 1, "msg_id": "c7f3-0001"})
        first = a.expect("message", text="once")
        a.expect("ok", id=1, seq=first["seq"])
        self.assertEqual(b.expect("message")["seq"], first["seq"])
        # The connection drops before the client saw its ok; it comes back and says it again.
        a.close()
        b.wait_for("presence", event="leave")
        again = self.connect(self.d, nick="alice", join=["lobby"])
        reply = again.call({"op": "say", "room": "lobby", "text": "once", "id": 2, "msg_id": "c7f3-0001"})
        self.assertEqual(reply, {"op": "ok", "id": 2, "seq": first["seq"], "duplicate": True})
        # Nothing was published: bob's next message is the next say's.
        b.wait_for("presence", event="join")
        again.send({"op": "say", "room": "lobby", "text": "next", "id": 3, "msg_id": "c7f3-0002"})
        self.assertEqual(again.expect("message")["seq"], first["seq"] + 1)
        again.expect("ok", id=3, seq=first["seq"] + 1)
        nxt = b.expect("message")
        self.assertEqual((nxt["seq"], nxt["text"]), (first["seq"] + 1, "next"))
        # Another nick's msg_id is its own.
        b.send({"op": "say", "room": "lobby", "text": "bob's", "id": 4, "msg_id": "c7f3-0001"})
        self.assertEqual(b.expect("message")["seq"], first["seq"] + 2)
        b.expect("ok", id=4, seq=first["seq"] + 2)
        again.wait_for("message", text="bob's")
        a2 = again.error({"op": "say", "room": "lobby", "text": "x", "id": 5, "msg_id": ""}, "bad_request")
        self.assertIn("msg_id", a2["message"])
        again.error({"op": "say", "room": "lobby", "text": "x", "msg_id": "x" * 65}, "bad_request")
        again.error({"op": "say", "room": "lobby", "text": "x", "msg_id": 12}, "bad_request")

    def test_read_only(self):
        a = self.connect(self.d, nick="alice", join=["news"])
        e = self.connect(self.d, nick="editor", join=["news"])  # speakers match ignoring case
        a.expect("presence", event="join")
        a.error({"op": "say", "room": "news", "text": "x"}, "read_only")
        a.error({"op": "topic", "room": "news", "topic": "x"}, "read_only")
        e.call({"op": "say", "room": "news", "text": "headline"}, "message", seq=1)
        a.expect("message", seq=1, text="headline")

    def test_room_full(self):
        a = self.connect(self.d, join=["tiny"])
        b = self.connect(self.d)
        b.error({"op": "join", "room": "tiny"}, "room_full")
        a.call({"op": "leave", "room": "tiny"}, "left")
        b.call({"op": "join", "room": "tiny"}, "joined")

    def test_keyed_room_needs_key(self):
        a = self.connect(self.d)
        a.error({"op": "join", "room": "vault"}, "bad_key")
        a.error({"op": "who", "room": "vault"}, "not_member")
        a.error({"op": "history", "room": "vault"}, "not_member")

    def test_whisper(self):
        a = self.connect(self.d, nick="alice")
        b = self.connect(self.d, nick="bob")
        a.call({"op": "whisper", "to": "BOB", "text": "psst", "id": 3}, "ok", id=3)
        w = b.expect("whisper", **{"from": "alice"}, to="bob", text="psst")
        self.assertIsInstance(w["ts"], int)
        a.error({"op": "whisper", "to": "nobody", "text": "x"}, "no_such_nick")
        a.error({"op": "whisper", "to": "bob"}, "bad_request")

    def test_who(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        self.connect(self.d, nick="bob", join=["lobby"])
        c = self.connect(self.d)
        self.assertEqual(c.call({"op": "who", "room": "lobby", "id": 1}, "who", id=1)["members"], ["alice", "bob"])
        c.error({"op": "who", "room": "nowhere"}, "no_such_room")
        c.error({"op": "who"}, "bad_request")
        a.wait_for("presence", event="join", nick="bob")

    def test_topic(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.wait_for("presence", event="join")
        b.call({"op": "topic", "room": "lobby", "topic": "New topic", "id": 1}, "ok", id=1)
        a.expect("presence", event="topic", nick="bob", topic="New topic", room="lobby")
        c = self.connect(self.d)
        c.error({"op": "topic", "room": "lobby", "topic": "x"}, "not_member")
        self.assertEqual(c.call({"op": "join", "room": "lobby"}, "joined")["topic"], "New topic")

    def test_history_paging_and_search(self):
        a = self.connect(self.d, join=["lobby"])
        for i in range(1, 121):
            a.call({"op": "say", "room": "lobby", "text": f"msg {i}" + (" apple pie" if i % 10 == 0 else "")},
                   "message", seq=i)
        h = a.call({"op": "history", "room": "lobby", "id": "h"}, "history", id="h", room="lobby")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(71, 121)))  # default limit 50
        self.assertTrue(h["more"])
        h = a.call({"op": "history", "room": "lobby", "before": 71, "limit": 60}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(11, 71)))
        self.assertTrue(h["more"])
        h = a.call({"op": "history", "room": "lobby", "before": 11, "limit": 60}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(1, 11)))
        self.assertFalse(h["more"])
        h = a.call({"op": "history", "room": "lobby", "limit": 100000}, "history")
        self.assertEqual(len(h["messages"]), 120)  # capped at 500
        h = a.call({"op": "history", "room": "lobby", "search": "APPLE", "limit": 5}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [80, 90, 100, 110, 120])
        self.assertTrue(h["more"])
        a.error({"op": "history", "room": "lobby", "limit": 0}, "bad_request")
        a.error({"op": "history", "room": "lobby", "before": "x"}, "bad_request")
        a.error({"op": "history", "room": "nowhere"}, "no_such_room")
        # Not a member of an open room: allowed.
        b = self.connect(self.d)
        self.assertEqual(len(b.call({"op": "history", "room": "lobby", "limit": 2}, "history")["messages"]), 2)

    def test_ping_echo(self):
        a = self.connect(self.d)
        self.assertEqual(a.call({"op": "ping", "id": None}), {"op": "pong", "id": None})
        self.assertEqual(a.call({"op": "echo", "text": "héllo ✓", "id": 1.5}), {"op": "echo", "id": 1.5, "text": "héllo ✓"})
        a.error({"op": "echo"}, "bad_request")

    def test_bye(self):
        a = self.connect(self.d, nick="alice", join=["lobby", "tiny"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.expect("presence", event="join", nick="bob")
        b.send({"op": "bye", "id": 9})
        self.assertEqual(b.recv(), {"op": "bye", "id": 9})
        b.wait_closed()
        a.expect("presence", event="leave", nick="bob", room="lobby")

    def test_request_errors(self):
        a = self.connect(self.d)
        a.error("{not json\n", "bad_json")
        a.error("Bye\n", "bad_json")  # text-mode goodbye in JSON mode
        a.error("[1,2]\n", "bad_request")
        a.error("{}\n", "bad_request")
        a.error({"op": 5}, "bad_request")
        r = a.error({"op": "fly", "id": "u"}, "unknown_op")
        self.assertEqual(r["id"], "u")
        a.error({"op": "ping", "id": [1]}, "bad_request")
        a.error(b'{"op":"echo","text":"\xff\xfe"}\n', "bad_utf8")
        # Empty lines are ignored; CRLF is accepted.
        a.send("\n\r\n\n")
        self.assertEqual(a.call('{"op":"ping","id":1}\r\n'), {"op": "pong", "id": 1})

    def test_frame_too_large_connection_goes_on(self):
        a = self.connect(self.d)
        a.send('{"op":"echo","text":"' + "x" * 70000 + '"}\n')
        a.expect("error", code="frame_too_large")
        self.assertEqual(a.call({"op": "ping", "id": 1}), {"op": "pong", "id": 1})
        # Exactly max_frame_bytes (65536, without the line ending) is accepted.
        frame = '{"op":"echo","text":"'
        frame += "y" * (65536 - len(frame) - 2) + '"}'
        self.assertEqual(len(frame), 65536)
        self.assertEqual(a.call(frame + "\r\n")["op"], "echo")


class Limits(DaemonTest):
    def test_rate_limited(self):
        d = self.start("[limits]\nrate = 0.01\nburst = 5\n[[rooms]]\nname = \"lobby\"\n")
        a = self.connect(d, join=["lobby"])
        for i in range(5):  # the bucket starts full
            a.send({"op": "say", "room": "lobby", "text": str(i), "id": i})
        for i in range(5):
            a.expect("message", seq=i + 1)
            a.expect("ok", id=i)
        a.error({"op": "say", "room": "lobby", "text": "x", "id": 99}, "rate_limited")
        a.error({"op": "whisper", "to": a.welcome["nick"], "text": "x"}, "rate_limited")
        self.assertEqual(a.call({"op": "ping"}), {"op": "pong"})  # other ops are not limited

    def test_dynamic_rooms_off(self):
        d = self.start("[server]\ndynamic_rooms = false\n[[rooms]]\nname = \"lobby\"\n")
        a = self.connect(d)
        a.error({"op": "join", "room": "elsewhere"}, "no_such_room")
        a.call({"op": "join", "room": "lobby"}, "joined")

    def test_max_clients(self):
        d = self.start("[server]\nmax_clients = 2\n")
        a = self.connect(d)
        self.connect(d)
        over = self.raw(("127.0.0.1", d.port), welcome=False)
        self.assertEqual(over.recv()["code"], "server_full")  # the only line
        self.assertEqual(over.wait_closed(), [])
        a.call({"op": "bye"}, "bye")
        a.wait_closed()
        # A place is free again once the server has released it.
        d.log.wait_for(r"disconnected")
        self.connect(d).call({"op": "ping"}, "pong")

    def test_max_clients_per_ip(self):
        d = self.start("[server]\nmax_clients_per_ip = 1\n", listen=("127.0.0.1:0", "127.0.0.2:0"))
        self.connect(d)
        over = self.raw(("127.0.0.1", d.port), welcome=False)
        e = over.recv()
        self.assertEqual(e["code"], "server_full")
        over.wait_closed()
        # Another address is another IP.
        port2 = int(d.addresses[1].rsplit(":", 1)[1])
        other = harness.Client(("127.0.0.2", port2), source="127.0.0.2")
        self.clients.append(other)
        self.assertEqual(other.welcome["op"], "welcome")


if __name__ == "__main__":
    harness.run()
