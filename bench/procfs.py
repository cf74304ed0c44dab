"""CPU time and resident memory of a process tree, read straight from /proc (Linux only).

Sums over the whole tree so a wrapper (a shell, a supervisor forking one worker) is
measured together with the process that does the work.
"""

import os
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we were looking: it no longer counts
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by `pid` and its descendants."""
    ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # The command name (field 2) may contain spaces: split after its closing ')'.
        # Then index 0 is field 3 (state), so utime (14) and stime (15) are 11 and 12.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of `pid` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024  # reported in kB
                break
    return total
