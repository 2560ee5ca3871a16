"""A WebSocket test client over a real socket (RFC 6455), for roomd's conformance tests.

It frames by hand on purpose: a test client must be able to send what a good library never
would (unmasked frames, invalid UTF-8, oversized or fragmented messages).
"""
import base64
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import time

from harness import WAIT, Closed

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload=b"", fin=True, mask=True, length=None):
    """One frame's bytes. `length` overrides the header's payload length (for lies)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


class WsClient:
    """Connects, upgrades (unless upgrade=False), then speaks frames."""

    def __init__(self, port, host="127.0.0.1", path="/", origin="same", headers=None, upgrade=True, sock=None,
                 welcome=True):
        self.sock = sock or socket.create_connection((host, port), timeout=WAIT)
        self.sock.settimeout(WAIT)
        self.buf = b""
        self.eof = False
        self.host = f"{host}:{port}"
        self.status = None
        self.head = None
        self.closed_with = None  # (code, reason) of the server's close frame
        if upgrade:
            self.status, self.head = self.handshake(path, origin, headers)
            if self.status != 101:
                raise AssertionError(f"upgrade refused: {self.status} {self.head!r}")
            self.welcome = self.recv() if welcome else None

    # -- HTTP
    def request(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def handshake(self, path="/", origin="same", headers=None, key=None):
        key = key or base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if origin == "same":
            lines.append(f"Origin: http://{self.host}")
        elif origin:
            lines.append(f"Origin: {origin}")
        lines += list(headers or [])
        self.request("\r\n".join(lines) + "\r\n\r\n")
        status, head = self.read_head()
        if status == 101:
            want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert f"Sec-WebSocket-Accept: {want}" in head, head
        return status, head

    def read_head(self, timeout=WAIT):
        """The status and head of an HTTP answer (its body stays in the buffer)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill(timeout)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        head = head.decode()
        return int(head.split(" ", 2)[1]), head

    def read_answer(self, timeout=WAIT):
        """A whole HTTP answer: (status, head, body)."""
        status, head = self.read_head(timeout)
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill(timeout)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, head, body

    # -- frames
    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def send(self, obj):
        self.send_frame(TEXT, json.dumps(obj) if isinstance(obj, dict) else obj)

    def _fill(self, timeout):
        if self.eof:
            raise Closed("connection closed; buffered: %r" % self.buf[:200])
        pending = getattr(self.sock, "pending", None)  # TLS: bytes already decrypted
        r = True if pending and pending() else select.select([self.sock], [], [], timeout)[0]
        if not r:
            raise TimeoutError("nothing within %.1fs; buffered: %r" % (timeout, self.buf[:200]))
        try:
            chunk = self.sock.recv(1 << 16)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(max(0.01, deadline - time.monotonic()))

    def recv_frame(self, timeout=WAIT):
        """(fin, opcode, payload) of the next frame; the server's frames must be unmasked."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "a server frame was masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        opcode = b0 & 0x0F
        if opcode == CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.closed_with = (code, payload[2:].decode("utf-8"))
        return bool(b0 & 0x80), opcode, payload

    def recv(self, timeout=WAIT):
        """The next text message as JSON (pings are answered, as a browser does)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == PING:
                self.send_frame(PONG, payload)
                continue
            if opcode == CLOSE:
                raise Closed(f"close frame {self.closed_with}")
            assert opcode == TEXT and fin, f"unexpected frame {opcode:#x} fin={fin}"
            text = payload.decode("utf-8")
            assert not text.endswith("\n"), "a message carries its line ending"
            return json.loads(text)

    def expect(self, op, **fields):
        msg = self.recv()
        assert msg.get("op") == op, f"expected op {op!r} with {fields}, got {msg}"
        for k, v in fields.items():
            assert msg.get(k) == v, f"expected {k}={v!r} in {msg}"
        return msg

    def wait_for(self, op, **fields):
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("op") == op and all(msg.get(k) == v for k, v in fields.items()):
                return msg
            seen.append(msg)
        raise AssertionError(f"no {op} {fields}; saw {seen[-10:]}")

    def call(self, request, op=None, **fields):
        self.send(request)
        return self.expect(op, **fields) if op else self.recv()

    def wait_close(self, timeout=WAIT):
        """Reads to the server's close frame and then its FIN; returns (code, reason)."""
        deadline = time.monotonic() + timeout
        while self.closed_with is None:
            self.recv_frame(max(0.01, deadline - time.monotonic()))
        while not self.eof:
            try:
                self._fill(max(0.01, deadline - time.monotonic()))
            except Closed:
                break
            except TimeoutError:
                raise AssertionError(f"no FIN after the close frame {self.closed_with}")
        return self.closed_with

    def wait_eof(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(max(0.01, deadline - time.monotonic()))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
