"""Peak memory and CPU time of a subprocess and all its descendants (the bench's measuring tape)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

GB = 1e9


class TreeSampler(threading.Thread):
    """Peak memory and a CPU-time timeline of a process and all its descendants.

    RSS counts shared pages (torch's libraries, Ray's shared-memory object store) once per process;
    PSS splits them between the processes that map them, so the PSS sum is the tree's real footprint.
    RSS is read every ``interval`` s (cheap); PSS needs smaps (~0.1 s for a few GB under load), so it is
    read at most once a second: on a new RSS peak, else every ``pss_every`` s. The process list is
    refreshed once a second. ``timeline`` holds (unix time, CPU seconds used so far by the whole tree);
    ``line_times`` the unix time at which each line of ``watch`` (a metrics.jsonl) appeared.
    """

    def __init__(self, pid: int, watch: Path | None = None, interval: float = 0.25, pss_every: float = 2.0):
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval, self.pss_every = interval, pss_every
        self.peak = {"rss_sum": 0, "pss_sum": 0, "max_process_rss": 0, "processes": 0}
        self._procs: list = [self.root]
        self._next_scan = self._last_pss = 0.0
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds; kept after the process exits
        self.timeline: list[tuple[float, float]] = []
        self.watch, self.line_times = watch, []
        self._done = threading.Event()

    def _total(self, read) -> tuple[int, int]:
        total = top = 0
        for proc in self._procs:
            try:
                value = read(proc)
            except self._psutil.Error:
                continue
            total, top = total + value, max(top, value)
        return total, top

    def _read_rss_and_cpu(self, proc) -> int:
        with proc.oneshot():
            cpu = proc.cpu_times()
            self._cpu[proc.pid] = cpu.user + cpu.system
            return proc.memory_info().rss

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the tree used between two unix times (linear between samples)."""
        import numpy as np

        times, cpu = zip(*self.timeline) if self.timeline else ((0.0,), (0.0,))
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))

    def sample(self) -> None:
        now = time.monotonic()
        if now >= self._next_scan:
            try:
                self._procs = [self.root, *self.root.children(recursive=True)]
            except self._psutil.Error:
                return
            self._next_scan = now + 1.0
        rss, top = self._total(self._read_rss_and_cpu)
        self.timeline.append((time.time(), sum(self._cpu.values())))
        if self.watch is not None and self.watch.exists():
            lines = self.watch.read_bytes().count(b"\n")
            self.line_times += [time.time()] * (lines - len(self.line_times))
        new_peak = rss > self.peak["rss_sum"]
        if new_peak:
            self.peak.update(rss_sum=rss, processes=len(self._procs))
        self.peak["max_process_rss"] = max(self.peak["max_process_rss"], top)
        since = now - self._last_pss
        if (new_peak and since >= 1.0) or since >= self.pss_every:
            self._last_pss = now
            self.peak["pss_sum"] = max(self.peak["pss_sum"], self._total(lambda p: p.memory_full_info().pss)[0])

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {
            "peak_rss_gb": self.peak["rss_sum"] / GB,
            "peak_pss_gb": self.peak["pss_sum"] / GB,
            "peak_max_process_rss_gb": self.peak["max_process_rss"] / GB,
            "processes_at_peak": self.peak["processes"],
        }


def run_child(
    cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path, watch: Path | None = None
) -> tuple[dict, TreeSampler]:
    """Run ``cmd`` in ``cwd`` with its output in ``log_path``, sampling its process tree."""
    print(f"running: {' '.join(cmd)}\n  log: {log_path}", flush=True)
    start, load_before = time.perf_counter(), os.getloadavg()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, watch)
        sampler.start()
        try:
            returncode = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            memory = sampler.stop()
    result = {"returncode": returncode, "wall_s": time.perf_counter() - start, "memory": memory, "log": str(log_path)}
    result.update(load_before=list(load_before), load_after=list(os.getloadavg()))
    if returncode != 0:
        result["error_tail"] = log_path.read_text(errors="replace")[-3000:]
        print(f"FAILED (exit {returncode}); end of {log_path}:\n{result['error_tail']}", file=sys.stderr)
    return result, sampler
