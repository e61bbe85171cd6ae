"""Hostile input end to end, through the real NATS server and real SQL.

Envelopes of every malformed kind (invalid UTF-8, NUL bytes, 1 MB strings,
100,000-deep nesting, 100,000 keys, duplicate keys, numbers with 10,000
digits) are published to the stream between valid events: each malformed
one becomes a dead letter with its reason, each well-formed one, however
large, is routed, and the router keeps running.  Definitions and calls
with extreme names, inputs, types, queues, filters and settings are refused
at the statement with the limit named (and a short message, whatever the
size of the value), instead of failing later in Temporal or NATS; what the
services accept is accepted, and works.

Cost: about 10 s (a few 1 MB messages and workflow starts).
"""
import asyncio
import base64
import json
import urllib.parse
import uuid

import nats
import psycopg
import pytest

from conftest import (NATS_URL, insert_definition, log_offset, log_since, poll, temporal, unique,
                      wait_processed, wid, worker_pid)

STREAM = "ACTIVITY_EVENTS"
CONSUMER = "activity-core-event-router"


class JetStream:
    """A synchronous face on nats-py's JetStream client."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect(NATS_URL, connect_timeout=5))
        self.js = self.nc.jetstream()

    def publish(self, subject, data):
        ack = self.loop.run_until_complete(self.js.publish(
            subject, data, timeout=10, headers={"Nats-Msg-Id": uuid.uuid4().hex}))
        return ack.seq

    def consumer(self):
        return self.loop.run_until_complete(self.js.consumer_info(STREAM, CONSUMER))

    def close(self):
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


@pytest.fixture(scope="module")
def js(conn):
    client = JetStream()

    def ready():
        try:
            return client.consumer()
        except Exception as err:
            raise AssertionError(f"consumer {CONSUMER} not there yet: {err}")
    poll(ready, 30, 0.2)
    yield client
    client.close()


@pytest.fixture
def cleanup(conn):
    ids = []
    mark = conn.execute("SELECT coalesce(max(id), 0) FROM ac_dead_letters").fetchone()[0]
    yield ids
    conn.execute("DELETE FROM ac_activity_definitions WHERE id = ANY(%s::uuid[])", (ids,))
    conn.execute("DELETE FROM ac_dead_letters WHERE id > %s", (mark,))


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def describe_wf(workflow_id):
    return temporal("GET", "/workflows/" + urllib.parse.quote(workflow_id, safe=""))


def wait_workflow(workflow_id, timeout=20.0):
    def once():
        status, body = describe_wf(workflow_id)
        assert status == 200, f"workflow {workflow_id[:120]} not started: HTTP {status} {body}"
    poll(once, timeout, 0.1)


def start_argument_text(workflow_id):
    """The raw JSON text of the workflow's single start argument."""
    status, body = temporal("GET", "/workflows/" + urllib.parse.quote(workflow_id, safe="")
                            + "/history?noPayloadShorthand=true")
    assert status == 200, body
    attrs = body["history"]["events"][0]["workflowExecutionStartedEventAttributes"]
    return base64.b64decode(attrs["input"]["payloads"][0]["data"]).decode()


def b36(n):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


# ---------------------------------------------------------------- through NATS

def test_hostile_envelopes_are_dead_letters_and_the_rest_is_routed(conn, js, cleanup):
    run = uuid.uuid4().hex[:8]
    etype = f"h{run}.evt"
    subject = f"activity.{etype}"
    aid = insert_definition(conn, {"name": unique("hostile"), "trigger_type": "event",
                                   "trigger_config": dumps({"event_type": etype})})
    cleanup.append(aid)
    router = worker_pid(conn, "activity_core router")
    offset = log_offset()
    head = f'{{"event_id":"x-{run}","type":"{etype}","payload":'.encode()

    def env(eid, payload_text):
        return f'{{"event_id":"{eid}","type":"{etype}","payload":{payload_text}}}'.encode()

    digits = "9" * 10000
    many_keys = "{" + ",".join(f'"{b36(i)}":{i % 10}' for i in range(100000)) + "}"
    euro_id = f"{run}" + "\u20ac" * 296  # 8 + 888 bytes: within the 900 of an event_id
    # (bytes, dead letter reason prefix) or (bytes, event_id that must be routed)
    cases = [
        (env(f"ok-first-{run}", "{}"), ("routed", f"ok-first-{run}")),
        (head + b'{"\xc3\x28":1}}', ("dead", "invalid UTF-8")),
        (head + b'{"s":"\xed\xa0\x80"}}', ("dead", "invalid UTF-8")),
        (head + b'{"s":"\xc0\xaf"}}', ("dead", "invalid UTF-8")),
        (head + b'{"s":"\\ud800"}}', ("dead", "invalid JSON: ")),
        (head + b'{"s":"' + b"n" * 500000 + b"\x00" + b"n" * 500000 + b'"}}',
         ("dead", "invalid JSON: contains a NUL byte")),
        (head + b"[" * 100000 + b"]" * 100000 + b"}", ("dead", "the payload is nested deeper than 100")),
        (head + b'{"a":' * 100000 + b"1" + b"}" * 100000 + b"}",
         ("dead", "the payload is nested deeper than 100")),
        (head + b"[" * 100000, ("dead", "the payload is nested deeper than 100")),
        (head + b'{"n":1e1000000}}', ("dead", "invalid JSON: value overflows numeric format")),
        (b"", ("dead", "invalid JSON: ")),
        (dumps({"event_id": "i" * 1000000, "type": etype}).encode(),
         ("dead", "event_id is longer than 900 bytes")),
        # well-formed, however extreme: routed
        (env(f"big-{run}", dumps({"s": "x" * 1000000})), ("routed", f"big-{run}")),
        (env(f"keys-{run}", many_keys), ("routed", f"keys-{run}")),
        (env(f"num-{run}", f'{{"n":{digits},"f":0.{digits},"e":-{digits}e-5}}'),
         ("routed", f"num-{run}")),
        (f'{{"event_id":"dupA-{run}","event_id":"dupB-{run}","type":"{etype}",'
         f'"payload":{{"k":1,"k":2}}}}'.encode(), ("routed", f"dupB-{run}")),
        (env(euro_id, "{}"), ("routed", euro_id)),
        (env(f"ok-last-{run}", "{}"), ("routed", f"ok-last-{run}")),
    ]
    seqs = [js.publish(subject, data) for data, _ in cases]
    wait_processed(js, seqs[-1], timeout=60)

    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT stream_seq, reason, deliveries, raw FROM ac_dead_letters WHERE stream_seq = ANY(%s)",
        (seqs,)).fetchall()}
    problems = []
    for seq, (data, (kind, what)) in zip(seqs, cases):
        if kind == "dead":
            if seq not in rows:
                problems.append(f"{data[:50]!r}: no dead letter (expected {what!r})")
                continue
            reason, deliveries, raw = rows[seq]
            if not reason.startswith(what) or deliveries != 1 or bytes(raw) != data:
                problems.append(f"{data[:50]!r}: reason {reason[:200]!r}, deliveries {deliveries}, "
                                f"raw {'same' if bytes(raw) == data else 'differs'}")
            if len(reason) > 1000:
                problems.append(f"{data[:50]!r}: a reason of {len(reason)} bytes")
        else:
            if seq in rows:
                problems.append(f"{what[:40]}: dead letter {rows[seq][0][:200]!r}")
                continue
            try:
                wait_workflow(wid(aid, what))
            except AssertionError as err:
                problems.append(str(err)[:300])
    assert not problems, "\n".join(problems)

    # the routed ones reached the workflow as they were sent
    assert start_argument_text(wid(aid, f"big-{run}")).count("x" * 1000) >= 1000
    assert digits in start_argument_text(wid(aid, f"num-{run}"))
    # duplicate keys: the last one counts, as in jsonb and ac_explain_match
    status, _ = describe_wf(wid(aid, f"dupA-{run}"))
    assert status == 404
    # the router never restarted, and nothing crashed
    assert worker_pid(conn, "activity_core router") == router
    log = log_since(offset)
    assert "terminated by signal" not in log and "server process" not in log, log[-2000:]


# ---------------------------------------------------------------- through SQL

def refused(conn, sql, params, *expected):
    """Run sql; it must fail with every string of expected in its message, and the message
    (with detail and hint) must stay short whatever the size of the input."""
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql, params)
    diag = err.value.diag
    text = " ".join(filter(None, (diag.message_primary, diag.message_detail, diag.message_hint)))
    for e in expected:
        assert e in text, f"{sql[:80]}: {text[:500]}"
    assert len(text) < 1500, f"{sql[:80]}: a message of {len(text)} bytes"
    return text


DEF = "INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config{}) VALUES (%s, %s, %s{})"


def test_hostile_definitions_and_calls_are_refused_at_the_statement(conn, cleanup):
    cron = '{"cron_expression": "0 3 * * *"}'
    big = "x" * 1000000
    # the name: at most 1000 bytes (it is in the memo and in every argument)
    refused(conn, DEF.format("", ""), ("n" * 1001, "cron", cron), "name is 1001 bytes long",
            "limit of 1000 bytes")
    refused(conn, DEF.format("", ""), ("n" * 3000000, "cron", cron), "limit of 1000 bytes")
    # the input: the workflow argument must fit Temporal's payload limit
    refused(conn, DEF.format(", input", ", jsonb_build_object('s', repeat('i', 2500000))"),
            (unique("in"), "cron", cron), "over Temporal's payload limit of 2097152 bytes",
            "limit.blobSize.error")
    manual = insert_definition(conn, {"name": unique("hostile-manual"), "trigger_type": "manual",
                                      "input": dumps({"n": int("7" * 40)})})
    cleanup.append(manual)
    refused(conn, "SELECT ac_trigger(%s, jsonb_build_object('s', repeat('i', 2500000)))", (manual,),
            "over Temporal's payload limit of 2097152 bytes")
    refused(conn, "UPDATE ac_activity_definitions SET input = jsonb_build_object('s', repeat('i', 2500000)) "
            "WHERE id = %s", (manual,), "over Temporal's payload limit")
    # identifiers Temporal refuses later
    refused(conn, DEF.format(", task_queue", ", %s"), (unique("tq"), "cron", cron, "/_sys/tq"),
            '"/_sys/"')
    refused(conn, DEF.format(", task_queue", ", %s"), (unique("tq"), "cron", cron, "q" * 1001),
            "task_queue is 1001 bytes long", "limit of 1000 bytes")
    refused(conn, DEF.format(", workflow_type", ", %s"), (unique("wt"), "cron", cron, big),
            "workflow_type is 1000000 bytes long", "limit of 1000 bytes")
    # event types NATS subjects cannot hold
    for etype, why in ((big, "over the limit of 255 bytes"), ("a.*", "NATS wildcard"),
                       ("a b", "space"), ("a..b", "empty token"), ("a\u00a0b", "white-space"),
                       ("a\tb", "control character")):
        refused(conn, DEF.format("", ""), (unique("et"), "event", dumps({"event_type": etype})), why)
        refused(conn, "SELECT ac_publish(%s, '{}')", (etype,), why)
    # filters deeper than any event the router accepts can never match
    deep = "[" * 101 + "]" * 101
    refused(conn, DEF.format("", ""), (unique("f"), "event",
                                       '{"event_type": "a.b", "filters": {"x": ' + deep + "}}"),
            "trigger_config.filters is nested more than 100 levels deep")
    # a JSON value deeper than PostgreSQL's stack allows is refused by PostgreSQL itself
    refused(conn, DEF.format("", ""), (unique("f"), "event",
                                       '{"event_type": "a.b", "filters": {"x": ' + "[" * 100000
                                       + "]" * 100000 + "}}"), "stack depth limit exceeded")
    refused(conn, "SELECT ac_publish('a.b', %s::jsonb)", ('{"x": ' + "[" * 100000 + "]" * 100000 + "}",),
            "stack depth limit exceeded")
    refused(conn, "SELECT ac_publish('a.b', %s::jsonb)", ('{"x": ' + deep + "}",),
            "nested more than 100 levels deep")
    # huge values are named briefly in the message
    refused(conn, DEF.format("", ""), (unique("k"), "manual", dumps({big: 1})), "unknown key")
    refused(conn, DEF.format("", ""), (unique("tz"), "cron", dumps(
        {"cron_expression": "0 3 * * *", "timezone": big})), "unknown time zone", "(1000000 bytes)")
    refused(conn, DEF.format("", ""), (unique("c"), "cron", dumps({"cron_expression": big})),
            "invalid trigger_config.cron_expression", "(1000000 bytes)")
    refused(conn, DEF.format("", ""), (unique("t"), big, "{}"), "unknown trigger_type")
    refused(conn, "SELECT ac_publish('a.b', '{}', %s)", (big,), "invalid event_id",
            "is 1000000 bytes long, over the limit of 900 bytes")
    refused(conn, "SELECT ac_trigger(%s, NULL, %s)", (manual, big), "invalid idempotency_key")
    # settings that name NATS subjects, streams and consumers
    for setting, value, why in (("subject_prefix", "a b", "space"), ("subject_prefix", "a.>", "wildcard"),
                                ("stream_name", "A.B", '"."'), ("stream_name", "s" * 256, "limit of 255"),
                                ("consumer_name", "c d", "space"), ("consumer_name", "c/d", '"/"')):
        refused(conn, f"ALTER SYSTEM SET activity_core.{setting} = '{value}'", None, why)
    # the backend is fine
    assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_extreme_but_valid_definitions_work(conn, js, cleanup):
    """What Temporal and NATS accept is accepted: a name at the limit, a filter of 100,000
    keys, a 10,000-digit number in the input; and they work."""
    run = uuid.uuid4().hex[:8]
    etype = f"h{run}.keys"
    keys = {b36(i): i % 7 for i in range(100000)}
    name = (f"{run}-" + "\u00e9" * 500)[:500]  # 2-byte characters: under 1000 bytes
    aid = insert_definition(conn, {"name": name, "trigger_type": "event", "trigger_config": dumps(
        {"event_type": etype, "filters": keys}), "input": '{"n": ' + "8" * 10000 + "}"})
    cleanup.append(aid)
    seq_miss = js.publish(f"activity.{etype}", dumps(
        {"event_id": f"miss-{run}", "type": etype, "payload": dict(keys, **{"0": 6})}).encode())
    seq_hit = js.publish(f"activity.{etype}", dumps(
        {"event_id": f"hit-{run}", "type": etype, "payload": dict(keys, extra=True)}).encode())
    wait_processed(js, max(seq_miss, seq_hit), timeout=60)
    wait_workflow(wid(aid, f"hit-{run}"))
    status, _ = describe_wf(wid(aid, f"miss-{run}"))
    assert status == 404
    arg = start_argument_text(wid(aid, f"hit-{run}"))
    assert "8" * 10000 in arg and name in arg
