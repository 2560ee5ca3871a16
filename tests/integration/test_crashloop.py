"""Crash loops (issue 20): kill -9 under persisted load, round after round, loses nothing acked.

Each round starts roomd on the same SQLite database, checks everything acknowledged so far,
then lets several writers say numbered messages with ids into two persisted rooms and kills
the daemon with SIGKILL at a random moment. What an `ok` promises (docs/operations.md,
History and durability) is checked after every restart:

- every acknowledged message is stored, at the seq its `ok` gave, with its text;
- no acknowledged seq is ever given to another message, and no round's first ack goes
  back to or below an earlier round's last;
- each room's stored seqs run 1, 2, 3 ... with no gap, and `joined.seq` is the last one;
- the replay (`join` with `since`) and the full-text search (`history` with `search`, paged)
  give exactly the messages the history pages give.

Rounds: ROOMD_CRASHLOOP_ROUNDS (default 6, CI); the documented run is 20. The seed of the
kill moments is printed, and ROOMD_CRASHLOOP_SEED repeats a run's choices.
"""
import os
import random
import shutil
import signal
import sys
import tempfile
import time

import harness
from harness import DaemonTest
from windowed_writer import WindowedWriter, pump_once

ROUNDS = int(os.environ.get("ROOMD_CRASHLOOP_ROUNDS", "6"))
SEED = int(os.environ.get("ROOMD_CRASHLOOP_SEED", str(random.SystemRandom().randrange(1 << 30))))
ROOMS = ("lobby", "log")
WRITERS = 4        # writer w says in ROOMS[w % 2]
WINDOW = 16        # says each writer has in flight
MAX_SAYS = 4000    # per writer and round: bounds a round even if the kill were late
REPLAY_MAX = 300
WORD = "crashloop"  # in every text: a search for it must find every stored message

CONFIG = """
[limits]
rate = 1000000
burst = 1000000
query_rate = 0
address_history_rate = 0
[history]
path = "{db}"
replay = 5
replay_max = %d
[[rooms]]
name = "lobby"
persist = true
[[rooms]]
name = "log"
persist = true
""" % REPLAY_MAX


class Writer(WindowedWriter):
    """Says numbered messages with ids, WINDOW at a time, once joined; notes every message of
    its room it sees (any writer's)."""

    def __init__(self, port, nick, room, round_no):
        super().__init__(port, nick, room, MAX_SAYS, WINDOW)
        self.round = round_no
        self.delivered = {}   # seq -> text of this room's messages seen (any writer's)
        self.expect = ["welcome", "ok", "joined"]
        self.ready = False

    def text(self, i):
        # A unique word per message (searched for), the common word, and some filler.
        return f"{WORD} tok{self.round}x{self.nick}x{i} said by {self.nick} in round {self.round}"

    def may_send(self):
        return self.ready and not self.eof

    def on_line(self, m):
        op = m.get("op")
        if self.expect:
            assert op == self.expect[0], f"{self.nick}: expected {self.expect[0]}, got {m}"
            self.expect.pop(0)
            self.ready = not self.expect
        elif op == "message" and m["room"] == self.room:
            self.delivered[m["seq"]] = m.get("text")
        elif op == "error":
            raise AssertionError(f"{self.nick}: {m}")


class CrashLoop(DaemonTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="roomd-crashloop-")
        self.config = CONFIG.format(db=os.path.join(self.dir, "history.db"))

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def read_room(self, client, room):
        """Every stored message of `room`, oldest first: history pages, newest back to seq 1."""
        pages, before = [], None
        for _ in range(100000):  # bounded: each page moves `before` back by up to 500
            req = {"op": "history", "room": room, "limit": 500}
            if before is not None:
                req["before"] = before
            h = client.call(req, "history")
            pages.insert(0, h["messages"])
            if not h["more"] or not h["messages"]:
                break
            before = h["messages"][0]["seq"]
        return [m for page in pages for m in page]

    def search_room(self, client, room, words):
        """Every stored message of `room` matching `words`, oldest first (search pages)."""
        found, before = [], None
        for _ in range(100000):  # bounded as above
            req = {"op": "history", "room": room, "limit": 500, "search": words}
            if before is not None:
                req["before"] = before
            h = client.call(req, "history")
            found = h["messages"] + found
            if not h["more"] or not h["messages"]:
                break
            before = h["messages"][0]["seq"]
        return found

    def check_store(self, daemon, acked, rng, figures, epochs):
        """After a restart: what was acknowledged is there, seqs run on, replay == search == pages,
        and the rooms have a new epoch (the store was not closed: seqs of messages delivered but
        never committed go to others now, so no resume may span the crash)."""
        c = self.connect(daemon)
        now = set()
        for room in ROOMS:
            now.add(c.call({"op": "join", "room": room}, "joined")["epoch"])
            c.call({"op": "leave", "room": room}, "left")
        self.assertEqual(len(now), 1, "the rooms of one database share its epoch")
        self.assertFalse(now & epochs, "an epoch came back after a kill -9")
        epochs |= now
        for room in ROOMS:
            stored = self.read_room(c, room)
            seqs = [m["seq"] for m in stored]
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)), f"{room}: stored seqs are 1..n without gaps")
            by_seq = {m["seq"]: m for m in stored}
            for seq, (nick, text) in acked[room].items():
                m = by_seq.get(seq)
                if m is None or m.get("text") != text or m.get("from") != nick:
                    figures["lost"] += 1
                    self.fail(f"{room}: acknowledged seq {seq} ({text!r}) is {m} after the restart")
            # The replay from memory agrees with the store (and says where the room is).
            back = min(len(stored), REPLAY_MAX)
            j = c.call({"op": "join", "room": room, "since": len(stored) - back}, "joined")
            self.assertEqual(j["seq"], len(stored), f"{room}: joined.seq is the last stored seq")
            self.assertTrue(j["resumed"], j)
            self.assertEqual(j["history"], stored[len(stored) - back:], f"{room}: replay == history pages")
            c.call({"op": "leave", "room": room}, "left")
            # The search index agrees with the messages: all of them carry WORD ...
            self.assertEqual(self.search_room(c, room, WORD), stored, f"{room}: search == history pages")
            # ... and a message's own word finds it alone.
            for seq in rng.sample(sorted(acked[room]), min(2, len(acked[room]))):
                word = acked[room][seq][1].split()[1]
                self.assertEqual(self.search_room(c, room, word), [by_seq[seq]], f"{room}: search {word}")
            figures["stored"][room] = len(stored)
        c.close()
        self.clients.remove(c)

    @staticmethod
    def count_delivered_lost(delivered_unacked, figures):
        """Messages delivered but never acknowledged may have died uncommitted with the daemon
        (no promise broken): their seqs come again. Counted for the figures, not failed."""
        for room in ROOMS:
            figures["delivered_lost"] += sum(1 for s in delivered_unacked[room] if s > figures["stored"][room])
            delivered_unacked[room].clear()

    def test_kill_9_rounds_lose_nothing_acknowledged(self):
        rng = random.Random(SEED)
        print(f"\ncrash loop: {ROUNDS} rounds, seed {SEED} (ROOMD_CRASHLOOP_SEED repeats it)", file=sys.stderr)
        acked = {room: {} for room in ROOMS}   # room -> seq -> (nick, text), over all rounds
        last_acked = {room: 0 for room in ROOMS}
        figures = {"acked": 0, "lost": 0, "reused": 0, "delivered_lost": 0, "stored": {}}
        delivered_unacked = {room: {} for room in ROOMS}  # seq -> text seen delivered, never acked
        epochs = set()  # one per database open: the rooms share it
        started = time.monotonic()
        for round_no in range(ROUNDS):
            d = self.start(self.config)
            self.check_store(d, acked, rng, figures, epochs)
            self.count_delivered_lost(delivered_unacked, figures)
            writers = [Writer(d.port, f"w{w}", ROOMS[w % 2], round_no) for w in range(WRITERS)]
            kill_at = time.monotonic() + rng.uniform(0.05, 1.5)
            killed = False
            deadline = time.monotonic() + harness.WAIT * 4
            while not all(w.eof for w in writers):
                self.assertLess(time.monotonic(), deadline, "writers did not finish")
                if not killed and time.monotonic() >= kill_at:
                    d.proc.send_signal(signal.SIGKILL)  # the writers read what was sent until EOF
                    killed = True
                timeout = max(0.0, kill_at - time.monotonic()) if not killed else 0.5
                pump_once(writers, min(timeout, 0.5))
            d.proc.wait(timeout=harness.WAIT)
            d.check_sanitizers()  # whatever the killed process said before it died
            d.kill()
            self.daemons.remove(d)
            for w in writers:
                w.close()
                room_acks = sorted(w.acked.items(), key=lambda kv: kv[1])
                for i, seq in room_acks:
                    if seq in acked[w.room]:
                        figures["reused"] += 1
                        self.fail(f"{w.room}: seq {seq} acknowledged twice: {acked[w.room][seq]} and {w.texts[i]!r}")
                    acked[w.room][seq] = (w.nick, w.texts[i])
                    figures["acked"] += 1
            for w in writers:  # once every writer's acks are in
                for seq, text in w.delivered.items():
                    if seq not in acked[w.room]:
                        delivered_unacked[w.room][seq] = text
            for room in ROOMS:
                round_seqs = sorted(s for w in writers if w.room == room for s in w.acked.values())
                if round_seqs:
                    self.assertGreater(round_seqs[0], last_acked[room], f"{room}: an ack went back in round {round_no}")
                    last_acked[room] = round_seqs[-1]
        # The last crash's damage is checked too.
        d = self.start(self.config)
        self.check_store(d, acked, rng, figures, epochs)
        self.count_delivered_lost(delivered_unacked, figures)
        d.stop()
        self.daemons.remove(d)
        elapsed = time.monotonic() - started
        print(f"crash loop: rounds={ROUNDS} acked={figures['acked']} lost={figures['lost']} "
              f"seq_reused={figures['reused']} stored={sum(figures['stored'].values())} "
              f"delivered_unacked_not_stored={figures['delivered_lost']} time={elapsed:.1f}s", file=sys.stderr)
        self.assertEqual(figures["lost"], 0)
        self.assertEqual(figures["reused"], 0)
        self.assertGreater(figures["acked"], ROUNDS, "the writers got acknowledgements")


if __name__ == "__main__":
    harness.run()
