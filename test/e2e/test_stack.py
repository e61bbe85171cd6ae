"""The local stack is really up: Temporal answers its HTTP API, NATS has
JetStream, and PostgreSQL runs with the extension preloaded."""
import json

from conftest import NATS_MONITOR, TEMPORAL_URL, http


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


def test_health_reports_every_check(conn):
    """ac_health(): every check passes on a healthy stack (dead letters left by
    other suites aside), and no secret is shown."""
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
    assert "api_key" not in json.dumps(rows).lower()


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
    names = [r[0] for r in conn.execute("SELECT name FROM ac_stats").fetchall()]
    for name in names:
        assert f"activity_core_{name}_total " in text, name
    assert "# TYPE activity_core_events_received_total counter" in text
    status, _ = http("GET", url.replace("/metrics", "/other"))
    assert status == 404
