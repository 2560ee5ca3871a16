"""Slow consumers by both policies, read pausing, idle ping/timeout (SPEC §2, §5)."""
import fcntl
import re
import select
import socket
import signal
import termios
import threading
import time
import harness
from harness import DaemonTest

N = 6000
TEXT = "x" * 2000  # 6000 x 2 KB = 12 MB: more than the kernel's socket buffers can hide


def config(policy):
    return f"""
[limits]
max_outbound_bytes = 65536
slow_consumer = "{policy}"
rate = 1000000
burst = 1000000
[[rooms]]
name = "lobby"
"""


class SlowConsumer(DaemonTest):
    def flood(self, d):
        """pub says N messages; `normal` keeps up, `slow` never reads.

        pub sends in batches that fit the limit and waits until it and `normal` have read each
        batch, so only the client that does not read falls behind."""
        pub = self.connect(d, nick="pub", join=["lobby"])
        normal = self.connect(d, nick="normal", join=["lobby"])
        slow = self.connect(d, nick="slow", join=["lobby"], rcvbuf=4096)
        pub.wait_for("presence", event="join", nick="slow")
        normal.wait_for("presence", event="join", nick="slow")
        got = {"pub": [], "normal": []}
        self.noticed = []
        batch = 10
        for start in range(0, N, batch):
            for i in range(start, start + batch):
                pub.send({"op": "say", "room": "lobby", "text": TEXT, "data": i})
            for name, client in (("pub", pub), ("normal", normal)):
                while len(got[name]) < start + batch:
                    m = client.recv()
                    if m["op"] == "message":
                        got[name].append(m)
                    else:
                        self.noticed.append(m)
        for name in got:
            # A normal reader gets every message, in order, while the slow one is handled.
            self.assertEqual([m["data"] for m in got[name]], list(range(N)))
            self.assertEqual([m["seq"] for m in got[name]], list(range(1, N + 1)))
        return pub, normal, slow

    def test_disconnect_policy(self):
        d = self.start(config("disconnect"))
        pub, normal, slow = self.flood(d)
        d.log.wait_for(r"slow consumer")
        lines = slow.wait_closed()  # whatever it had, then the error, then EOF
        self.assertIn('"code":"slow_consumer"', lines[-1])
        self.assertLess(len(lines), N)
        leave = {"op": "presence", "room": "lobby", "event": "leave", "nick": "slow"}
        if leave not in self.noticed:
            normal.wait_for("presence", event="leave", nick="slow")
        normal.assert_quiet()

    def test_drop_policy(self):
        d = self.start(config("drop"))
        pub, normal, slow = self.flood(d)
        # The slow client now reads: some messages, skipped ones counted, and it stays on.
        seqs, dropped = [], 0
        while len(seqs) + dropped < N:
            m = slow.recv()
            if m["op"] == "message":
                seqs.append(m["seq"])
            elif m["op"] == "system":
                self.assertEqual(m["event"], "dropped")
                self.assertEqual(m["room"], "lobby")
                dropped += m["count"]
        self.assertGreater(dropped, 0)
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), len(seqs))
        slow.assert_quiet()
        slow.call({"op": "say", "room": "lobby", "text": "still here", "id": 1}, "message", seq=N + 1)

    def test_publisher_writing_16k_chunks_is_not_its_own_slow_consumer(self):
        """A publisher that reads everything but writes its says 16 KB at a time is never a
        slow consumer: the server stops taking its requests above half the limit, so the
        copies of its own messages cannot push its queue over the limit (SPEC §5)."""
        d = self.start(config("disconnect"))
        pub = self.connect(d, nick="pub", join=["lobby"])
        normal = self.connect(d, nick="normal", join=["lobby"])
        slow = self.connect(d, nick="slow", join=["lobby"], rcvbuf=4096)
        pub.wait_for("presence", event="join", nick="slow")
        normal.wait_for("presence", event="join", nick="slow")
        total, per_send = 8000, 16  # ~9 MB: more than socket buffers hide from the slow one
        text = "p" * 1000  # 16 say frames of ~1 KB: one ~16 KB send
        # `normal` is a bystander, not the subject: it must never fall a whole limit (64 KB,
        # ~60 copies) behind, or it is rightly cut, which a starved reader thread on a loaded
        # machine can do. So pub keeps at most `window` says ahead of what normal has read.
        # The window is above half the limit, so pub's own queue can still reach the point
        # where the server stops taking its requests.
        window = 40
        got = {"pub": [], "normal": []}
        other = {"pub": [], "normal": []}
        progress = threading.Condition()

        def read_all(name, client):
            try:
                while len(got[name]) < total:
                    m = client.recv()
                    (got[name] if m["op"] == "message" else other[name]).append(m)
                    if name == "normal":
                        with progress:
                            progress.notify_all()
                    if m.get("code") == "slow_consumer":
                        return
            except (harness.Closed, TimeoutError, OSError) as e:
                other[name].append({"op": "closed", "why": str(e)[:80]})
            with progress:
                progress.notify_all()

        def normal_caught_up(start):
            return len(got["normal"]) >= start + per_send - window or any(
                m["op"] in ("closed", "error") for m in other["normal"])

        readers = [threading.Thread(target=read_all, args=(n, c), daemon=True)
                   for n, c in (("pub", pub), ("normal", normal))]
        for r in readers:
            r.start()
        try:
            for start in range(0, total, per_send):
                with progress:
                    self.assertTrue(progress.wait_for(lambda: normal_caught_up(start), harness.WAIT),
                                    f"normal stopped reading at {len(got['normal'])}")
                pub.send("".join('{"op":"say","room":"lobby","text":"%s","data":%d}\n' % (text, i)
                                 for i in range(start, start + per_send)))
        except OSError as e:  # the server cut the publisher off
            other["pub"].append({"op": "send failed", "why": str(e)[:80]})
        for r in readers:
            r.join(2 * harness.WAIT)
            self.assertFalse(r.is_alive(), f"a reader is stuck; got {len(got['pub'])}, {len(got['normal'])}")
        leave = {"op": "presence", "room": "lobby", "event": "leave", "nick": "slow"}
        self.assertEqual([m for m in other["pub"] if m != leave], [],
                         "the publisher, which reads everything, was cut off")
        for name in got:
            self.assertEqual([m["data"] for m in got[name]], list(range(total)), name)
            self.assertEqual([m["seq"] for m in got[name]], list(range(1, total + 1)), name)
        lines = slow.wait_closed()
        self.assertTrue(not lines or '"code":"slow_consumer"' in lines[-1], lines[-1:])
        self.assertLess(len(lines), total)
        for client, name in ((pub, "pub"), (normal, "normal")):
            if leave not in other[name]:
                client.wait_for("presence", event="leave", nick="slow")
            client.assert_quiet()


class Idle(DaemonTest):
    def test_ping_then_timeout(self):
        d = self.start("[limits]\nidle_timeout_s = 2\n")
        silent = self.connect(d)
        lively = self.connect(d)
        self.assertEqual(silent.recv(timeout=harness.WAIT), {"op": "ping"})
        self.assertEqual(lively.recv(timeout=harness.WAIT), {"op": "ping"})
        lively.send({"op": "ping", "id": "alive"})  # any line counts as alive
        lively.expect("pong", id="alive")
        self.assertEqual(silent.wait_closed(), [])
        lively.send({"op": "ping", "id": 2})
        lively.wait_for("pong", id=2)  # still open
        d.log.wait_for(r"idle for")

    def test_a_line_never_ended_is_not_activity(self):
        """Only a whole line counts as alive (SPEC): a slowloris trickling a byte of an
        unfinished line now and then is closed at the idle timeout like a silent client."""
        d = self.start("[limits]\nidle_timeout_s = 2\n")
        trickler = self.connect(d)
        lively = self.connect(d)
        trickler.sock.settimeout(0.25)
        deadline = time.monotonic() + harness.WAIT + 4
        partial = b'{"op":"echo","text":"' + b"x" * 200
        closed = False
        sent = 0
        while time.monotonic() < deadline and not closed:
            try:
                trickler.sock.send(partial[sent % len(partial):][:1])
                sent += 1
                lively.send({"op": "ping", "id": sent})  # whole lines: alive
                while True:  # the ping, then EOF when the server closes it
                    if not trickler.sock.recv(4096):
                        closed = True
                        break
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed = True
        self.assertTrue(closed, "a client trickling bytes of an unfinished line was kept open")
        self.assertGreater(sent, 4)  # it kept trickling past half the timeout
        lively.send({"op": "ping", "id": "still"})
        lively.wait_for("pong", id="still")
        d.log.wait_for(r"idle for")



class ReadPause(DaemonTest):
    def test_client_that_does_not_read_is_not_read(self):
        """Replies are never dropped: a client that does not read them stops being read
        (its sends back up), and gets every reply, in order, once it reads."""
        d = self.start("[limits]\nmax_outbound_bytes = 65536\n")
        c = self.connect(d, rcvbuf=4096)
        other = self.connect(d)
        text = "e" * 4000
        frame = ('{"op":"echo","text":"%s","id":%%d}\n' % text)
        c.sock.setblocking(False)
        total = 20000  # 80 MB: far more than socket buffers and the queue limit can hold
        sent, pending = 0, b""
        while sent < total or pending:
            if not pending:
                pending = (frame % sent).encode()
                sent += 1
            # Paused, the server never reads again, so the socket stays unwritable.
            _, writable, _ = select.select([], [c.sock], [], 2.0)
            if not writable:
                break
            pending = pending[c.sock.send(pending):]
        self.assertLess(sent, total, "the server kept reading a client that never read")
        other.call({"op": "ping", "id": 1}, "pong", id=1)  # the loop is not blocked
        # Now it reads (in a thread) while it finishes sending: every reply arrives, in order.
        c.sock.setblocking(True)
        c.sock.settimeout(harness.WAIT)
        ids = []

        def read_all():
            while True:
                m = c.recv()
                if m["op"] == "pong":
                    return
                ids.append(m["id"])

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        c.send(pending)
        c.send({"op": "ping", "id": "end"})
        reader.join(harness.WAIT * 2)
        self.assertFalse(reader.is_alive())
        self.assertEqual(ids, list(range(len(ids))))
        self.assertEqual(len(ids), sent)



def unsent_bytes(sock):
    return int.from_bytes(fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"), "little")


class ReloadWhileBackedUp(DaemonTest):
    """A client the server stopped serving (its output over half the limit, its requests kept
    unread) is served again when a reload raises the limit and it drains: nothing stalls."""

    def run_case(self, new_limit):
        d = self.start(config("disconnect").replace("max_outbound_bytes = 65536", "max_outbound_bytes = 131072"))
        c = self.connect(d, rcvbuf=4096)
        n, text = 3000, "e" * 1000  # 3 MB of replies: more than the socket buffers hold
        data = "".join('{"op":"echo","id":%d,"text":"%s"}\n' % (i, text) for i in range(n)).encode()
        sender = threading.Thread(target=lambda: c.sock.sendall(data), daemon=True)
        sender.start()
        # The server has stopped reading when what we sent stops leaving our socket (it may
        # all sit in the server's receive buffer: then the count stays at 0).
        deadline, last, steady = time.monotonic() + harness.WAIT, -1, 0
        while steady < 5:
            self.assertLess(time.monotonic(), deadline, "the server never stopped reading")
            time.sleep(0.05)  # polling a socket counter, bounded by the deadline
            now = unsent_bytes(c.sock)
            steady = steady + 1 if now == last else 0
            last = now
        mark = d.log.mark()
        d.write_config(config("disconnect").replace("max_outbound_bytes = 65536", f"max_outbound_bytes = {new_limit}"))
        d.signal(signal.SIGHUP)
        d.log.wait_for("reloaded", start=mark)
        ids = []
        try:
            while len(ids) < n:
                ids.append(c.recv(timeout=10).get("id"))
        except TimeoutError:
            pass
        sender.join(10)
        self.assertEqual(len(ids), n, f"stalled after {len(ids)} of {n} replies")
        self.assertEqual(ids, list(range(n)))

    def test_reload_with_the_same_limit(self):
        self.run_case(131072)

    def test_reload_that_raises_the_limit(self):
        self.run_case(4194304)

def budget_config(policy, budget):
    """A server-wide output budget well under the per-client limit, so that only the budget
    can cut anyone; an admin socket for stats."""
    return f"""
[server]
listen = ["127.0.0.1:0", {{ address = "unix:{{tmp}}/admin.sock", admin = true }}]
[limits]
max_outbound_bytes = 4194304
max_total_outbound_bytes = {budget}
slow_consumer = "{policy}"
rate = 1000000
burst = 1000000
[[rooms]]
name = "a"
[[rooms]]
name = "b"
"""


BUDGET_TEXT = "y" * 2000


class OutputBudget(DaemonTest):
    """limits.max_total_outbound_bytes: over it, the largest queues are cut first, by their
    policy; a normal reader loses nothing."""

    def start_budget(self, policy, budget=2097152):
        d = self.start(budget_config(policy, budget), listen=(), expect_listeners=2)
        admin_path = [a for a in d.addresses if a.startswith("unix:")][0][5:]
        self.admin = self.raw(admin_path)
        self.pub = self.connect(d, nick="pub", join=["a", "b"])
        self.normal = self.connect(d, nick="normal", join=["a", "b"])
        # Two clients that never read: `big` is in both rooms, `small` only in `a`, which gets
        # a tenth of the messages. The kernel hides at most 4 MB (tcp_wmem) of either backlog,
        # so big's queue is the larger one whatever the kernel holds.
        self.big = self.connect(d, nick="big", join=["a", "b"], rcvbuf=4096)
        self.small = self.connect(d, nick="small", join=["a"], rcvbuf=4096)
        self.sent = {"a": 0, "b": 0}
        self.got = {name: {"a": [], "b": []} for name in ("pub", "normal")}
        self.seen = {name: [] for name in ("pub", "normal")}  # their presence events
        return d

    def stats(self):
        return self.admin.call({"op": "stats"}, "stats")

    def cut_line(self, d, client):
        port = client.sock.getsockname()[1]
        return re.compile(r"client 127\.0\.0\.1:%d has one of the largest queues .* over limits\.max_total_outbound_bytes" % port)

    def flood_round(self, rooms=("a",) + ("b",) * 9, batch=10):
        """pub says `batch` messages over `rooms`; pub and normal read them all before the next
        round, so only the clients that do not read fall behind."""
        for i in range(batch):
            room = rooms[i % len(rooms)]
            self.sent[room] += 1
            self.pub.send({"op": "say", "room": room, "text": BUDGET_TEXT, "data": self.sent[room]})
        for name, client in (("pub", self.pub), ("normal", self.normal)):
            while sum(map(len, self.got[name].values())) < sum(self.sent.values()):
                m = client.recv()
                if m["op"] == "message":
                    self.got[name][m["room"]].append(m["seq"])
                else:
                    self.assertEqual(m["op"], "presence", m)
                    self.seen[name].append(m)

    def flood_until(self, d, pattern=None, until=None, max_bytes=40 << 20):
        rounds = 0
        while not (until() if until else pattern.search(d.log.text())):
            rounds += 1
            self.assertLess(rounds * 10 * len(BUDGET_TEXT), max_bytes, "nobody was cut:\n" + d.log.text()[-2000:])
            self.flood_round()

    def assert_readers_got_everything(self):
        for name in self.got:
            for room in ("a", "b"):
                self.assertEqual(self.got[name][room], list(range(1, self.sent[room] + 1)), (name, room))

    def read_room(self, client, room, total):
        """Reads until `total` messages of `room` are accounted for; returns the seqs received
        and the drops reported (system/dropped); presence events go to self.presence."""
        seqs, dropped = [], 0
        self.presence = []
        while len(seqs) + dropped < total:
            m = client.recv()
            if m["op"] == "message":
                self.assertEqual(m["room"], room, m)
                seqs.append(m["seq"])
            elif m["op"] == "system":
                self.assertEqual(m["event"], "dropped", m)
                self.assertEqual(m["room"], room, m)
                dropped += m["count"]
            else:
                self.assertEqual(m["op"], "presence", m)
                self.presence.append(m)
        return seqs, dropped

    def wait_outbound_drained(self):
        deadline = time.monotonic() + harness.WAIT
        while self.stats()["outbound_bytes"] != 0:
            self.assertLess(time.monotonic(), deadline, "queued output never drained: %s" % self.stats())
            time.sleep(0.05)  # polling a counter, bounded by the deadline

    def test_disconnect_cuts_the_largest_queue_first(self):
        d = self.start_budget("disconnect")
        self.flood_until(d, self.cut_line(d, self.big))
        self.assert_readers_got_everything()
        stats = self.stats()
        self.assertEqual(stats["outbound_budget_cuts"], 1, d.log.text()[-2000:])
        self.assertEqual(stats["slow_consumers"], 1)
        self.assertGreater(stats["outbound_bytes"], 0)  # small's backlog is still queued
        self.assertNotIn("is a slow consumer", d.log.text(), "the per-client limit tripped, not the budget")
        self.assertIsNone(self.cut_line(d, self.small).search(d.log.text()), "the smaller queue was cut too")
        # big: what it had, then the error, then EOF.
        lines = self.big.wait_closed()
        self.assertIn('"code":"slow_consumer"', lines[-1])
        self.assertLess(len(lines), sum(self.sent.values()))
        # small was left alone: every message of its room, in order.
        seqs, dropped = self.read_room(self.small, "a", self.sent["a"])
        self.assertEqual((seqs, dropped), (list(range(1, self.sent["a"] + 1)), 0))
        if {"op": "presence", "room": "a", "event": "leave", "nick": "big"} not in self.presence:
            self.small.wait_for("presence", room="a", event="leave", nick="big")
        self.small.assert_quiet()
        leave = {"op": "presence", "room": "b", "event": "leave", "nick": "big"}
        if leave not in self.seen["normal"]:
            self.normal.wait_for("presence", room="b", event="leave", nick="big")
        self.wait_outbound_drained()

    def test_drop_skips_the_largest_queue_until_it_drains(self):
        d = self.start_budget("drop")
        pattern = re.compile(self.cut_line(d, self.big).pattern + r" \(\d+\): skipping its broadcasts")
        self.flood_until(d, pattern)
        self.flood_round()  # at least these are skipped for big
        self.assert_readers_got_everything()
        stats = self.stats()
        self.assertEqual(stats["outbound_budget_cuts"], 1, d.log.text()[-2000:])
        self.assertEqual(stats["slow_consumers"], 0)
        self.assertGreaterEqual(stats["dropped"], 10)
        self.assertGreater(stats["outbound_bytes"], 0)
        self.assertIsNone(self.cut_line(d, self.small).search(d.log.text()), "the smaller queue was cut too")
        # small lost nothing.
        seqs, dropped = self.read_room(self.small, "a", self.sent["a"])
        self.assertEqual((seqs, dropped), (list(range(1, self.sent["a"] + 1)), 0))
        self.small.assert_quiet()
        # big: the messages queued before the cut in order, then how many it missed, per room.
        # Its messages of both rooms interleave, so read them together.
        seqs, dropped = {"a": [], "b": []}, {"a": 0, "b": 0}
        while any(len(seqs[r]) + dropped[r] < self.sent[r] for r in seqs):
            m = self.big.recv()
            if m["op"] == "message":
                self.assertEqual(dropped[m["room"]], 0, f"a message after the drop notice: {m}")
                seqs[m["room"]].append(m["seq"])
            elif m["op"] == "system":
                self.assertEqual(m["event"], "dropped", m)
                dropped[m["room"]] += m["count"]
            else:
                self.assertEqual(m["op"], "presence", m)
        for room in seqs:
            self.assertEqual(seqs[room], list(range(1, len(seqs[room]) + 1)), room)
        self.assertGreater(sum(dropped.values()), 0)
        self.big.assert_quiet()
        # Drained, it takes broadcasts again.
        self.pub.send({"op": "say", "room": "a", "text": "back", "id": 1})
        self.big.wait_for("message", room="a", seq=self.sent["a"] + 1)
        self.wait_outbound_drained()

    def test_reload_applies_a_new_budget(self):
        d = self.start_budget("disconnect", budget=0)  # off
        self.flood_until(d, until=lambda: self.stats()["outbound_bytes"] > 1 << 20)
        self.assertEqual(self.stats()["outbound_budget_cuts"], 0)
        mark = d.log.mark()
        d.write_config(budget_config("disconnect", 262144).replace("{tmp}", d.tmp.name))
        d.signal(signal.SIGHUP)
        d.log.wait_for("reloaded", start=mark)
        d.log.wait_for(self.cut_line(d, self.big).pattern, start=mark)
        lines = self.big.wait_closed()
        self.assertIn('"code":"slow_consumer"', lines[-1])
        self.assertGreaterEqual(self.stats()["outbound_budget_cuts"], 1)


if __name__ == "__main__":
    harness.run()
