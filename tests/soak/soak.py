#!/usr/bin/env python3
"""roomd's faulted soak (issue 20): one real roomd, loopback only, bounded in time and count.

It starts roomd itself (config in a temporary folder, an ephemeral port, a persisted room and
a keyed room), connects the healthy clients (chatters in many rooms, thousands of idle
members), takes a baseline of the daemon's fds and RSS, then for --duration seconds mixes in
faulty clients: resets, half-closes, garbage, slowloris, slow readers, reconnect storms,
text-mode clients, keyed-join floods with wrong keys and a SIGHUP every few seconds. Then
the faulty clients go, and it checks, and prints as figures:

- healthy clients lose nothing: every member of a room sees every message of the room in
  consecutive seq order, the same message at the same seq as every other member, every say
  with an id is acknowledged with the seq it was delivered at; no healthy client gets an
  error or is disconnected;
- the daemon's fd count comes back exactly to its baseline once the faulty clients are gone;
- its RSS (plain builds only; --sanitizer skips it: ASan's allocator keeps freed memory in
  quarantine) comes back to within --rss-margin of the baseline once the heap was trimmed in
  a quiet moment (the log's "heap trimmed" line);
- the server-wide output budget holds (sampled queued output, admin `stats`);
- every faulty client got what the protocol promises it (garbage answered with errors on an
  open connection, half-closes answered and closed, slowloris closed at the idle timeout);
- SIGTERM: exit 0; no error line (<3>) and no sanitizer report in the log.

Exit status 0 when every invariant held, 1 otherwise, 2 for bad usage. See README.md.
"""
import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the port at connect (4-tuple), not at bind

figures = collections.Counter()  # counts, printed at the end
violations = []


def violate(what):
    figures["violations"] += 1
    if len(violations) < 40:
        violations.append(what)
        print(f"soak: VIOLATION: {what}", file=sys.stderr, flush=True)


class Closed(Exception):
    pass


# ---------------------------------------------------------------------------------------
# The daemon

CONFIG = """
[server]
listen = ["127.0.0.1:0", {{ address = "unix:{tmp}/admin.sock", admin = true }}]
motd = "soak"
max_clients = {max_clients}
# the default per address: the soak's healthy clients spread over many 127.0.x.y sources,
# and a reconnect storm from one address runs into it
max_clients_per_ip = 256
[limits]
# max_outbound_bytes: the default (4 MiB); and a budget that a few dozen slow readers and
# hoarders together run into
max_total_outbound_bytes = {budget}
# slowloris connections are closed within the run; healthy clients answer the server's ping
idle_timeout_s = {idle_timeout}
# rate, burst, query_rate, key_guesses: the defaults (the faults run into them)
[history]
path = "{tmp}/history.db"
replay = 20
# small, so in-memory history is full before the baseline and does not grow after it
max_messages_per_room = 200
[log]
level = "info"
[[rooms]]
name = "persisted"
persist = true
[[rooms]]
name = "vault"
persist = false
key = "{key_hash}"
[[rooms]]
name = "flood"
persist = false
"""


def write_config(path, tmp, key_hash, max_clients, budget, idle_timeout, chat_rooms, generation):
    text = CONFIG.format(tmp=tmp, key_hash=key_hash, max_clients=max_clients, budget=budget,
                         idle_timeout=idle_timeout)
    for i, room in enumerate(chat_rooms):
        # every reload changes chat0's topic: its members hear it, nobody is disconnected
        topic = f"generation {generation}" if i == 0 else "chat"
        text += f'[[rooms]]\nname = "{room}"\npersist = false\ntopic = "{topic}"\n'
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


class Roomd:
    def __init__(self, binary, tmp, config_path, wait):
        self.log_path = os.path.join(tmp, "roomd.log")
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-c", config_path], stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=self.log_file)
        self.pid = self.proc.pid
        deadline = time.monotonic() + wait
        self.port = self.admin = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.log_lines():
                if "listening on 127.0.0.1:" in line:
                    self.port = int(line.split("listening on 127.0.0.1:", 1)[1].split()[0])
                if "listening on unix:" in line:
                    self.admin = line.split("listening on unix:", 1)[1].split()[0]
            if self.port and self.admin:
                return
            time.sleep(0.05)
        raise SystemExit("soak: roomd did not start:\n" + "\n".join(self.log_lines()[-20:]))

    def log_lines(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


# ---------------------------------------------------------------------------------------
# Connections

class LineConn(asyncio.Protocol):
    """A connection that cuts lines: awaited one by one (line()), or handed to on_line."""

    def __init__(self):
        self.t = None
        self.buf = b""
        self.lines = collections.deque()
        self.waiter = None
        self.eof = False
        self.on_line = None
        self.on_lost = None
        self.closed_by_us = False

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.buf += data
        if b"\n" not in data:
            return
        *lines, self.buf = self.buf.split(b"\n")
        if self.on_line:
            for line in lines:
                self.on_line(line)
        else:
            self.lines.extend(lines)
            self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc):
        self.eof = True
        self._wake()
        if self.on_lost:
            self.on_lost()

    def _wake(self):
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(None)

    async def line(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.lines:
            if self.eof:
                raise Closed()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, left)
            except asyncio.TimeoutError:
                pass
        return self.lines.popleft()

    async def json(self, timeout):
        return json.loads(await self.line(timeout))

    async def until(self, timeout, pred):
        """Reads JSON lines until one satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            m = await self.json(max(0.01, deadline - time.monotonic()))
            if pred(m):
                return m

    async def until_closed(self, timeout):
        """Reads until EOF; returns the lines, or None if EOF did not come in time."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(await self.line(max(0.01, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                return None

    def send(self, obj):
        if self.t.is_closing():
            return
        self.t.write(obj if isinstance(obj, bytes) else (json.dumps(obj) + "\n").encode())

    def reset(self):
        """Closes with a TCP reset (SO_LINGER 0)."""
        self.closed_by_us = True
        if self.t.is_closing():
            return
        sock = self.t.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.t.abort()

    def close(self):
        self.closed_by_us = True
        if self.t and not self.t.is_closing():
            self.t.close()


class Soak:
    def __init__(self, args, roomd, tmp, config_path, key_hash, chat_rooms):
        self.a = args
        self.roomd = roomd
        self.tmp = tmp
        self.config_path = config_path
        self.key_hash = key_hash
        self.chat_rooms = chat_rooms
        self.addr = ("127.0.0.1", roomd.port)
        self.wait = args.wait
        self.stop_faults = False
        self.stop_chat = False
        self.terminating = False  # SIGTERM sent: the healthy ones may now be closed
        self.room_log = collections.defaultdict(dict)  # room -> seq -> (from, text): what members saw
        self.chatters = []
        self.idle = []
        self.faulty = set()  # open faulty connections, closed at the end
        self.tasks = []
        self.latencies = []  # healthy say -> own copy, seconds
        self.stats_peak = collections.Counter()
        self.rss_samples = []
        self.slowloris_closed_after = []
        self.sources = {}

    # -- sources: long-lived clients spread over 127.0.1.x (at most 200 per address, under
    # max_clients_per_ip); each kind of fault has addresses of its own
    def source(self, kind, i=0):
        if kind == "healthy":
            return f"127.0.{1 + i // (200 * 250)}.{1 + (i // 200) % 250}"
        base = {"reset": 10, "halfclose": 11, "garbage": 12, "slowloris": 13, "slowreader": 14,
                "storm": 15, "text": 16, "keyed": 17, "hoarder": 18}[kind]
        return f"127.0.{base}.{1 + i % 250}"

    async def connect(self, src, rcvbuf=None, proto=LineConn):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((src, 0))
            await asyncio.wait_for(loop.sock_connect(sock, self.addr), self.wait)
            _, conn = await loop.create_connection(proto, sock=sock)
            return conn
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------------ healthy clients
    async def chatter(self, nick, room, src, period, pad=0, key=None):
        """Says "<nick> <n>" with an id every `period` s; checks its room's stream."""
        st = {"nick": nick, "room": room, "last_seq": None, "pending": {}, "sent_at": {}, "seen": 0,
              "acked": 0, "alive": True}
        self.chatters.append(st)
        conn = await self.connect(src)
        await conn.json(self.wait)  # welcome
        conn.send({"op": "nick", "nick": nick})
        m = await conn.json(self.wait)
        if m.get("op") != "ok":
            violate(f"{nick}: nick refused: {m}")
            return
        join = {"op": "join", "room": room}
        if key:
            join["key"] = key
        conn.send(join)
        m = await conn.until(self.wait * 3, lambda m: m.get("op") in ("joined", "error"))
        if m["op"] != "joined":
            violate(f"{nick}: join {room} refused: {m}")
            return
        hist = m.get("history", [])
        st["last_seq"] = hist[-1]["seq"] if hist else 0
        log = self.room_log[room]
        for h in hist:
            self.check_same(log, room, h)
        padding = "x" * pad

        def on_line(raw):
            try:
                m = json.loads(raw)
            except ValueError:
                return violate(f"{nick}: not JSON: {raw[:80]!r}")
            op = m.get("op")
            if op == "message":
                if m["room"] != room:
                    return
                seq = m["seq"]
                if seq != st["last_seq"] + 1:
                    violate(f"{nick} in {room}: seq {seq} after {st['last_seq']}")
                st["last_seq"] = seq
                st["seen"] += 1
                self.check_same(log, room, m)
                if m.get("from") == nick:
                    n = int(m["text"].split(" ", 2)[1])
                    sent = st["sent_at"].pop(n, None)
                    if sent is not None:
                        self.latencies.append(time.monotonic() - sent)
            elif op == "ok":
                want = st["pending"].pop(m.get("id"), None)
                if want is None:
                    return violate(f"{nick}: ok for an unknown id: {m}")
                st["acked"] += 1
                got = log.get(m.get("seq"))
                if got is None or got[0] != nick or got[1] != want:
                    violate(f"{nick}: ok seq {m.get('seq')} is not its message ({got})")
            elif op == "error":
                violate(f"{nick}: error {m}")
            elif op == "system":
                if not (m.get("event") == "shutdown" and self.terminating):
                    violate(f"{nick}: {m}")
            elif op == "ping":
                conn.send(b'{"op":"ping"}\n')

        def on_lost():
            st["alive"] = False
            if not self.terminating:
                violate(f"{nick} (healthy) was disconnected")

        for raw in list(conn.lines):
            on_line(raw)
        conn.lines.clear()
        conn.on_line = on_line
        conn.on_lost = on_lost
        if conn.eof:
            on_lost()
            return
        n = 0
        while not self.stop_chat and st["alive"]:
            n += 1
            text = f"{nick} {n}" + (f" {padding}" if pad else "")
            st["pending"][n] = text
            st["sent_at"][n] = time.monotonic()
            conn.send(f'{{"op":"say","room":"{room}","text":"{text}","id":{n}}}\n'.encode())
            await asyncio.sleep(period * random.uniform(0.5, 1.5))
        st["conn"] = conn

    def check_same(self, log, room, m):
        entry = (m.get("from"), m.get("text"))
        seen = log.setdefault(m["seq"], entry)
        if seen != entry:
            violate(f"{room} seq {m['seq']}: {entry} here, {seen} elsewhere")

    async def idle_member(self, i, room):
        """Joins a room and only reads (answering the server's ping); never disconnected."""
        conn = await self.connect(self.source("healthy", i))
        st = {"lines": 0}
        self.idle.append(st)

        def on_line(raw):
            st["lines"] += 1
            if raw.startswith(b'{"op":"ping"'):
                conn.send(b'{"op":"ping"}\n')
            elif raw.startswith(b'{"op":"error"') or (raw.startswith(b'{"op":"system"') and
                                                     not (self.terminating and b'"shutdown"' in raw)):
                violate(f"idle member {i}: {raw[:120]!r}")

        def on_lost():
            if not self.terminating:
                violate(f"idle member {i} in {room} was disconnected")

        conn.on_line = on_line
        conn.on_lost = on_lost
        conn.send({"op": "join", "room": room})
        st["conn"] = conn

    # ------------------------------------------------------------------ faulty clients
    async def spawn(self, kind, limit, concurrency, every, body):
        """Runs body(i) every `every` s, at most `concurrency` at once, `limit` in all."""
        sem = asyncio.Semaphore(concurrency)
        running = set()
        for i in range(limit):  # bounded
            if self.stop_faults:
                break
            await sem.acquire()
            if self.stop_faults:
                break

            async def one(i=i):
                try:
                    await body(i)
                except (Closed, TimeoutError, asyncio.TimeoutError, ConnectionError, OSError) as e:
                    figures[f"{kind}: {type(e).__name__}"] += 1
                finally:
                    sem.release()

            t = asyncio.ensure_future(one())
            running.add(t)
            t.add_done_callback(running.discard)
            figures[f"{kind}: connections"] += 1
            await asyncio.sleep(every * random.uniform(0.5, 1.5))
        if running:
            await asyncio.wait(running)

    def hold(self, conn):
        self.faulty.add(conn)
        return conn

    def release(self, conn):
        self.faulty.discard(conn)

    def chat_room(self):
        return random.choice(self.chat_rooms)

    async def fault_reset(self, i):
        conn = self.hold(await self.connect(self.source("reset", i)))
        conn.send(f'{{"op":"join","room":"{self.chat_room()}"}}\n{{"op":"say","room":"{self.chat_room()}","text":"reset!"}}\n'.encode())
        if random.random() < 0.5:
            await conn.line(self.wait)  # sometimes after the welcome, sometimes before
        await asyncio.sleep(random.uniform(0, 0.3))
        conn.reset()
        self.release(conn)

    async def fault_halfclose(self, i):
        conn = self.hold(await self.connect(self.source("halfclose", i)))
        room = self.chat_room()
        conn.send(f'{{"op":"join","room":"{room}"}}\n{{"op":"say","room":"{room}","text":"half-close!","id":1}}\n'.encode())
        conn.t.write_eof()
        got = await conn.until_closed(self.wait)
        self.release(conn)
        if conn.closed_by_us:  # the run ended meanwhile
            return
        conn.close()
        if got is None:
            return violate("half-closed client: the server did not close within the wait")
        ops = [json.loads(x) for x in got]
        if not any(m.get("op") == "joined" for m in ops) or not any(m.get("op") == "ok" and m.get("id") == 1 for m in ops):
            return violate(f"half-closed client: replies missing: {[m.get('op') for m in ops]}")
        figures["halfclose: answered and closed"] += 1

    async def fault_garbage(self, i):
        conn = self.hold(await self.connect(self.source("garbage", i)))
        await conn.json(self.wait)  # welcome
        kind = i % 4
        if kind == 0:  # random bytes (often text mode), then a reset
            conn.send(os.urandom(random.randint(1, 65536)))
            await asyncio.sleep(random.uniform(0, 0.5))
            figures["garbage: random bytes"] += 1
            conn.reset()
            return self.release(conn)
        conn.send(b'{"op":"ping","id":0}\n')
        if kind == 1:  # invalid UTF-8
            bad = [b'{"op":"say","room":"chat0","text":"\xff\xfe"}\n', b'{"op":"nick","nick":"\xc3\x28"}\n',
                   b'{"op":"echo","text":"\xed\xa0\x80"}\n']
            codes = {"bad_utf8"}
            figures["garbage: invalid utf-8"] += 1
        elif kind == 2:  # a 2 MB line
            bad = [b'{"op":"echo","text":"' + b"a" * (2 * MiB) + b'"}\n']
            codes = {"frame_too_large"}
            figures["garbage: 2 MB lines"] += 1
        else:  # wrong JSON types
            bad = [b'{"op":5}\n', b'{"op":"say","room":7,"text":"x"}\n', b'{"op":"join","room":["a"]}\n',
                   b'{"op":"nick","nick":null}\n', b'[1,2]\n', b'"op"\n', b'{"op":"say","room":"chat0","text":{"a":1}}\n',
                   b'{"op":"history","room":"persisted","limit":"many"}\n', b'{"op":"join"\n']
            codes = {"bad_request", "bad_json", "bad_nick", "bad_room_name"}
            figures["garbage: wrong types"] += 1
        for b in bad:
            conn.send(b)
        conn.send(b'{"op":"ping","id":1}\n')
        await conn.until(self.wait, lambda m: m.get("op") == "pong" and m.get("id") == 0)
        errors = []
        m = await conn.until(self.wait * 2, lambda m: m.get("op") in ("error", "pong") and (errors.append(m) or m.get("op") == "pong"))
        errors = [e for e in errors if e.get("op") == "error"]
        if len(errors) != len(bad) or any(e.get("code") not in codes for e in errors):
            violate(f"garbage {kind}: {len(bad)} bad frames answered with {[e.get('code') for e in errors]}")
        conn.close()
        self.release(conn)

    async def fault_slowloris(self, i):
        conn = self.hold(await self.connect(self.source("slowloris", i)))
        started = time.monotonic()
        conn.send(b'{"op":"join","room":"chat1"}\n{"op":"say","ro')  # half a frame, then silence
        got = await conn.until_closed(self.a.idle_timeout + 10 * self.a.slow)
        self.release(conn)
        if conn.closed_by_us:  # the run ended meanwhile
            return
        if got is None:
            if not self.stop_faults:
                violate("slowloris: not closed by the server within idle_timeout + 10 s")
            conn.reset()
            return
        self.slowloris_closed_after.append(time.monotonic() - started)

    async def fault_slowreader(self, i):
        # a small receive buffer, joined to the flood room, and never reads
        conn = self.hold(await self.connect(self.source("slowreader", i), rcvbuf=4096))
        conn.send(b'{"op":"join","room":"flood"}\n')
        conn.t.pause_reading()
        until = time.monotonic() + random.uniform(10, 25)
        while time.monotonic() < until and not self.stop_faults:
            await asyncio.sleep(0.5)
        conn.reset()
        self.release(conn)

    async def fault_hoarder(self, i):
        """Sends echoes of 32 KB (each reply its own bytes, unlike a broadcast's shared ones)
        and never reads: the server queues replies until flow control stops reading it, then
        the output budget or the idle timeout ends it. This is what makes RSS grow."""
        conn = self.hold(await self.connect(self.source("hoarder", i), rcvbuf=4096))
        conn.t.pause_reading()
        filler = "%08d" % i * 4096
        # 7 MB: more than the server answers before it stops reading (the kernel's send buffer,
        # up to 4 MB on loopback, then half of max_outbound_bytes in the server's queue)
        for k in range(224):
            conn.send(f'{{"op":"echo","text":"{k} {filler}"}}\n'.encode())
        until = time.monotonic() + self.a.idle_timeout + 10 * self.a.slow
        while time.monotonic() < until and not self.stop_faults:
            await asyncio.sleep(0.5)
        conn.reset()
        self.release(conn)

    async def storm(self, burst):
        """A reconnect storm: `burst` clients at once, from one address (over
        max_clients_per_ip when burst > 256: those get server_full), each joins and goes."""
        src = self.source("storm", random.randrange(4))

        async def one(j):
            try:
                conn = self.hold(await self.connect(src))
                first = await conn.json(self.wait)
                if first.get("op") == "error":
                    figures["storm: refused (server_full)"] += 1 if first.get("code") == "server_full" else 0
                    await conn.until_closed(self.wait)
                else:
                    conn.send({"op": "join", "room": self.chat_room()})
                    await conn.until(self.wait * 3, lambda m: m.get("op") == "joined")
                    figures["storm: joined"] += 1
                conn.close()
                self.release(conn)
            except (Closed, TimeoutError, asyncio.TimeoutError, ConnectionError, OSError) as e:
                figures[f"storm: {type(e).__name__}"] += 1

        figures["storm: bursts"] += 1
        figures["storm: connections"] += burst
        await asyncio.gather(*(one(j) for j in range(burst)))

    async def storms(self, burst, every):
        for _ in range(10000):  # bounded by the duration below
            if self.stop_faults:
                return
            await self.storm(burst)
            until = time.monotonic() + every
            while time.monotonic() < until and not self.stop_faults:
                await asyncio.sleep(0.25)

    TEXT_LINE = re.compile(rb"^\[(\S+)\] (\S+): (\S+) (\d+)$")

    async def fault_text(self, i):
        """A person at netcat: nick, join, read a while, say, /quit. What it sees of each healthy
        chatter must be consecutive (a text line has no seq)."""
        conn = self.hold(await self.connect(self.source("text", i)))
        await conn.line(self.wait)  # the JSON welcome
        room = self.chat_room()
        conn.send(f"/nick text{i}\n/join {room}\n".encode())
        last = {}
        end = time.monotonic() + random.uniform(2, 6)
        said = False
        while time.monotonic() < end:
            try:
                line = await conn.line(max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            if line.startswith(b"! ") and not line.startswith(b"! system: reload"):
                violate(f"text client: {line[:100]!r}")
            m = self.TEXT_LINE.match(line)
            if m and m.group(2) == m.group(3):  # a healthy chatter's "<nick> <n>"
                nick, n = m.group(2), int(m.group(4))
                if nick in last and n != last[nick] + 1:
                    violate(f"text client in {room}: {nick.decode()} {n} after {last[nick]}")
                last[nick] = n
            if not said:
                conn.send(f"hello from text client {i}\n".encode())
                said = True
        conn.send(b"/quit\n")
        got = await conn.until_closed(self.wait)
        self.release(conn)
        if conn.closed_by_us:
            return
        if got is None or b"* bye" not in got:
            violate(f"text client: /quit not answered with '* bye' and a close ({(got or [])[-3:]})")
        figures["text: lines checked"] += sum(1 for _ in last)

    async def fault_keyed(self, i):
        """Joins of the keyed room with wrong keys: bad_key, or rate_limited once the
        address's guesses are used up; each is answered."""
        conn = self.hold(await self.connect(self.source("keyed", i % 2)))
        await conn.json(self.wait)
        for k in range(5):
            conn.send({"op": "join", "room": "vault", "key": f"wrong-{i}-{k}", "id": k})
        for k in range(5):
            m = await conn.until(self.wait * 3, lambda m: m.get("op") in ("error", "joined"))
            code = m.get("code", m.get("op"))
            figures[f"keyed: {code}"] += 1
            if code not in ("bad_key", "rate_limited"):
                violate(f"wrong key answered {m}")
        conn.close()
        self.release(conn)

    async def sighups(self, every):
        generation = 0
        while not self.stop_faults:
            await asyncio.sleep(every)
            generation += 1
            write_config(self.config_path, self.tmp, self.key_hash, self.a.max_clients, self.a.budget,
                         self.a.idle_timeout, self.chat_rooms, generation)
            self.roomd.proc.send_signal(signal.SIGHUP)
            figures["sighup: sent"] += 1

    # ------------------------------------------------------------------ watching the daemon
    async def admin_stats(self):
        reader, writer = await asyncio.open_unix_connection(self.roomd.admin, limit=1 << 20)
        await reader.readline()  # welcome
        try:
            while True:
                writer.write(b'{"op":"stats"}\n')
                while True:
                    m = json.loads(await reader.readline())
                    if m.get("op") == "stats":
                        break
                for k in ("outbound_bytes", "outbound_budgeted_bytes", "clients", "loop_lag_p99_us"):
                    self.stats_peak[k] = max(self.stats_peak[k], m.get(k, 0))
                self.last_stats = m
                self.rss_samples.append((time.monotonic(), self.roomd.rss(), self.roomd.fds()))
                await asyncio.sleep(0.25)
        finally:
            writer.close()


def percentile(values, p):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(p * (len(values) - 1)))]


async def run(args, roomd, tmp, config_path, key_hash, chat_rooms):
    s = Soak(args, roomd, tmp, config_path, key_hash, chat_rooms)
    t0 = time.monotonic()
    stats_task = asyncio.ensure_future(s.admin_stats())
    n = args.connections

    # ---- warm-up: the healthy clients
    chat = []
    k = 0
    for room in chat_rooms:
        for j in range(args.chatters):
            chat.append(s.chatter(f"c{k}", room, s.source("healthy", k), args.say_every))
            k += 1
    for j in range(4):  # the persisted room: each ok waits for the commit
        chat.append(s.chatter(f"p{j}", "persisted", s.source("healthy", k), args.say_every)); k += 1
    for j in range(2):  # the keyed room, with the right key (one argon2id check, then remembered)
        chat.append(s.chatter(f"v{j}", "vault", s.source("healthy", k), args.say_every, key="soak-key")); k += 1
    for j in range(4):  # the flood room: 8 KB messages, which the slow readers never read
        chat.append(s.chatter(f"f{j}", "flood", s.source("healthy", k), 0.1, pad=8000)); k += 1
    chat_tasks = [asyncio.ensure_future(c) for c in chat]
    idle_count = max(0, int(n * 0.6) - len(chat))
    in_chat = min(idle_count, len(chat_rooms) * 40)
    sem = asyncio.Semaphore(200)

    async def idle(i):
        room = chat_rooms[i % len(chat_rooms)] if i < in_chat else f"idle{(i - in_chat) // 100}"
        async with sem:
            await s.idle_member(k + i, room)

    await asyncio.gather(*(idle(i) for i in range(idle_count)))
    # one history query, so the query helper exists before the baseline
    hq = await s.connect(s.source("healthy", 0))
    await hq.json(args.wait)
    hq.send({"op": "history", "room": "persisted", "limit": 5})
    await hq.until(args.wait * 3, lambda m: m.get("op") == "history")
    hq.close()
    while time.monotonic() - t0 < args.warmup:
        await asyncio.sleep(0.25)
    for c in s.chatters:
        if c["last_seq"] is None:
            violate(f"{c['nick']} not joined after the warm-up")
    await asyncio.sleep(1)
    base_fds = roomd.fds()
    base_rss = roomd.rss()
    base_t = time.monotonic()
    print(f"soak: warm-up done in {base_t - t0:.1f} s: {len(s.chatters)} chatters, {idle_count} idle members; "
          f"baseline {base_fds} fds, RSS {base_rss / MiB:.1f} MiB", flush=True)

    # ---- the faults, for --duration seconds
    scale = max(1.0, n / 3000)
    d = args.duration
    sc = lambda x: max(1, int(x * scale))
    faults = [
        s.spawn("reset", sc(40 * d), sc(50), 1 / sc(40), s.fault_reset),
        s.spawn("halfclose", sc(20 * d), sc(40), 1 / sc(20), s.fault_halfclose),
        s.spawn("garbage", sc(8 * d), sc(20), 1 / sc(8), s.fault_garbage),
        s.spawn("slowloris", sc(200) * 3, sc(200), 0.05, s.fault_slowloris),
        # not scaled: their memory is what the budget limits, the same in a short and a long run
        s.spawn("slowreader", int(48 * 4 * d / 45) + 1, 48, 0.2, s.fault_slowreader),
        s.spawn("hoarder", 96 + int(d) // 2, 48, 0.2, s.fault_hoarder),
        s.spawn("text", sc(6 * d), sc(30), 1 / sc(6), s.fault_text),
        s.spawn("keyed", sc(4 * d), sc(10), 1 / sc(4), s.fault_keyed),
        s.storms(sc(300), 5),
        s.sighups(3),
    ]
    fault_tasks = [asyncio.ensure_future(f) for f in faults]
    fault_end = time.monotonic() + d
    while time.monotonic() < fault_end:
        await asyncio.sleep(0.5)
        for t in fault_tasks:
            if t.done() and t.exception():
                raise t.exception()
    s.stop_faults = True
    # a trim from here on is the one after the faults (the loop may be quiet before every
    # faulty task has wound down)
    trims_before = sum(1 for l in roomd.log_lines() if "heap trimmed" in l)
    peak_rss = max(r for _, r, _ in s.rss_samples)
    peak_fds = max(f for _, _, f in s.rss_samples)
    # the faulty clients go: those still open are reset or closed now
    for c in list(s.faulty):
        c.reset() if random.random() < 0.5 else c.close()
    done, pending = await asyncio.wait(fault_tasks, timeout=args.wait * 4)
    for t in pending:
        t.cancel()
    for c in list(s.faulty):
        c.reset()
    stopped_t = time.monotonic()

    # ---- fds back to the baseline (closing connections linger at most 2 s; slow consumers drain at most 5 s)
    fds_back = None
    deadline = time.monotonic() + 30 * args.slow
    while time.monotonic() < deadline:
        if roomd.fds() == base_fds:
            fds_back = time.monotonic() - stopped_t
            break
        await asyncio.sleep(0.1)
    fds_after = roomd.fds()
    rss_after_faults = roomd.rss()
    if fds_back is None:
        violate(f"fds: {fds_after} {HOLD} s after the faulty clients left, baseline {base_fds}".replace("{HOLD}", str(30 * args.slow)))

    # ---- the heap trim: the loop has been quiet a while (two 5-s checks)
    trim_line = None
    rss_after_trim = rss_after_faults
    deadline = time.monotonic() + 40 * args.slow
    while time.monotonic() < deadline:
        lines = [l for l in roomd.log_lines() if "heap trimmed" in l]
        if len(lines) > trims_before:
            trim_line = lines[trims_before]
            # RSS before it, as the daemon saw it then ("resident A -> B MiB")
            m = re.search(r"resident (\d+) -> (\d+) MiB", trim_line)
            if m:
                rss_after_faults = int(m.group(1)) * MiB
            rss_after_trim = roomd.rss()
            break
        await asyncio.sleep(0.25)
    if not args.sanitizer:
        limit = base_rss * (1 + args.rss_margin) + 8 * MiB
        if trim_line is None:
            violate("no 'heap trimmed' line after the faulty clients left")
        if rss_after_trim > limit:
            violate(f"RSS {rss_after_trim / MiB:.1f} MiB after the trim, over baseline {base_rss / MiB:.1f} MiB "
                    f"+ {args.rss_margin:.0%} + 8 MiB")

    # ---- the healthy clients stop saying; every member must have seen its room's last seq
    s.stop_chat = True
    await asyncio.wait(chat_tasks, timeout=args.wait * 2)
    deadline = time.monotonic() + args.wait * 2
    while time.monotonic() < deadline:
        top = {room: max(log) if log else 0 for room, log in s.room_log.items()}
        behind = [c for c in s.chatters if c["alive"] and (c["pending"] or c["last_seq"] != top.get(c["room"], 0))]
        if not behind:
            break
        await asyncio.sleep(0.1)
    else:
        for c in behind[:5]:
            violate(f"{c['nick']} in {c['room']}: at seq {c['last_seq']} of {top.get(c['room'])}, "
                    f"{len(c['pending'])} says unacknowledged")
    for t in chat_tasks:
        if t.done() and not t.cancelled() and t.exception():
            violate(f"chatter failed: {t.exception()!r}")
    sum_seen = sum(c["seen"] for c in s.chatters)
    sum_acked = sum(c["acked"] for c in s.chatters)
    last_stats = getattr(s, "last_stats", {})
    stats_task.cancel()

    # ---- SIGTERM: exit 0, a clean log
    s.terminating = True
    roomd.proc.send_signal(signal.SIGTERM)
    t_term = time.monotonic()
    try:
        rc = await asyncio.get_running_loop().run_in_executor(None, lambda: roomd.proc.wait(30 * args.slow))
    except subprocess.TimeoutExpired:
        # where it hangs, if gdb is at hand, before the kill
        stacks = subprocess.run(["gdb", "-p", str(roomd.pid), "-batch", "-ex", "thread apply all bt"],
                                capture_output=True, text=True, timeout=60) if shutil.which("gdb") else None
        if stacks:
            print(stacks.stdout[-6000:], file=sys.stderr)
        roomd.proc.kill()
        rc = "killed after 30 s"
    exit_s = time.monotonic() - t_term
    if rc != 0:
        violate(f"roomd exited {rc} after SIGTERM")
    for c in s.idle:
        c["conn"].close()
    log = roomd.log_lines()
    errors = [l for l in log if l.startswith("<3>")]
    sanitizer = [l for l in log if any(x in l for x in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                                         "runtime error:", "ThreadSanitizer"))]
    for l in errors[:5]:
        violate(f"error line in the log: {l}")
    for l in sanitizer[:5]:
        violate(f"sanitizer report: {l}")
    warnings = collections.Counter()
    for l in log:
        if l.startswith("<4>"):
            w = re.sub(r"client \S+ ", "client X ", l[3:])
            w = re.sub(r"\d+", "N", w)
            warnings[w[:70]] += 1

    # ---- figures
    lat = s.latencies
    rows = [
        ("run", f"{args.connections} connections target, {d} s of faults, warm-up {base_t - t0:.0f} s"),
        ("healthy chatters / rooms", f"{len(s.chatters)} in {len(chat_rooms) + 3} rooms"),
        ("idle members", f"{idle_count} ({in_chat} in chat rooms)"),
        ("healthy messages seen / says acknowledged", f"{sum_seen:,} / {sum_acked:,}"),
        ("healthy say -> own copy p50 / p99 / max", f"{percentile(lat, .5) * 1e3:.1f} / {percentile(lat, .99) * 1e3:.1f} / {max(lat or [0]) * 1e3:.1f} ms"),
        ("gaps, reorderings, healthy disconnects", str(sum(1 for v in violations if "seq" in v or "disconnected" in v))),
        ("connections at peak (server 'clients')", f"{s.stats_peak['clients']:,}"),
        ("connections made in all (server)", f"{last_stats.get('connections_total', 0):,}"),
        ("fds: baseline / peak / after", f"{base_fds} / {peak_fds} / {fds_after}" + (f" (back in {fds_back:.1f} s)" if fds_back is not None else "")),
        ("RSS: baseline / peak / faulty gone / after trim", f"{base_rss / MiB:.1f} / {peak_rss / MiB:.1f} / {rss_after_faults / MiB:.1f} / {rss_after_trim / MiB:.1f} MiB" + (" (sanitizer: not checked)" if args.sanitizer else "")),
        ("heap trim after the faults", trim_line[3:] if trim_line else "none"),
        ("heap trims before (warm-up, faults)", str(trims_before)),
        ("outbound queued (admin stats): all / budgeted / budget, peaks sampled",
         f"{s.stats_peak['outbound_bytes'] / MiB:.1f} / {s.stats_peak['outbound_budgeted_bytes'] / MiB:.1f} / {args.budget / MiB:.0f} MiB"),
        ("slow consumers / budget cuts", f"{last_stats.get('slow_consumers', 0)} / {last_stats.get('outbound_budget_cuts', 0)}"),
        ("rejected (server_full) / rate limited / key guesses refused / key checks",
         f"{last_stats.get('rejected', 0)} / {last_stats.get('rate_limited', 0)} / {last_stats.get('key_guesses_refused', 0)} / {last_stats.get('key_checks', 0)}"),
        ("loop lag p99 (peak of the 1-min windows)", f"{s.stats_peak['loop_lag_p99_us'] / 1e3:.1f} ms"),
        ("slowloris closed by the server after", f"{percentile(s.slowloris_closed_after, 0):.1f}-{max(s.slowloris_closed_after or [0]):.1f} s ({len(s.slowloris_closed_after)})"),
        ("reloads logged", str(sum(1 for l in log if "reloaded " in l))),
        ("SIGTERM -> exit", f"{rc} in {exit_s:.1f} s"),
        ("log: error lines / sanitizer reports / warnings", f"{len(errors)} / {len(sanitizer)} / {sum(warnings.values())}"),
    ]
    # The budget limits the queues of open connections taking broadcasts, checked once per
    # turn: as the check left it (outbound_budgeted_bytes), it holds exactly. All queued output
    # (outbound_bytes) also counts connections already cut and closing (they keep what a
    # pending write owns, for up to 5 s) and a broadcast's shared bytes once per recipient;
    # RSS is what shows the memory.
    if s.stats_peak["outbound_budgeted_bytes"] > args.budget:
        violate(f"budgeted output {s.stats_peak['outbound_budgeted_bytes']} over the budget {args.budget}")
    width = max(len(r[0]) for r in rows)
    print("\nsoak figures")
    for k_, v in rows:
        print(f"  {k_:<{width}}  {v}")
    print("  fault counts:")
    for k_, v in sorted(figures.items()):
        if k_ != "violations":
            print(f"    {k_}: {v:,}")
    print("  warnings in the log:")
    for w, c in warnings.most_common(12):
        print(f"    {c:>7,}  {w}")
    return 0 if not violations else 1


def main():
    ap = argparse.ArgumentParser(description="roomd's faulted soak (tests/soak/README.md)")
    ap.add_argument("--roomd", required=True, help="the roomd binary")
    ap.add_argument("--duration", type=float, default=45, help="seconds of faults (after the warm-up)")
    ap.add_argument("--connections", type=int, default=3000,
                    help="about this many at once at the peak: 60%% healthy, the rest faulty")
    ap.add_argument("--warmup", type=float, default=12, help="seconds before the baseline, at least")
    ap.add_argument("--chat-rooms", type=int, default=16)
    ap.add_argument("--chatters", type=int, default=4, help="per chat room")
    ap.add_argument("--say-every", type=float, default=0.5, help="seconds between a chatter's says")
    ap.add_argument("--idle-timeout", type=int, default=20)
    ap.add_argument("--budget", type=int, default=64 * MiB, help="limits.max_total_outbound_bytes")
    ap.add_argument("--rss-margin", type=float, default=0.25,
                    help="RSS after the trim may exceed the baseline by this share (+ 8 MiB)")
    ap.add_argument("--sanitizer", action="store_true",
                    help="a sanitizer build: no RSS check, longer waits")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (config, log, database)")
    args = ap.parse_args()
    args.slow = 3 if args.sanitizer else 1
    args.wait = 15 * args.slow
    args.max_clients = args.connections * 3 + 2000
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 2000:
        raise SystemExit(f"soak: the fd limit ({hard}) is too low for {args.connections} connections")
    binary = os.path.abspath(args.roomd)
    tmp_obj = tempfile.TemporaryDirectory(prefix="roomd-soak-")
    tmp = tmp_obj.name
    key_hash = subprocess.run([binary, "--hash-key"], input=b"soak-key\n", capture_output=True,
                              check=True).stdout.decode().strip()
    chat_rooms = [f"chat{i}" for i in range(args.chat_rooms)]
    config_path = os.path.join(tmp, "roomd.toml")
    write_config(config_path, tmp, key_hash, args.max_clients, args.budget, args.idle_timeout, chat_rooms, 0)
    print(f"soak: seed {seed}, roomd {binary}, folder {tmp}", flush=True)
    roomd = Roomd(binary, tmp, config_path, args.wait)
    try:
        rc = asyncio.run(run(args, roomd, tmp, config_path, key_hash, chat_rooms))
    finally:
        if roomd.proc.poll() is None:
            roomd.proc.kill()
            roomd.proc.wait()
    if violations:
        print(f"\nsoak: FAILED: {figures['violations']} violations (first {len(violations)} above)")
        print(f"soak: the log is in {tmp}/roomd.log (kept)")
        tmp_obj.cleanup = lambda: None  # keep it
        tmp_obj._finalizer.detach()
    else:
        print("\nsoak: every invariant held")
        if args.keep:
            tmp_obj._finalizer.detach()
    return rc


if __name__ == "__main__":
    sys.exit(main())
