"""The local stack is really up: Temporal answers its HTTP API, NATS has
JetStream and refuses clients without credentials, and PostgreSQL runs with
the extension preloaded and the stack's credentials configured."""
import asyncio
import json
import os
import stat
from pathlib import Path

import nats
import pytest

from conftest import NATS_ADDRESS, NATS_MONITOR, NATS_URL, TEMPORAL_URL, http, pg_log, poll


async def _nats_round_trip(url, **kw):
    """Connect to url (no reconnects), publish and flush; return the server's info."""
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False,
                            max_reconnect_attempts=0, **kw)
    try:
        await nc.publish("ac.stack.probe", b"x")
        await nc.flush(timeout=3)
        return nc.connected_server_version
    finally:
        await nc.close()


def test_nats_refuses_a_client_without_credentials():
    """Authentication is really on: no user, or a wrong password, is refused;
    the stack's user and password (in AC_NATS_URL) are let in."""
    user, password = os.environ["AC_NATS_USER"], os.environ["AC_NATS_PASSWORD"]
    assert f"{user}:{password}@" in NATS_URL and "@" not in NATS_ADDRESS
    for kw in ({}, {"user": user, "password": password + "x"}):
        with pytest.raises(Exception) as err:
            asyncio.run(_nats_round_trip(NATS_ADDRESS, **kw))
        assert "authorization violation" in repr(err.value).lower(), (kw, err.value)
    assert asyncio.run(_nats_round_trip(NATS_URL))
    assert asyncio.run(_nats_round_trip(NATS_ADDRESS, user=user, password=password))


def test_the_extension_uses_the_stacks_credentials_from_files(conn):
    """activity_core.nats_user / nats_password_file and temporal_api_key_file
    name the stack's secret files (mode 600, the server's account), and the
    router is connected with them."""
    settings = dict(conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('activity_core.nats_user', "
        "'activity_core.nats_password_file', 'activity_core.temporal_api_key_file')").fetchall())
    assert settings == {
        "activity_core.nats_user": os.environ["AC_NATS_USER"],
        "activity_core.nats_password_file": os.environ["AC_NATS_PASSWORD_FILE"],
        "activity_core.temporal_api_key_file": os.environ["AC_TEMPORAL_API_KEY_FILE"]}, settings
    for path, value in ((os.environ["AC_NATS_PASSWORD_FILE"], os.environ["AC_NATS_PASSWORD"]),
                        (os.environ["AC_TEMPORAL_API_KEY_FILE"], os.environ["AC_TEMPORAL_API_KEY"])):
        st = Path(path).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))
        assert Path(path).read_text().splitlines()[0] == value
        if os.geteuid() == 0:
            import pwd
            assert pwd.getpwuid(st.st_uid).pw_name == "postgres", path
        assert len(value) == 32, value
    poll(lambda: _router_state(conn, "connected"), 30)


def _router_state(conn, want):
    state, error = conn.execute("SELECT state, error FROM ac_router_status()").fetchone()
    assert state == want, (state, error)


def test_temporal_http_api_answers_system_info():
    status, body = http("GET", f"{TEMPORAL_URL}/system-info")
    assert status == 200
    assert body["capabilities"]["supportsSchedules"] is True
    assert body["serverVersion"]


def test_temporal_has_activity_id_search_attribute():
    status, body = http("GET", f"{TEMPORAL_URL}/cluster/namespaces/default/search-attributes")
    assert status == 200
    assert body["customAttributes"]["activity_id"] == "INDEXED_VALUE_TYPE_KEYWORD"


def test_nats_jetstream_enabled():
    status, _ = http("GET", f"{NATS_MONITOR}/healthz?js-enabled-only=true")
    assert status == 200
    status, jsz = http("GET", f"{NATS_MONITOR}/jsz")
    assert status == 200
    assert jsz.get("config", {}).get("store_dir"), jsz
    assert not jsz.get("disabled", False)


def test_extension_preloaded(conn):
    row = conn.execute("SHOW shared_preload_libraries").fetchone()
    assert "activity_core" in row[0]
    version = conn.execute("SELECT ac_version()").fetchone()[0]
    ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'activity_core'").fetchone()[0]
    assert version == ext


def test_health_reports_every_check(conn, viewer):
    """ac_health(): every check passes on a healthy stack (dead letters left by
    other suites aside), and neither the stack's API key nor its NATS password
    is in its output, in what a viewer sees of the settings, or in the server log."""
    import time
    deadline = time.time() + 30
    while True:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT \"check\", ok, detail FROM ac_health()").fetchall()}
        if all(ok for ok, _ in rows.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert set(rows) == {"temporal_reachable", "temporal_namespace", "search_attribute_activity_id",
                         "nats_router", "nats_publisher", "dispatcher_running", "router_running", "schedule_backlog",
                         "schedule_failures", "outbox_backlog", "outbox_failing", "outbox_failures",
                         "dead_letters"}
    failing = {k: v for k, v in rows.items() if not v[0] and k != "dead_letters"}
    assert not failing, failing
    secrets = (os.environ["AC_TEMPORAL_API_KEY"], os.environ["AC_NATS_PASSWORD"])
    seen = json.dumps(rows) + repr(viewer.execute("SELECT * FROM ac_health()").fetchall()) + repr(
        viewer.execute("SELECT name, setting FROM pg_settings WHERE name LIKE 'activity_core.%'")
        .fetchall())
    log = Path(pg_log()).read_text(errors="replace")
    for secret in secrets:
        assert secret not in seen, "a secret is in ac_health() or pg_settings"
        assert secret not in log, "a secret is in the server log"


def test_metrics_endpoint_serves_the_counters(conn):
    """GET /metrics answers in Prometheus text with the counters of ac_stats."""
    import os
    import time
    url = os.environ.get("AC_METRICS_URL", "http://127.0.0.1:19090/metrics")
    deadline = time.time() + 15
    while True:
        try:
            import urllib.request
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
                break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    names = [r[0] for r in conn.execute(
        "SELECT name FROM ac_stats WHERE type = 'counter' AND labels = '{}'").fetchall()]
    assert names
    for name in names:
        assert f"activity_core_{name}_total " in text, name
    assert "# TYPE activity_core_events_received_total counter" in text
    status, _ = http("GET", url.replace("/metrics", "/other"))
    assert status == 404
