"""roomcat against the real roomd: pipe mode, --json, unix target, refused, server gone, --reconnect."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import DaemonTest, LineLog

ROOMCAT = os.environ.get("ROOMCAT_BIN", os.path.join(os.path.dirname(harness.ROOMD), "roomcat"))


def roomcat(*args, stdin=b""):
    return subprocess.run([ROOMCAT, *args], input=stdin, capture_output=True, timeout=harness.WAIT)


class Roomcat(DaemonTest):
    def test_pipe_mode_delivers_every_line_and_exits_0(self):
        d = self.start("[limits]\nrate = 10000\nburst = 10000\n[[rooms]]\nname = \"lobby\"\n")
        watcher = self.connect(d, join=["lobby"])
        lines = [f"line {i}" for i in range(200)]
        r = roomcat(f"127.0.0.1:{d.port}", "--nick", "piper", "--join", "lobby",
                    stdin=("\n".join(lines) + "\n").encode())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[lobby] piper: line 199", r.stdout.decode())
        watcher.wait_for("presence", event="join", nick="piper")
        got = []
        while len(got) < 200:
            m = watcher.recv()
            if m["op"] == "message":
                got.append(m["text"])
        self.assertEqual(got, lines)
        watcher.expect("presence", event="leave", nick="piper")

    def test_stdin_a_file_or_dev_null(self):
        # epoll cannot watch a regular file or /dev/null: they were an abort in libuv once.
        d = self.start("[[rooms]]\nname = \"lobby\"\n")
        watcher = self.connect(d, join=["lobby"])
        with open(os.devnull, "rb") as null:
            r = subprocess.run([ROOMCAT, f"127.0.0.1:{d.port}", "--join", "lobby"], stdin=null,
                               capture_output=True, timeout=harness.WAIT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("* bye", r.stdout.decode())
        path = os.path.join(d.tmp.name, "lines.txt")
        with open(path, "w") as f:
            f.write("".join(f"from a file {i}\n" for i in range(3)))
        with open(path, "rb") as f:
            r = subprocess.run([ROOMCAT, f"127.0.0.1:{d.port}", "--join", "lobby"], stdin=f,
                               capture_output=True, timeout=harness.WAIT)
        self.assertEqual(r.returncode, 0, r.stderr)
        texts = []
        while len(texts) < 3:
            m = watcher.recv()
            if m["op"] == "message":
                texts.append(m["text"])
        self.assertEqual(texts, [f"from a file {i}" for i in range(3)])

    def test_pipe_faster_than_the_rate_limit_loses_nothing(self):
        # roomcat paces itself by the limits the welcome advertises instead of being refused.
        d = self.start("[limits]\nrate = 200\nburst = 10\n[[rooms]]\nname = \"lobby\"\n")
        lines = [f"paced {i}" for i in range(300)]
        r = roomcat(f"127.0.0.1:{d.port}", "--join", "lobby", stdin=("\n".join(lines) + "\n").encode())
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode()
        self.assertNotIn("rate_limited", out)
        self.assertEqual([l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("[lobby]")], lines)

    def test_stdout_backpressure_stops_reading_the_socket(self):
        """A reader that does not keep up with roomcat's stdout makes roomcat stop reading the
        socket (so it does not grow without bound): the server then sees a slow consumer.
        Everything roomcat did print is whole and in order."""
        d = self.start("[limits]\nmax_outbound_bytes = 262144\nrate = 1000000\nburst = 1000000\n"
                       "[[rooms]]\nname = \"lobby\"\n")
        p = subprocess.Popen([ROOMCAT, "--json", f"127.0.0.1:{d.port}"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(b'{"op":"join","room":"lobby"}\n')
        p.stdin.flush()
        pub = self.connect(d, join=["lobby"])
        pub.wait_for("presence", event="join")
        text = "z" * 2000
        for start in range(0, 20000, 50):  # bounded: 40 MB at most
            for i in range(start, start + 50):
                pub.send({"op": "say", "room": "lobby", "text": text})
            for _ in range(50):
                pub.wait_for("message")
            if any("slow consumer" in l for l in d.log.lines):
                break
        d.log.wait_for(r"slow consumer")
        out, err = p.communicate(timeout=harness.WAIT)
        self.assertEqual(p.returncode, 1)
        self.assertIn("slow_consumer", err.decode())
        seqs = [json.loads(l)["seq"] for l in out.decode().splitlines() if '"op":"message"' in l]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertLess(len(seqs), 20000)

    def test_json_round_trip(self):
        d = self.start()
        r = roomcat("--json", f"127.0.0.1:{d.port}",
                    stdin=b'{"op":"join","room":"lobby","id":1}\n{"op":"say","room":"lobby","text":"hi","id":2}\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode().splitlines()
        self.assertTrue(out[0].startswith('{"op":"welcome"'))
        self.assertTrue(out[1].startswith('{"op":"joined","id":1'))
        self.assertIn('"text":"hi"', out[2])
        self.assertEqual(out[3], '{"op":"ok","id":2,"seq":1}')
        self.assertEqual(out[4], '{"op":"bye"}')

    def test_unix_target(self):
        d = self.start(listen=("unix:{tmp}/r.sock",))
        r = roomcat(d.addresses[0], "--join", "lobby", stdin=b"over unix\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("over unix", r.stdout.decode())

    def test_refused_and_usage(self):
        d = self.start()
        port = d.port
        d.stop()
        r = roomcat(f"127.0.0.1:{port}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot connect", r.stderr.decode())
        self.assertEqual(roomcat("--no-such-option").returncode, 2)

    def test_several_targets_the_first_refused_tries_the_next(self):
        d = self.start()
        gone = self.start()
        port = gone.port
        gone.stop()
        r = roomcat(f"127.0.0.1:{port}", f"127.0.0.1:{d.port}", "--join", "lobby", stdin=b"second one\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("second one", r.stdout.decode())
        self.assertIn(f"roomcat: 127.0.0.1:{port}: cannot connect", r.stderr.decode())
        r = roomcat(f"127.0.0.1:{port}", f"127.0.0.1:{port}")  # each tried once, then the end
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode().count("cannot connect"), 2)
        self.assertEqual(roomcat(f"127.0.0.1:{d.port}", "nonsense").returncode, 2)

    def test_server_killed_while_stdin_open(self):
        d = self.start()
        p = subprocess.Popen([ROOMCAT, f"127.0.0.1:{d.port}", "--join", "lobby"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = LineLog(p.stdout)
        p.stdin.write(b"half a line with no newline")
        p.stdin.flush()
        out.wait_for(r"you joined lobby")
        d.kill()
        self.assertEqual(p.wait(timeout=harness.WAIT), 1)
        self.assertIn("connection closed by server", p.stderr.read().decode())
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()

    def test_server_shutdown_reason(self):
        d = self.start()
        p = subprocess.Popen([ROOMCAT, f"127.0.0.1:{d.port}"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        d.log.wait_for(r"connected as")
        d.signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=harness.WAIT), 1)
        self.assertIn("server shut down", p.stderr.read().decode())
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()


KEY = "s3cret"


def hash_key(key):
    r = subprocess.run([harness.ROOMD, "--hash-key"], input=(key + "\n").encode(), capture_output=True,
                       timeout=harness.WAIT)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


class Reconnect(DaemonTest):
    """roomcat --reconnect against a roomd stopped (or killed with SIGKILL) and started again on its port."""

    def spawn(self, *args):
        p = subprocess.Popen([ROOMCAT, "--reconnect", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)

        def cleanup():
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        self.addCleanup(cleanup)
        return p, LineLog(p.stdout), LineLog(p.stderr)

    def send(self, p, text):
        p.stdin.write(text.encode())
        p.stdin.flush()

    def say(self, client, room, text, id):
        client.send({"op": "say", "room": room, "text": text, "id": id})
        client.wait_for("ok", id=id)  # in a persisted room: committed

    def test_persisted_keyed_room_resumes_and_replays_what_was_missed(self):
        state = tempfile.TemporaryDirectory(prefix="roomcat-test-")
        self.addCleanup(state.cleanup)
        conf = (f'[limits]\nrate = 10000\nburst = 10000\n[history]\npath = "{state.name}/history.db"\n'
                f'[[rooms]]\nname = "vault"\npersist = true\nkey = "{hash_key(KEY)}"\n')
        d1 = self.start(conf)
        port = d1.port
        p, out, err = self.spawn(f"127.0.0.1:{port}", "--nick", "ann")
        self.send(p, f"/join vault {KEY}\n")
        out.wait_for(r"you joined vault")
        bob = self.connect(d1, nick="bob")
        bob.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        self.say(bob, "vault", "before", 1)
        out.wait_for(r"^\[vault\] bob: before$")

        # A clean stop: the database keeps its epoch, so the room can be resumed (after a
        # kill -9 it could not: test_history's kill -9 test).
        d1.stop()
        lost = out.wait_for(r"connection lost")
        self.assertTrue(lost.startswith("* connection lost (") and lost.endswith("); reconnecting"), lost)
        # While roomcat's retries are refused, the room goes on in a roomd on a unix socket only,
        # and a line is typed: it waits for the re-join.
        d2 = self.start(conf, listen=("unix:{tmp}/d2.sock",))
        carl = self.raw(d2.addresses[0][len("unix:"):])
        carl.call({"op": "nick", "nick": "carl"}, "ok")
        carl.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        self.say(carl, "vault", "away 1", 1)
        self.say(carl, "vault", "away 2", 2)
        self.send(p, "typed while away\n")
        carl.close()
        d2.stop()

        mark = out.mark()
        self.start(conf, listen=(f"127.0.0.1:{port}",))
        line = out.wait_for(r"reconnected", start=mark)
        self.assertEqual(line, "* reconnected as ann; vault: resumed, 2 missed messages replayed")
        out.wait_for(r"^\[vault\] ann: typed while away$", start=mark)
        with out.cond:
            after = out.lines[mark:]
        self.assertEqual(after, [line, "[vault] carl: away 1", "[vault] carl: away 2", "[vault] ann: typed while away"])
        self.assertEqual(out.text().count("bob: before"), 1)  # replayed messages are not shown twice
        p.stdin.close()
        self.assertEqual(p.wait(timeout=harness.WAIT), 0, err.text())
        self.assertEqual(err.text(), "")

    def test_memory_only_room_after_restart_may_have_missed_messages(self):
        conf = '[[rooms]]\nname = "lobby"\npersist = false\n'
        d1 = self.start(conf)
        port = d1.port
        p, out, err = self.spawn("--json", f"127.0.0.1:{port}")
        self.send(p, '{"op":"nick","nick":"jay","id":1}\n{"op":"join","room":"lobby","id":2}\n')
        first = json.loads(out.wait_for(r'^\{"op":"joined","id":2'))
        self.assertIsInstance(first["epoch"], str)
        bob = self.connect(d1, nick="bob", join=["lobby"])
        self.say(bob, "lobby", "gone soon", 1)
        out.wait_for(r'"text":"gone soon"')

        os.kill(d1.proc.pid, signal.SIGKILL)
        d1.kill()
        err.wait_for(r"^roomcat: connection lost \(connection closed by server\); reconnecting$")
        self.start(conf, listen=(f"127.0.0.1:{port}",))
        line = err.wait_for(r"reconnected")
        self.assertEqual(line, "roomcat: reconnected as jay; lobby: messages may have been missed")
        # The re-join round's replies are passed through, with roomcat's own ids.
        nick = json.loads(out.wait_for(r'^\{"op":"ok","id":"roomcat-'))
        self.assertEqual(nick["nick"], "jay")
        joined = json.loads(out.wait_for(r'^\{"op":"joined","id":"roomcat-'))
        self.assertEqual((joined["room"], joined["resumed"]), ("lobby", False))
        self.assertNotEqual(joined["epoch"], first["epoch"])
        self.assertEqual(joined["history"], [])
        self.send(p, '{"op":"say","room":"lobby","text":"back","id":3}\n')
        out.wait_for(r'^\{"op":"ok","id":3,"seq":1\}$')
        p.stdin.close()
        self.assertEqual(p.wait(timeout=harness.WAIT), 0, err.text())

    def test_taken_nick_stays_the_guest_one_and_a_live_room_resumes(self):
        d = self.start("[[rooms]]\nname = \"lobby\"\npersist = false\n")
        gate = harness.Gate(d.port)
        self.addCleanup(gate.close)
        watcher = self.connect(d, nick="watcher", join=["lobby"])
        p, out, err = self.spawn(f"127.0.0.1:{gate.port}", "--nick", "ann", "--join", "lobby")
        out.wait_for(r"you joined lobby")
        watcher.wait_for("presence", event="join", nick="ann")
        self.say(watcher, "lobby", "seen", 1)
        out.wait_for(r"^\[lobby\] watcher: seen$")

        gate.cut()  # roomcat's next attempt is held at the gate
        out.wait_for(r"connection lost")
        watcher.wait_for("presence", event="leave", nick="ann")
        self.connect(d, nick="ann")  # someone takes the nick meanwhile
        self.say(watcher, "lobby", "missed", 2)
        mark = out.mark()
        gate.release()
        line = out.wait_for(r"reconnected", start=mark)
        self.assertRegex(line, r"^\* reconnected as guest-\d+ \(nick ann is taken\); "
                               r"lobby: resumed, 1 missed message replayed$")
        out.wait_for(r"^\[lobby\] watcher: missed$", start=mark)
        self.send(p, "back\n")
        self.assertRegex(watcher.wait_for("message", text="back")["from"], r"^guest-\d+$")
        self.assertEqual(out.text().count("watcher: seen"), 1)
        p.stdin.close()
        self.assertEqual(p.wait(timeout=harness.WAIT), 0, err.text())

    def test_unanswered_says_are_sent_again_and_published_once(self):
        """Says lost with the connection go out again after the re-join with their msg_id: those
        the server had published are answered `duplicate` (not published again, not shown
        twice), those it never read are published now. Every line once, in order."""
        d = self.start("[limits]\nrate = 10000\nburst = 10000\n[[rooms]]\nname = \"lobby\"\npersist = false\n")
        gate = harness.Gate(d.port)
        self.addCleanup(gate.close)
        reader = self.connect(d, nick="reader", join=["lobby"])
        p, out, err = self.spawn(f"127.0.0.1:{gate.port}", "--nick", "ann", "--join", "lobby")
        out.wait_for(r"you joined lobby")
        lines = [f"line {i}" for i in range(20)]
        got, leaves = [], []

        def read_until(done):
            while not done():
                m = reader.recv()
                if m["op"] == "message":  # one published twice would be here
                    got.append((m["from"], m["text"]))
                elif m["op"] == "presence" and m["event"] == "leave":
                    leaves.append(m["nick"])

        self.send(p, "".join(l + "\n" for l in lines[0:5]))
        read_until(lambda: len(got) >= 5)
        self.send(p, "/ping\n")  # answered after line 4's ok: nothing of theirs is in flight now
        out.wait_for(r"^\* pong$")
        # The server takes these and publishes them, but roomcat hears nothing back.
        gate.drop_replies.set()
        self.send(p, "".join(l + "\n" for l in lines[5:10]))
        read_until(lambda: len(got) >= 10)
        # These never reach the server.
        gate.drop_requests.set()
        self.send(p, "".join(l + "\n" for l in lines[10:15]))
        gate.wait_count(lambda g: g.dropped_requests >= 5)
        gate.cut()
        lost = out.wait_for(r"connection lost")
        self.assertEqual(lost, "* connection lost (connection closed by server); reconnecting "
                               "(10 says unanswered, to be sent again)")
        self.send(p, "".join(l + "\n" for l in lines[15:20]))  # typed while away: they wait
        gate.drop_replies.clear()
        gate.drop_requests.clear()
        mark = out.mark()
        gate.release()
        line = out.wait_for(r"reconnected", start=mark)
        self.assertEqual(line, "* reconnected as ann; lobby: resumed, 5 missed messages replayed")
        read_until(lambda: len(got) >= 20)
        p.stdin.close()
        self.assertEqual(p.wait(timeout=harness.WAIT), 0, err.text())
        read_until(lambda: len(leaves) >= 2)  # the cut's, then the bye's
        self.assertEqual(got, [("ann", l) for l in lines])
        self.assertEqual(leaves, ["ann", "ann"])
        shown = [l for l in out.lines if l.startswith("[lobby] ann: ")]
        self.assertEqual(shown, [f"[lobby] ann: {l}" for l in lines])
        self.assertEqual(err.text(), "")

    def test_end_of_input_while_disconnected_exits_1(self):
        d = self.start()
        p, out, err = self.spawn(f"127.0.0.1:{d.port}", "--nick", "kim", "--join", "lobby")
        out.wait_for(r"you joined lobby")
        os.kill(d.proc.pid, signal.SIGKILL)
        d.kill()
        out.wait_for(r"connection lost")
        # stdin's end while disconnected: nothing to finish on.
        self.send(p, "never sent\n")
        p.stdin.close()
        self.assertEqual(p.wait(timeout=harness.WAIT), 1)
        err.wait_for(r"^roomcat: end of input while disconnected; 1 line not sent$")


class Interactive(DaemonTest):
    """A person at a terminal: roomcat in tmux, driven by send-keys, read by capture-pane."""

    def setUp(self):
        super().setUp()
        if not shutil.which("tmux"):
            self.fail("tmux is required; ./quickstart.sh installs it")
        # One tmux server per test: a new-session right after kill-server on the same socket
        # can fail ("server exited unexpectedly").
        self.tmux_socket = f"roomcat-test-{os.getpid()}-{self._testMethodName}"

    def tearDown(self):
        subprocess.run(["tmux", "-L", self.tmux_socket, "kill-server"], capture_output=True)
        super().tearDown()

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True, check=True,
                              timeout=harness.WAIT).stdout.decode()

    def screen(self):
        return [l.rstrip() for l in self.tmux("capture-pane", "-p", "-t", "rc").splitlines() if l.strip()]

    def wait_screen(self, predicate, what):
        deadline = time.monotonic() + harness.WAIT
        while time.monotonic() < deadline:
            lines = self.screen()
            if predicate(lines):
                return lines
            time.sleep(0.05)  # polling the pane: tmux has no change notification
        raise AssertionError(f"screen never showed {what}:\n" + "\n".join(self.screen()))

    def test_message_arrives_above_the_half_typed_line(self):
        d = self.start()
        self.tmux("new-session", "-d", "-s", "rc", "-x", "120", "-y", "30",
                  f"{ROOMCAT} 127.0.0.1:{d.port} --nick ann --join lobby; echo EXIT=$?; sleep 60")
        self.wait_screen(lambda l: any("you joined lobby" in x for x in l), "the join")
        self.tmux("send-keys", "-t", "rc", "half typ")
        self.wait_screen(lambda l: l[-1] == "[lobby]> half typ", "the typed text")
        bob = self.connect(d, nick="bob", join=["lobby"])
        bob.send({"op": "say", "room": "lobby", "text": "interrupting!"})
        lines = self.wait_screen(lambda l: "[lobby] bob: interrupting!" in l, "bob's message")
        # The message is above the prompt, and the prompt still holds what was typed.
        self.assertEqual(lines[-1], "[lobby]> half typ")
        self.assertLess(lines.index("[lobby] bob: interrupting!"), len(lines) - 1)
        self.tmux("send-keys", "-t", "rc", "ed", "Enter")
        self.assertEqual(bob.wait_for("message", **{"from": "ann"})["text"], "half typed")
        self.tmux("send-keys", "-t", "rc", "C-d")
        self.wait_screen(lambda l: "EXIT=0" in l, "roomcat exiting 0 after Ctrl-D")
        bob.wait_for("presence", event="leave", nick="ann")

    def test_ctrl_c_leaves_cleanly(self):
        d = self.start()
        watcher = self.connect(d, join=["lobby"])
        self.tmux("new-session", "-d", "-s", "rc", "-x", "120", "-y", "30",
                  f"{ROOMCAT} 127.0.0.1:{d.port} --nick cee --join lobby; echo EXIT=$?; sleep 60")
        self.wait_screen(lambda l: any("you joined lobby" in x for x in l), "the join")
        self.tmux("send-keys", "-t", "rc", "never sent", "C-c")
        self.wait_screen(lambda l: "EXIT=0" in l, "roomcat exiting 0 after Ctrl-C")
        watcher.wait_for("presence", event="leave", nick="cee")


if __name__ == "__main__":
    harness.run()
