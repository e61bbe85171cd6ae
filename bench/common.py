"""Helpers shared by the benchmarks: where figures go, QUICK mode, CPU
time of a process, and a perf profile of some processes.

Every benchmark prints its figures and also saves them with save() as
bench/results/<name>.json (BENCH_RESULTS overrides the directory), which
bench/report.py turns into docs/benchmarks.md and its plots.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.environ.get("BENCH_RESULTS") or os.path.join(REPO, "bench", "results")
QUICK = os.environ.get("QUICK", "") not in ("", "0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def save(name, **figures):
    """Merge figures into bench/results/<name>.json."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data.update(figures)
    data["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def cpu_seconds(pid):
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid):
    """VmRSS and its parts RssAnon (the process's own memory) and RssShmem
    (shared memory it touched) of /proc/<pid>/status, in kB."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                got[key] = int(line.split()[1])
    return got


def perf_top(pids, seconds, n=15):
    """The top functions (self time) of the given processes over `seconds`,
    from `perf record`; [] when perf is not usable here."""
    if not shutil.which("perf") or not pids:
        return []
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        r = subprocess.run(["perf", "record", "-F", "999", "-o", data, "-p", ",".join(map(str, pids)),
                            "--", "sleep", str(seconds)], capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(data):
            return []
        out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym",
                              "--stdio", "-g", "none"], capture_output=True, text=True).stdout
    top = []
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line:
            continue
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pct, dso, _, sym = parts
        top.append({"pct": float(pct.rstrip("%")), "dso": dso, "sym": sym.strip()})
        if len(top) >= n:
            break
    return top


def pctl(sorted_values, q):
    """The q-quantile (0..1) of a sorted list."""
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values))) - 1))
    return sorted_values[i]
