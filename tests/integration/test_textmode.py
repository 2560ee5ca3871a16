"""Text mode driven by real netcat (netcat-openbsd), exactly as the README shows it (SPEC §4)."""
import json
import shutil
import subprocess

import harness
from harness import DaemonTest, LineLog


class Netcat:
    """A person at `nc 127.0.0.1 PORT`: types lines, reads the screen."""

    def __init__(self, port):
        self.proc = subprocess.Popen(["nc", "127.0.0.1", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.screen = LineLog(self.proc.stdout)

    def type(self, line, expect=None):
        mark = self.screen.mark()
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self.screen.wait_for(expect, start=mark) if expect else None

    def close(self):
        # nc stays up until the person presses Ctrl-C, whatever the server does.
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=harness.WAIT)
        self.proc.stdin.close()
        self.proc.stdout.close()


class TextMode(DaemonTest):
    def setUp(self):
        super().setUp()
        if not shutil.which("nc"):
            self.fail("netcat-openbsd (nc) is required; ./quickstart.sh installs it")
        self.d = self.start("[[rooms]]\nname = \"lobby\"\ntopic = \"General\"\n")
        self.cats = []

    def tearDown(self):
        for n in self.cats:
            n.close()
        super().tearDown()

    def nc(self):
        n = Netcat(self.d.port)
        self.cats.append(n)
        n.screen.wait_for(r'^\{"op":"welcome"')  # every client gets the JSON welcome first
        return n

    def test_readme_session(self):
        # The README's netcat session, line for line.
        n = self.nc()
        self.assertEqual(n.type("/nick carol", r"^\*"), "* you are now known as carol")
        self.assertEqual(n.type("/join lobby", r"^\*"), "* you joined lobby (topic: General); members: carol")
        self.assertEqual(n.type("hello everyone", r"^\["), "[lobby] carol: hello everyone")
        self.assertEqual(n.type("Bye", r"^\*"), "* bye")

    def test_text_and_json_share_rooms(self):
        alice = self.connect(self.d, nick="alice", join=["lobby"])
        n = self.nc()
        n.type("/nick carol", r"known as carol")
        n.type("/join lobby", r"you joined lobby")
        alice.expect("presence", event="join", nick="carol")
        n.type("hi alice")
        m = alice.expect("message", text="hi alice")
        self.assertEqual(m["from"], "carol")
        alice.send({"op": "say", "room": "lobby", "text": "hi carol"})
        n.screen.wait_for(r"^\[lobby\] alice: hi carol$")
        alice.send({"op": "say", "room": "lobby", "data": {"n": 1}})
        n.screen.wait_for(r'^\[lobby\] alice: \{"n":1\}$')
        alice.send({"op": "whisper", "to": "carol", "text": "secret"})
        n.screen.wait_for(r"^\*alice\* secret$")
        n.type("/msg alice back at you")
        self.assertEqual(alice.wait_for("whisper")["text"], "back at you")
        alice.send({"op": "topic", "room": "lobby", "topic": "Tea"})
        n.screen.wait_for(r"^\* alice set the topic of lobby: Tea$")
        self.assertEqual(n.type("/who", r"^\* lobby:"), "* lobby: alice, carol")
        n.type("/rooms", r"^  lobby \(2 members\) Tea$")
        n.type("/history lobby 2", r"^\[lobby\] alice: \{\"n\":1\}$")
        n.type("/search lobby alice", r"^\[lobby\] carol: hi alice$")
        n.type("/help", r"^  /quit")
        n.type("/fly", r"^! unknown_op: ")
        n.type("/join bad!room", r"^! bad_room_name: ")
        n.type("/join", r"^! bad_request: usage: /join")
        n.type('{"op":"ping"}', r'^\[lobby\] carol: \{"op":"ping"\}$')  # text mode is for good
        n.type("/leave", r"^\* you left lobby$")
        alice.wait_for("presence", event="leave", nick="carol")
        n.type("talking to nobody", r"^! not_member: ")
        n.type("/quit", r"^\* bye$")
        alice.assert_quiet()

    def test_text_mode_presence(self):
        n = self.nc()
        n.type("/join lobby", r"you joined lobby")
        bob = self.connect(self.d, nick="bob", join=["lobby"])
        n.screen.wait_for(r"^\* bob joined lobby$")
        bob.call({"op": "nick", "nick": "robert"}, "ok")
        n.screen.wait_for(r"^\* bob is now known as robert in lobby$")
        bob.close()
        n.screen.wait_for(r"^\* robert left lobby$")


if __name__ == "__main__":
    harness.run()
