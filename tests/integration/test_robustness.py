"""Bad peers never disturb good ones; leaving is noticed at once; order holds (SPEC §2, §5)."""
import socket
import threading

import harness
from harness import DaemonTest

CONFIG = """
[limits]
rate = 100000
burst = 100000
[[rooms]]
name = "lobby"
"""


class Robustness(DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.start(CONFIG)

    def pair(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.expect("presence", event="join", nick="bob")
        return a, b

    def test_peer_fin_gives_presence_leave(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.expect("presence", event="join", nick="bob")
        b.sock.shutdown(socket.SHUT_WR)  # FIN
        a.expect("presence", event="leave", nick="bob", room="lobby")
        b.wait_closed()

    def test_peer_reset_gives_presence_leave(self):
        a = self.connect(self.d, nick="alice", join=["lobby"])
        b = self.connect(self.d, nick="bob", join=["lobby"])
        a.expect("presence", event="join", nick="bob")
        b.reset()
        a.expect("presence", event="leave", nick="bob", room="lobby")
        # The nick is free again.
        self.connect(self.d, nick="bob")

    def test_half_closed_peer_still_gets_its_replies(self):
        c = self.raw(("127.0.0.1", self.d.port))
        c.send('{"op":"ping","id":1}\n{"op":"echo","text":"last","id":2}\n')
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(c.wait_closed(), ['{"op":"pong","id":1}', '{"op":"echo","id":2,"text":"last"}'])

    def test_two_clients_see_one_order(self):
        a, b = self.pair()
        n = 300
        got = {"a": [], "b": []}

        def reader(client, key):
            while len(got[key]) < 2 * n:
                m = client.recv()
                if m["op"] == "message":
                    got[key].append((m["seq"], m["from"], m.get("text")))

        ta = threading.Thread(target=reader, args=(a, "a"))
        tb = threading.Thread(target=reader, args=(b, "b"))
        ta.start(); tb.start()
        wa = threading.Thread(target=lambda: [a.send({"op": "say", "room": "lobby", "text": f"a{i}"}) for i in range(n)])
        wb = threading.Thread(target=lambda: [b.send({"op": "say", "room": "lobby", "text": f"b{i}"}) for i in range(n)])
        wa.start(); wb.start(); wa.join(); wb.join()
        ta.join(harness.WAIT); tb.join(harness.WAIT)
        self.assertEqual(len(got["a"]), 2 * n)
        self.assertEqual(got["a"], got["b"])  # the same messages in the same order
        self.assertEqual([s for s, _, _ in got["a"]], list(range(1, 2 * n + 1)))  # consecutive
        self.assertEqual([t for _, f, t in got["a"] if f == "alice"], [f"a{i}" for i in range(n)])

    def conversation_survives(self, attack):
        """Runs `attack(raw_socket)` from a third client while alice and bob talk."""
        a, b = self.pair()
        bad = self.raw(("127.0.0.1", self.d.port))
        bad.send({"op": "join", "room": "lobby"})
        for i in range(20):
            if i == 5:
                attack(bad)
            a.send({"op": "say", "room": "lobby", "text": f"hello {i}", "id": i})
        got = []
        while len(got) < 20:
            m = b.recv()
            if m["op"] == "message":
                got.append(m["text"])
        self.assertEqual(got, [f"hello {i}" for i in range(20)])
        return bad

    def test_garbage(self):
        bad = self.conversation_survives(lambda c: c.send(b"\x00\x01garbage{{{\n]]]\n" * 50))
        self.assertEqual(bad.wait_for("error")["code"], "bad_json")

    def test_invalid_utf8(self):
        bad = self.conversation_survives(lambda c: c.send(b'{"op":"say","room":"lobby","text":"\xc3\x28"}\n'))
        self.assertEqual(bad.wait_for("error")["code"], "bad_utf8")

    def test_one_megabyte_line(self):
        def attack(c):
            c.send(b'{"op":"say","room":"lobby","text":"' + b"A" * (1 << 20) + b'"}\n')
        bad = self.conversation_survives(attack)
        self.assertEqual(bad.wait_for("error")["code"], "frame_too_large")
        bad.send({"op": "ping", "id": "after"})
        bad.wait_for("pong", id="after")

    def test_half_a_frame_then_silence(self):
        bad = self.conversation_survives(lambda c: c.send(b'{"op":"say","room":"lo'))
        bad.send(b'bby","text":"late"}\n')  # the frame completes later and is served
        self.assertEqual(bad.wait_for("message", text="late")["from"], bad.welcome["nick"])

    def test_text_mode_garbage_line(self):
        bad = self.conversation_survives(lambda c: c.send(b"/nonsense\n"))
        self.assertEqual(bad.wait_for("error")["code"], "bad_json")


if __name__ == "__main__":
    harness.run()
