"""docs/runbook.md is run as written.

The blocks of the runbook marked `<!-- run: NAME STEP -->` are run
literally (SQL through psql as a superuser in the database the workers
serve, shell through bash with the stack's PATH), and the blocks marked
`<!-- expect: NAME STEP -->` are what their output must show, line by line
(`…` stands for any text).  For each troubleshooting entry the test causes
the failure for real (Temporal stopped, NATS stopped, the search attribute
removed, the stream deleted, a definition Temporal refuses, a schedule
deleted behind the table's back, manage_schedules off, the workers pointed at
a database that does not exist), waits for the documented symptom, applies the documented fix and
checks that the system is healthy again, and that the work queued meanwhile
was done.  The local start runs `make demo` and `make stop` literally and
checks that nothing of the demo stack is left running."""
import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from conftest import (NATS_URL, REPO, alter_system, described, insert_definition, log_offset,
                      log_since, poll, schedule_id, stack, state_dir, temporal, unique, wait_gone,
                      wid)

RUNBOOK = REPO / "docs" / "runbook.md"
MARKER = re.compile(r"<!-- (run|expect): ([\w-]+(?: [\w-]+)?) -->\n```(\w+)\n(.*?)```", re.S)
LONG_TYPE = "W" * 1100      # a workflow type Temporal refuses (limit.maxIDLength 1000)


def runbook_blocks():
    """{"run"|"expect": {key: [(language, body)]}} from the markers of the runbook."""
    out = {"run": {}, "expect": {}}
    for kind, key, lang, body in MARKER.findall(RUNBOOK.read_text()):
        out[kind].setdefault(key, []).append((lang, body))
    return out


BLOCKS = runbook_blocks()


def run_block(key, timeout=180):
    """Run the runbook's block KEY literally; return its output lines."""
    (lang, body), = BLOCKS["run"][key]
    if lang == "sql":
        cmd = ["psql", "-X", "-q", "-A", "-t", "-F", " | ", "-v", "ON_ERROR_STOP=1"]
    else:
        assert lang == "sh", (key, lang)
        cmd = ["bash", "-euo", "pipefail", "-c", body]
    res = subprocess.run(cmd, input=body if lang == "sql" else None, capture_output=True, text=True,
                         cwd=REPO, timeout=timeout)
    assert res.returncode == 0, f"runbook block {key!r} failed:\n{body}\n{res.stdout}\n{res.stderr}"
    return res.stdout.splitlines()


def expected(key):
    """The expected lines of KEY as regular expressions (… is any text)."""
    lines = [line for _, body in BLOCKS["expect"][key] for line in body.splitlines() if line.strip()]
    assert lines, key
    return [(line, re.compile(".*".join(re.escape(p) for p in line.split("…")))) for line in lines]


def shows(key, lines, tail=False):
    """Assert that every expected line of KEY is one of lines (with tail: ends one)."""
    for text, pattern in expected(key):
        match = re.compile(f"(?:{pattern.pattern})\\Z").search if tail else pattern.fullmatch
        assert any(match(line) for line in lines), f"runbook {key!r}: no line is {text!r} in:\n" + \
            "\n".join(lines)


def symptom_shows(key, timeout=60):
    """Run block KEY until its output shows what the runbook says it shows."""
    return poll(lambda: shows(key, run_block(key)), timeout, 1.0)


def log_shows(key, offset, timeout=60):
    """Wait until the server log after offset has the runbook's lines of KEY."""
    poll(lambda: shows(key, log_since(offset).splitlines(), tail=True), timeout, 0.5)


def all_healthy(timeout=90):
    """Every ac_health() check passes."""
    def once():
        out = subprocess.run(["psql", "-X", "-A", "-t", "-c",
                              "SELECT \"check\", detail FROM ac_health() WHERE NOT ok"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
    poll(once, timeout, 1.0)


@pytest.fixture
def clean(conn):
    """Start from a healthy system: what earlier suites left behind (dead
    letters, refused outbox rows, definitions Temporal refused) is removed."""
    conn.execute("DELETE FROM ac_dead_letters")
    conn.execute("DELETE FROM ac_outbox WHERE error_permanent")
    conn.execute("DELETE FROM ac_start_outbox WHERE error_permanent")
    conn.execute("DELETE FROM ac_activity_definitions WHERE id IN "
                 "(SELECT activity_id FROM ac_sync_status WHERE error_kind = 'permanent')")
    all_healthy()
    return conn


def event_definition(c, event_type):
    return insert_definition(c, {"name": unique("runbook"), "trigger_type": "event",
                                 "trigger_config": f'{{"event_type": "{event_type}"}}'})


def workflow_started(aid, event_id, timeout=60):
    def once():
        status, body = temporal("GET", f"/workflows/{wid(aid, event_id)}")
        assert status == 200, (status, body)
    poll(once, timeout, 0.5)


def nats_pid():
    pidfile = Path(state_dir()) / "nats" / "nats.pid"
    return int(pidfile.read_text().strip())


def nats_call(fn):
    async def run():
        nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=3)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()
    return asyncio.run(run())


def test_every_marked_block_is_known():
    """Each marked block belongs to a step this test runs, and every run block
    of a troubleshooting entry has a check."""
    keys = set(BLOCKS["run"]) | set(BLOCKS["expect"])
    entries = {k.split()[0] for k in keys if " " in k}
    assert entries == {"temporal-down", "dead-letters", "nats-down", "outbox", "search-attribute",
                       "stream-deleted", "refused", "drift", "unmanaged", "crash-loop"}, entries
    for entry in entries - {"stream-deleted"}:
        assert f"{entry} symptom" in BLOCKS["run"] or f"{entry} log" in BLOCKS["expect"], entry
    for entry in entries:
        assert f"{entry} check" in BLOCKS["run"] and f"{entry} check" in BLOCKS["expect"], entry
    assert {"local-start", "local-stop"} <= set(BLOCKS["run"])


def test_temporal_down_then_dead_letters(clean, app):
    """Temporal stopped: the three Temporal checks fail as documented, and an
    event that runs out of deliveries becomes a dead letter; once Temporal is
    back everything queued is applied, and the documented replay starts the
    event's workflow."""
    conn = clean
    event_type = f"runbook.{unique('down').replace('-', '_')}"
    aid = event_definition(app, event_type)
    alter_system(conn, router_max_deliveries="1")
    stack("stop-temporal")
    try:
        event_id = app.execute("SELECT ac_publish(%s, '{}')", (event_type,)).fetchone()[0]
        symptom_shows("temporal-down symptom")
        symptom_shows("dead-letters symptom")
    finally:
        stack("start-temporal")
        alter_system(conn, router_max_deliveries=None)
    assert run_block("temporal-down check") == ["t"]
    shows("temporal-down check", ["t"])
    status, _ = temporal("GET", f"/workflows/{wid(aid, event_id)}")
    assert status == 404, "the event was dead-lettered, not started"
    out = run_block("dead-letters fix")
    assert any(line.endswith(f"| {event_id}") for line in out), out
    workflow_started(aid, event_id)
    poll(lambda: shows("dead-letters check", run_block("dead-letters check")), 30, 1.0)
    all_healthy()


def test_nats_down_and_the_outbox_growing(clean, app):
    """NATS stopped: the router's and the publisher's checks fail as
    documented and ac_publish() events wait in ac_outbox; once NATS is back
    both reconnect, the outbox drains and the event is routed."""
    event_type = f"runbook.{unique('nats').replace('-', '_')}"
    aid = event_definition(app, event_type)
    pid = nats_pid()
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15)
    try:
        event_id = app.execute("SELECT ac_publish(%s, '{}')", (event_type,)).fetchone()[0]
        symptom_shows("nats-down symptom")
        symptom_shows("outbox symptom")
        n, err = clean.execute("SELECT count(*), min(last_error) FROM ac_outbox").fetchone()
        assert n >= 1 and err, (n, err)
    finally:
        stack("start")
    poll(lambda: shows("nats-down check", run_block("nats-down check")), 60, 1.0)
    poll(lambda: shows("outbox check", run_block("outbox check")), 90, 1.0)
    workflow_started(aid, event_id)
    all_healthy()


def test_search_attribute_missing(clean):
    """The search attribute removed from the namespace: the check fails with
    the documented detail and hint; the documented CLI command fixes it."""
    cli = str(REPO / ".cache" / "bin" / "temporal")
    res = subprocess.run([cli, "operator", "search-attribute", "remove", "--name", "activity_id", "--yes"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    try:
        symptom_shows("search-attribute symptom")
        run_block("search-attribute fix")
    finally:
        subprocess.run([cli, "operator", "search-attribute", "create", "--name", "activity_id",
                        "--type", "Keyword"], capture_output=True, text=True, timeout=60)
    poll(lambda: shows("search-attribute check", run_block("search-attribute check")), 60, 1.0)
    all_healthy()


def test_stream_deleted(clean, app):
    """The stream deleted under the router: it logs what the runbook says,
    creates the stream and the consumer again by itself, and routes events."""
    offset = log_offset()
    nats_call(lambda js: js.delete_stream("ACTIVITY_EVENTS"))
    log_shows("stream-deleted log", offset)
    shows("stream-deleted check", run_block("stream-deleted check"))
    info = nats_call(lambda js: js.consumer_info("ACTIVITY_EVENTS", "activity-core-event-router"))
    assert info.config.durable_name == "activity-core-event-router", info
    event_type = f"runbook.{unique('stream').replace('-', '_')}"
    aid = event_definition(app, event_type)
    event_id = app.execute("SELECT ac_publish(%s, '{}')", (event_type,)).fetchone()[0]
    workflow_started(aid, event_id)
    all_healthy()


def test_a_definition_temporal_refuses(clean, app):
    """A definition written past the trigger with a workflow type Temporal
    refuses: the permanent failure shows as documented; the documented
    UPDATE makes the schedule."""
    conn = clean
    with conn.transaction():
        aid = insert_definition(conn, {"name": unique("runbook-refused"), "trigger_type": "cron",
                                       "trigger_config": '{"cron_expression": "0 4 * * *"}'})
        conn.execute("ALTER TABLE ac_activity_definitions DISABLE TRIGGER ac_definitions_validate")
        conn.execute("UPDATE ac_activity_definitions SET workflow_type = %s WHERE id = %s", (LONG_TYPE, aid))
        conn.execute("ALTER TABLE ac_activity_definitions ENABLE TRIGGER ac_definitions_validate")
    try:
        symptom_shows("refused symptom")
        run_block("refused fix")
        shows("refused check", run_block("refused check"))
        def fixed_type(body):
            got = body["schedule"]["action"]["startWorkflow"]["workflowType"]["name"]
            assert got == "RunActivityWorkflow", got
        described(aid, fixed_type)
        all_healthy()
    finally:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_schedules_drifting(clean, app):
    """A schedule deleted behind the table's back shows as `missing`; the
    documented reconcile creates it again."""
    aid = insert_definition(app, {"name": unique("runbook-drift"), "trigger_type": "cron",
                                  "trigger_config": '{"cron_expression": "0 5 * * *"}'})
    try:
        assert app.execute("SELECT ac_wait_sync('60s')").fetchone()[0] is True
        described(aid)
        status, body = temporal("DELETE", f"/schedules/{schedule_id(aid)}")
        assert status == 200, body
        symptom_shows("drift symptom")
        out = run_block("drift fix")
        shows("drift fix", out)
        assert any(line.startswith(f"created | {schedule_id(aid)} |") for line in out), out
        shows("drift check", run_block("drift check"))
        described(aid)
    finally:
        app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def test_schedules_not_managed_here(clean, app):
    """activity_core.manage_schedules off: a cron change waits with the
    documented ac_health() row and last_error; the documented fix (on here)
    applies it and the schedule is in Temporal."""
    conn = clean
    alter_system(conn, manage_schedules="off")
    aid = None
    try:
        def off():
            assert run_block("unmanaged symptom")[0].startswith("schedules_managed |")
        poll(off, 30, 0.5)
        time.sleep(2)   # the dispatcher reloads on its own loop
        aid = insert_definition(app, {"name": unique("runbook-unmanaged"), "trigger_type": "cron",
                                      "trigger_config": '{"cron_expression": "0 6 * * *"}'})
        symptom_shows("unmanaged symptom")
        status, _ = temporal("GET", f"/schedules/{schedule_id(aid)}")
        assert status == 404, "no schedule while manage_schedules is off"
        run_block("unmanaged fix")
        poll(lambda: shows("unmanaged check", run_block("unmanaged check")), 60, 1.0)
        described(aid)
    finally:
        alter_system(conn, manage_schedules=None)
        if aid:
            app.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


def pg_restart():
    pg_ctl = os.path.join(os.environ["AC_PGBIN"], "pg_ctl")
    res = subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl, "-D", os.environ["AC_PG_DATA"],
                          "-l", os.environ["AC_PG_LOG"], "-w", "-t", "60", "restart", "-m", "fast"],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.restarts_postgres
def test_a_worker_crash_looping():
    """activity_core.database naming a database that does not exist: the
    workers exit and are restarted every 5 s with the documented log lines,
    ac_health() in the real database shows the documented rows, and the
    documented ALTER SYSTEM plus a restart brings them back."""
    sql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    query = ["psql", "-X", "-A", "-t", "-c"]
    db = os.environ["PGDATABASE"]
    subprocess.run([*sql, "ALTER SYSTEM SET activity_core.database = 'ac_runbook_no_such_db'"], check=True)
    offset = log_offset()
    fixed = False
    try:
        pg_restart()
        log_shows("crash-loop log", offset)
        symptom_shows("crash-loop symptom")
        run_block("crash-loop fix")
        fixed = True
    finally:
        if not fixed:
            subprocess.run([*sql, "ALTER SYSTEM RESET activity_core.database"])
        pg_restart()
    # the fix is what the server now runs with: postgresql.auto.conf names this database
    auto = subprocess.run([*query, "SELECT setting FROM pg_file_settings WHERE name = 'activity_core.database' "
                           "AND sourcefile LIKE '%postgresql.auto.conf'"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert auto == db, auto
    poll(lambda: shows("crash-loop check", run_block("crash-loop check")), 90, 1.0)
    # back to the stack's own configuration (the same database)
    subprocess.run([*sql, "ALTER SYSTEM RESET activity_core.database"], check=True)
    subprocess.run([*sql, "SELECT pg_reload_conf()"], check=True)


# ---------------------------------------------------------------- make demo / make stop

DEMO = REPO / ".local" / "demo"
DEMO_PORTS = ("AC_PG_PORT", "AC_TEMPORAL_PORT", "AC_TEMPORAL_HTTP_PORT", "AC_TEMPORAL_UI_PORT",
              "AC_NATS_PORT", "AC_NATS_MON_PORT", "AC_METRICS_PORT")


def demo_env():
    """The environment of a new user's shell: nothing of the test stack (its
    ports, its PG* and AC_* settings, make's own variables).  AC_DEMO_PORT_BASE,
    when set, moves the demo's seven ports to BASE..BASE+6 (parallel runs)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AC_", "PG", "MAKE", "MFLAGS", "TEMPORAL_"))}
    base = os.environ.get("AC_DEMO_PORT_BASE")
    if base:
        env.update({var: str(int(base) + i) for i, var in enumerate(DEMO_PORTS)})
    return env


def run_shell(key, env, timeout):
    (lang, body), = BLOCKS["run"][key]
    assert lang == "sh"
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{body}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def read_conf(path):
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v.strip("'\"")
    return out


def descendants(pids):
    """pids and every process descended from one of them."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, grew = set(pids), True
    while grew:
        more = {p for p, pp in parent.items() if pp in found} - found
        grew = bool(more)
        found |= more
    return found


def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", int(port))) == 0


def http_ok(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status == 200


def test_make_demo_then_make_stop_leaves_nothing_running():
    """`make demo` as the runbook says starts PostgreSQL, Temporal with its
    UI, NATS, the worker and /metrics where the runbook says; `make stop`
    stops every process of it (and their children) and frees every port."""
    env = demo_env()
    try:
        # make stop runs however make demo ended, so a failure leaves nothing running
        out = run_shell("local-start", env, 900)
        assert "activity_core demo is running." in out, out[-2000:]
        conf = read_conf(DEMO / "stack.conf")
        pids = {int((DEMO / f).read_text().strip()) for f in
                ("nats/nats.pid", "temporal/temporal.pid", "worker/worker.pid")}
        pids.add(int((Path(conf["PG_BASE"]) / "data" / "postmaster.pid").read_text().split()[0]))
        procs = descendants(pids)
        assert all(Path(f"/proc/{p}").exists() for p in pids), pids
        ports = [conf[k] for k in ("PG_PORT", "T_GRPC", "T_HTTP", "T_UI", "NATS_PORT", "NATS_MON", "METRICS")]
        if not os.environ.get("AC_DEMO_PORT_BASE"):
            # the addresses the runbook gives
            assert ports == ["5499", "7233", "7243", "8233", "4222", "8222", "9090"], ports
        assert all(listening(p) for p in ports), [(p, listening(p)) for p in ports]
        assert http_ok(f"http://127.0.0.1:{conf['T_UI']}/")
        assert http_ok(f"http://127.0.0.1:{conf['METRICS']}/metrics")
        assert http_ok(f"http://127.0.0.1:{conf['NATS_MON']}/healthz")
    finally:
        run_shell("local-stop", env, 300)
    left = sorted(p for p in procs if Path(f"/proc/{p}").exists()
                  and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")
    assert left == [], f"processes of the demo left after make stop: " + \
        "; ".join(Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in left)
    deadline = time.monotonic() + 10
    while any(listening(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(listening(p) for p in ports), [(p, listening(p)) for p in ports]
