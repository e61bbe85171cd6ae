"""The local stack is really up: Temporal answers its HTTP API, NATS has
JetStream, and PostgreSQL runs with the extension preloaded."""
from conftest import NATS_MONITOR, TEMPORAL_URL, http, temporal


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
