"""roomd under its unit's sandbox, reproduced by hand (issue 20): the restrictions of
systemd/roomd.service.in that can be made without systemd as PID 1 (sandbox_init.py says which,
and how), then a real client joins, says, gets its message; the history is written; SIGTERM
ends it with 0.

Each rule this machine cannot reproduce is skipped with its reason printed (sandbox_init.py's
`skipped` lines), never silently; what was applied is checked from outside on the running
process (/proc/PID/status, uid_map, mountinfo, limits, environ) and on the files it made.
What only systemd enforces (the system call filter, MemoryDenyWriteExecute, the address
families, ...) is listed in docs/reliability.md.
"""
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from harness import Client, LineLog, introduce

BUILD = os.path.abspath(os.environ.get("ROOMD_BUILD_DIR", os.path.dirname(harness.ROOMD)))


def under_tmp(path):
    return os.path.realpath(path) == "/tmp" or os.path.realpath(path).startswith("/tmp/")
INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_init.py")
NOBODY = 65534
# --kill-child: if the test kills unshare, the namespace's PID 1 (and so all in it) goes too.
UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]


def descendants(pid):
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return out
    for k in kids:
        out += [k] + descendants(k)
    return out


def traversable_by_others(path):
    """Whether a user that is not the owner may reach `path` (o+x on every folder above)."""
    path = os.path.dirname(os.path.abspath(path))
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


class Sandbox(unittest.TestCase):
    def setUp(self):
        self.proc = None
        self.pid = None
        # Not under /tmp: the sandbox puts a private tmpfs there (PrivateTmp). Nor is the
        # daemon: from a checkout under /tmp it runs a copy, as the unit runs /usr/bin/roomd.
        self.base = tempfile.mkdtemp(prefix="sandbox-", dir="/var/tmp" if under_tmp(BUILD) else BUILD)
        os.chmod(self.base, 0o755)
        self.roomd = harness.ROOMD
        if under_tmp(self.roomd):
            self.roomd = shutil.copy2(harness.ROOMD, os.path.join(self.base, "roomd"))

    def tearDown(self):
        if self.proc:
            if self.proc.poll() is None:
                if self.pid:
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
            # The pipes close once every process that held them is gone.
            self.log.thread.join(harness.WAIT)
            self.out.thread.join(harness.WAIT)
            self.proc.stdout.close()
            self.proc.stderr.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def start(self):
        root = os.geteuid() == 0
        if root and not (traversable_by_others(self.roomd) and traversable_by_others(self.base)):
            self.skipTest(f"nobody cannot reach {self.roomd} or {self.base} (a folder above is not o+x)")
        self.state = os.path.join(self.base, "state")
        self.runtime = os.path.join(self.base, "run")
        for d in (self.state, self.runtime):
            os.mkdir(d, 0o700)
            if root:
                os.chown(d, NOBODY, NOBODY)
        config = os.path.join(self.base, "roomd.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = ["127.0.0.1:0", {{ address = "unix:{self.runtime}/admin.sock", admin = true }}]\n'
                    f'[history]\npath = "{self.state}/history.db"\n[[rooms]]\nname = "lobby"\n')
        os.chmod(config, 0o644)
        cmd = [sys.executable, INIT, self.state, self.runtime, "--", self.roomd, "-c", config]
        if root and shutil.which("unshare"):
            probe = subprocess.run(UNSHARE + ["true"], capture_output=True, text=True, timeout=30)
            if probe.returncode == 0:
                cmd = UNSHARE + cmd
            else:
                print(f"sandbox: no mount and PID namespaces here: {probe.stderr.strip()}", file=sys.stderr)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = LineLog(self.proc.stderr)
        self.out = LineLog(self.proc.stdout)
        self.log.wait_for(r"listening on unix:.*admin\.sock")
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.wait_for(r"listening on 127")).group(1))
        text = self.log.text()
        self.applied = set(re.findall(r"sandbox: applied (\S+)", text))
        for line in text.splitlines():
            if line.startswith("sandbox: skipped"):
                print(line, file=sys.stderr)  # said, not silent: the test log shows what this machine cannot do
        roomd = [p for p in descendants(self.proc.pid) if os.path.realpath(f"/proc/{p}/exe") == os.path.realpath(self.roomd)]
        self.assertEqual(len(roomd), 1, roomd)
        self.pid = roomd[0]

    def proc_file(self, name):
        with open(f"/proc/{self.pid}/{name}", "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check_applied_rules(self):
        status = self.proc_file("status")
        field = lambda name: re.search(rf"^{name}:[ \t]*(.*)$", status, re.M).group(1).split()
        self.assertEqual(field("NoNewPrivs"), ["1"])
        self.assertIn("NoNewPrivileges=yes", self.applied)
        env = [e for e in self.proc_file("environ").split("\0") if e]
        self.assertEqual([e for e in env if not e.split("=", 1)[0].endswith("SAN_OPTIONS")], [])
        if "DynamicUser=yes" in self.applied:
            self.assertEqual(field("Uid"), [str(NOBODY)] * 4)
            self.assertEqual(field("Gid"), [str(NOBODY)] * 4)
            self.assertEqual(field("Groups"), [])
        if "CapabilityBoundingSet=" in self.applied:
            for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                self.assertEqual(int(field(caps)[0], 16), 0, caps)
        if "PrivateUsers=yes" in self.applied:
            ids = ["0", str(NOBODY)] if os.geteuid() == 0 else [str(os.getuid())]
            maps = [l.split() for l in self.proc_file("uid_map").splitlines()]
            self.assertEqual(maps, [[i, i, "1"] for i in ids])
            self.assertNotEqual(os.readlink(f"/proc/{self.pid}/ns/user"), os.readlink("/proc/self/ns/user"))
        if "ProtectHostname=yes" in self.applied:
            self.assertNotEqual(os.readlink(f"/proc/{self.pid}/ns/uts"), os.readlink("/proc/self/ns/uts"))
        if "LimitNOFILE=16384" in self.applied:
            limits = re.search(r"^Max open files\s+(\d+)\s+(\d+)", self.proc_file("limits"), re.M)
            self.assertEqual(limits.groups(), ("16384", "16384"))  # roomd raised its soft limit to the hard one
        mounts = {}
        for line in self.proc_file("mountinfo").splitlines():
            fields = line.split()
            sep = fields.index("-")
            mounts[fields[4]] = (set(fields[5].split(",")), fields[sep + 1], set(fields[sep + 3].split(",")))
        if "ProtectSystem=strict" in self.applied:
            self.assertIn("ro", mounts["/"][0])
            self.assertIn("rw", mounts[self.state][0])
            self.assertIn("rw", mounts[self.runtime][0])
            for point, (flags, _, _) in mounts.items():
                if point not in (self.state, self.runtime, "/tmp") and not point.startswith("/proc"):
                    self.assertIn("ro", flags, point)
        if "ProtectProc=invisible" in self.applied:
            self.assertEqual(mounts["/proc"][1], "proc")
            self.assertTrue({"hidepid=invisible", "subset=pid"} <= mounts["/proc"][2], mounts["/proc"])
            self.assertEqual(len(field("NSpid")), 2)  # a PID namespace of its own
        if "PrivateTmp=yes" in self.applied:
            self.assertEqual(mounts["/tmp"][1], "tmpfs")
        if "PrivateDevices=yes" in self.applied:
            self.assertEqual(mounts["/dev"][1], "tmpfs")
            self.assertIn("ro", mounts["/dev"][0])
        if "ProtectHome=yes" in self.applied and "/home" in mounts:
            self.assertEqual(mounts["/home"][1], "tmpfs")

    def test_roomd_chats_and_keeps_history_under_the_unit_s_restrictions(self):
        self.start()
        self.check_applied_rules()

        a = introduce(Client(("127.0.0.1", self.port)), "ann", ["lobby"])
        b = introduce(Client(("127.0.0.1", self.port)), "bob", ["lobby"])
        a.expect("presence", event="join")
        b.send({"op": "say", "room": "lobby", "text": "inside the sandbox"})
        self.assertEqual(a.expect("message")["text"], "inside the sandbox")
        self.assertEqual(b.expect("message")["text"], "inside the sandbox")
        admin = Client(os.path.join(self.runtime, "admin.sock"))
        self.assertEqual(admin.call({"op": "stats"}, "stats")["messages_in"], 1)
        for c in (a, b, admin):
            c.close()

        # UMask=0077: what roomd made is its own alone (the admin socket is chmod 0600 anyway).
        made = sorted(os.listdir(self.state))
        self.assertIn("history.db", made)
        for name in made:
            st = os.stat(os.path.join(self.state, name))
            if "UMask=0077" in self.applied:
                self.assertEqual(stat.S_IMODE(st.st_mode) & 0o077, 0, name)
            if "DynamicUser=yes" in self.applied:
                self.assertEqual((st.st_uid, st.st_gid), (NOBODY, NOBODY), name)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.runtime, "admin.sock")).st_mode), 0o600)

        os.kill(self.pid, signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=harness.WAIT), 0, self.log.text())
        self.log.thread.join(harness.WAIT)
        with sqlite3.connect(f"file:{self.state}/history.db?mode=ro", uri=True) as db:
            texts = [r[0] for r in db.execute("SELECT text FROM messages WHERE room = 'lobby'")]
        self.assertEqual(texts, ["inside the sandbox"])
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ThreadSanitizer"):
            self.assertNotIn(marker, self.log.text())


if __name__ == "__main__":
    harness.run()
