"""TLS listeners against real TLS clients: openssl s_client, Python's ssl (OpenSSL) and roomcat.

Certificates are made per test run with the openssl command: a CA, a server certificate for
127.0.0.1 signed by it, a client certificate, and a second CA that signs nothing we trust.
"""
import os
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import harness
from harness import WAIT, Client, Closed, DaemonTest

ROOMCAT = os.path.join(os.path.dirname(harness.ROOMD), "roomcat")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Certs:
    """A throwaway PKI in a temporary directory."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="roomd-tls-")
        d = self.dir = self.tmp.name
        self.ca("ca")
        self.ca("other-ca")
        self.leaf("server", "ca", "127.0.0.1", san="IP:127.0.0.1,DNS:localhost")
        self.leaf("server2", "ca", "rotated.example", san="IP:127.0.0.1")
        self.leaf("client", "ca", "alice-client")
        self.leaf("stranger", "other-ca", "stranger")
        with open(os.path.join(d, "ext.cnf"), "w"):
            pass

    def path(self, name):
        return os.path.join(self.dir, name)

    def ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", cwd=self.dir)

    def leaf(self, name, ca, cn, san=None):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=self.dir)
        args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.pem"]
        if san:
            ext = os.path.join(self.dir, f"{name}.ext")
            with open(ext, "w") as f:
                f.write(f"subjectAltName={san}\n")
            args += ["-extfile", ext]
        openssl(*args, cwd=self.dir)


class TlsClient(Client):
    """A harness client whose socket is wrapped in TLS (Python's ssl is OpenSSL)."""

    def __init__(self, port, cafile, cert=None, key=None, version=None, welcome=True):
        ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            ctx.load_cert_chain(cert, key)
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""
        self.eof = False
        self.welcome = self.recv() if welcome else None

    def recv_line(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                raise Closed("connection closed; buffered: %r" % self.buf[:200])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line within %.1fs" % timeout)
            if not self.sock.pending():
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    continue
            try:
                chunk = self.sock.recv(1 << 16)
            except ssl.SSLWantReadError:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8")


def served_cn(port, cafile):
    """The common name of the certificate a new connection is served."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


class TlsTest(DaemonTest):
    @classmethod
    def setUpClass(cls):
        cls.certs = Certs()

    @classmethod
    def tearDownClass(cls):
        cls.certs.tmp.cleanup()

    def start_tls(self, extra_tls="", cert="server", handshake_timeout_ms=10000, limits=""):
        c = self.certs
        self.tls_tmp = tempfile.TemporaryDirectory(prefix="roomd-tls-files-")
        self.addCleanup(self.tls_tmp.cleanup)
        # The daemon reads its own copies, so a test may rotate or break them.
        self.cert_file = os.path.join(self.tls_tmp.name, "cert.pem")
        self.key_file = os.path.join(self.tls_tmp.name, "key.pem")
        self.install_cert(cert)
        config = f"""
[server]
listen = ["127.0.0.1:0", {{ address = "127.0.0.1:0", tls = true }}]
[tls]
cert = "{self.cert_file}"
key = "{self.key_file}"
handshake_timeout_ms = {handshake_timeout_ms}
{extra_tls}
[limits]
rate = 100000
burst = 100000
{limits}
[[rooms]]
name = "lobby"
"""
        d = self.start(config, listen=(), expect_listeners=2)
        plain = [a for a in d.addresses][0]
        tls = [a for a in d.addresses][1]
        d.plain_port = int(plain.rsplit(":", 1)[1])
        d.tls_port = int(tls.rsplit(":", 1)[1])
        return d

    def install_cert(self, name):
        for src, dst in ((f"{name}.pem", self.cert_file), (f"{name}.key", self.key_file)):
            with open(self.certs.path(src), "rb") as f, open(dst + ".new", "wb") as g:
                g.write(f.read())
            os.replace(dst + ".new", dst)

    def plain(self, d, nick=None, join=()):
        c = Client(("127.0.0.1", d.plain_port))
        self.clients.append(c)
        return harness.introduce(c, nick, join)

    def tls(self, d, nick=None, join=(), **kw):
        c = TlsClient(d.tls_port, self.certs.path("ca.pem"), **kw)
        self.clients.append(c)
        return harness.introduce(c, nick, join)

    def s_client(self, d, version):
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{d.tls_port}", "-quiet",
                              "-CAfile", self.certs.path("ca.pem"), "-verify_return_error", "-verify_ip", "127.0.0.1",
                              version],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.kill(), p.wait(), p.stdin.close(), p.stdout.close()))
        return p

    # -- the tests

    def test_s_client_tls12_and_tls13_chat_with_a_plain_client(self):
        d = self.start_tls()
        carol = self.plain(d, "carol", ["lobby"])
        for version, nick in (("-tls1_2", "ann12"), ("-tls1_3", "ann13")):
            p = self.s_client(d, version)
            out = harness.LineLog(p.stdout)
            out.wait_for('"op":"welcome"')
            p.stdin.write(f'{{"op":"nick","nick":"{nick}","id":1}}\n{{"op":"join","room":"lobby","id":2}}\n'.encode())
            p.stdin.flush()
            out.wait_for('"op":"joined"')
            carol.wait_for("presence", event="join", nick=nick)
            p.stdin.write(f'{{"op":"say","room":"lobby","text":"hello from {nick}","id":3}}\n'.encode())
            p.stdin.flush()
            line = out.wait_for(f'"text":"hello from {nick}"')
            msg = carol.wait_for("message", text=f"hello from {nick}")
            self.assertIn(f'"seq":{msg["seq"]}', line)
            carol.send({"op": "say", "room": "lobby", "text": f"hi {nick}"})
            out.wait_for(f'"text":"hi {nick}"')
        d.log.wait_for("TLS certificate: .*CN ?= ?127.0.0.1")

    def test_messages_keep_one_order_across_tls_and_plain(self):
        d = self.start_tls()
        a = self.tls(d, "ann", ["lobby"])
        b = self.plain(d, "bob", ["lobby"])
        a.wait_for("presence", event="join", nick="bob")
        for i in range(50):
            (a if i % 2 else b).send({"op": "say", "room": "lobby", "text": f"m{i}"})
        # Both see the same 50 messages in the same seq order.
        orders = []
        for c in (a, b):
            got = []
            while len(got) < 50:
                m = c.recv()
                if m.get("op") == "message":
                    got.append((m["seq"], m["text"]))
            orders.append(got)
        self.assertEqual(orders[0], orders[1])
        self.assertEqual([s for s, _ in orders[0]], sorted(s for s, _ in orders[0]))

    def test_a_large_burst_arrives_whole_over_tls(self):
        d = self.start_tls()
        reader = self.tls(d, "reader", ["lobby"])
        writer = self.plain(d, "writer", ["lobby"])
        reader.wait_for("presence", event="join", nick="writer")
        text = "x" * 4000
        for i in range(300):  # ~1.2 MB through the TLS queue: several records and partial writes
            writer.send({"op": "say", "room": "lobby", "text": f"{i}:{text}"})
        for i in range(300):
            m = reader.wait_for("message")
            self.assertEqual(m["text"], f"{i}:{text}")

    def test_roomcat_verifies_the_server(self):
        d = self.start_tls()
        target = f"tls://127.0.0.1:{d.tls_port}"
        ok = subprocess.run([ROOMCAT, target, "--ca", self.certs.path("ca.pem"), "--nick", "rc", "--join", "lobby"],
                            input=b"hello over tls\n", capture_output=True, timeout=WAIT)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn(b"[lobby] rc: hello over tls", ok.stdout)
        bad = subprocess.run([ROOMCAT, target, "--ca", self.certs.path("other-ca.pem"), "--nick", "rc2"],
                             input=b"nope\n", capture_output=True, timeout=WAIT)
        self.assertEqual(bad.returncode, 1)
        self.assertIn(b"certificate verify failed", bad.stderr)
        self.assertIn(b"--ca", bad.stderr)
        # A host name is checked against the certificate's DNS names (localhost is one).
        by_name = subprocess.run([ROOMCAT, f"tls://localhost:{d.tls_port}", "--ca", self.certs.path("ca.pem")],
                                 input=b"", capture_output=True, timeout=WAIT)
        self.assertEqual(by_name.returncode, 0, by_name.stderr)
        missing = subprocess.run([ROOMCAT, target, "--ca", "/nonexistent/ca.pem"], input=b"", capture_output=True,
                                 timeout=WAIT)
        self.assertEqual(missing.returncode, 2)
        self.assertIn(b"cannot load the CA bundle", missing.stderr)
        self.assertTrue(d.log.wait_for("TLS handshake failed"))

    def test_client_certificates_required_and_refused(self):
        d = self.start_tls(extra_tls=f'ca = "{self.certs.path("ca.pem")}"')
        good = self.tls(d, "alice", ["lobby"], cert=self.certs.path("client.pem"), key=self.certs.path("client.key"))
        for kw in ({}, {"cert": self.certs.path("stranger.pem"), "key": self.certs.path("stranger.key")}):
            with self.assertRaises((ssl.SSLError, Closed, ConnectionResetError, BrokenPipeError, OSError)):
                c = TlsClient(d.tls_port, self.certs.path("ca.pem"), **kw)
                self.clients.append(c)
                c.recv()  # TLS 1.3: the refusal comes after the client's Finished
        good.send({"op": "say", "room": "lobby", "text": "still here", "id": 1})
        good.wait_for("message", text="still here")
        d.log.wait_for("TLS handshake failed")

    def test_min_version_13_refuses_tls12(self):
        d = self.start_tls(extra_tls='min_version = "1.3"')
        with self.assertRaises((ssl.SSLError, Closed, ConnectionResetError, OSError)):
            TlsClient(d.tls_port, self.certs.path("ca.pem"), version=ssl.TLSVersion.TLSv1_2)
        c = self.tls(d, "new", version=ssl.TLSVersion.TLSv1_3)
        c.assert_quiet()

    def test_rotation_on_sighup_and_a_broken_file_keeps_the_old_certificate(self):
        d = self.start_tls()
        ca = self.certs.path("ca.pem")
        self.assertEqual(served_cn(d.tls_port, ca), "127.0.0.1")
        open_session = self.tls(d, "keeper", ["lobby"])
        mark = d.log.mark()
        self.install_cert("server2")
        d.signal(signal.SIGHUP)
        d.log.wait_for("reload: TLS certificate: .*rotated.example", start=mark)
        self.assertEqual(served_cn(d.tls_port, ca), "rotated.example")
        open_session.send({"op": "say", "room": "lobby", "text": "after rotation", "id": 1})
        open_session.wait_for("message", text="after rotation")
        # A broken certificate: logged, and the one in use stays.
        mark = d.log.mark()
        with open(self.cert_file, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        d.signal(signal.SIGHUP)
        d.log.wait_for("reload: \\[tls\\]: cannot load the certificate.*keeping the certificate in use", start=mark)
        d.log.wait_for("reloaded ", start=mark)
        self.assertEqual(served_cn(d.tls_port, ca), "rotated.example")
        # A key that does not match its certificate: the same.
        mark = d.log.mark()
        self.install_cert("server")
        with open(self.certs.path("client.key"), "rb") as f, open(self.key_file, "wb") as g:
            g.write(f.read())
        d.signal(signal.SIGHUP)
        d.log.wait_for("(key values mismatch|does not match the certificate).*keeping the certificate in use", start=mark)
        self.assertEqual(served_cn(d.tls_port, ca), "rotated.example")
        open_session.send({"op": "say", "room": "lobby", "text": "still fine", "id": 2})
        open_session.wait_for("message", text="still fine")

    def test_garbage_plain_http_and_a_stalled_handshake_are_closed_without_disturbing_others(self):
        d = self.start_tls(handshake_timeout_ms=500)
        chatter = self.tls(d, "chatter", ["lobby"])
        other = self.plain(d, "other", ["lobby"])
        # Garbage and plain HTTP at the TLS port: an alert and FIN, nothing else.
        for junk in (os.urandom(3000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b'{"op":"nick","nick":"x"}\n'):
            s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=WAIT)
            s.sendall(junk)
            data = b""
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertNotIn(b"welcome", data)
            self.assertLess(len(data), 100)  # at most an alert record
            s.close()
        # A handshake that never finishes: closed at the timeout.
        stalled = socket.create_connection(("127.0.0.1", d.tls_port), timeout=WAIT)
        stalled.sendall(b"\x16\x03\x01\x00\x10")  # half a ClientHello record header's promise
        start = time.monotonic()
        self.assertEqual(stalled.recv(100), b"")
        self.assertGreater(time.monotonic() - start, 0.3)
        stalled.close()
        d.log.wait_for("TLS handshake not finished in")
        chatter.send({"op": "say", "room": "lobby", "text": "unbothered", "id": 1})
        chatter.wait_for("message", text="unbothered")
        other.wait_for("message", text="unbothered")

    def test_a_tls_reader_that_stops_reading_is_a_slow_consumer(self):
        d = self.start_tls(limits="max_outbound_bytes = 65536")
        stuck = self.tls(d, "stuck", ["lobby"])
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer = self.plain(d, "writer", ["lobby"])
        watcher = self.tls(d, "watcher", ["lobby"])
        text = "y" * 2000
        i = harness.say_until_cut(d, writer, text, 2000, every=20)  # 4 MB at most, far over the 64 KB limit
        writer.send({"op": "who", "room": "lobby", "id": "w"})
        who = writer.wait_for("who", id="w")  # the stuck one's leave may come first
        self.assertNotIn("stuck", who["members"])
        self.assertIn("watcher", who["members"])
        # The watcher, which reads, got every message in order.
        got = 0
        while got <= i:
            m = watcher.recv()
            if m.get("op") == "message":
                self.assertEqual(m["text"], f"{got}:{text}")
                got += 1


if __name__ == "__main__":
    harness.run()
