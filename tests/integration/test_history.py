"""Keyed rooms and durable, searchable history on the worker pool (SPEC §6)."""
import os
import re
import select
import signal
import subprocess
import time

import harness
from harness import DaemonTest, Client

KEY = "correct horse"


def hash_key(key):
    r = subprocess.run([harness.ROOMD, "--hash-key"], input=(key + "\n").encode(), capture_output=True,
                       timeout=harness.WAIT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("$argon2id$"), lines  # exactly one line
    return lines[0]


HASH = None
HASH2 = None  # the same key hashed again: another salt, so another hash


def config(tmp, extra=""):
    global HASH, HASH2
    HASH = HASH or hash_key(KEY)
    HASH2 = HASH2 or hash_key(KEY)
    return f"""
[server]
workers = 4
[limits]
rate = 100000
burst = 100000
key_guesses = 1000  # these tests guess freely; test_an_address_that_guesses_is_throttled does not
[history]
path = "{tmp}/state/history.db"
replay = 5
max_messages_per_room = 1000
{extra}
[[rooms]]
name = "lobby"
persist = true
[[rooms]]
name = "vault"
key = "{HASH}"
[[rooms]]
name = "vault2"
key = "{HASH2}"
[[rooms]]
name = "scratch"
persist = false
"""


def helper_pids(daemon, flag):
    """The daemon's helper processes of one kind (its children run as `roomd FLAG ...`)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == daemon.proc.pid and flag in cmdline:
            found.append(int(pid))
    return found


def policies(pid):
    """Each thread's scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE), by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[38])  # field 41: policy
    return out


class Keys(DaemonTest):
    def setUp(self):
        super().setUp()
        self.d = self.start(config("{tmp}").replace("{tmp}", "/tmp/roomd-keys-%d" % os.getpid()))

    def tearDown(self):
        super().tearDown()
        subprocess.run(["rm", "-rf", "/tmp/roomd-keys-%d" % os.getpid()])

    def test_keyed_join_right_wrong_missing(self):
        a = self.connect(self.d)
        a.error({"op": "join", "room": "vault"}, "bad_key")
        a.error({"op": "join", "room": "vault", "key": "wrong"}, "bad_key")
        rooms = {r["name"]: r for r in a.call({"op": "rooms"}, "rooms")["rooms"]}
        self.assertTrue(rooms["vault"]["keyed"])
        j = a.call({"op": "join", "room": "vault", "key": KEY, "id": 5}, "joined", id=5)
        self.assertEqual(j["room"], "vault")
        a.call({"op": "who", "room": "vault"}, "who")  # members may look

    def test_requests_after_a_key_check_wait_their_turn(self):
        a = self.connect(self.d)
        a.send({"op": "join", "room": "vault", "key": KEY, "id": 1})
        a.send({"op": "ping", "id": 2})
        a.send({"op": "say", "room": "vault", "text": "in", "id": 3})
        self.assertEqual(a.recv()["op"], "joined")
        self.assertEqual(a.recv(), {"op": "pong", "id": 2})
        self.assertEqual(a.recv()["op"], "message")

    def test_other_clients_are_served_while_keys_are_checked(self):
        # Twenty different guesses: twenty argon2id checks (identical ones would share one).
        joiners = [self.connect(self.d) for _ in range(20)]
        for i, c in enumerate(joiners):
            c.send({"op": "join", "room": "vault", "key": f"guess {i}"})
        other = self.connect(self.d)
        other.call({"op": "ping", "id": "fast"}, "pong", id="fast")
        # Ordering, not timing: when the pong is back, some key checks are still running.
        waiting = [c for c in joiners if not select.select([c.sock], [], [], 0)[0] and b"\n" not in c.buf]
        self.assertGreater(len(waiting), 0, "all 20 argon2id checks finished before one ping")
        for c in joiners:
            c.wait_for("error", code="bad_key")

    def test_a_reconnect_storm_costs_one_check_per_distinct_key(self):
        d = self.start(config("{tmp}").replace(
            "[server]\n", '[server]\nlisten = ["127.0.0.1:0", { address = "unix:{tmp}/admin.sock", admin = true }]\n'),
            listen=(), expect_listeners=2)
        admin = self.raw([a for a in d.addresses if a.startswith("unix:")][0][5:])
        before = admin.call({"op": "stats"}, "stats")
        clients = [self.connect(d) for _ in range(10)]
        for c in clients[:6]:
            c.send({"op": "join", "room": "vault", "key": KEY})
        for c in clients[6:]:
            c.send({"op": "join", "room": "vault", "key": "stale key"})
        for c in clients[:6]:
            c.wait_for("joined", room="vault")
        for c in clients[6:]:
            c.wait_for("error", code="bad_key")
        # Later joins with a key already checked are answered from memory.
        late = self.connect(d)
        late.error({"op": "join", "room": "vault", "key": "stale key"}, "bad_key")
        late.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        after = admin.call({"op": "stats"}, "stats")
        self.assertEqual(after["key_checks"] - before["key_checks"], 2)
        self.assertEqual(after["key_answers_reused"] - before["key_answers_reused"], 10)

    def test_connection_closed_while_its_key_is_checked(self):
        for i in range(5):  # different guesses: each is a check of its own in the pool
            c = Client(("127.0.0.1", self.d.port))
            c.send({"op": "join", "room": "vault", "key": f"gone {i}"})
            c.close()
        # The server is well; the answers went to closed sockets.
        a = self.connect(self.d)
        a.call({"op": "join", "room": "vault", "key": KEY}, "joined", members=[a.welcome["nick"]])

    def helpers(self, daemon):
        return helper_pids(daemon, b"--key-check-helper")

    def test_key_checks_run_in_a_helper_process_that_is_replaced_if_it_dies(self):
        self.assertEqual(self.helpers(self.d), [])  # started on first use
        a = self.connect(self.d)
        a.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        helpers = self.helpers(self.d)
        self.assertEqual(len(helpers), 1)
        os.kill(helpers[0], signal.SIGKILL)
        # vault2's hash is another salt's (no answer remembered), so this takes a real check:
        # the dead helper is noticed and a new one answers -- right, not failed closed.
        b = self.connect(self.d)
        b.call({"op": "join", "room": "vault2", "key": KEY}, "joined")
        c = self.connect(self.d)
        c.error({"op": "join", "room": "vault", "key": "a guess"}, "bad_key")
        self.assertTrue(self.d.log.wait_for("key-check helper"), "the lost helper is logged")
        replacement = self.helpers(self.d)
        self.assertEqual(len(replacement), 1)
        self.assertNotEqual(replacement, helpers)
        # The daemon's end is the helpers' end.
        self.d.stop()
        deadline = time.monotonic() + harness.WAIT
        while os.path.exists(f"/proc/{replacement[0]}") and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the helper's exit, bounded by the deadline
        self.assertFalse(os.path.exists(f"/proc/{replacement[0]}"), "the helper outlived the daemon")

    def test_only_the_helpers_run_at_idle_priority(self):
        # The hashing and the queries yield to everything; the daemon's own threads must not,
        # since pool threads share libuv's queue locks with the loop (a low-priority holder
        # would stall it).
        a = self.connect(self.d)
        a.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        a.call({"op": "history", "room": "lobby", "search": "anything"}, "history")
        daemon = policies(self.d.proc.pid)
        self.assertGreater(len(daemon), 2, "the loop and pool threads")
        self.assertEqual(set(daemon.values()), {0}, "every daemon thread at SCHED_OTHER")
        for flag in (b"--key-check-helper", b"--history-query-helper"):
            helpers = helper_pids(self.d, flag)
            self.assertEqual(len(helpers), 1, flag)
            self.assertEqual(set(policies(helpers[0]).values()), {5}, f"the {flag} at SCHED_IDLE")

    def test_an_address_that_guesses_is_throttled_and_others_are_not(self):
        d = self.start(config("{tmp}").replace("key_guesses = 1000", "key_guesses = 3\nkey_guess_interval_s = 3600")
                       .replace("[server]\n", '[server]\nlisten = ["127.0.0.1:0", "unix:{tmp}/c.sock", '
                                '{ address = "unix:{tmp}/admin.sock", admin = true }]\n'),
                       listen=(), expect_listeners=3)
        admin = self.raw([a for a in d.addresses if a.endswith("admin.sock")][0][5:])
        local = self.raw([a for a in d.addresses if a.endswith("c.sock")][0][5:])
        guesser, neighbour = self.connect(d), self.connect(d)  # both from 127.0.0.1
        for i in range(3):
            guesser.error({"op": "join", "room": "vault", "key": f"guess {i}"}, "bad_key")
        checks = admin.call({"op": "stats"}, "stats")["key_checks"]
        refused = guesser.error({"op": "join", "room": "vault", "key": "guess 3"}, "rate_limited")
        # The wait counts from the first guess's slot: under load the three checks may take
        # seconds, so the figure is up to 3600, not exactly it.
        wait = re.search(r"try again in (\d+) s", refused["message"])
        self.assertIsNotNone(wait, refused["message"])
        self.assertTrue(3000 < int(wait.group(1)) <= 3600, refused["message"])
        guesser.error({"op": "join", "room": "vault", "key": "guess 0"}, "bad_key")  # known: no check, not refused
        # The budget is the address's, not the connection's; a key never seen is a guess too.
        neighbour.error({"op": "join", "room": "vault", "key": "another guess"}, "rate_limited")
        neighbour.error({"op": "join", "room": "vault", "key": KEY}, "rate_limited")
        self.assertTrue(d.log.wait_for("key guesses from 127.0.0.1 refused"), "the throttled address is logged")
        self.assertEqual(d.log.text().count("key guesses from 127.0.0.1 refused"), 1, "logged once, not per guess")
        # Another address checks as usual; once the real key is known it opens the room for all.
        local.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        neighbour.call({"op": "join", "room": "vault", "key": KEY}, "joined")
        guesser.call({"op": "join", "room": "lobby"}, "joined")  # everything else works as before
        guesser.call({"op": "say", "room": "lobby", "text": "still here", "id": 1}, "message")
        stats = admin.call({"op": "stats"}, "stats")
        self.assertEqual(stats["key_checks"] - checks, 1, "refused guesses cost no argon2id check")
        self.assertEqual(stats["key_guesses_refused"], 3)

    def test_wrong_keys_are_rate_limited(self):
        d = self.start(config("/tmp/roomd-keys2-%d" % os.getpid()).replace("rate = 100000", "rate = 0.01")
                       .replace("burst = 100000", "burst = 3"))
        a = self.connect(d)
        for _ in range(3):
            a.error({"op": "join", "room": "vault", "key": "guess"}, "bad_key")
        a.error({"op": "join", "room": "vault", "key": "guess"}, "rate_limited")
        subprocess.run(["rm", "-rf", "/tmp/roomd-keys2-%d" % os.getpid()])


class History(DaemonTest):
    def setUp(self):
        super().setUp()
        self.dir = "/tmp/roomd-history-%d-%s" % (os.getpid(), self._testMethodName)
        subprocess.run(["rm", "-rf", self.dir])
        self.conf = config(self.dir)

    def tearDown(self):
        super().tearDown()
        subprocess.run(["rm", "-rf", self.dir])

    def say_many(self, client, n, room="lobby", start=0, word="msg"):
        for i in range(start, start + n):
            client.send({"op": "say", "room": room, "text": f"{word} {i}" + (" apple" if i % 10 == 0 else ""),
                         "id": i})
        acks = []
        while len(acks) < n:
            m = client.recv()
            if m["op"] == "ok":
                acks.append(m["seq"])
        return acks

    def test_replay_paging_search(self):
        d = self.start(self.conf)
        a = self.connect(d, join=["lobby"])
        self.assertEqual(self.say_many(a, 120), list(range(1, 121)))
        b = self.connect(d)
        j = b.call({"op": "join", "room": "lobby"}, "joined")
        self.assertEqual([m["seq"] for m in j["history"]], [116, 117, 118, 119, 120])
        h = b.call({"op": "history", "room": "lobby", "before": 100, "limit": 30}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(70, 100)))
        self.assertTrue(h["more"])
        h = b.call({"op": "history", "room": "lobby", "before": 10, "limit": 30}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(1, 10)))
        self.assertFalse(h["more"])
        h = b.call({"op": "history", "room": "lobby", "search": "apple", "limit": 100}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [s for s in range(1, 121) if (s - 1) % 10 == 0])
        h = b.call({"op": "history", "room": "lobby", "search": "ms*", "limit": 3}, "history")
        self.assertEqual(len(h["messages"]), 3)
        self.assertTrue(h["more"])
        for hostile in ['"', "(", "NEAR(a b", "*", "a OR", "x\" OR \"y", "col:1"]:
            r = b.call({"op": "history", "room": "lobby", "search": hostile, "id": hostile})
            self.assertIn(r["op"], ("history", "error"), r)
            if r["op"] == "error":
                self.assertEqual(r["code"], "bad_request")
        # Readers keep their statements prepared: a failed search leaves them fit for the next.
        h = b.call({"op": "history", "room": "lobby", "search": "apple", "limit": 100}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [s for s in range(1, 121) if (s - 1) % 10 == 0])
        h = b.call({"op": "history", "room": "lobby", "before": 10, "limit": 30}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(1, 10)))
        b.call({"op": "ping", "id": "alive"}, "pong", id="alive")

    def test_queries_run_in_a_helper_process_that_is_replaced_if_it_dies(self):
        d = self.start(self.conf)
        a = self.connect(d, join=["lobby"])
        self.say_many(a, 25)
        self.assertEqual(helper_pids(d, b"--history-query-helper"), [])  # started on first use
        search = {"op": "history", "room": "lobby", "search": "apple"}
        self.assertEqual([m["seq"] for m in a.call(search, "history")["messages"]], [1, 11, 21])
        helpers = helper_pids(d, b"--history-query-helper")
        self.assertEqual(len(helpers), 1)
        os.kill(helpers[0], signal.SIGKILL)
        # The dead helper is noticed, a new one answers, and the answer is the same.
        self.assertEqual([m["seq"] for m in a.call(search, "history")["messages"]], [1, 11, 21])
        page = a.call({"op": "history", "room": "lobby", "before": 6, "limit": 3}, "history")
        self.assertEqual([m["seq"] for m in page["messages"]], [3, 4, 5])
        self.assertTrue(page["more"])
        self.assertTrue(d.log.wait_for("history-query helper"), "the lost helper is logged")
        replacement = helper_pids(d, b"--history-query-helper")
        self.assertEqual(len(replacement), 1)
        self.assertNotEqual(replacement, helpers)

    def test_a_client_flooding_searches_is_paced_not_refused_and_others_are_not_slowed(self):
        # Two queries at once, then two a second: ten searches sent together take about four
        # seconds to answer, all of them, in order; the neighbour is answered meanwhile.
        conf = self.conf.replace("key_guesses = 1000", "key_guesses = 1000\nquery_rate = 2\nquery_burst = 2")
        conf = conf.replace("[server]\n", '[server]\nlisten = ["127.0.0.1:0", { address = "unix:{tmp}/admin.sock", '
                                            'admin = true }]\n')
        d = self.start(conf, listen=(), expect_listeners=2)
        admin = self.raw([a for a in d.addresses if a.endswith("admin.sock")][0][5:])
        hog = self.connect(d)
        self.assertEqual(hog.welcome["limits"]["query_rate"], 2, "the welcome tells clients the budget")
        hog.call({"op": "join", "room": "lobby"}, "joined")
        self.say_many(hog, 20, word="needle")
        for i in range(10):
            hog.send({"op": "history", "room": "lobby", "search": "needle", "limit": 5, "id": i})
        hog.send({"op": "say", "room": "lobby", "text": "after the searches", "id": "last"})
        neighbour = self.connect(d)
        neighbour.call({"op": "join", "room": "lobby"}, "joined")
        neighbour.call({"op": "history", "room": "lobby", "search": "needle", "limit": 5}, "history")
        neighbour.call({"op": "say", "room": "lobby", "text": "not waiting", "id": 1}, "message")
        paced = admin.call({"op": "stats"}, "stats")["queries_paced"]
        self.assertGreaterEqual(paced, 1, "the hog's searches are waiting")
        got = [hog.wait_for("history", id=i) for i in range(10)]  # one out of order would be skipped: a failure
        self.assertTrue(all(len(h["messages"]) == 5 for h in got))
        hog.wait_for("ok", id="last")
        self.assertGreaterEqual(admin.call({"op": "stats"}, "stats")["queries_paced"], 5)
        self.assertEqual(admin.call({"op": "stats"}, "stats")["rate_limited"], 0, "paced, never refused")

    def test_many_connections_from_one_address_share_its_history_budget(self):
        # Each connection may read history freely; their address may not: three at once, then
        # two a second, whichever of its connections asks. Another address is not held, and
        # other lookups are not in this budget.
        conf = self.conf.replace("key_guesses = 1000",
                                 "key_guesses = 1000\naddress_history_rate = 2\naddress_history_burst = 3")
        conf = conf.replace("[server]\n", '[server]\nlisten = ["127.0.0.1:0", { address = "unix:{tmp}/admin.sock", '
                                            'admin = true }]\n')
        d = self.start(conf, listen=(), expect_listeners=2)
        admin = self.raw([a for a in d.addresses if a.endswith("admin.sock")][0][5:])
        fleet = [self.connect(d, source="127.0.0.1") for _ in range(4)]
        fleet[0].call({"op": "join", "room": "lobby"}, "joined")
        self.say_many(fleet[0], 3, word="needle")
        for c in fleet:
            for i in range(2):
                c.send({"op": "history", "room": "lobby", "search": "needle", "id": i})
        deadline = time.monotonic() + harness.WAIT
        while admin.call({"op": "stats"}, "stats")["history_paced_by_address"] < 5:  # 8 requests, 3 at once
            self.assertLess(time.monotonic(), deadline, "the address's history requests over its burst wait")
            time.sleep(0.02)  # polling the daemon's counter; bounded by the deadline
        other = self.connect(d, source="127.0.0.2")
        self.assertEqual(len(other.call({"op": "history", "room": "lobby", "search": "needle"}, "history")["messages"]), 3)
        neighbour = self.connect(d, source="127.0.0.1")
        neighbour.call({"op": "who", "room": "lobby"}, "who")  # the same address, but not a history request
        stats = admin.call({"op": "stats"}, "stats")
        self.assertEqual(stats["history_paced_by_address"], 5, "another address has its own budget")
        self.assertEqual(stats["queries_paced"], 0, "no connection went over its own budget")
        for c in fleet:  # all answered, each connection's in order
            for i in range(2):
                self.assertEqual(len(c.wait_for("history", id=i)["messages"]), 3)
        self.assertEqual(admin.call({"op": "stats"}, "stats")["rate_limited"], 0, "paced, never refused")

    def test_restart_keeps_seq_and_history(self):
        d = self.start(self.conf)
        a = self.connect(d, join=["lobby", "scratch"])
        self.say_many(a, 7)
        a.call({"op": "say", "room": "scratch", "text": "not kept", "id": "s"}, "message")
        a.send({"op": "join", "room": "lobby", "id": "e"})
        epoch = a.wait_for("joined", id="e")["epoch"]
        d.stop()
        d2 = self.start(self.conf)
        b = self.connect(d2)
        j = b.call({"op": "join", "room": "lobby", "since": 5, "epoch": epoch}, "joined")
        self.assertEqual((j["epoch"], j["resumed"]), (epoch, True), "a clean restart keeps the epoch: resumes span it")
        self.assertEqual([m["text"] for m in j["history"]], ["msg 5", "msg 6"])
        b.call({"op": "leave", "room": "lobby"}, "left")
        j = b.call({"op": "join", "room": "lobby"}, "joined")
        self.assertEqual([m["text"] for m in j["history"]], [f"msg {i}" for i in range(2, 7)])
        b.send({"op": "say", "room": "lobby", "text": "after", "id": "x"})
        self.assertEqual(b.wait_for("ok", id="x")["seq"], 8)  # never reused
        j = b.call({"op": "join", "room": "scratch"}, "joined")
        self.assertEqual(j["history"], [])  # not persisted

    def test_kill_9_loses_no_acknowledged_message(self):
        d = self.start(self.conf)
        a = self.connect(d, join=["lobby"])
        acked = self.say_many(a, 200)
        self.assertEqual(acked, list(range(1, 201)))
        a.send({"op": "join", "room": "lobby", "id": "e"})
        epoch = a.wait_for("joined", id="e")["epoch"]
        d.proc.send_signal(signal.SIGKILL)
        d.kill()
        d2 = self.start(self.conf)
        b = self.connect(d2)
        h = b.call({"op": "history", "room": "lobby", "limit": 500}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(1, 201)))
        # Messages delivered but never committed died with the daemon and their seqs go to
        # others now: the room has a new epoch, so no resume spans the crash.
        j = b.call({"op": "join", "room": "lobby", "since": 199, "epoch": epoch}, "joined")
        self.assertNotEqual(j["epoch"], epoch)
        self.assertEqual((j["resumed"], j["seq"]), (False, 200))
        self.assertTrue(d2.log.wait_for("was not closed cleanly"), "the new epoch is logged")

    def test_bad_history_path_is_a_clear_error(self):
        conf = self.conf.replace(f'path = "{self.dir}/state/history.db"', 'path = "/proc/nope/history.db"')
        p = subprocess.run([harness.ROOMD, "--listen", "127.0.0.1:0", "-c", "/dev/stdin"], input=conf.encode(),
                           capture_output=True, timeout=harness.WAIT)
        self.assertEqual(p.returncode, 1)
        self.assertIn("/proc/nope", p.stderr.decode())


if __name__ == "__main__":
    harness.run()
