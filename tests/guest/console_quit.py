#!/usr/bin/env python3
"""Checks Ctrl-A x on a terminal: runs `lamina run` on a pseudo-terminal with a kernel that
reboots forever (--on-reboot restart, so nothing but the escape can end the run), types
Ctrl-A x once the kernel printed, and expects exit status 0 within a few seconds.
Usage: console_quit.py LAMINA KERNEL"""
import os
import pty
import select
import sys
import time


def read_for(fd, seconds, output, until=None):
    """Reads for `seconds`, or until `until` shows in the output; False at end of file."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if until is not None and until in output:
            return True
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            return False
        if not data:
            return False
        output.extend(data)
    return True


def main():
    lamina, kernel = sys.argv[1], sys.argv[2]
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(lamina, [lamina, "run", "--on-reboot", "restart", "--kernel", kernel])
    output = bytearray()
    # A loaded machine (the suite runs tests in parallel) may take a while to start the VM.
    read_for(fd, 30.0, output, until=b"booting")
    if b"booting" not in output:
        print("FAIL: the kernel printed nothing before Ctrl-A x")
        return 1
    os.write(fd, b"\x01x")
    read_for(fd, 10.0, output)
    # The terminal closes just before the process ends: give the exit a moment to be reaped.
    deadline = time.time() + 10.0
    done, status = os.waitpid(pid, os.WNOHANG)
    while done == 0 and time.time() < deadline:
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("FAIL: lamina kept running after Ctrl-A x")
        return 1
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"FAIL: exit status {code} after Ctrl-A x, expected 0")
        return 1
    print("ok: console_quit")
    return 0


sys.exit(main())
