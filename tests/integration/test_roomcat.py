"""roomcat against the real roomd: pipe mode, --json, unix target, refused, server gone."""
import os
import signal
import subprocess

import harness
from harness import DaemonTest, LineLog

ROOMCAT = os.environ.get("ROOMCAT_BIN", os.path.join(os.path.dirname(harness.ROOMD), "roomcat"))


def roomcat(*args, stdin=b""):
    return subprocess.run([ROOMCAT, *args], input=stdin, capture_output=True, timeout=harness.WAIT)


class Roomcat(DaemonTest):
    def test_pipe_mode_delivers_every_line_and_exits_0(self):
        # Under the rate limit: roomcat does not yet pace itself (see docs/roomcat.md).
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


if __name__ == "__main__":
    harness.run()
