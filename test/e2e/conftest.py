"""Shared fixtures and helpers for the end-to-end suites.

Every suite talks to the real services that test/stack.sh started; their
addresses come from the environment that test/run.sh exports from
STATE/stack.env (PG*, AC_TEMPORAL_URL, AC_NATS_URL, ...).
"""
import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(os.environ.get("AC_REPO") or Path(__file__).resolve().parents[2])
STACK = str(REPO / "test" / "stack.sh")
TEMPORAL_URL = os.environ.get("AC_TEMPORAL_URL", "http://127.0.0.1:17243")
# the test stack's NATS requires a user and password: AC_NATS_URL carries them,
# AC_NATS_ADDRESS is the same server without them
NATS_URL = os.environ.get("AC_NATS_URL", "nats://127.0.0.1:14222")
NATS_ADDRESS = os.environ.get("AC_NATS_ADDRESS", "nats://127.0.0.1:14222")
NATS_MONITOR = os.environ.get("AC_NATS_MONITOR", "http://127.0.0.1:18222")
NAMESPACE = "default"


def http(method, url, body=None, timeout=10):
    """Send one HTTP request; return (status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"message": raw.decode(errors="replace")}


def temporal(method, path, body=None, timeout=10):
    """Call Temporal's HTTP API under the test namespace."""
    return http(method, f"{TEMPORAL_URL}/namespaces/{NAMESPACE}{path}", body, timeout)


# ---------------------------------------------------------------- waiting

def poll(check, timeout=15.0, interval=0.2):
    """Call check() until it stops raising AssertionError; re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def wait_for(pred, timeout=30, every=0.2):
    """Call pred() until it returns something true; return that (or the last value)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    return pred()


# ---------------------------------------------------------------- names and counters

def unique(prefix):
    """prefix with a random suffix."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def token():
    """A short random token."""
    return uuid.uuid4().hex[:10]


def stats(c):
    """ac_stats as {name: value}."""
    return dict(c.execute("SELECT name, value FROM ac_stats").fetchall())


def delta(before, after):
    """How much each counter of stats() grew from before to after."""
    return {k: after[k] - before.get(k, 0) for k in after}


# ---------------------------------------------------------------- Temporal

def payload_value(p):
    """A payload as Temporal's HTTP API renders it: plain JSON or {metadata, data}."""
    if isinstance(p, dict) and set(p) == {"metadata", "data"}:
        return json.loads(base64.b64decode(p["data"]))
    return p


def schedule_id(aid):
    """The Temporal schedule id of definition aid."""
    return f"activity-schedule-{aid}"


class UnexpectedStatus(Exception):
    """Temporal answered a status that means neither "there" nor "not found":
    not an AssertionError, so poll() does not retry it and the test fails."""


def expect_status(status, body, what, allowed=(200, 404)):
    """Return status when it is one of allowed; raise UnexpectedStatus otherwise."""
    if status not in allowed:
        raise UnexpectedStatus(f"{what}: HTTP {status} {body}")
    return status


def describe_schedule(aid):
    """DescribeSchedule of definition aid: (HTTP status, body); only 200 or 404,
    any other answer (a 5xx, a 400) fails the test."""
    status, body = temporal("GET", f"/schedules/{schedule_id(aid)}")
    expect_status(status, body, f"describe {schedule_id(aid)}")
    return status, body


def described(aid, check=None, timeout=15.0):
    """Describe the schedule of aid until it exists and check(body) passes."""
    def once():
        status, body = describe_schedule(aid)
        assert status == 200, f"describe {schedule_id(aid)}: HTTP {status} {body}"
        if check:
            check(body)
        return body
    return poll(once, timeout)


def schedule_gone(aid, timeout=15.0, grpc_code=None):
    """Describe the schedule of aid until it is not found (with grpc_code, when given)."""
    def once():
        status, body = describe_schedule(aid)
        assert status == 404, f"schedule {schedule_id(aid)} still there: HTTP {status} {body}"
        if grpc_code is not None:
            assert body.get("code") == grpc_code, body
    poll(once, timeout)


def wid(aid, event_id):
    """The workflow id the router starts for definition aid and an event."""
    return f"activity-{aid}:{event_id}"


# ---------------------------------------------------------------- NATS

def wait_no_pull_waiting(js, timeout=10.0):
    """Wait until no pull request of the router waits on the consumer (after a
    SIGSTOP its last one expires), so that what is published next is fetched
    as one batch when the router goes on."""
    def once():
        ci = js.consumer()
        assert ci.num_waiting == 0, f"a pull request still waits: {ci}"
    poll(once, timeout, 0.1)


def wait_processed(js, seq, timeout=20.0, interval=0.2):
    """Wait until the router acknowledged or terminated every message up to seq."""
    def once():
        ci = js.consumer()
        assert ci.ack_floor.stream_seq >= seq, (
            f"message {seq} not processed yet: ack floor {ci.ack_floor.stream_seq}, "
            f"delivered {ci.delivered.stream_seq}, ack pending {ci.num_ack_pending}, "
            f"pending {ci.num_pending}, redelivered {ci.num_redelivered}")
        return ci
    return poll(once, timeout, interval)


# ---------------------------------------------------------------- the stack itself

def load_stack_env():
    """Take PG* and AC_* from STATE/stack.env when the caller did not export them."""
    env_file = Path(os.environ.get("AC_STATE") or REPO / ".local" / "test") / "stack.env"
    if not env_file.is_file():
        return
    for line in env_file.read_text().splitlines():
        if not line.startswith("export ") or "=" not in line:
            continue
        key, value = line[len("export "):].split("=", 1)
        if key != "PATH":
            os.environ.setdefault(key, value.strip('"'))


def state_dir():
    """The stack's state directory: AC_STATE, else .local/test of the repository."""
    return os.environ.get("AC_STATE") or str(REPO / ".local" / "test")


def pg_log():
    """The PostgreSQL server log of the stack."""
    return os.environ.get("AC_PG_LOG") or f"{state_dir()}/pg/postgres.log"


def stack(*args, timeout=180):
    """Run a test/stack.sh subcommand against the stack; `start` brings it back as it was."""
    env = dict(os.environ)
    extra = []
    if args[0] == "start":
        # `start` computes its ports from AC_* (not from the saved configuration),
        # so they are passed from STATE/stack.conf
        conf = {}
        for line in (Path(state_dir()) / "stack.conf").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                conf[key] = value.strip("'\"")
        for var, key in (("AC_PG_PORT", "PG_PORT"), ("AC_TEMPORAL_PORT", "T_GRPC"),
                         ("AC_TEMPORAL_HTTP_PORT", "T_HTTP"), ("AC_TEMPORAL_UI_PORT", "T_UI"),
                         ("AC_NATS_PORT", "NATS_PORT"), ("AC_NATS_MON_PORT", "NATS_MON"),
                         ("AC_METRICS_PORT", "METRICS"), ("AC_DB", "DB"),
                         ("AC_PRELOAD", "PRELOAD"), ("AC_TEMPORAL_EXTRA_ARGS", "TEMPORAL_EXTRA")):
            env[var] = conf.get(key, "")
        extra = [conf["MODE"]]
    res = subprocess.run(["bash", STACK, *args, state_dir(), *extra], capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    assert res.returncode == 0, f"stack.sh {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def alive(pid):
    """True while pid is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid, timeout, interval=0.02):
    """Wait up to timeout seconds for pid to exit; True when it did."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(interval)
    return not alive(pid)


def signal_group(pid, sig):
    """Send sig to pid and, when it leads its own process group, to that group."""
    try:
        os.kill(pid, sig)
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def log_offset():
    """The current size of the PostgreSQL log (0 when there is none)."""
    try:
        return os.path.getsize(pg_log())
    except OSError:
        return 0


def log_since(offset):
    """What the PostgreSQL log got after offset."""
    try:
        with open(pg_log(), "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def log_tail(offset, n=40):
    """The last n lines of log_since(offset)."""
    return "\n".join(log_since(offset).splitlines()[-n:])


# ---------------------------------------------------------------- PostgreSQL

def connect(timeout=30.0):
    """A fresh autocommit connection with the extension; retries while PostgreSQL starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = psycopg.connect(autocommit=True, connect_timeout=5)
            c.execute("SET client_min_messages = warning")
            c.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
            return c
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def alter_system(conn, **settings):
    """ALTER SYSTEM SET (value) or RESET (None) activity_core.<name>, then reload."""
    for name, value in settings.items():
        if value is None:
            conn.execute(f"ALTER SYSTEM RESET activity_core.{name}")
        else:
            conn.execute(f"ALTER SYSTEM SET activity_core.{name} = " + "'%s'" % value.replace("'", "''"))
    conn.execute("SELECT pg_reload_conf()")


def insert_definition(c, cols, **optional):
    """Insert a definition: cols plus the optional columns that are not None; return its id."""
    cols = dict(cols, **{k: v for k, v in optional.items() if v is not None})
    sql = (f"INSERT INTO ac_activity_definitions ({', '.join(cols)}) "
           f"VALUES ({', '.join(['%s'] * len(cols))}) RETURNING id")
    return str(c.execute(sql, list(cols.values())).fetchone()[0])


def worker_pids(c, backend_type):
    """Pids of the background workers of backend_type."""
    return [r[0] for r in c.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = %s", (backend_type,)).fetchall()]


def worker_pid(c, backend_type, timeout=15.0, other_than=None):
    """Pid of the single backend_type worker, waiting for one that is not other_than."""
    def once():
        pids = [p for p in worker_pids(c, backend_type) if p != other_than]
        assert len(pids) == 1, f"{backend_type} workers other than {other_than}: {pids}"
        return pids[0]
    return poll(once, timeout, 0.1)


@pytest.fixture(scope="session")
def conn():
    """An autocommit connection to the test database with the extension."""
    with psycopg.connect(autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        yield c


# ---------------------------------------------------------------- roles

SECURITY_DOC = REPO / "docs" / "security.md"


def grant_blocks():
    """The ```sql blocks of docs/security.md marked `-- grants: ROLE`, by role."""
    blocks = {}
    for body in re.findall(r"```sql\n(.*?)```", SECURITY_DOC.read_text(), re.S):
        m = re.match(r"-- grants: (\w+)\n", body)
        if m:
            blocks[m.group(1)] = body
    return blocks


def create_roles(c, suffix):
    """Create LOGIN roles app, ops and viewer (named ac_<role>_<suffix>), each
    granted exactly what docs/security.md says, by running its blocks literally."""
    names = {r: f"ac_{r}_{suffix}" for r in ("app", "ops", "viewer")}
    for name in names.values():
        c.execute(f"CREATE ROLE {name} LOGIN")
    grant_roles(c, names)
    return names


def grant_roles(c, names):
    """Run the grant block of docs/security.md for each role of names."""
    blocks = grant_blocks()
    assert set(blocks) == set(names), f"docs/security.md grant blocks: {sorted(blocks)}"
    for role, name in names.items():
        sql = re.sub(rf"\bTO {role};", f"TO {name};", blocks[role])
        assert name in sql, sql
        c.execute(sql)


def ensure_grants(c, names):
    """Grant the roles again when the extension was dropped and created anew
    since (a suite moves it to another schema): its new objects carry no grants."""
    if not c.execute("SELECT has_function_privilege(%s, 'ac_health()', 'EXECUTE')",
                     (names["viewer"],)).fetchone()[0]:
        grant_roles(c, names)


def drop_roles(c, names):
    """Drop roles made by create_roles once their sessions have ended."""
    for name in names.values():
        def once(name=name):
            try:
                c.execute(f"DROP OWNED BY {name}")
                c.execute(f"DROP ROLE {name}")
            except psycopg.errors.DependentObjectsStillRemain as err:
                raise AssertionError(str(err))
        poll(once, 10)


def connect_as(role, timeout=30.0):
    """A fresh autocommit connection logged in as role (no superuser rights)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = psycopg.connect(autocommit=True, connect_timeout=5, user=role)
            c.execute("SET client_min_messages = warning")
            return c
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def role_names(conn):
    """The session's app, ops and viewer roles, granted as docs/security.md says."""
    names = create_roles(conn, uuid.uuid4().hex[:6])
    yield names
    try:
        c = connect()
        with c:
            drop_roles(c, names)
    except psycopg.Error:
        pass


@pytest.fixture(scope="session")
def role_conns(role_names):
    """One connection per role of role_names, for the whole session."""
    conns = {r: connect_as(name) for r, name in role_names.items()}
    yield conns
    for c in conns.values():
        c.close()


def _granted(conn, role_names, role_conns, role):
    ensure_grants(conn, role_names)
    return role_conns[role]


@pytest.fixture
def app(conn, role_names, role_conns):
    """A connection as the application role: writes definitions, ac_trigger, ac_publish."""
    return _granted(conn, role_names, role_conns, "app")


@pytest.fixture
def ops(conn, role_names, role_conns):
    """A connection as the operator role: ac_sync_schedules, ac_health, dead letters."""
    return _granted(conn, role_names, role_conns, "ops")


@pytest.fixture
def viewer(conn, role_names, role_conns):
    """A connection as the read-only role: ac_health, ac_sync_status, ac_stats."""
    return _granted(conn, role_names, role_conns, "viewer")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "restarts_postgres: the test restarts PostgreSQL or crashes a backend, "
        "which drops every open connection; such tests run after all others")


def pytest_collection_modifyitems(items):
    """Run tests marked restarts_postgres last, so that the session's `conn` serves
    every other suite before a restart drops it."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_postgres") is not None)


# ---------------------------------------------------------------- completed workflows
# The reference worker (test/worker.py, task queue orchestrator-tq) runs for the
# whole session, so workflows of the default task queue complete, and "exactly
# once" is checked against closed workflows too: Temporal refuses a second start
# of a running id whatever the reuse policy, of a closed one only because of it.

import urllib.parse  # noqa: E402

WORKER_TASK_QUEUE = "orchestrator-tq"
COMPLETED = "WORKFLOW_EXECUTION_STATUS_COMPLETED"


def ensure_worker():
    """Start the reference worker unless it runs (a test may have stopped the stack)."""
    try:
        pid = int((Path(state_dir()) / "worker" / "worker.pid").read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"worker.py" in f.read() and alive(pid):
                return
    except (OSError, ValueError):
        pass
    stack("worker-start")


@pytest.fixture(scope="session", autouse=True)
def reference_worker():
    """The reference worker, started for the session."""
    ensure_worker()
    yield


def describe_workflow(workflow_id):
    """DescribeWorkflowExecution: the body, or None when Temporal says the workflow
    does not exist; any other answer fails the test."""
    status, body = temporal("GET", "/workflows/" + urllib.parse.quote(workflow_id, safe=""))
    if status == 404 and isinstance(body, dict) and body.get("code") == 5:
        return None
    assert status == 200, f"describe workflow {workflow_id}: HTTP {status} {body}"
    return body


def workflow_runs(workflow_id):
    """Every run (open and closed) that visibility lists for workflow_id, as
    [(run id, status)], through ListWorkflowExecutions with WorkflowId = '...'."""
    query = urllib.parse.quote("WorkflowId = '%s'" % workflow_id.replace("'", "\\'"))
    out, page = [], ""
    while True:
        path = f"/workflows?pageSize=1000&query={query}"
        if page:
            path += "&nextPageToken=" + urllib.parse.quote(page)
        status, body = temporal("GET", path)
        assert status == 200, f"list runs of {workflow_id}: HTTP {status} {body}"
        for e in body.get("executions", []):
            assert e["execution"]["workflowId"] == workflow_id, e
            out.append((e["execution"]["runId"], e.get("status")))
        page = body.get("nextPageToken") or ""
        if not page:
            return out


def wait_completed(workflow_id, timeout=30.0):
    """Wait until the current run of workflow_id is COMPLETED; return its describe body."""
    ensure_worker()

    def once():
        body = describe_workflow(workflow_id)
        assert body is not None, f"workflow {workflow_id} not started"
        st = body["workflowExecutionInfo"].get("status")
        assert st == COMPLETED, f"workflow {workflow_id} is {st}, not completed"
        return body
    return poll(once, timeout, 0.2)


def run_id(body):
    """The run id of a describe body."""
    return body["workflowExecutionInfo"]["execution"]["runId"]


def assert_one_completed_run(workflow_id, first_run=None, timeout=15.0):
    """workflow_id has exactly one run, completed (the one of first_run when given):
    the current run (DescribeWorkflowExecution, strongly consistent) is that run,
    and visibility lists it and no other."""
    body = wait_completed(workflow_id, timeout)
    rid = run_id(body)
    if first_run is not None:
        assert rid == first_run, (f"workflow {workflow_id} was started again: current run "
                                  f"{rid}, first run {first_run}")

    def listed():
        got = workflow_runs(workflow_id)
        assert got == [(rid, COMPLETED)], (f"runs of {workflow_id}: {got}, expected only "
                                           f"{rid} completed")
    poll(listed, timeout, 0.3)
    return rid
