"""The web client (web/) in a real browser against the real roomd (issue 18).

Debian's chromium, driven by Playwright (tests/browser/chat.mjs), opens the page from a
roomd WebSocket listener whose web_root is this source tree's web/ directory. Two pages and
a plain TCP client share a room: everyone sees every message in one seq order; user text is
never markup; whispers and leave work; after a restart of roomd the pages reconnect and
rejoin with since/epoch and say whether they missed anything.

chromium, node and tests/browser/node_modules are required: without them this test FAILS
(./quickstart.sh test installs them).
"""
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
from harness import WAIT, DaemonTest

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WEB_ROOT = os.path.join(SOURCE, "web")
BROWSER_DIR = os.path.join(SOURCE, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.path.join(os.environ.get("ROOMD_BUILD_DIR", os.path.join(SOURCE, "build")), "browser-artifacts")

# Console errors a page may log while the server is away (the reconnect test) or for the
# icon the browser asks for on its own.
EXPECTED_CONSOLE = ("WebSocket connection to", "ERR_CONNECTION_REFUSED", "favicon.ico")


def missing_tools():
    """What the browser test needs and this machine lacks (empty: all there)."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not shutil.which("node"):
        missing.append("node (apt-get install nodejs)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        missing.append(f"{BROWSER_DIR}/node_modules/playwright-core (run: npm ci in tests/browser)")
    return missing


class Browser:
    """chat.mjs as a child process: one JSON command per line, one JSON reply per line."""

    def __init__(self):
        self.proc = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "chat.mjs")], cwd=BROWSER_DIR,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, CHROMIUM=CHROMIUM, CHAT_TIMEOUT_MS=str(int(WAIT * 1000))))
        self.out = harness.LineLog(self.proc.stdout)
        self.err = harness.LineLog(self.proc.stderr)
        self.next_id = 1
        self.lock = threading.Lock()
        ready = self.reply_where(lambda r: r.get("ready"), timeout=WAIT * 4)
        self.version = ready["version"]

    def reply_where(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.out.cond:
            while True:
                for line in self.out.lines:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0 or self.out.closed:
                    raise AssertionError("chat.mjs did not answer in time; stdout:\n" + self.out.text()[-3000:] +
                                         "\nstderr:\n" + self.err.text()[-3000:])
                self.out.cond.wait(left)

    def start(self, cmd, **args):
        """Sends a command; returns its id (wait with result)."""
        with self.lock:
            cid = self.next_id
            self.next_id += 1
            self.proc.stdin.write((json.dumps(dict(args, cmd=cmd, id=cid)) + "\n").encode())
            self.proc.stdin.flush()
        return cid

    def result(self, cid):
        # chat.mjs bounds each wait by WAIT; this bound only catches a stuck driver.
        r = self.reply_where(lambda r: r.get("id") == cid, timeout=WAIT * 3)
        if not r["ok"]:
            raise AssertionError(f"browser: {r['error']}")
        return r

    def __call__(self, cmd, **args):
        return self.result(self.start(cmd, **args))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.thread.join(WAIT)
        self.err.thread.join(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()


def config(history_dir, ws="127.0.0.1:0", plain="127.0.0.1:0", limits="", rooms="", server=""):
    return f"""
[server]
listen = ["{plain}", {{ address = "{ws}", websocket = true }}]
dynamic_rooms = true
{server}
[websocket]
web_root = "{WEB_ROOT}"
[limits]
rate = 1000
burst = 1000
{limits}
[history]
path = "{history_dir}/history.db"
[[rooms]]
name = "lobby"
topic = "General"
persist = true
{rooms}
"""



class BrowserTest(DaemonTest):
    def setUp(self):
        super().setUp()
        missing = missing_tools()
        if missing:
            self.fail("the browser test needs: " + "; ".join(missing))
        self.history = tempfile.TemporaryDirectory(prefix="roomd-browser-")
        self.addCleanup(self.history.cleanup)
        self.browser = Browser()
        self.addCleanup(self.browser.close)

    def start_web(self, ws="127.0.0.1:0", plain="127.0.0.1:0", **kw):
        d = self.start(config(self.history.name, ws, plain, **kw), listen=(), expect_listeners=2)
        d.plain_port = int(d.addresses[0].rsplit(":", 1)[1])
        d.ws_port = int(d.addresses[1].rsplit(":", 1)[1])
        d.log.wait_for(r"listening on 127\.0\.0\.1:%d \(websocket\)" % d.ws_port)
        return d

    def tcp(self, d, nick, join=()):
        c = harness.Client(("127.0.0.1", d.plain_port))
        self.clients.append(c)
        c.call({"op": "nick", "nick": nick}, "ok")
        for room in join:
            c.call({"op": "join", "room": room}, "joined")
        return c

    def page(self, d, name, rooms=("lobby",), port=None):
        b = self.browser
        b("open", page=name, url=f"http://127.0.0.1:{port or d.ws_port}/")
        b("nick", page=name, nick=name)
        for room in rooms:
            b("join", page=name, room=room)

    def shown(self, name, room, count):
        return [(m["seq"], m["from"], m["text"]) for m in self.browser("messages", page=name, room=room,
                                                                        count=count)["messages"]]

    def tcp_messages(self, c, room, count):
        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < count:
            msg = c.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("op") == "message" and msg.get("room") == room:
                got.append((msg["seq"], msg["from"], msg.get("text")))
        return got

    def assert_no_page_errors(self, *names):
        for name in names:
            errors = [e for e in self.browser("errors", page=name)["errors"]
                      if not any(x in e for x in EXPECTED_CONSOLE)]
            self.assertEqual(errors, [], f"page {name}")

    def screenshot(self, name, file):
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, file)
        self.browser("screenshot", page=name, path=path)
        self.assertGreater(os.path.getsize(path), 1000)
        print(f"\nscreenshot: {path}", flush=True)

    # -- the tests

    def test_two_pages_and_a_tcp_client_see_one_order(self):
        d = self.start_web()
        b = self.browser
        self.page(d, "ann")
        self.page(d, "bob")
        carol = self.tcp(d, "carol", ["lobby"])
        for name in ("ann", "bob"):
            b("members", page=name, nicks=["ann", "bob", "carol"], count=3)
        b("line", page="ann", room="lobby", kind="presence", text="carol joined", data={"event": "join"})

        # All three at once: the pages type while carol's lines are on the wire.
        markup = '<img src=x onerror="document.title=1"><b>bold</b> & "quotes"'
        texts = {n: [f"{n} {i}" for i in range(1, 6)] for n in ("ann", "bob")}
        typing = [b.start("type", page=n, lines=lines) for n, lines in texts.items()]
        for i in range(1, 6):
            carol.send({"op": "say", "room": "lobby", "text": f"carol {i}"})
        carol.send({"op": "say", "room": "lobby", "text": markup})
        for cid in typing:
            b.result(cid)

        total = 16
        seen_by_carol = self.tcp_messages(carol, "lobby", total)
        seen_by_ann = self.shown("ann", "lobby", total)
        seen_by_bob = self.shown("bob", "lobby", total)
        self.assertEqual(len(seen_by_carol), total)
        self.assertEqual(seen_by_ann, seen_by_carol)
        self.assertEqual(seen_by_bob, seen_by_carol)
        seqs = [s for s, _, _ in seen_by_carol]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + total)), "consecutive seqs")
        for n, lines in texts.items():  # each sender's own lines keep the order typed
            self.assertEqual([t for _, f, t in seen_by_carol if f == n], lines)
        # User text is text: the markup arrived verbatim and made no element.
        self.assertIn(markup, [t for _, _, t in seen_by_ann])
        self.assertEqual(b("count", page="ann", selector="#logs img, #logs b")["count"], 0)

        # Whispers both ways: a page's /msg reaches the TCP client, and back.
        b("type", page="ann", lines=["/msg carol psst <i>carol</i>"])
        w = carol.wait_for("whisper", **{"from": "ann"})
        self.assertEqual(w["text"], "psst <i>carol</i>")
        b("line", page="ann", kind="whisper", text="psst <i>carol</i>")
        carol.call({"op": "whisper", "to": "bob", "text": "hi bob", "id": "w"}, "ok")
        b("line", page="bob", kind="whisper", text="hi bob", data={"from": "carol"})

        # A second room with a tab of its own; switching shows its members.
        b("join", page="ann", room="side")
        b("members", page="ann", nicks=["ann"], count=1)
        b("type", page="ann", lines=["only in side"])
        self.assertEqual(self.shown("ann", "side", 1), [(1, "ann", "only in side")])
        b("activate", page="ann", room="lobby")
        b("members", page="ann", nicks=["ann", "bob", "carol"], count=3)

        self.screenshot("ann", "chat.png")

        # A line over max_frame_bytes is refused by the page, not sent (roomd would close
        # the WebSocket with 1009); the connection stays.
        b("type", page="bob", lines=["x" * 70000])
        b("line", page="bob", kind="error", text="too long for the server")
        carol.assert_quiet()

        # bob leaves: his tab goes, the others see him go.
        b("leave", page="bob", room="lobby")
        carol.wait_for("presence", event="leave", nick="bob")
        b("members", page="ann", nicks=["ann", "carol"], count=2)
        b("line", page="ann", room="lobby", kind="presence", text="bob left")
        self.assert_no_page_errors("ann", "bob")

    def test_pages_resume_after_a_restart(self):
        d = self.start_web()
        b = self.browser
        self.page(d, "ann", rooms=("lobby", "side"))
        self.page(d, "bob", rooms=("lobby",))
        carol = self.tcp(d, "carol", ["lobby"])
        carol.send({"op": "say", "room": "lobby", "text": "before 1"})
        carol.send({"op": "say", "room": "lobby", "text": "before 2", "id": 1})
        carol.wait_for("ok", id=1)
        b("type", page="ann", lines=["in side"])
        for name in ("ann", "bob"):
            self.shown(name, "lobby", 2)
        self.shown("ann", "side", 1)

        # Restart on the same ports: lobby is persisted (same epoch, its messages in the
        # ring), side is a dynamic room (made again: a new epoch).
        ws_port, plain_port = d.ws_port, d.plain_port
        d.stop()
        self.daemons.remove(d)
        b("status", page="ann", state="reconnecting")
        d = self.start_web(ws=f"127.0.0.1:{ws_port}", plain=f"127.0.0.1:{plain_port}")
        carol = self.tcp(d, "carol", ["lobby"])
        carol.send({"op": "say", "room": "lobby", "text": "while you were away", "id": 2})
        self.assertEqual(carol.wait_for("ok", id=2)["seq"], 3)

        for name in ("ann", "bob"):
            b("status", page=name, state="open")
            lines = b("line", page=name, room="lobby", kind="resume", data={"resumed": "true"})["lines"]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("resumed: true", lines[0])
        side = b("line", page="ann", room="side", kind="resume", data={"resumed": "false"})["lines"]
        self.assertEqual(len(side), 1, side)
        self.assertIn("resumed: false", side[0])

        # Nothing lost, nothing twice, one order; and the pages talk again after the resume.
        b("type", page="bob", lines=["bob is back"])
        want = [(1, "carol", "before 1"), (2, "carol", "before 2"), (3, "carol", "while you were away"),
                (4, "bob", "bob is back")]
        self.assertEqual(self.tcp_messages(carol, "lobby", 1), [want[3]])
        b("activate", page="ann", room="lobby")
        self.assertEqual(self.shown("ann", "lobby", 4), want)
        self.assertEqual(self.shown("bob", "lobby", 4), want)
        b("members", page="ann", nicks=["ann", "bob", "carol"], count=3)
        self.screenshot("ann", "resumed.png")
        self.assert_no_page_errors("ann", "bob")

    def test_page_resumes_after_a_cut_and_shows_what_it_missed(self):
        key_hash = subprocess.run([harness.ROOMD, "--hash-key"], input=b"sesame\n", capture_output=True,
                                  check=True, timeout=WAIT).stdout.decode().strip()
        d = self.start_web(rooms=f'[[rooms]]\nname = "vault"\nkey = "{key_hash}"')
        proxy = harness.Gate(d.ws_port)
        self.addCleanup(proxy.close)
        b = self.browser
        self.page(d, "ann", rooms=("vault sesame", "lobby"), port=proxy.port)
        carol = self.tcp(d, "carol", ["lobby"])
        carol.send({"op": "say", "room": "lobby", "text": "one", "id": 1})
        carol.wait_for("ok", id=1)
        self.shown("ann", "lobby", 1)

        # The page's connection is cut; roomd sees ann go; carol talks on meanwhile.
        proxy.cut()
        carol.wait_for("presence", event="leave", nick="ann")
        b("status", page="ann", state="reconnecting")
        for i, text in ((2, "two"), (3, "three")):
            carol.send({"op": "say", "room": "lobby", "text": text, "id": i})
            carol.wait_for("ok", id=i)

        proxy.release()
        carol.wait_for("presence", event="join", nick="ann")  # the nick came back with the page
        lines = b("line", page="ann", room="lobby", kind="resume", data={"resumed": "true"})["lines"]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("2 messages caught up", lines[0])
        # The keyed room was joined again with its key.
        b("line", page="ann", room="vault", kind="resume", data={"resumed": "true"})
        b("type", page="ann", lines=["four"])
        self.assertEqual(carol.wait_for("message", text="four")["seq"], 4)
        self.assertEqual(self.shown("ann", "lobby", 4),
                         [(1, "carol", "one"), (2, "carol", "two"), (3, "carol", "three"), (4, "ann", "four")])
        b("line", page="ann", room="lobby", kind="notice", text="connection lost")
        self.assert_no_page_errors("ann")

    def test_page_sends_unanswered_messages_again_once_each(self):
        # Says the cut connection left unanswered go out again after the rejoin with their
        # msg_id: the ones roomd had published are answered duplicate, the ones it never read
        # are published now; everyone sees each once.
        d = self.start_web()
        proxy = harness.Gate(d.ws_port)
        self.addCleanup(proxy.close)
        b = self.browser
        self.page(d, "ann", port=proxy.port)
        carol = self.tcp(d, "carol", ["lobby"])
        got = []

        def read_until(text):
            while not got or got[-1][1] != text:
                m = carol.recv()
                if m["op"] == "message":  # one published twice would be here
                    got.append((m["from"], m["text"]))
        b("type", page="ann", lines=["a1"])
        read_until("a1")
        self.shown("ann", "lobby", 1)
        proxy.drop_replies.set()  # published, but the page hears nothing back
        b("type", page="ann", lines=["a2", "a3"])
        read_until("a3")
        proxy.drop_requests.set()  # never reach roomd
        b("type", page="ann", lines=["a4", "a5"])
        proxy.wait_count(lambda g: g.dropped_request_bytes >= 2 * 50)  # two say frames (50 bytes at least)
        proxy.cut()
        # 4, or 5 when a1's ok was still on its way when the replies were dropped
        b("line", page="ann", room="lobby", kind="notice", text="messages unanswered: sent again once back")
        proxy.drop_replies.clear()
        proxy.drop_requests.clear()
        proxy.release()
        b("line", page="ann", room="lobby", kind="resume", data={"resumed": "true"})
        read_until("a5")
        carol.send({"op": "say", "room": "lobby", "text": "end", "id": "end"})
        read_until("end")  # every message published before it has been read
        want = [("ann", f"a{i}") for i in range(1, 6)]
        self.assertEqual(got, want + [("carol", "end")])
        shown = self.shown("ann", "lobby", 6)
        self.assertEqual([(f, t) for _, f, t in shown], want + [("carol", "end")])
        self.assertEqual([s for s, _, _ in shown], list(range(1, 7)))
        self.assert_no_page_errors("ann")

    def test_page_leaves_a_draining_server_and_resumes(self):
        # Lame duck (SIGUSR2): the page is told its time, leaves then for its own URL, and
        # resumes on whatever answers there (here the next roomd on the freed ports).
        lame = "lame_duck_grace_s = 1\nlame_duck_duration_s = 2"
        d = self.start_web(server=lame)
        b = self.browser
        self.page(d, "ann")
        carol = self.tcp(d, "carol", ["lobby"])
        carol.send({"op": "say", "room": "lobby", "text": "one", "id": 1})
        carol.wait_for("ok", id=1)
        self.shown("ann", "lobby", 1)
        ws_port, plain_port = d.ws_port, d.plain_port
        d.signal(signal.SIGUSR2)
        b("line", page="ann", room="lobby", kind="notice", text="the server is draining for a restart")
        b("line", page="ann", room="lobby", kind="notice", text="moving: the server is draining")
        self.assertEqual(d.wait_exit(), 0)  # both left (or were closed): it exits by itself
        d.stop()
        self.daemons.remove(d)
        d = self.start_web(ws=f"127.0.0.1:{ws_port}", plain=f"127.0.0.1:{plain_port}", server=lame)
        b("status", page="ann", state="open")
        lines = b("line", page="ann", room="lobby", kind="resume", data={"resumed": "true"})["lines"]
        self.assertEqual(len(lines), 1, lines)
        carol = self.tcp(d, "carol", ["lobby"])
        carol.send({"op": "say", "room": "lobby", "text": "two", "id": 2})
        self.assertEqual(carol.wait_for("ok", id=2)["seq"], 2)
        self.assertEqual(self.shown("ann", "lobby", 2), [(1, "carol", "one"), (2, "carol", "two")])
        self.assert_no_page_errors("ann")

    def test_member_pages_and_presence_summaries(self):
        # Pages of 2 members; the room "big" summarizes presence above 2 members.
        d = self.start_web(limits="member_page = 2\npresence_interval_ms = 50",
                           rooms='[[rooms]]\nname = "big"\npresence_threshold = 2')
        b = self.browser
        m1 = self.tcp(d, "m1", ["big"])
        self.tcp(d, "m2", ["big"])
        self.tcp(d, "m3", ["big"])
        m1.wait_for("presence", event="summary", count=3)  # m3's join, before the page is there
        self.page(d, "ann", rooms=("big",))
        b("line", page="ann", room="big", kind="presence", text="1 joined: ann", data={"event": "summary"})
        # joined listed the first page (byte order); "more" reads the next one.
        b("members", page="ann", nicks=["ann", "m1"], count=4)
        b("click", page="ann", selector="#members-more")
        b("members", page="ann", nicks=["ann", "m1", "m2", "m3"], count=4)
        self.assertEqual(b("count", page="ann", selector="#members-more:not([hidden])")["count"], 0)
        # Summaries keep the list and the count.
        self.tcp(d, "m4", ["big"])
        b("line", page="ann", room="big", kind="presence", text="1 joined: m4", data={"event": "summary"})
        b("members", page="ann", nicks=["ann", "m1", "m2", "m3", "m4"], count=5)
        m1.send({"op": "bye"})
        b("line", page="ann", room="big", kind="presence", text="1 left: m1", data={"event": "summary"})
        b("members", page="ann", nicks=["ann", "m2", "m3", "m4"], count=4)
        self.assert_no_page_errors("ann")


if __name__ == "__main__":
    harness.run()
