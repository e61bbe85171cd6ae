"""Print, as JSON, the machine and the versions a benchmark run measured
with: cores, memory, CPU, PostgreSQL, Temporal, nats-server, nats.c, the
load before the run and the other heavy processes on the machine."""
import json
import os
import subprocess
import time


def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def busiest(n=8):
    """The processes with the most CPU right now (ps), to say what else ran."""
    text = out("ps", "-eo", "pcpu,user,comm", "--sort=-pcpu") or ""
    return [" ".join(line.split()) for line in text.splitlines()[1:n + 1]]


mem = [line for line in open("/proc/meminfo") if line.startswith("MemTotal")][0].split()[1]
cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
print(json.dumps({
    "cores": os.cpu_count(),
    "memory_gib": round(int(mem) / 1048576, 1),
    "cpu": cpu[0] if cpu else None,
    "postgresql": out(os.path.join(os.environ.get("AC_PGBIN", ""), "postgres"), "--version"),
    "temporal": (out("temporal", "--version") or "").splitlines()[0:1],
    "nats_server": out("nats-server", "--version"),
    "libnats": out("pkg-config", "--modversion", "libnats"),
    "quick": os.environ.get("QUICK", "") not in ("", "0"),
    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "load_before": open("/proc/loadavg").read().split()[:3],
    "busiest_before": busiest(),
}, indent=1))
