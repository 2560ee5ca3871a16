"""WebSocket listeners (RFC 6455) against a test client that frames by hand (wsclient.py):
the upgrade and its refusals, chat next to a plain TCP client in one order, fragmented
messages, ping/pong, the close handshake, and every way a frame can be wrong (1002, 1003,
1007, 1009), each closing only its own connection. Browsers are test_browser.py's.
"""
import os
import signal
import socket
import ssl
import tempfile

import harness
from harness import WAIT, Client, Closed, DaemonTest
from test_tls import Certs
from wsclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, WsClient

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../web")


class WebSocketTest(DaemonTest):
    def start_ws(self, websocket="", limits="", tls=False, rooms='[[rooms]]\nname = "lobby"\n', server=""):
        self.web = tempfile.TemporaryDirectory(prefix="roomd-web-")
        self.addCleanup(self.web.cleanup)
        with open(os.path.join(self.web.name, "index.html"), "w") as f:
            f.write("<!doctype html><title>roomd</title><p>hello</p>\n")
        with open(os.path.join(self.web.name, "app.js"), "w") as f:
            f.write("console.log('roomd');\n")
        tls_entry = tls_table = ""
        if tls:
            self.certs = Certs()
            self.addCleanup(self.certs.tmp.cleanup)
            tls_entry = ', { address = "127.0.0.1:0", websocket = true, tls = true }'
            tls_table = f'[tls]\ncert = "{self.certs.path("server.pem")}"\nkey = "{self.certs.path("server.key")}"\n'
        config = f"""
[server]
listen = ["127.0.0.1:0", {{ address = "127.0.0.1:0", websocket = true }}{tls_entry}]
{server}
{tls_table}
[websocket]
web_root = "{self.web.name}"
{websocket}
[limits]
rate = 100000
burst = 100000
{limits}
{rooms}
"""
        d = self.start(config, listen=(), expect_listeners=3 if tls else 2)
        ports = [int(a.rsplit(":", 1)[1]) for a in d.addresses]
        d.plain_port, d.ws_port = ports[0], ports[1]
        d.wss_port = ports[2] if tls else None
        return d

    def ws(self, d, nick=None, join=(), **kw):
        c = WsClient(d.ws_port, **kw)
        self.clients.append(c)
        return harness.introduce(c, nick, join)

    def plain(self, d, nick=None, join=()):
        c = Client(("127.0.0.1", d.plain_port))
        self.clients.append(c)
        return harness.introduce(c, nick, join)

    def assert_alive(self, *clients):
        for c in clients:
            c.send({"op": "ping", "id": "alive"})
            self.assertEqual(c.wait_for("pong", id="alive"), {"op": "pong", "id": "alive"})

    # -- the upgrade
    def test_welcome_then_json_in_both_directions_one_message_per_line(self):
        d = self.start_ws()
        c = self.ws(d)
        self.assertEqual(c.welcome["op"], "welcome")
        self.assertIn("Upgrade: websocket", c.head)
        self.assertEqual(c.call({"op": "nick", "nick": "ann", "id": 1}, "ok"), {"op": "ok", "id": 1, "nick": "ann"})
        joined = c.call({"op": "join", "room": "lobby"}, "joined")
        self.assertEqual(joined["members"], ["ann"])
        self.assertTrue(d.log.wait_for(r"WebSocket\) connected as guest-"), "the session is logged")
        # Text mode does not exist here: a plain line is bad JSON, answered, and the session goes on.
        reply = c.call("hello there", "error")
        self.assertEqual(reply["code"], "bad_json")
        self.assert_alive(c)

    def test_websocket_and_plain_clients_chat_in_one_seq_order(self):
        d = self.start_ws()
        ann = self.ws(d, "ann", ["lobby"])
        bob = self.ws(d, "bob", ["lobby"])
        nc = self.plain(d, "carol", ["lobby"])
        n = 60
        for i in range(n):
            for c, who in ((ann, "ann"), (bob, "bob"), (nc, "carol")):
                c.send({"op": "say", "room": "lobby", "text": f"{who} {i}"})
        orders = []
        for c in (ann, bob, nc):
            seen = []
            while len(seen) < 3 * n:
                m = c.recv()
                if m["op"] == "message":
                    seen.append((m["seq"], m["from"], m["text"]))
            orders.append(seen)
        self.assertEqual(orders[0], orders[1])
        self.assertEqual(orders[0], orders[2])
        seqs = [s for s, _, _ in orders[0]]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + 3 * n)))

    def test_a_frame_sent_right_behind_the_upgrade_request_is_served(self):
        d = self.start_ws()
        c = WsClient(d.ws_port, upgrade=False)
        self.clients.append(c)
        from wsclient import frame
        import base64
        key = base64.b64encode(os.urandom(16)).decode()
        c.request(f"GET / HTTP/1.1\r\nHost: {c.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                  + frame(TEXT, '{"op":"ping","id":"early"}'))
        status, _ = c.read_head()
        self.assertEqual(status, 101)
        self.assertEqual(c.recv()["op"], "welcome")
        self.assertEqual(c.recv(), {"op": "pong", "id": "early"})

    def test_origin_is_checked(self):
        d = self.start_ws()
        # Same host: allowed; no Origin (not a browser): allowed; another site: 403.
        self.ws(d, origin="same")
        self.ws(d, origin=None)
        evil = WsClient(d.ws_port, upgrade=False)
        self.clients.append(evil)
        status, head = evil.handshake(origin="http://evil.example")
        self.assertEqual(status, 403)
        evil.wait_eof()
        self.assertEqual(evil.sock.recv(1), b"")
        d2 = self.start_ws(websocket='origins = ["https://chat.example.com"]')
        good = WsClient(d2.ws_port, origin="https://chat.example.com")
        self.clients.append(good)
        same = WsClient(d2.ws_port, upgrade=False)
        self.clients.append(same)
        self.assertEqual(same.handshake(origin="same")[0], 403, "a list replaces the same-host rule")

    def test_bad_upgrades_get_their_status_and_close(self):
        d = self.start_ws()
        watcher = self.ws(d, "watcher", ["lobby"])
        cases = [
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
             "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
            ("GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            ("GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 431),
            ("GET / HTTP/1.1\r\nHost: x\r\n" + "X-Pad: " + "b" * 100 + "\r\n" * 1 + ("X-More: c\r\n" * 800) + "\r\n", 431),
            ("\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n", 400),
        ]
        for request, want in cases:
            c = WsClient(d.ws_port, upgrade=False)
            self.clients.append(c)
            c.request(request)
            status, head, body = c.read_answer()
            self.assertEqual(status, want, (request[:60], head, body))
            self.assertIn("Connection: close", head)
            c.wait_eof()
        self.assert_alive(watcher)

    def test_web_client_files_are_served_and_head_has_no_body(self):
        d = self.start_ws()
        for path, kind in (("/", "text/html"), ("/index.html", "text/html"), ("/app.js", "text/javascript"),
                           ("/?x=1", "text/html")):
            c = WsClient(d.ws_port, upgrade=False)
            self.clients.append(c)
            c.request(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, head, body = c.read_answer()
            self.assertEqual(status, 200, path)
            self.assertIn(f"Content-Type: {kind}", head)
            self.assertTrue(body)
        c = WsClient(d.ws_port, upgrade=False)
        self.clients.append(c)
        c.request("HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, head = c.read_head()
        self.assertEqual(status, 200)
        c.wait_eof()
        self.assertEqual(c.buf, b"", "HEAD has no body")
        self.assertNotIn("connected as", d.log.text(), "a page fetch is not a chat session")

    def test_an_upgrade_that_never_comes_is_closed_at_the_deadline(self):
        d = self.start_ws(websocket="handshake_timeout_ms = 300")
        watcher = self.ws(d, "watcher", ["lobby"])
        silent = WsClient(d.ws_port, upgrade=False)
        self.clients.append(silent)
        silent.request("GET / HTTP/1.1\r\nHost: x\r\n")  # half a head, then nothing
        silent.wait_eof()
        d.log.wait_for("sent no WebSocket upgrade")
        self.assert_alive(watcher)

    # -- frames
    def test_a_fragmented_message_with_a_ping_between_is_one_request(self):
        d = self.start_ws()
        c = self.ws(d)
        c.send_frame(TEXT, '{"op":"ping",', fin=False)
        c.send_frame(PING, b"mid")
        c.send_frame(CONT, '"id":', fin=False)
        c.send_frame(CONT, '"frag"}', fin=True)
        # The pong and the reply, in either order (a pong may go out whenever).
        got = {c.recv_frame()[1:] for _ in range(2)}
        self.assertEqual(got, {(PONG, b"mid"), (TEXT, b'{"op":"pong","id":"frag"}')})

    def test_ping_is_answered_and_the_server_pings_an_idle_client(self):
        d = self.start_ws(websocket="ping_interval_s = 1")
        c = self.ws(d)
        c.send_frame(PING, b"hello")
        self.assertEqual(c.recv_frame()[1:], (PONG, b"hello"))
        fin, opcode, payload = c.recv_frame(timeout=WAIT)  # the server's own ping, after 1 s of silence
        self.assertEqual(opcode, PING)
        c.send_frame(PONG, payload)
        self.assert_alive(c)

    def test_close_handshake(self):
        d = self.start_ws()
        watcher = self.ws(d, "watcher", ["lobby"])
        c = self.ws(d, "leaver", ["lobby"])
        watcher.wait_for("presence", event="join", nick="leaver")
        import struct
        c.send_frame(CLOSE, struct.pack("!H", 1000) + b"bye")
        self.assertEqual(c.wait_close(), (1000, "bye"))
        watcher.wait_for("presence", event="leave", nick="leaver")

    def test_a_message_sent_together_with_the_close_is_still_served(self):
        d = self.start_ws()
        watcher = self.ws(d, "watcher", ["lobby"])
        c = self.ws(d, "leaver", ["lobby"])
        import struct
        from wsclient import frame
        c.sock.sendall(frame(TEXT, '{"op":"say","room":"lobby","text":"last words","id":1}')
                       + frame(CLOSE, struct.pack("!H", 1000)))
        self.assertEqual(watcher.wait_for("message")["text"], "last words")
        self.assertEqual(c.wait_for("ok", id=1)["op"], "ok")  # the reply, then the close frame
        self.assertEqual(c.wait_close()[0], 1000)
        watcher.wait_for("presence", event="leave", nick="leaver")

    def bad_frame_closes(self, send, code):
        d = self.start_ws(limits="max_frame_bytes = 1024")
        watcher = self.ws(d, "watcher", ["lobby"])
        c = self.ws(d, "bad", ["lobby"])
        send(c)
        got = c.wait_close()
        self.assertEqual(got[0], code, got)
        watcher.wait_for("presence", event="leave", nick="bad")
        self.assert_alive(watcher)
        return d

    def test_oversized_message_is_closed_with_1009(self):
        self.bad_frame_closes(lambda c: c.send_frame(TEXT, '{"op":"ping","id":"' + "x" * 2000 + '"}'), 1009)

    def test_oversized_fragments_are_closed_with_1009(self):
        def send(c):
            for _ in range(3):
                c.send_frame(TEXT if _ == 0 else CONT, "y" * 600, fin=False)
        self.bad_frame_closes(send, 1009)

    def test_a_lying_length_is_closed_before_it_is_buffered(self):
        self.bad_frame_closes(lambda c: c.send_frame(TEXT, b"z" * 10, length=1 << 40), 1009)

    def test_invalid_utf8_is_closed_with_1007(self):
        self.bad_frame_closes(lambda c: c.send_frame(TEXT, b'{"op":"ping","id":"\xff\xfe"}'), 1007)

    def test_unmasked_client_frame_is_a_protocol_error(self):
        self.bad_frame_closes(lambda c: c.send_frame(TEXT, '{"op":"ping"}', mask=False), 1002)

    def test_binary_message_is_refused_with_1003(self):
        self.bad_frame_closes(lambda c: c.send_frame(BINARY, b'{"op":"ping"}'), 1003)

    def test_unknown_opcode_is_a_protocol_error(self):
        self.bad_frame_closes(lambda c: c.send_frame(0x3, b"?"), 1002)

    # -- flow and lifecycle
    def test_a_websocket_reader_that_stops_reading_is_closed_with_4016_slow_consumer(self):
        d = self.start_ws(limits="max_outbound_bytes = 65536")
        stuck = self.ws(d, "stuck", ["lobby"])
        writer = self.plain(d, "writer", ["lobby"])
        # Big messages, so the kernel's buffers fill soon; the stuck client's receive buffer
        # is left as it is, so that it can read fast once it starts (before the drain deadline).
        harness.say_until_cut(d, writer, "y" * 16000, 1500)  # 24 MB at most
        # It reads now: what was queued, the error, then the close frame naming the code.
        seen = []
        while True:
            try:
                seen.append(stuck.recv())
            except Closed:
                break
        self.assertEqual(seen[-1].get("code"), "slow_consumer", [m.get("seq") for m in seen[-3:]])
        self.assertEqual(stuck.closed_with, (4016, "slow_consumer"))
        seqs = [m["seq"] for m in seen if m.get("op") == "message"]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "whole messages, in order, up to the cut")

    def test_shutdown_sends_the_notice_then_closes_with_shutting_down(self):
        d = self.start_ws()
        c = self.ws(d, "ann", ["lobby"])
        d.signal(signal.SIGTERM)
        c.wait_for("system")
        self.assertEqual(c.wait_close(), (4017, "shutting_down"))
        self.assertEqual(d.wait_exit(), 0)

    def test_a_full_server_answers_503(self):
        d = self.start_ws(server="max_clients = 1")
        self.ws(d)
        c = WsClient(d.ws_port, upgrade=False)
        self.clients.append(c)
        c.request("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        status, head, body = c.read_answer()
        self.assertEqual(status, 503)
        self.assertIn(b"full", body)

    def test_an_upgrade_and_a_close_notify_in_one_write_leave_no_session(self):
        # The upgrade is accepted in the read that also ends the connection: no session may be
        # made for it afterwards (it would never be retired; a whisper to it would reach a
        # freed connection).
        d = self.start_ws(tls=True)
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        raw = socket.create_connection(("127.0.0.1", d.wss_port), timeout=WAIT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:  # the handshake, by hand over the socket
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        raw.sendall(outgoing.read())
        import base64
        key = base64.b64encode(os.urandom(16)).decode()
        tls.write((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{d.wss_port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            tls.unwrap()  # our close_notify, right behind the request
        except ssl.SSLWantReadError:
            pass
        raw.sendall(outgoing.read())  # both records in one write
        raw.close()
        d.log.wait_for("client 127.0.0.1:[0-9]+ disconnected|WebSocket")
        probe = self.plain(d, "probe")
        guest = int(probe.welcome["nick"].split("-")[1])
        for n in range(1, guest):
            reply = probe.call({"op": "whisper", "to": f"guest-{n}", "text": "hello?"})
            self.assertEqual(reply.get("code"), "no_such_nick", reply)

    def test_wss_chats_with_plain_and_ws(self):
        d = self.start_ws(tls=True)
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.pem"))
        raw = socket.create_connection(("127.0.0.1", d.wss_port), timeout=WAIT)
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        secure = WsClient(d.wss_port, sock=s)
        self.clients.append(secure)
        secure.call({"op": "nick", "nick": "sec"}, "ok")
        secure.call({"op": "join", "room": "lobby"}, "joined")
        ws = self.ws(d, "ws", ["lobby"])
        nc = self.plain(d, "nc", ["lobby"])
        secure.send({"op": "say", "room": "lobby", "text": "over wss"})
        for c in (ws, nc, secure):
            self.assertEqual(c.wait_for("message")["text"], "over wss")
        self.assertIn("(WebSocket) connected as", d.log.text())


if __name__ == "__main__":
    harness.run()
