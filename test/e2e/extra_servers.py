"""Extra servers for the reliability suites: more PostgreSQL clusters (made
with initdb or pg_basebackup) and a three-node NATS cluster, beside the test
stack and sharing its Temporal, its NATS credentials and its binaries.

Every port comes from AC_CLUSTER_PORT_BASE (default 26800, below the kernel's range for outgoing ports) plus an offset,
so parallel runs do not collide:
  +0..+2 NATS cluster client ports, +3..+5 their routes, +6..+8 monitors;
  +10, +11 the failover clusters; +20, +21 the multi-server clusters.
State lives under the stack's PostgreSQL directory (owned by the postgres
account), in extra/<name>.
"""
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nats
import psycopg

from conftest import alive, poll, state_dir, temporal, wait_gone

PORT_BASE = int(os.environ.get("AC_CLUSTER_PORT_BASE", "26800"))
PGBIN = os.environ.get("AC_PGBIN", "")
EXTRA = Path(os.environ.get("AC_PG_DATA", f"{state_dir()}/pg/data")).parent / "extra"
EVENTS = int(os.environ.get("AC_CHAOS_EVENTS", "200"))


def as_pg(*args, check=True, timeout=120):
    """Run a command as the postgres account (PostgreSQL refuses root)."""
    cmd = list(args)
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, cwd="/")
    if check:
        assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def fresh_dir(path):
    """An empty directory the postgres account owns."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    if os.getuid() == 0:
        shutil.chown(path, "postgres", "postgres")
        shutil.chown(path.parent, "postgres", "postgres")
    path.chmod(0o755)


# ---------------------------------------------------------------- PostgreSQL

class Cluster:
    """A PostgreSQL cluster of its own, with activity_core preloaded and the
    stack's Temporal and NATS credentials; settings are activity_core.* ones."""

    def __init__(self, name, port, db, **settings):
        self.name, self.port, self.db = name, port, db
        self.dir = EXTRA / name
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.settings = settings

    def conf(self):
        lines = [
            "listen_addresses = '127.0.0.1'", f"port = {self.port}",
            f"unix_socket_directories = '{self.dir}'",
            "shared_preload_libraries = 'activity_core'",
            "max_worker_processes = 16", "fsync = off", "log_min_messages = info",
            "wal_level = replica", "max_wal_senders = 5", "hot_standby = on",
            f"activity_core.database = '{self.db}'",
            f"activity_core.temporal_url = '{os.environ['AC_TEMPORAL_URL']}'",
            f"activity_core.nats_url = '{os.environ['AC_NATS_ADDRESS']}'",
            "activity_core.metrics_listen = ''",
        ]
        if os.environ.get("AC_NATS_USER"):
            lines += [f"activity_core.nats_user = '{os.environ['AC_NATS_USER']}'",
                      f"activity_core.nats_password_file = '{os.environ['AC_NATS_PASSWORD_FILE']}'",
                      f"activity_core.temporal_api_key_file = '{os.environ['AC_TEMPORAL_API_KEY_FILE']}'"]
        for k, v in self.settings.items():
            lines.append(f"activity_core.{k} = '{v}'")
        lines += getattr(self, "settings_extra", [])
        return "\n".join(lines) + "\n"

    def write_conf(self):
        """The settings go to extra.conf, which postgresql.conf includes."""
        tmp = Path(f"/tmp/ac-{self.name}-extra.conf")
        tmp.write_text(self.conf())
        as_pg("cp", str(tmp), str(self.data / "extra.conf"))
        tmp.unlink()
        auto = self.data / "postgresql.auto.conf"
        as_pg("sed", "-i", "/^primary_conninfo/d", str(auto))
        main = as_pg("cat", str(self.data / "postgresql.conf")).stdout
        if "include 'extra.conf'" not in main:
            as_pg("sh", "-c", f"echo \"include 'extra.conf'\" >> {self.data}/postgresql.conf")

    def initdb(self):
        fresh_dir(self.dir)
        as_pg(f"{PGBIN}/initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        self.write_conf()

    def basebackup(self, primary, slot):
        """A standby of primary: pg_basebackup -R through a replication slot.
        The conninfo -R writes is replaced by a plain one: the walreceiver may
        load an older libpq than pg_basebackup's, which refuses options it
        does not know (sslnegotiation)."""
        fresh_dir(self.dir)
        as_pg(f"{PGBIN}/pg_basebackup", "-h", str(primary.dir), "-p", str(primary.port),
              "-U", "postgres", "-D", str(self.data), "-R", "-C", "-S", slot, "-X", "stream",
              "-c", "fast", "--no-sync")
        self.settings_extra = [
            f"primary_conninfo = 'host={primary.dir} port={primary.port} user=postgres'",
            f"primary_slot_name = '{slot}'"]
        self.write_conf()

    def start(self):
        """pg_ctl start; again after a failure, up to five times (the port lies
        in the kernel's ephemeral range, where a client socket may hold it)."""
        for attempt in range(5):
            res = as_pg(f"{PGBIN}/pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
                        "-w", "-t", "60", check=False)
            if res.returncode == 0:
                return
            time.sleep(3)
        tail = "\n".join(self.log_text().splitlines()[-15:])
        raise AssertionError(f"{self.name} did not start:\n{res.stdout}{res.stderr}\n{tail}")

    def stop(self, mode="fast"):
        as_pg(f"{PGBIN}/pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60", check=False)

    def postmaster_pid(self):
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self):
        """SIGKILL the postmaster (its children notice and exit)."""
        pid = self.postmaster_pid()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)

    def cleanup(self):
        self.stop("immediate")
        pid = self.postmaster_pid()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        if not os.environ.get("AC_KEEP_EXTRA"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, db=None, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = psycopg.connect(host=str(self.dir), port=self.port, user="postgres",
                                    dbname=db or self.db, autocommit=True, connect_timeout=5)
                c.execute("SET client_min_messages = warning")
                return c
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.3)

    def create_db(self):
        with self.connect("postgres") as c:
            c.execute(f'CREATE DATABASE "{self.db}"')
        c = self.connect()
        c.execute("CREATE EXTENSION activity_core")
        return c

    def log_text(self):
        return as_pg("cat", str(self.log), check=False).stdout


def worker_count(c):
    """activity_core background workers running on the server of c."""
    return c.execute("SELECT count(*) FROM pg_stat_activity "
                     "WHERE backend_type LIKE 'activity_core%'").fetchone()[0]


def health(c):
    return {r[0]: (r[1], r[2], r[3]) for r in c.execute(
        'SELECT "check", ok, detail, hint FROM ac_health()').fetchall()}


def wait_router_connected(c, timeout=60):
    def once():
        ok, detail, _ = health(c)["nats_router"]
        assert ok, detail
        return detail
    return poll(once, timeout, 0.5)


# ---------------------------------------------------------------- NATS

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url, timeout=3):
    """GET a monitor endpoint; a node that does not answer fails an assertion
    (so that poll() tries again)."""
    try:
        with _DIRECT.open(url, timeout=timeout) as r:
            return json.loads(r.read())
    except OSError as err:
        raise AssertionError(f"{url}: {err}") from err


class NatsCluster:
    """Three nats-server nodes with JetStream, clustered on loopback, with
    the stack's user and password."""

    def __init__(self, name="accl"):
        self.name = name
        self.dir = Path(state_dir()) / "nats-cluster"
        self.nodes = [f"n{i}" for i in range(3)]
        self.procs = {}

    def client_port(self, i):
        return PORT_BASE + i

    def route_port(self, i):
        return PORT_BASE + 3 + i

    def monitor_port(self, i):
        return PORT_BASE + 6 + i

    def urls(self):
        return [f"nats://127.0.0.1:{self.client_port(i)}" for i in range(3)]

    def conf(self, i):
        routes = ", ".join(f"nats://127.0.0.1:{self.route_port(j)}" for j in range(3) if j != i)
        auth = ""
        if os.environ.get("AC_NATS_USER"):
            auth = (f'authorization {{\n user: "{os.environ["AC_NATS_USER"]}"\n'
                    f' password: "{os.environ["AC_NATS_PASSWORD"]}"\n}}\n')
        return (f'server_name: {self.nodes[i]}\nlisten: 127.0.0.1:{self.client_port(i)}\n'
                f'http: 127.0.0.1:{self.monitor_port(i)}\n'
                f'jetstream {{\n store_dir: "{self.dir / self.nodes[i]}"\n}}\n{auth}'
                f'cluster {{\n name: {self.name}\n listen: 127.0.0.1:{self.route_port(i)}\n'
                f' routes: [{routes}]\n}}\n')

    def start(self, i):
        node = self.nodes[i]
        (self.dir / node).mkdir(parents=True, exist_ok=True)
        conf = self.dir / f"{node}.conf"
        conf.write_text(self.conf(i))
        conf.chmod(0o600)
        log = open(self.dir / f"{node}.log", "ab")
        self.procs[i] = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def start_all(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        try:
            for i in range(3):
                self.start(i)
            try:
                poll(lambda: self.assert_jetstream_ready(), 30, 0.5)
            except AssertionError:
                # a node that has not joined in 30 s (a busy machine, a port
                # held for a moment) is started again, once
                for i in self.missing_nodes():
                    self.kill9(i)
                    self.start(i)
                poll(lambda: self.assert_jetstream_ready(), 60, 0.5)
        except AssertionError as err:
            tails = "\n".join(f"{n}: " + " | ".join(
                (self.dir / f"{n}.log").read_text(errors="replace").splitlines()[-4:])
                for n in self.nodes)
            self.stop_all()
            raise AssertionError(f"{err}\n{tails}") from err
        except BaseException:
            self.stop_all()
            raise

    def missing_nodes(self):
        """Nodes that are down or not in the leader's view of the cluster."""
        peers = set()
        for i in range(3):
            try:
                meta = http_json(f"http://127.0.0.1:{self.monitor_port(i)}/jsz").get("meta_cluster") or {}
            except AssertionError:
                continue
            if meta.get("leader") == self.nodes[i]:
                peers = {self.nodes[i]} | {r["name"] for r in meta.get("replicas") or []
                                          if r.get("current")}
        return [i for i in range(3) if self.procs[i].poll() is not None or self.nodes[i] not in peers]

    def assert_jetstream_ready(self):
        for i in range(3):
            if self.procs[i].poll() is not None:
                # the ports lie in the kernel's ephemeral range: a client
                # socket may hold one for a moment; try again
                log = (self.dir / f"{self.nodes[i]}.log").read_text(errors="replace")
                if "address already in use" in log:
                    self.start(i)
                raise AssertionError(f"{self.nodes[i]} exited")
            jsz = http_json(f"http://127.0.0.1:{self.monitor_port(i)}/jsz")
            meta = jsz.get("meta_cluster") or {}
            assert meta.get("leader"), f"{self.nodes[i]}: no meta leader yet: {meta}"
            assert meta.get("cluster_size") == 3, meta
            if meta["leader"] == self.nodes[i]:
                assert len([r for r in meta.get("replicas") or [] if r.get("current")]) == 2, meta

    def kill9(self, i):
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stream(self, i, stream):
        """The stream as node i's monitor endpoint sees it (or None)."""
        jsz = http_json(f"http://127.0.0.1:{self.monitor_port(i)}/jsz?streams=1")
        for acc in jsz.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s["name"] == stream:
                    return s
        return None


# ---------------------------------------------------------------- an outside client

class Publisher:
    """nats-py publishing envelopes to JetStream from outside PostgreSQL,
    retrying each with its Msg-Id until the stream has it (JetStream drops
    the copies within its duplicate window)."""

    def __init__(self, servers, stream=None):
        self.loop = asyncio.new_event_loop()
        kw = {}
        if os.environ.get("AC_NATS_USER"):
            kw = dict(user=os.environ["AC_NATS_USER"], password=os.environ["AC_NATS_PASSWORD"])
        self.nc = self.run(nats.connect(servers, connect_timeout=2, reconnect_time_wait=0.2,
                                        max_reconnect_attempts=-1, **kw))
        self.js = self.nc.jetstream()
        self.stream = stream
        self.retries = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def publish(self, subject, env, deadline_s=60):
        data = json.dumps(env).encode()
        end = time.monotonic() + deadline_s
        while True:
            try:
                return self.run(self.js.publish(subject, data, timeout=2,
                                                headers={"Nats-Msg-Id": env["event_id"]}))
            except Exception:  # noqa: BLE001 - timeouts, no responders, leader elections
                self.retries += 1
                if time.monotonic() >= end:
                    raise
                time.sleep(0.2)

    def call(self, fn, timeout_s=30):
        """Run fn(js) (a coroutine), retrying while the cluster elects leaders."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                return self.run(fn(self.js))
            except Exception:  # noqa: BLE001
                if time.monotonic() >= end:
                    raise
                time.sleep(0.3)

    def close(self):
        try:
            self.run(self.nc.close())
        finally:
            self.loop.close()


def envelope(event_type, event_id, **payload):
    return {"event_id": event_id, "type": event_type, "payload": payload}


# ---------------------------------------------------------------- Temporal

def runs_by_workflow(aid):
    """{workflow id: number of runs} of every workflow of definition aid
    (visibility, by the activity_id search attribute)."""
    query = urllib.parse.quote(f"activity_id = '{aid}'")
    out, page = collections.Counter(), ""
    while True:
        path = f"/workflows?pageSize=1000&query={query}"
        if page:
            path += "&nextPageToken=" + urllib.parse.quote(page)
        for attempt in range(5):
            try:
                status, body = temporal("GET", path, timeout=30)
                break
            except OSError:     # a loaded machine: Temporal answers late
                if attempt == 4:
                    raise
                time.sleep(1)
        assert status == 200, f"list workflows of {aid}: HTTP {status} {body}"
        for e in body.get("executions", []):
            out[e["execution"]["workflowId"]] += 1
        page = body.get("nextPageToken") or ""
        if not page:
            return out


def exactly_once(aid, expected_ids, timeout=120):
    """Wait until every expected workflow of aid is listed; return the figures
    (expected, actual, missing, extra, twice) once it is, or at the timeout."""
    want = {f"activity-{aid}:{e}" for e in expected_ids}
    deadline = time.monotonic() + timeout
    while True:
        runs = runs_by_workflow(aid)
        missing = want - set(runs)
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(1)
    # a little longer: a late second start would show now
    time.sleep(2)
    runs = runs_by_workflow(aid)
    return {
        "expected": len(want),
        "actual": sum(runs.values()),
        "missing": sorted(want - set(runs)),
        "extra": sorted(set(runs) - want),
        "twice": sorted(w for w, n in runs.items() if n > 1),
    }


def print_figures(title, figures):
    shown = {k: (len(v) if isinstance(v, list) else v) for k, v in figures.items()}
    print(f"\n[{title}] " + " ".join(f"{k}={v}" for k, v in shown.items()))
