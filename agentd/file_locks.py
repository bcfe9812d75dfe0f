"""Exclusive flocks taken with a short wait (the session run lock, the tool-context
directory's lock)."""

from __future__ import annotations

import fcntl
import time


def flock_within(fd: int, wait_s: float) -> bool:
    """Take an exclusive flock on `fd`, trying again (every 1 ms, doubling up to 50 ms)
    for up to `wait_s` seconds while another open file holds it; False if it still does."""
    deadline = time.monotonic() + wait_s
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
