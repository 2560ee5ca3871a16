"""A client saying numbered messages with ids, a window of them in flight, read without
blocking: the crash loop's and the cluster's kill -9 tests use it, so a daemon killed under
it leaves exactly the acks it had sent."""
import json
import select
import socket

from harness import WAIT


class WindowedWriter:
    """Says `text(i)` with id i into `room` while fewer than `window` are unanswered and fewer
    than `count` were sent; subclasses read the other lines in `on_line`."""

    def __init__(self, port, nick, room, count, window):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.nick, self.room, self.count, self.window = nick, room, count, window
        self.buf = b""
        self.sent = 0
        self.acked = {}   # id -> seq
        self.failed = {}  # id -> error code
        self.texts = {}   # id -> text
        self.eof = False
        self.sock.sendall((json.dumps({"op": "nick", "nick": nick}) + "\n" +
                           json.dumps({"op": "join", "room": room, "id": "j"}) + "\n").encode())

    def text(self, i):
        raise NotImplementedError

    def may_send(self):
        return not self.eof

    def on_line(self, m):
        """Every line read, in order (`ok`s are counted before this is called)."""

    def answered(self):
        return len(self.acked) + len(self.failed)

    def pump_out(self):
        if not self.may_send():
            return
        lines = []
        while self.sent - self.answered() < self.window and self.sent < self.count:
            i = self.sent
            self.texts[i] = self.text(i)
            lines.append(json.dumps({"op": "say", "room": self.room, "text": self.texts[i], "id": i}))
            self.sent += 1
        if lines:
            try:
                self.sock.sendall(("\n".join(lines) + "\n").encode())
            except OSError:
                self.eof = True

    def pump_in(self):
        try:
            chunk = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            m = json.loads(raw)
            if m.get("op") == "ok" and isinstance(m.get("id"), int):
                self.acked[m["id"]] = m["seq"]
            elif m.get("op") == "error" and isinstance(m.get("id"), int):
                self.failed[m["id"]] = m["code"]
            self.on_line(m)

    def close(self):
        self.sock.close()


def pump_once(writers, timeout):
    """Each writer sends what its window allows, then those readable within `timeout` read."""
    for w in writers:
        w.pump_out()
    live = [w for w in writers if not w.eof]
    if not live:
        return
    ready, _, _ = select.select([w.sock for w in live], [], [], timeout)
    for w in live:
        if w.sock in ready:
            w.pump_in()
