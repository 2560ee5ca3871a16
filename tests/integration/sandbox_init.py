#!/usr/bin/env python3
"""Runs a command under the restrictions of roomd's systemd unit (systemd/roomd.service.in),
as far as they can be made by hand without systemd as PID 1. Used by test_sandbox.py.

    sandbox_init.py STATE_DIR RUNTIME_DIR -- COMMAND...

Meant to run as root as PID 1 of fresh mount and PID namespaces
(`unshare --mount --pid --fork --propagation private sandbox_init.py ...`). Each rule it
applies is printed as `sandbox: applied RULE`, each it cannot as `sandbox: skipped RULE: why`
(on stderr, before the command starts), so the test knows what to check and says what it could
not. In order:

  ProtectSystem=strict   every mount read-only but STATE_DIR and RUNTIME_DIR (StateDirectory,
                         RuntimeDirectory), bound onto themselves first
  ProtectHome=yes        an empty read-only tmpfs over /home and /root
  ProtectProc=invisible, ProcSubset=pid
                         a new /proc for the PID namespace, hidepid=invisible,subset=pid
  PrivateTmp=yes         a tmpfs on /tmp
  PrivateDevices=yes     a read-only /dev with only null, zero, full, random and urandom
  LimitNOFILE=16384      soft and hard
  UMask=0077
  PrivateUsers=yes, ProtectHostname=yes
                         a user namespace mapping only root and the service's user (65534)
                         to themselves, with its own UTS namespace (the maps are written from
                         outside, as systemd does)
  DynamicUser=yes (as nobody), NoNewPrivileges=yes, CapabilityBoundingSet= (empty)
                         setpriv, inside the user namespace
  an empty environment   (systemd sets only a few variables; roomd needs none), but for a
                         sanitizer build's *SAN_OPTIONS

The command runs in a child; this process forwards SIGTERM and SIGINT to it and exits with
its status.
"""
import ctypes
import os
import resource
import signal
import subprocess
import sys

CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
SERVICE_UID = 65534  # nobody: the stand-in for DynamicUser's made-up user
DEVICES = ("null", "zero", "full", "random", "urandom")


def say(text):
    print("sandbox: " + text, file=sys.stderr, flush=True)


def run(*cmd):
    """Runs a command; returns None, or why it failed."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"{cmd[0]} exited {r.returncode}")


def rule(name, *steps):
    """Applies a rule's steps (callables returning None or why not) until one fails."""
    for step in steps:
        why = step()
        if why:
            say(f"skipped {name}: {why}")
            return False
    say(f"applied {name}")
    return True


def mount_points():
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(line.split()[4].encode().decode("unicode_escape"))
    return points


def read_only_everything_but(keep):
    failed = []
    for point in mount_points():
        if point in keep or point == "/proc" or point.startswith("/proc/"):
            continue
        # bind: changes this mount's flag in our namespace only, never the filesystem's.
        why = run("mount", "-n", "-o", "remount,bind,ro", point)
        if why and os.path.exists(point):
            failed.append(f"{point}: {why}")
    return "; ".join(failed) or None


def private_devices():
    staging = "/tmp/.sandbox-dev"  # on the private /tmp
    os.mkdir(staging)
    why = run("mount", "-n", "-t", "tmpfs", "-o", "mode=755,nosuid,noexec", "tmpfs", staging)
    for name in DEVICES:
        if why:
            break
        open(os.path.join(staging, name), "w").close()
        why = run("mount", "-n", "--bind", "/dev/" + name, os.path.join(staging, name))
    why = why or run("mount", "-n", "--move", staging, "/dev") or run("mount", "-n", "-o", "remount,bind,ro", "/dev")
    os.rmdir(staging) if os.path.isdir(staging) and not os.listdir(staging) else None
    return why


def no_fd_limit_over(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        return f"the hard limit here is {hard}, below {n}, and cannot be raised"
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return None


def kept_environment():
    """None of ours but a sanitizer build's settings (ASAN_OPTIONS and the like)."""
    return {k: v for k, v in os.environ.items() if k.endswith("SAN_OPTIONS")}


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[2] != "--":
        sys.exit(__doc__)
    state, runtime, command = os.path.abspath(args[0]), os.path.abspath(args[1]), args[3:]
    root = os.geteuid() == 0
    own_namespaces = os.getpid() == 1  # started by unshare --mount --pid --fork

    if not root or not own_namespaces:
        why = "not root" if not root else "not in its own mount and PID namespaces (unshare failed)"
        for name in ("ProtectSystem=strict", "ProtectHome=yes", "ProtectProc=invisible", "PrivateTmp=yes",
                     "PrivateDevices=yes"):
            say(f"skipped {name}: {why}")
    else:
        rule("ProtectSystem=strict",
             lambda: run("mount", "-n", "--bind", state, state),
             lambda: run("mount", "-n", "--bind", runtime, runtime),
             lambda: read_only_everything_but({state, runtime}))
        rule("ProtectHome=yes", *[
            (lambda d=d: None if not os.path.isdir(d) else run("mount", "-n", "-t", "tmpfs", "-o", "ro,mode=755", "tmpfs", d))
            for d in ("/home", "/root")])
        rule("ProtectProc=invisible", lambda: run("mount", "-n", "-t", "proc", "-o", "hidepid=invisible,subset=pid",
                                                   "proc", "/proc"))
        if rule("PrivateTmp=yes", lambda: run("mount", "-n", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs",
                                             "/tmp")):
            rule("PrivateDevices=yes", private_devices)
        else:
            say("skipped PrivateDevices=yes: it is staged on the private /tmp")
    rule("LimitNOFILE=16384", lambda: no_fd_limit_over(16384))
    os.umask(0o077)
    say("applied UMask=0077")

    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()    # child -> us: it has its user namespace (or gave up)
    mapped_r, mapped_w = os.pipe()  # us -> child: the maps are written
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(mapped_w)
        ok = libc.unshare(CLONE_NEWUSER | CLONE_NEWUTS) == 0
        os.write(ready_w, b"1" if ok else b"0:" + os.strerror(ctypes.get_errno()).encode())
        os.close(ready_w)
        mapped = os.read(mapped_r, 1) == b"1"
        setpriv = ["setpriv", "--no-new-privs"]
        if root and (mapped or not ok):
            setpriv += [f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups", "--bounding-set=-all",
                        "--inh-caps=-all"]
        try:
            os.execve("/usr/bin/setpriv", setpriv + ["--"] + command, kept_environment())
        except OSError as e:
            print(f"sandbox: cannot run setpriv: {e}", file=sys.stderr)
            os._exit(127)

    os.close(ready_w)
    os.close(mapped_r)
    answer = os.read(ready_r, 256)
    mapped = False
    if answer != b"1":
        say("skipped PrivateUsers=yes: unshare(CLONE_NEWUSER): " + answer[2:].decode())
        say("skipped ProtectHostname=yes: it comes with the user namespace here")
    else:
        # As root, root and the service's user, as systemd maps them; otherwise only our own
        # user (all an unprivileged process may map).
        uids = {0, SERVICE_UID} if root else {os.getuid()}
        gids = {0, SERVICE_UID} if root else {os.getgid()}
        try:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("allow" if root else "deny")
            for kind, ids in (("uid_map", uids), ("gid_map", gids)):
                with open(f"/proc/{pid}/{kind}", "w") as f:
                    f.write("".join(f"{i} {i} 1\n" for i in sorted(ids)))
            mapped = True
            say("applied PrivateUsers=yes" + ("" if root else " (only our own user: not root)"))
            say("applied ProtectHostname=yes")
        except OSError as e:
            say(f"skipped PrivateUsers=yes: cannot write the maps: {e}")
            say("skipped ProtectHostname=yes: it comes with the user namespace here")
    if root:
        say("applied DynamicUser=yes (as nobody)" if mapped or answer != b"1" else
            "skipped DynamicUser=yes: its uid is not mapped in the user namespace")
        say("applied CapabilityBoundingSet=")
    else:
        say("skipped DynamicUser=yes: not root")
        say("skipped CapabilityBoundingSet=: not root")
    say("applied NoNewPrivileges=yes")
    kept = sorted(kept_environment())
    say("applied an empty environment" + (f" (but {', '.join(kept)})" if kept else ""))
    os.write(mapped_w, b"1" if mapped else b"0")
    os.close(mapped_w)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    sys.exit(os.waitstatus_to_exitcode(status) if os.waitstatus_to_exitcode(status) >= 0
             else 128 - os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
