"""Settings do what docs/configuration.md and the README say: the stream,
subject prefix and consumer names, metrics_listen (another address, empty),
URLs logged without their credentials, an HTTP server that is not Temporal's
API treated as transient, and a database that is not UTF8 refused."""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import psycopg
import pytest

from conftest import (NATS_MONITOR, NATS_URL, REPO, alter_system, http, log_offset, log_since,
                      poll, temporal, unique, wait_for)

TEMPORAL_CLI = str(REPO / ".cache" / "bin" / "temporal")


def reloaded(conn, name, value):
    """Wait until a new session sees activity_core.<name> = value."""
    def once():
        with psycopg.connect(autocommit=True) as c:
            got = c.execute(f"SHOW activity_core.{name}").fetchone()[0]
        assert got == value, (name, got, value)
    poll(once, 15)


def health(c):
    return {r[0]: (r[1], r[2], r[3]) for r in c.execute("SELECT * FROM ac_health()").fetchall()}


async def _jsm(fn):
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=2)
    try:
        return await fn(nc.jsm())
    finally:
        await nc.close()


def test_stream_subject_and_consumer_names_are_settings(conn, app, ops):
    """With stream_name, subject_prefix and consumer_name changed by a reload,
    the router creates that stream (subjects <prefix>.>) and that durable
    consumer, ac_publish() publishes to <prefix>.<type>, and a matching event
    definition starts its workflow from there."""
    tok = uuid.uuid4().hex[:8]
    stream, prefix, consumer = f"AC_TEST_{tok.upper()}", f"actest{tok}", f"router-{tok}"
    etype = f"names.t{tok}"
    aid = None
    offset = log_offset()
    try:
        alter_system(conn, stream_name=stream, subject_prefix=prefix, consumer_name=consumer)
        reloaded(conn, "consumer_name", consumer)
        # the router connects afresh with the new names (not only ac_health's text)
        poll(lambda: _logged(offset, f"router: consuming {stream}/{consumer} from"), 30)

        def consuming():
            ok, detail, _ = health(ops)["nats_router"]
            assert ok and detail.endswith(f"and consuming {stream}/{consumer}"), detail
        poll(consuming, 30)
        info = asyncio.run(_jsm(lambda jsm: jsm.stream_info(stream)))
        assert info.config.subjects == [f"{prefix}.>"], info.config
        cinfo = asyncio.run(_jsm(lambda jsm: jsm.consumer_info(stream, consumer)))
        assert cinfo.config.durable_name == consumer and cinfo.config.filter_subject == f"{prefix}.>"

        aid = str(app.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
            "VALUES (%s, 'event', %s) RETURNING id",
            (unique("names"), json.dumps({"event_type": etype}))).fetchone()[0])
        eid = unique("names-ev")
        app.execute("SELECT ac_publish(%s, '{}', %s)", (etype, eid))
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        last = asyncio.run(_jsm(lambda jsm: jsm.get_last_msg(stream, f"{prefix}.{etype}")))
        assert json.loads(last.data)["event_id"] == eid

        def started():
            status, body = temporal("GET", f"/workflows/activity-{aid}:{eid}")
            assert status == 200, (status, body)
        poll(started, 30)
    finally:
        back = log_offset()
        alter_system(conn, stream_name=None, subject_prefix=None, consumer_name=None)
        if aid:
            conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        reloaded(conn, "consumer_name", "activity-core-event-router")
        poll(lambda: _logged(back, "router: consuming ACTIVITY_EVENTS/activity-core-event-router"), 30)

        def back():
            ok, detail, _ = health(ops)["nats_router"]
            assert ok and detail.endswith("and consuming ACTIVITY_EVENTS/activity-core-event-router"), detail
        poll(back, 30)
        asyncio.run(_jsm(lambda jsm: jsm.delete_stream(stream)))


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status
    except OSError as err:
        return err


def test_metrics_listen_another_address_and_empty(conn):
    """metrics_listen binds where it says (here another loopback address) and
    nowhere else; empty turns the endpoint off; the default setting comes back
    on reload."""
    url = os.environ["AC_METRICS_URL"]
    port = int(re.search(r":(\d+)/", url).group(1))
    assert _get(url) == 200
    try:
        alter_system(conn, metrics_listen=f"127.0.0.2:{port}")
        assert wait_for(lambda: _get(f"http://127.0.0.2:{port}/metrics") == 200, 15), \
            _get(f"http://127.0.0.2:{port}/metrics")
        assert isinstance(_get(url), OSError), "still listening on the old address"

        alter_system(conn, metrics_listen="")
        assert wait_for(lambda: isinstance(_get(f"http://127.0.0.2:{port}/metrics"), OSError), 15)
        assert isinstance(_get(url), OSError)
        # nothing listens on the port at all
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        alter_system(conn, metrics_listen=None)
    assert wait_for(lambda: _get(url) == 200, 15), _get(url)


def test_urls_are_logged_and_shown_without_credentials(conn, ops):
    """A NATS URL and a Temporal URL with user:password@ (the stack's real NATS
    credentials, so that the router connects and logs the URL) appear in the
    log and in ac_health() with ***@ in place of the credentials."""
    user, pw = os.environ["AC_NATS_USER"], os.environ["AC_NATS_PASSWORD"]
    nats_url = conn.execute("SHOW activity_core.nats_url").fetchone()[0]
    temporal_url = conn.execute("SHOW activity_core.temporal_url").fetchone()[0]
    offset = log_offset()
    try:
        alter_system(conn, nats_url=nats_url.replace("://", f"://{user}:{pw}@"),
                     temporal_url=temporal_url.replace("://", f"://{user}:{pw}@"))
        redacted_nats = nats_url.replace("://", "://***@")
        redacted_temporal = temporal_url.replace("://", "://***@")

        def shown():
            h = health(ops)
            assert redacted_nats in h["nats_router"][1], h["nats_router"]
            assert h["temporal_reachable"][1] == f"{redacted_temporal} answers", h["temporal_reachable"]
        poll(shown, 30)
        # the router reconnects with the new URL and logs it
        poll(lambda: _logged(offset, f"from {redacted_nats}"), 30)
        seen = log_since(offset) + repr(health(ops))
        assert pw not in seen and f"{user}:" not in seen
    finally:
        back = log_offset()
        alter_system(conn, nats_url=None, temporal_url=None)
    poll(lambda: _logged(back, f"from {nats_url}"), 30)


def _logged(offset, text):
    assert text in log_since(offset), f"not in the log yet: {text}"


def test_a_server_that_is_not_temporals_api_is_a_transient_failure(conn, app):
    """temporal_url pointing at an HTTP server without Temporal's routes (here
    NATS's monitoring port: an unknown route, HTTP 404 without a gRPC status)
    is transient: the change stays pending and is retried, and is applied once
    the URL is right."""
    name = unique("not-temporal")
    alter_system(conn, temporal_url=NATS_MONITOR)
    aid = None
    try:
        reloaded(conn, "temporal_url", NATS_MONITOR)
        aid = str(app.execute(
            "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
            "VALUES (%s, 'cron', '{\"cron_expression\": \"0 5 * * *\"}') RETURNING id",
            (name,)).fetchone()[0])

        def retried():
            row = conn.execute("SELECT pending, error_kind, attempts, last_error FROM ac_sync_status "
                               "WHERE activity_id = %s", (aid,)).fetchone()
            assert row[0] is True and row[1] == "transient" and row[2] >= 2, row
            assert row[3].startswith("unavailable: HTTP 404"), row
        poll(retried, 20)
    finally:
        alter_system(conn, temporal_url=None)
    assert app.execute("SELECT ac_wait_sync('60s')").fetchone()[0] is True
    status, body = temporal("GET", f"/schedules/activity-schedule-{aid}")
    assert status == 200, body
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
    conn.execute("SELECT ac_wait_sync('30s')")


def test_a_database_that_is_not_utf8_is_refused(conn):
    """CREATE EXTENSION in a LATIN1 database fails and says why."""
    db = f"ac_latin1_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE DATABASE {db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        with psycopg.connect(dbname=db, autocommit=True) as c:
            with pytest.raises(psycopg.Error) as err:
                c.execute("CREATE EXTENSION activity_core")
            assert str(err.value).startswith("activity_core needs a UTF8 database, not LATIN1"), err.value
            assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'activity_core'"
                             ).fetchone()[0] == 0
    finally:
        conn.execute(f"DROP DATABASE {db}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rate_limited_temporal(tmp_path):
    """A second, real Temporal dev server whose frontend allows 2 requests a
    second per namespace: more are answered 429 (RESOURCE_EXHAUSTED)."""
    grpc, web = _free_port(), _free_port()
    log = open(tmp_path / "temporal.log", "w")
    proc = subprocess.Popen(
        [TEMPORAL_CLI, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(grpc),
         "--http-port", str(web), "--headless", "--log-level", "warn",
         "--search-attribute", "activity_id=Keyword",
         "--dynamic-config-value", "frontend.namespaceRPS=2",
         "--dynamic-config-value", "frontend.namespaceBurstRatio=1"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{web}"
    try:
        assert wait_for(lambda: _up(url), 90, 0.5), (tmp_path / "temporal.log").read_text()[-2000:]
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def _up(url):
    try:
        status, _ = http("GET", f"{url}/system-info", timeout=2)
        return status == 200
    except OSError:
        return False


@pytest.mark.timeout(240)
def test_429_from_a_rate_limited_temporal_is_transient(conn, app, rate_limited_temporal):
    """Temporal answering 429 (its namespace rate limit) is a transient
    failure: the changes it refused stay pending with the reason, are retried
    with backoff, and are all applied in the end."""
    tag = unique("rate-limited")
    alter_system(conn, temporal_url=rate_limited_temporal)
    try:
        reloaded(conn, "temporal_url", rate_limited_temporal)
        app.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                    "SELECT %s || '-' || i, 'cron', '{\"cron_expression\": \"0 6 * * *\"}' "
                    "FROM generate_series(1, 8) i", (tag,))

        def limited():
            rows = conn.execute("SELECT error_kind, last_error FROM ac_sync_status "
                                "WHERE name LIKE %s AND last_error IS NOT NULL", (tag + "-%",)).fetchall()
            assert rows, "no change refused yet"
            return rows
        rows = poll(limited, 30)
        assert all(kind == "transient" for kind, _ in rows), rows
        assert any(err == "unavailable: namespace rate limit exceeded" for _, err in rows), rows
        # what the server answers such a request: HTTP 429, gRPC RESOURCE_EXHAUSTED
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: http(
                "GET", f"{rate_limited_temporal}/namespaces/default/schedules/probe-{i}"), range(8)))
        assert (429, 8) in {(st, (b or {}).get("code")) for st, b in answers}, answers
        assert app.execute("SELECT ac_wait_sync('120s')").fetchone()[0] is True
        assert conn.execute("SELECT count(*) FROM ac_sync_status WHERE name LIKE %s AND NOT pending "
                            "AND applied_revision = desired_revision", (tag + "-%",)).fetchone()[0] == 8
        status, body = http("GET", f"{rate_limited_temporal}/namespaces/default/schedules")
        assert status == 200, body
    finally:
        app.execute("DELETE FROM ac_activity_definitions WHERE name LIKE %s", (tag + "-%",))
        alter_system(conn, temporal_url=None)
    assert app.execute("SELECT ac_wait_sync('60s')").fetchone()[0] is True


def _openssl(*args, cwd):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def tls_nats():
    """A second nats-server with JetStream that speaks TLS only and requires
    a client certificate (mutual TLS); a CA, a server and a client certificate
    made with openssl, readable by the server's account."""
    d = Path(tempfile.mkdtemp(prefix="ac-nats-tls-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ac test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=ac test {name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    for f in d.iterdir():
        os.chmod(f, 0o644 if f.suffix == ".pem" else 0o600)
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postgres")
        for f in ("client.key", "client.pem", "ca.pem"):
            os.chown(d / f, pw.pw_uid, pw.pw_gid)
    port, mon = _free_port(), _free_port()
    (d / "nats.conf").write_text(
        f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{mon}"\njetstream {{ store_dir: "{d}/store" }}\n'
        f'tls {{ cert_file: "{d}/server.pem", key_file: "{d}/server.key", ca_file: "{d}/ca.pem", '
        'verify: true, timeout: 2 }\n')
    proc = subprocess.Popen(["nats-server", "-c", str(d / "nats.conf"), "-l", str(d / "nats.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: _get(f"http://127.0.0.1:{mon}/healthz") == 200, 30), \
            (d / "nats.log").read_text()[-2000:]
        yield {"url": f"tls://127.0.0.1:{port}", "monitor": f"http://127.0.0.1:{mon}",
               "ca": str(d / "ca.pem"), "cert": str(d / "client.pem"), "key": str(d / "client.key"),
               "log": str(d / "nats.log")}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


def _has(path, text):
    assert text in Path(path).read_text(errors="replace"), f"not in {path} yet: {text}"


def _router_state(conn, want):
    state, error = conn.execute("SELECT state, error FROM ac_router_status()").fetchone()
    assert state == want, (state, error)
    return error


def test_nats_tls_settings(conn, app, tls_nats):
    """nats_tls_ca_file, nats_tls_cert_file and nats_tls_key_file: against a
    server that speaks TLS only and wants a client certificate, the router
    consumes and the dispatcher publishes; without the client certificate the
    server refuses them and ac_router_status says why."""
    etype = f"tls.t{uuid.uuid4().hex[:8]}"
    offset = log_offset()
    try:
        alter_system(conn, nats_url=tls_nats["url"], nats_tls_ca_file=tls_nats["ca"],
                     nats_tls_cert_file=tls_nats["cert"], nats_tls_key_file=tls_nats["key"])
        poll(lambda: _logged(offset, f"router: consuming ACTIVITY_EVENTS/activity-core-event-router "
                                     f"from {tls_nats['url']}"), 30)
        poll(lambda: _router_state(conn, "connected"), 15)
        app.execute("SELECT ac_publish(%s, '{}', %s)", (etype, unique("tls")))
        assert app.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        status, jsz = http("GET", f"{tls_nats['monitor']}/jsz?streams=true")
        assert status == 200 and jsz["messages"] >= 1, jsz

        # no client certificate: the server refuses the handshake
        alter_system(conn, nats_tls_cert_file=None, nats_tls_key_file=None)
        error = poll(lambda: _router_state(conn, "failing"), 30)
        assert error, error
        poll(lambda: _has(tls_nats["log"], "client didn't provide a certificate"), 15)
    finally:
        back = log_offset()
        alter_system(conn, nats_url=None, nats_tls_ca_file=None, nats_tls_cert_file=None,
                     nats_tls_key_file=None)
        poll(lambda: _logged(back, "router: consuming ACTIVITY_EVENTS/activity-core-event-router from nats://"), 30)
