#!/usr/bin/env python3
"""Drive a command on a real PTY for the end-to-end tests (tests/tests/exec_tty.rs).

Usage: pty_driver.py SCRIPT -- COMMAND...

SCRIPT is a list of steps separated by ';;': `send:TEXT` (\\n and \\x03 escapes allowed),
`expect:TEXT` (wait up to 10 s until TEXT appears in the output since the last expect),
`resize:ROWSxCOLS` (set the PTY's window size: the command gets SIGWINCH), `sleep:SECONDS`.
Prints the whole transcript, then `EXIT <code>` with the command's exit status. Exits 1 if an
expect times out.
"""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main():
    sep = sys.argv.index("--")
    steps = [s for s in sys.argv[1].split(";;") if s]
    command = sys.argv[sep + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    set_size(fd, 24, 80)
    transcript = b""
    mark = 0

    def pump(timeout):
        nonlocal transcript
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            transcript += data
        return True

    ok = True
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind == "send":
            os.write(fd, arg.encode().decode("unicode_escape").encode())
        elif kind == "expect":
            deadline = time.time() + 10
            while arg.encode() not in transcript[mark:] and time.time() < deadline:
                if not pump(0.1):
                    break
            pos = transcript.find(arg.encode(), mark)
            if pos < 0:
                ok = False
                sys.stdout.write(f"TIMEOUT waiting for {arg!r}\n")
                break
            mark = pos + len(arg)
        elif kind == "resize":
            rows, cols = arg.split("x")
            set_size(fd, int(rows), int(cols))
        elif kind == "sleep":
            end = time.time() + float(arg)
            while time.time() < end:
                pump(0.05)
    # Let the command finish and collect the rest of its output.
    deadline = time.time() + 15
    status = None
    while time.time() < deadline:
        pump(0.05)
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
    if status is None:
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    while pump(0.05):
        pass
    sys.stdout.write(transcript.decode(errors="replace"))
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.write(f"\nEXIT {code}\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
