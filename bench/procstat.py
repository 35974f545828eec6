"""What /proc says about a process: CPU time, context switches, memory, descriptors and threads."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    wall: float  # time.monotonic()
    cpu_ticks: int  # utime + stime of all threads, /proc/PID/stat (1/CLK_TCK s)
    cpu_ns: int  # the process's CPU clock (all threads, nanoseconds): clock_getcpuclockid
    voluntary: int  # context switches summed over /proc/PID/task/*/status
    involuntary: int
    threads: int

    @property
    def switches(self) -> int:
        return self.voluntary + self.involuntary


def _process_cpu_clock(pid: int) -> int:
    # clock_getcpuclockid(pid) as the kernel defines it: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    return ((~pid) << 3) | 2


def sample(pid: int) -> Sample:
    wall = time.monotonic()
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    cpu_ns = time.clock_gettime_ns(_process_cpu_clock(pid))
    vol = invol = threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        threads += 1
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return Sample(wall, ticks, cpu_ns, vol, invol, threads)


@dataclass(frozen=True)
class Idle:
    seconds: float
    cpu_percent_ticks: float  # from utime+stime (10 ms resolution)
    cpu_percent: float  # from the CPU clock (ns resolution)
    wakeups_per_s: float  # context switches per second, all threads
    voluntary_per_s: float
    threads: int


def idle_between(a: Sample, b: Sample) -> Idle:
    seconds = b.wall - a.wall
    return Idle(
        seconds,
        100.0 * (b.cpu_ticks - a.cpu_ticks) / CLK_TCK / seconds,
        100.0 * (b.cpu_ns - a.cpu_ns) / 1e9 / seconds,
        (b.switches - a.switches) / seconds,
        (b.voluntary - a.voluntary) / seconds,
        b.threads,
    )


def status_kb(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon, RssFile...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            out[name] = int(value.split()[0])
    return out


def rss_kb(pid: int) -> int:
    return status_kb(pid, "VmRSS")["VmRSS"]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@dataclass(frozen=True)
class Footprint:
    rss_kb: int
    fds: int
    threads: int


def footprint(pid: int) -> Footprint:
    return Footprint(rss_kb(pid), fds(pid), threads(pid))


def rss_by_mapping(pid: int, top: int = 12) -> list[tuple[str, int]]:
    """Resident kB per mapped file (anonymous memory as "[anon]"), largest first: where the RSS is."""
    sizes: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(None, 5)
        if len(first) >= 5 and "-" in first[0] and ":" in first[3]:  # a mapping's header line
            name = first[5].strip() if len(first) == 6 and first[5].strip() else "[anon]"
            if name.startswith("[") and name not in ("[heap]", "[stack]"):
                name = "[anon]" if name.startswith("[anon") else name
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def per_thread(pid: int) -> dict[int, tuple[int, int]]:
    """Context switches and CPU nanoseconds (schedstat) of each thread, by thread id."""
    out: dict[int, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            cpu_ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
        switches = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
        out[int(task.name)] = (switches, cpu_ns)
    return out


def threads_between(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]], seconds: float,
                    names: dict[int, str]) -> list[dict[str, object]]:
    """Wake-ups per second and CPU % of each thread that lived through the interval, busiest first."""
    rows = [
        {
            "tid": tid,
            "thread": names.get(tid, "?"),
            "wakeups_per_s": round((b[tid][0] - a[tid][0]) / seconds, 2),
            "cpu_percent": round(100.0 * (b[tid][1] - a[tid][1]) / 1e9 / seconds, 4),
        }
        for tid in b
        if tid in a
    ]
    return sorted(rows, key=lambda r: (-float(r["cpu_percent"]), -float(r["wakeups_per_s"])))  # type: ignore[arg-type]


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names and where each one waits, from ``py-spy dump`` (if installed); else comm."""
    import re
    import shutil
    import subprocess
    import sys

    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            pass
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return names
    try:
        text = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True,
                              timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return names
    current = None
    for line in text.splitlines():
        m = re.match(r'Thread (\d+) \(\w+\): "(.*)"', line)
        if m:
            current = int(m[1])
            names[current] = m[2]
        elif current is not None and line.startswith("    ") and " (" in line:
            names[current] += f" in {line.strip().split(' (')[0]}"
            current = None
    return names
