"""roomcat against the real roomd: pipe mode, --json, unix target, refused, server gone."""
import json
import os
import shutil
import signal
import subprocess
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


class Interactive(DaemonTest):
    """A person at a terminal: roomcat in tmux, driven by send-keys, read by capture-pane."""

    def setUp(self):
        super().setUp()
        if not shutil.which("tmux"):
            self.fail("tmux is required; ./quickstart.sh installs it")
        self.tmux_socket = f"roomcat-test-{os.getpid()}"

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
