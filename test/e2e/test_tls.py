"""TLS and credentials on the wire, against real servers the suite starts.

The suite makes its own PKI with openssl (a CA, a server certificate for
127.0.0.1, a client certificate, an expired server certificate, and a CA
that signed none of them), its own NATS JWT setup with test/natsjwt (an
operator, an account, a user's .creds file, and the .creds of a user the
server does not trust), and starts, on ports 26100-26199 (below the kernel's range for outgoing ports, 32768-60999, so no client socket can hold one):

  * nats-server with TLS and users with passwords (an authorization block),
  * nats-server with mutual TLS and decentralized JWT auth (.creds),
  * nats-server presenting an expired certificate,
  * nginx terminating TLS in front of the Temporal dev server's HTTP port,
    passing a request on only with "Authorization: Bearer <key>" (the dev
    server ignores API keys; nginx is the one that checks), and on a second
    port only with a client certificate signed by the CA, and on a third
    it answers 502 Bad Gateway (its upstream is down): a real 5xx.

Each test points the extension at them with ALTER SYSTEM + pg_reload_conf
and puts every setting back as it was afterwards.  A right setup must work
end to end (ac_publish drained by the dispatcher, the event routed by the
router into a workflow, a schedule created by ac_sync_schedules, a start
by ac_trigger); a wrong one must fail with the reason in ac_health(), in
the outbox rows and in the log, retried with backoff, and no secret may
appear anywhere a person or a non-superuser can read.

Cost: about 20 s (three nats-servers and an nginx start in well under a
second each; most of the time is the workers reconnecting).
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import (REPO, TEMPORAL_URL, insert_definition, log_offset, log_since, poll,
                      schedule_gone, schedule_id, temporal, unique)

PORT_BASE = int(os.environ.get("AC_TLS_PORT_BASE", "26100"))
NATS_TLS_PORT = PORT_BASE          # TLS, users with passwords
NATS_MTLS_PORT = PORT_BASE + 1     # mutual TLS, .creds
NATS_EXPIRED_PORT = PORT_BASE + 2  # an expired server certificate
NGINX_PORT = PORT_BASE + 3         # TLS + bearer token in front of Temporal
NGINX_MTLS_PORT = PORT_BASE + 4    # mutual TLS in front of Temporal
NGINX_502_PORT = PORT_BASE + 5     # TLS in front of an upstream that is down: 502
NOTHING_PORT = PORT_BASE + 9       # nothing listens here
NATS_PASSWORD = "pw-" + uuid.uuid4().hex
API_KEY = "key-" + uuid.uuid4().hex

NATS_SETTINGS = ("nats_url", "nats_user", "nats_password_file", "nats_credentials_file",
                 "nats_tls_ca_file", "nats_tls_cert_file", "nats_tls_key_file")
TEMPORAL_SETTINGS = ("temporal_url", "temporal_api_key", "temporal_api_key_file",
                     "temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file")


# ---------------------------------------------------------------- helpers

def run(*args, cwd=None):
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{' '.join(map(str, args))}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def wait_port(port, proc, logf, timeout=15.0):
    """Wait until something accepts on 127.0.0.1:port while proc runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server on {port} exited:\n{Path(logf).read_text()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}:\n{Path(logf).read_text()[-3000:]}")


class Pki:
    """A CA, certificates signed by it, and a CA that signed nothing here."""

    CA_CONF = ("[ca]\ndefault_ca = test_ca\n[test_ca]\ndir = .\ndatabase = index.txt\n"
               "new_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\n"
               "copy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n")

    def __init__(self, d):
        self.d = d
        (d / "ca.cnf").write_text(self.CA_CONF)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("01\n")
        for ca in ("ca", "other-ca"):
            run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=activity-core {ca}",
                cwd=d)
        self.sign("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self.sign("expired", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                  "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
        self.sign("client", "/CN=activity-core client", "extendedKeyUsage=clientAuth")

    def sign(self, name, subject, ext, *dates):
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", subject, "-addext", ext, cwd=self.d)
        if not dates:
            dates = ("-days", "2")
        run("openssl", "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem",
            "-keyfile", "ca.key", "-in", f"{name}.csr", "-out", f"{name}.pem", *dates, cwd=self.d)

    def __getitem__(self, name):
        return str(self.d / name)


class Server:
    """A server process this suite started, stopped by its own pid."""

    def __init__(self, args, port, logf):
        self.logf = logf
        self.proc = subprocess.Popen(args, stdout=open(logf, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_port(port, self.proc, logf)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def nats_server(d, name, port, conf):
    store = d / f"{name}-js"
    path = d / f"{name}.conf"
    path.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{store}" }}\n' + conf)
    return Server(["nats-server", "-c", str(path)], port, str(d / f"{name}.log"))


def nginx_server(d, upstream):
    prefix = d / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{NGINX_PORT} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{
            if ($http_authorization != "Bearer {API_KEY}") {{ return 401; }}
            proxy_pass {upstream};
            proxy_set_header Authorization "";
        }}
    }}
    server {{
        listen 127.0.0.1:{NGINX_MTLS_PORT} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        location / {{
            proxy_pass {upstream};
        }}
    }}
    server {{
        listen 127.0.0.1:{NGINX_502_PORT} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{
            proxy_pass http://127.0.0.1:{NOTHING_PORT};
        }}
    }}
}}
""")
    return Server(["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs/error.log")],
                  NGINX_PORT, str(prefix / "logs/error.log"))


class Settings:
    """ALTER SYSTEM for activity_core.* settings, put back as they were by restore()."""

    def __init__(self, conn):
        self.conn = conn
        self.saved = {}
        self.shown = {}

    def set(self, **values):
        for name, value in values.items():
            full = f"activity_core.{name}"
            if full not in self.saved:
                row = self.conn.execute(
                    "SELECT setting FROM pg_settings WHERE name = %s "
                    "AND sourcefile LIKE '%%postgresql.auto.conf'", (full,)).fetchone()
                self.saved[full] = row[0] if row else None
                self.shown[full] = self.conn.execute(f"SHOW {full}").fetchone()[0]
            self.conn.execute(f"ALTER SYSTEM SET {full} = %s".replace("%s", quote(value)))
        self.reload(values)

    def reload(self, values):
        self.conn.execute("SELECT pg_reload_conf()")

        def applied():
            for name, value in values.items():
                got = self.conn.execute(f"SHOW activity_core.{name}").fetchone()[0]
                assert got == value, f"{name} is {got!r}, not yet {value!r}"
        poll(applied, 10, 0.05)

    def restore(self):
        for full, value in self.saved.items():
            if value is None:
                self.conn.execute(f"ALTER SYSTEM RESET {full}")
            else:
                self.conn.execute(f"ALTER SYSTEM SET {full} = {quote(value)}")
        self.reload({full[len("activity_core."):]: value for full, value in self.shown.items()})
        self.saved = {}
        self.shown = {}


def quote(value):
    return "'" + str(value).replace("'", "''") + "'"


def health(conn):
    return {r[0]: (r[1], r[2]) for r in conn.execute('SELECT "check", ok, detail FROM ac_health()')}


def wait_health(conn, check, ok, contains, timeout=20.0):
    """Wait until ac_health()'s check has ok and a detail containing contains."""
    def once():
        got_ok, detail = health(conn)[check]
        assert got_ok is ok and contains in (detail or ""), f"{check}: {got_ok} {detail!r}"
        return detail
    return poll(once, timeout, 0.1)


def describe_wf(workflow_id):
    return temporal("GET", "/workflows/" + urllib.parse.quote(workflow_id, safe=""))


def wait_workflow(workflow_id, timeout=20.0):
    def once():
        status, body = describe_wf(workflow_id)
        assert status == 200, f"workflow {workflow_id} not started: HTTP {status} {body}"
        return body
    return poll(once, timeout, 0.1)


def outbox_row(conn, msg_id):
    return conn.execute("SELECT attempts, last_error, next_attempt_at > now(), error_permanent "
                        "FROM ac_outbox WHERE msg_id = %s", (msg_id,)).fetchone()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tls_dir():
    d = Path(tempfile.mkdtemp(prefix="ac-tls-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(tls_dir):
    p = Pki(tls_dir)
    natsjwt = REPO / ".cache" / "bin" / "natsjwt"
    assert natsjwt.is_file(), f"{natsjwt} missing: test/stack.sh deps builds it"
    run(str(natsjwt), str(tls_dir))
    (tls_dir / "nats.password").write_text(NATS_PASSWORD + "\n")
    (tls_dir / "wrong.password").write_text("not-the-password\n")
    (tls_dir / "api.key").write_text(API_KEY + "\n")
    # the server runs as postgres: it reads the keys and secrets, nobody else does
    for f in tls_dir.iterdir():
        if f.is_file():
            shutil.chown(f, "postgres") if os.geteuid() == 0 else None
            os.chmod(f, 0o600)
    return p


@pytest.fixture(scope="module")
def servers(pki, tls_dir):
    started = []
    try:
        started.append(nats_server(tls_dir, "tls", NATS_TLS_PORT, f"""
tls {{ cert_file: "{pki['server.pem']}", key_file: "{pki['server.key']}", timeout: 2 }}
authorization {{ users = [ {{ user: "router", password: "{NATS_PASSWORD}" }} ] }}
"""))
        started.append(nats_server(tls_dir, "mtls", NATS_MTLS_PORT, f"""
tls {{ cert_file: "{pki['server.pem']}", key_file: "{pki['server.key']}",
       ca_file: "{pki['ca.pem']}", verify: true, timeout: 2 }}
include "auth.conf"
"""))
        started.append(nats_server(tls_dir, "expired", NATS_EXPIRED_PORT, f"""
tls {{ cert_file: "{pki['expired.pem']}", key_file: "{pki['expired.key']}", timeout: 2 }}
"""))
        started.append(nginx_server(tls_dir, TEMPORAL_URL))
        yield started
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def settings(conn):
    s = Settings(conn)
    yield s
    s.restore()


@pytest.fixture
def event_def(conn):
    """An event definition for the suite's events; removed afterwards."""
    etype = f"tls{uuid.uuid4().hex[:8]}.ping"
    aid = insert_definition(conn, {"name": unique("tls-def"), "trigger_type": "event",
                                   "trigger_config": json.dumps({"event_type": etype})})
    yield aid, etype
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))


@pytest.fixture
def back_to_stack_nats(conn, settings):
    """After the test, the settings are back, the router is connected to the stack's NATS
    again and no row of the test's is left in the outboxes."""
    mark = conn.execute("SELECT coalesce(max(id), 0) FROM ac_outbox").fetchone()[0]
    smark = conn.execute("SELECT coalesce(max(id), 0) FROM ac_start_outbox").fetchone()[0]
    yield
    settings.restore()
    conn.execute("DELETE FROM ac_outbox WHERE id > %s", (mark,))
    conn.execute("DELETE FROM ac_start_outbox WHERE id > %s", (smark,))
    url = conn.execute("SHOW activity_core.nats_url").fetchone()[0]
    wait_health(conn, "nats_router", True, urllib.parse.urlsplit(url.split(",")[0]).netloc
                .split("@")[-1], 30)


# ---------------------------------------------------------------- NATS

def routed_through(conn, event_def):
    """ac_publish an event; the dispatcher publishes it and the router starts its workflow."""
    aid, etype = event_def
    eid = unique("tls-ev")
    conn.execute("SELECT ac_publish(%s, '{\"tls\": true}', %s)", (etype, eid))
    wait_workflow(f"activity-{aid}:{eid}")
    poll(lambda: assert_drained(conn, eid), 10, 0.1)


def assert_drained(conn, msg_id):
    row = outbox_row(conn, msg_id)
    assert row is None, f"outbox entry {msg_id} still there: {row}"


def refused(conn, event_def, check_reason, offset):
    """With the settings in force, the router and the dispatcher both fail with
    check_reason, say so in ac_health() and the log, and back off."""
    aid, etype = event_def
    eid = unique("tls-refused")
    conn.execute("SELECT ac_publish(%s, '{}', %s)", (etype, eid))
    wait_health(conn, "nats_router", False, check_reason)
    wait_health(conn, "nats_publisher", False, check_reason)

    def backed_off():
        row = outbox_row(conn, eid)
        assert row is not None and row[0] >= 1 and check_reason in (row[1] or "") and row[2] \
            and not row[3], f"outbox entry {eid}: {row}"
    poll(backed_off, 10, 0.1)

    def logged():
        log = log_since(offset)
        assert "activity_core router: NATS not ready, retrying in" in log and check_reason in log, \
            log[-2000:]
    poll(logged, 10, 0.1)
    status, _ = describe_wf(f"activity-{aid}:{eid}")
    assert status == 404
    conn.execute("DELETE FROM ac_outbox WHERE msg_id = %s", (eid,))


def test_nats_tls_with_user_and_password(conn, servers, pki, settings, event_def,
                                         back_to_stack_nats):
    offset = log_offset()
    url = f"nats://127.0.0.1:{NATS_TLS_PORT}"
    settings.set(nats_url=url, nats_tls_ca_file=pki["ca.pem"], nats_user="router",
                 nats_password_file=pki["nats.password"])
    wait_health(conn, "nats_router", True, url)
    # the dispatcher let go of its old connection; it connects on the next publish
    wait_health(conn, "nats_publisher", True, "has not published to NATS at " + url)
    routed_through(conn, event_def)
    wait_health(conn, "nats_publisher", True, url)

    # a CA that did not sign the server's certificate
    settings.set(nats_tls_ca_file=pki["other-ca.pem"])
    refused(conn, event_def, "unable to get local issuer certificate", offset)
    # no CA at all: the server demands TLS, and the system's CAs do not know it
    settings.set(nats_tls_ca_file="")
    refused(conn, event_def, "SSL handshake error", offset)
    # the wrong password
    settings.set(nats_tls_ca_file=pki["ca.pem"], nats_password_file=pki["wrong.password"])
    refused(conn, event_def, "Authorization Violation", offset)
    # a password file that cannot be read names its path, never a content
    settings.set(nats_password_file=pki["missing.password"])
    refused(conn, event_def, f'could not read activity_core.nats_password_file "{pki["missing.password"]}"',
            offset)
    # fixed by a reload: both connect again
    settings.set(nats_password_file=pki["nats.password"])
    wait_health(conn, "nats_router", True, url)
    routed_through(conn, event_def)
    # the password inside the URL works too, and is shown as ***
    settings.set(nats_url=f"nats://router:{NATS_PASSWORD}@127.0.0.1:{NATS_TLS_PORT}", nats_user="",
                 nats_password_file="")
    wait_health(conn, "nats_router", True, f"nats://***@127.0.0.1:{NATS_TLS_PORT}")
    routed_through(conn, event_def)
    wait_health(conn, "nats_publisher", True, f"nats://***@127.0.0.1:{NATS_TLS_PORT}")

    text = log_since(offset) + json.dumps(health(conn))
    assert NATS_PASSWORD not in text
    assert "not-the-password" not in text


def test_nats_expired_server_certificate_is_refused(conn, servers, pki, settings, event_def,
                                                   back_to_stack_nats):
    offset = log_offset()
    settings.set(nats_url=f"nats://127.0.0.1:{NATS_EXPIRED_PORT}", nats_tls_ca_file=pki["ca.pem"])
    refused(conn, event_def, "certificate has expired", offset)


def test_nats_mutual_tls_with_creds_file(conn, servers, pki, settings, event_def,
                                         back_to_stack_nats):
    offset = log_offset()
    url = f"tls://127.0.0.1:{NATS_MTLS_PORT}"
    settings.set(nats_url=url, nats_tls_ca_file=pki["ca.pem"],
                 nats_tls_cert_file=pki["client.pem"], nats_tls_key_file=pki["client.key"],
                 nats_credentials_file=pki["user.creds"])
    wait_health(conn, "nats_router", True, url)
    routed_through(conn, event_def)
    wait_health(conn, "nats_publisher", True, url)

    # a user of an account the server does not trust
    settings.set(nats_credentials_file=pki["other.creds"])
    refused(conn, event_def, "Authorization Violation", offset)
    # no client certificate: the server refuses the handshake
    settings.set(nats_credentials_file=pki["user.creds"], nats_tls_cert_file="",
                 nats_tls_key_file="")
    refused(conn, event_def, "it may require a client certificate (activity_core.nats_tls_cert_file",
            offset)
    settings.set(nats_tls_cert_file=pki["client.pem"], nats_tls_key_file=pki["client.key"])
    wait_health(conn, "nats_router", True, url)
    routed_through(conn, event_def)

    seeds = [line for f in ("user.creds", "other.creds")
             for line in Path(pki[f]).read_text().splitlines() if line.startswith("SU")]
    assert len(seeds) == 2
    text = log_since(offset) + json.dumps(health(conn))
    for seed in seeds:
        assert seed not in text


# ---------------------------------------------------------------- Temporal

def nginx_requests(tls_dir, status):
    """Requests nginx answered with status, as "METHOD path" lines."""
    out = []
    for line in (tls_dir / "nginx" / "logs" / "access.log").read_text().splitlines():
        try:
            request, code = line.split('"')[1], line.split('"')[2].split()[0]
        except IndexError:
            continue
        if code == str(status):
            out.append(request)
    return out


def test_temporal_behind_tls_with_a_bearer_token(conn, servers, pki, tls_dir, settings,
                                                 event_def):
    offset = log_offset()
    https = f"https://127.0.0.1:{NGINX_PORT}"
    # the inline key: the hardest case for keeping it out of logs
    settings.set(temporal_url=https, temporal_tls_ca_file=pki["ca.pem"], temporal_api_key=API_KEY,
                 temporal_api_key_file="")
    wait_health(conn, "temporal_reachable", True, https)
    cron = manual = None
    try:
        # the reconciler: ac_sync_schedules creates a schedule through nginx
        # the dispatcher creates the schedule; removed behind its back, ac_sync_schedules
        # creates it again
        cron = insert_definition(conn, {"name": unique("tls-cron"), "trigger_type": "cron",
                                        "trigger_config": '{"cron_expression": "0 3 * * *"}'})
        assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        status, body = temporal("DELETE", f"/schedules/{schedule_id(cron)}")
        assert status == 200, body
        actions = {r[0]: r[1] for r in conn.execute(
            "SELECT schedule_id, action FROM ac_sync_schedules()").fetchall()}
        assert actions.get(schedule_id(cron)) == "created", actions
        status, body = temporal("GET", f"/schedules/{schedule_id(cron)}")
        assert status == 200, body
        # the dispatcher: an on-demand start
        manual = insert_definition(conn, {"name": unique("tls-manual"), "trigger_type": "manual"})
        wf = conn.execute("SELECT ac_trigger(%s)", (manual,)).fetchone()[0]
        assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0] is True
        wait_workflow(wf)
        # the router: an event
        aid, etype = event_def
        eid = unique("tls-ev")
        conn.execute("SELECT ac_publish(%s, '{}', %s)", (etype, eid))
        wait_workflow(f"activity-{aid}:{eid}")
        # every one of them went through nginx with the key
        ok = nginx_requests(tls_dir, 200)
        assert any("/schedules" in r for r in ok), ok[-5:]
        assert any(urllib.parse.quote(wf, safe="") in r or wf in r for r in ok), ok[-5:]
        assert any(eid in urllib.parse.unquote(r) for r in ok), ok[-5:]

        # the key from a file works as well
        settings.set(temporal_api_key="", temporal_api_key_file=pki["api.key"])
        wait_health(conn, "temporal_reachable", True, https)

        # a wrong key: refused, and said so
        (tls_dir / "wrong.key").write_text("key-wrong\n")
        shutil.chown(tls_dir / "wrong.key", "postgres") if os.geteuid() == 0 else None
        settings.set(temporal_api_key_file=str(tls_dir / "wrong.key"))
        detail = wait_health(conn, "temporal_reachable", False, "HTTP 401")
        assert "Temporal refused the credentials" in detail, detail
        wf2 = conn.execute("SELECT ac_trigger(%s)", (manual,)).fetchone()[0]

        def start_failed():
            row = conn.execute("SELECT attempts, last_error, error_permanent FROM ac_start_outbox "
                               "WHERE workflow_id = %s", (wf2,)).fetchone()
            assert row and row[0] >= 1 and "HTTP 401" in row[1] and not row[2], row
        poll(start_failed, 15, 0.1)
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM ac_runs(%s, 5)", (manual,))
        assert "HTTP 401" in str(err.value), err.value

        # a CA that did not sign nginx's certificate
        settings.set(temporal_api_key_file=pki["api.key"], temporal_tls_ca_file=pki["other-ca.pem"])
        detail = wait_health(conn, "temporal_reachable", False, "SSL certificate problem")
        assert "unable to get local issuer certificate" in detail, detail
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM ac_runs(%s, 5)", (manual,))
        assert "SSL certificate problem: unable to get local issuer certificate" in str(err.value)

        # a key with a line break is refused before it is sent
        settings.set(temporal_api_key_file="", temporal_api_key=API_KEY + "\rX-Evil: 1",
                     temporal_tls_ca_file=pki["ca.pem"])
        wait_health(conn, "temporal_reachable", False, "holds a control character")

        # the right settings again: the failed start goes through
        settings.set(temporal_api_key=API_KEY)
        wait_health(conn, "temporal_reachable", True, https)
        conn.execute("UPDATE ac_start_outbox SET next_attempt_at = now() WHERE workflow_id = %s",
                     (wf2,))
        conn.execute("SELECT ac_outbox_wake()")
        wait_workflow(wf2, 30)

        # the key is nowhere a person or a non-superuser can read
        assert_key_hidden(conn, offset)
    finally:
        for d in (cron, manual):
            if d:
                conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (d,))
        conn.execute("DELETE FROM ac_start_outbox WHERE activity_id = %s", (manual,)) if manual else None
        settings.restore()
        if cron:
            conn.execute("SELECT ac_wait_sync('30s')")
            schedule_gone(cron, 30)


def test_temporal_5xx_is_transient_and_retried(conn, servers, pki, settings):
    """A proxy in front of Temporal whose upstream is down answers 502 Bad
    Gateway, a real 5xx: a start sent meanwhile fails as transient (not
    permanent), is retried, and goes through once Temporal answers again."""
    bad = f"https://127.0.0.1:{NGINX_502_PORT}"
    manual = insert_definition(conn, {"name": unique("tls-502"), "trigger_type": "manual"})
    try:
        settings.set(temporal_url=bad, temporal_tls_ca_file=pki["ca.pem"])
        wait_health(conn, "temporal_reachable", False, "502")
        wf = conn.execute("SELECT ac_trigger(%s)", (manual,)).fetchone()[0]

        def start_failed():
            row = conn.execute("SELECT attempts, last_error, error_permanent FROM ac_start_outbox "
                               "WHERE workflow_id = %s", (wf,)).fetchone()
            assert row and row[0] >= 1 and "502" in row[1] and row[2] is False, row
            return row
        poll(start_failed, 15, 0.1)
        settings.restore()
        conn.execute("UPDATE ac_start_outbox SET next_attempt_at = now() WHERE workflow_id = %s",
                     (wf,))
        conn.execute("SELECT ac_outbox_wake()")
        wait_workflow(wf, 30)
    finally:
        settings.restore()
        conn.execute("DELETE FROM ac_start_outbox WHERE activity_id = %s", (manual,))
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (manual,))


def assert_key_hidden(conn, offset):
    seen = [log_since(offset), json.dumps(health(conn), default=str)]
    for table in ("ac_sync_status", "ac_outbox", "ac_start_outbox", "ac_dead_letters"):
        seen.append(json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str))
    seen.append(json.dumps(conn.execute("SELECT * FROM ac_schedules()").fetchall(), default=str))
    role = unique("tls_reader").replace("-", "_")
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT EXECUTE ON FUNCTION ac_health() TO {role}")
        conn.execute(f"SET ROLE {role}")
        try:
            seen.append(json.dumps(conn.execute("SELECT * FROM pg_settings").fetchall(), default=str))
            seen.append(json.dumps(conn.execute("SELECT * FROM ac_health()").fetchall(), default=str))
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SHOW activity_core.temporal_api_key")
            seen.append(str(err.value))
        finally:
            conn.execute("RESET ROLE")
    finally:
        conn.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        conn.execute(f"REVOKE ALL ON FUNCTION ac_health() FROM {role}")
        conn.execute(f"DROP ROLE {role}")
    assert "temporal_api_key" in seen[0], "the log shows no change of the key at all"
    for i, text in enumerate(seen):
        assert API_KEY not in text, f"the API key shows in source {i}: ...{text[text.find(API_KEY) - 200:][:400]}"


def test_temporal_behind_mutual_tls(conn, servers, pki, settings):
    https = f"https://127.0.0.1:{NGINX_MTLS_PORT}"
    settings.set(temporal_url=https, temporal_tls_ca_file=pki["ca.pem"],
                 temporal_tls_cert_file=pki["client.pem"], temporal_tls_key_file=pki["client.key"])
    wait_health(conn, "temporal_reachable", True, https)
    # without a client certificate the proxy refuses, and says why
    settings.set(temporal_tls_cert_file="", temporal_tls_key_file="")
    detail = wait_health(conn, "temporal_reachable", False, "HTTP 400 from a proxy in front of Temporal")
    assert "No required SSL certificate was sent" in detail, detail
    # a certificate whose key does not match
    settings.set(temporal_tls_cert_file=pki["client.pem"], temporal_tls_key_file=pki["server.key"])
    detail = wait_health(conn, "temporal_reachable", False, "")
    assert "private key" in detail, detail
    settings.set(temporal_tls_key_file=pki["client.key"])
    wait_health(conn, "temporal_reachable", True, https)

