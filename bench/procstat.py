"""What a process costs, read from Linux's ``/proc``: CPU time, resident memory, open files.

For the benches, which sample a server process (orchestra, llama-server, a proxy) right
before and after a measured stretch of load::

    before = cpu_seconds(pid)
    ...  # the load
    spent = cpu_seconds(pid) - before

Each function reads one process (all its threads, none of its children) and raises
:class:`OSError` (``FileNotFoundError``, ``ProcessLookupError``) when it is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, in seconds: fields 14
    (``utime``) and 15 (``stime``) of ``/proc/<pid>/stat``, in clock ticks
    (``SC_CLK_TCK``, usually 100 a second, so a resolution of 10 ms)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces or ")": split
    # after the last ")", where field 3 (the state) begins.
    after = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(after[14 - 3]), int(after[15 - 3])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size: the second field of ``/proc/<pid>/statm``, in pages."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def open_fds(pid: int) -> int:
    """How many file descriptors the process has open (entries of ``/proc/<pid>/fd``;
    readable for this user's own processes)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
