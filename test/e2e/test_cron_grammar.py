"""Differential test of the cron validator against the real Temporal server.

Each expression is sent to Temporal as the cronString of a paused schedule
(then described and deleted) and to ac_check_cron().  The two must agree: a
valid expression is never refused, an invalid one is never stored.  For
every accepted expression, ac_cron_spec() must also predict exactly the
calendar Temporal compiled it into, since reconcile judges drift by it.
"""
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import temporal

FIXED = [
    "* * * * *", "0 0 * * *", "0 9 * * MON-FRI", "*/5 9-17 * * mon-fri",
    "0 0 * * 7", "0 0 * * 0-7", "0 0 * * 5-7", "0 0 * * sat-sun", "0 0 * * sun",
    "0 0 * * */2", "5/15 * * * *", "1-5/2,8 * * * *", "1-5/2,8-16/3,2 * * * *",
    "0 0 * jan-dec *", "0 0 * dec-jan *", "0 0 * ju *", "0 0 * june *",
    "0 0 * sept *", "0 0 * septe *", "0 0 * JANUARY *", "0 0 * januaryx *",
    "0 0 * * mo,tu", "0 0 * * th", "0 0 * * t", "0 0 * * thursdays",
    "0 0 29 2 *", "0 0 31 4 *", "0 0 0 * *", "0 0 32 * *", "0 24 * * *",
    "60 * * * *", "-1 * * * *", "+5 * * * *", "05 * * * *", "5- * * * *",
    "-5 * * * *", "1-2-3 * * * *", "*/0 * * * *", "*/-1 * * * *", "*/+2 * * * *",
    "1/2/3 * * * *", "*-5 * * * *", "5,,6 * * * *", ",5 * * * *", "5, * * * *",
    "0 0 L * *", "0 0 ? * *", "0 0 * * 1#2", "0 0 1W * *",
    "0 0 * * * 2100", "0 0 * * * 2101", "0 0 * * * 1999", "0 0 * * * 2026-2030",
    "0 0 0 * * * *", "60 * * * * * *", "59 59 23 31 12 6 2100", "* * * *",
    "* * * * * * * *", "", "   ", "#only a comment", "0 0 * * * # c",
    "0 0 * * * #", "@hourly # x", " @hourly", "@daily", "@midnight", "@weekly",
    "@monthly", "@yearly", "@annually", "@Daily", "@reboot", "@every 5m",
    "@every 90m", "@every 1d/2h", "@every 1.5h", "@every 0.5s", "@every 1s",
    "@every 999999999999h", "@every -5m", "@every 1m/1m", "@every 1m/59s",
    "@every 5", "@every", "@every ", "@every 5m/", "@every 1h30m", "@every .5h",
    "@every 5x", "@everyday 5m", "@EVERY 5m", "@every 1us", "@every 2000ms",
    "CRON_TZ=Europe/Berlin 0 0 * * *", "TZ=UTC @daily", "TZ=UTC @every 5m",
    "CRON_TZ=Mars/Olympus 0 0 * * *", "CRON_TZ=UTC", "TZ=America/New_York 30 9 * * 1-5",
    "0 0 * * * # " + "x" * 200, "0 0 * * * # " + "x" * 201,
    "0\t0 * * *", "0  0  *  *  *",
    # steps: Temporal parses 64 bits, keeps the low 32 in Range.step and
    # refuses a negative result; 0 (2^32) runs as step 1
    "*/2147483647 * * * *", "*/2147483648 * * * *", "*/4294967295 * * * *",
    "*/4294967296 * * * *", "*/4294967297 * * * *", "*/4294967301 * * * *",
    "*/6442450944 * * * *", "*/9223372036854775807 * * * *", "*/9223372036854775808 * * * *",
    "*/-9223372036854775808 * * * *", "*/0004294967296 * * * *", "5/4294967296 * * * *",
    "0 0 * * 0-7/4294967296", "0 0 * * 0-7/4294967303", "0 0 * * 7/4294967296",
    "0 0 * * 1-7/4294967298", "0 0 * * * */4294967300", "0 0 * * * */2147483648",
    "0 0 0 * * * */4294967297", "*/3000000000 * * * * * *",
    "99999999999999999999 * * * *", "0-99999999999999999999 * * * *",
    "0 0 * * 1-99999999999999999999",
    # day-of-week 7 (Sunday) in ranges, as Temporal rewrites them
    "0 0 * * 1-7", "0 0 * * mon-7", "0 0 * * 1/1", "0 0 * * 0-7/7", "0 0 * * 1-7/3",
    "0 0 * * 1-7/6", "0 0 * * 7-7", "0 0 * * 6-7", "0 0 * * 2-7/5", "0 0 * * 7,7",
    # a "*" element of a year list is a range, a year of "*" alone is none
    "0 0 * * * *,2030", "0 0 * * * 2030,*", "0 0 * * * *,*", "0 0 * * * */4",
    # fields of many elements: Temporal keeps every one, duplicates too
    ",".join(str(i % 60) for i in range(129)) + " * * * *",
    ",".join(str(i % 60) for i in range(1000)) + " * * * *",
    "0 " + ",".join(str(i % 60) for i in range(300)) + " * * * * *",
    "0 0 * * " + ",".join(["1-7/2"] * 150),
    "0 0 " + ",".join(["1-31/2"] * 200) + " * *",
    "0 0 * * * " + ",".join(str(2000 + i % 101) for i in range(300)),
]

FIELD_TOKENS = {
    "sec": ["*", "0", "59", "60", "*/15", "10-20", "5/10", "0,30", "x"],
    "min": ["*", "0", "59", "60", "-1", "*/5", "*/0", "10-5", "5-10/2", "7/20", "1,2,3", "a",
            "*/4294967296", "*/2147483648", "1-5/4294967299"],
    "hour": ["*", "0", "23", "24", "9-17", "*/2", "17-9", "0,12"],
    "dom": ["*", "1", "31", "0", "32", "1-15", "*/7", "L", "15W", "1,15"],
    "month": ["*", "1", "12", "0", "13", "jan", "DEC", "ja", "feb-apr", "mar-jan", "*/3", "sept"],
    "dow": ["*", "0", "7", "8", "mon", "mo", "m", "MON-FRI", "sat-sun", "fri-7", "*/2", "1#2", "sun,sat",
            "1-7", "0-7/7", "3-7/4294967296"],
    "year": ["*", "2000", "2100", "1999", "2101", "2026-2030", "2030-2026", "*/4", "*/2147483648"],
}


def generated(n, seed=20261127):
    """Random expressions mixing valid and invalid field values."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        shape = rnd.choice([5, 5, 6, 7, 4, 8])
        if shape == 7:
            names = ["sec", "min", "hour", "dom", "month", "dow", "year"]
        else:
            names = ["min", "hour", "dom", "month", "dow", "year", "year", "year"][:shape]
        fields = []
        for name in names:
            toks = FIELD_TOKENS[name]
            if rnd.random() < 0.2:
                fields.append(",".join(rnd.choice(toks) for _ in range(2)))
            else:
                fields.append(rnd.choice(toks))
        out.append(" ".join(fields))
    return out


def temporal_accepts(expr):
    """Create a paused schedule with this cron string; True if accepted."""
    sid = "cron-probe-" + uuid.uuid4().hex
    body = {
        "requestId": str(uuid.uuid4()),
        "schedule": {
            "spec": {"cronString": [expr]},
            "action": {"startWorkflow": {"workflowId": sid, "workflowType": {"name": "Probe"},
                                         "taskQueue": {"name": "cron-probe"}}},
            "state": {"paused": True, "notes": "cron grammar probe"},
        },
    }
    status, resp = temporal("POST", f"/schedules/{sid}", body)
    if status == 200:
        status, described = temporal("GET", f"/schedules/{sid}")
        assert status == 200, described
        temporal("DELETE", f"/schedules/{sid}")
        return True, described["schedule"]["spec"]
    assert status == 400, (expr, status, resp)
    return False, resp.get("message")


FIELDS = ["second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek", "year"]


def duration_ns(text):
    """Protobuf JSON duration ("5400s", "1.500s") in nanoseconds."""
    if text is None:
        return 0
    assert text.endswith("s"), text
    return round(float(text[:-1]) * 1e9)


def normal_spec(spec):
    """A described spec in the normal form ac_cron_spec() returns."""
    return {
        "calendar": [
            {**{f: [[r.get("start", 0), r.get("end", 0), r.get("step", 0)] for r in cal.get(f, [])]
                for f in FIELDS},
             "comment": cal.get("comment", "")}
            for cal in spec.get("structuredCalendar", [])
        ],
        "interval": [[duration_ns(iv.get("interval")), duration_ns(iv.get("phase"))]
                     for iv in spec.get("interval", [])],
        "timezone": spec.get("timezoneName", ""),
    }


def test_validator_agrees_with_temporal(conn):
    exprs = list(dict.fromkeys(FIXED + generated(400)))
    with ThreadPoolExecutor(max_workers=16) as pool:
        verdicts = list(pool.map(temporal_accepts, exprs))
    disagreements = []
    accepted = 0
    for expr, (ok, message) in zip(exprs, verdicts):
        ours = conn.execute("SELECT ac_check_cron(%s)", (expr,)).fetchone()[0]
        accepted += ok
        if ok and ours is None and not expr.lstrip().startswith(("CRON_TZ=", "TZ=")):
            # reconcile's prediction of the calendar Temporal compiled
            predicted = conn.execute("SELECT ac_cron_spec(%s, '')", (expr,)).fetchone()[0]
            if predicted != normal_spec(message):
                disagreements.append((expr, "temporal compiled: " + repr(normal_spec(message)),
                                      "ac_cron_spec: " + repr(predicted)))
            continue
        if ok != (ours is None):
            disagreements.append((expr, "temporal: " + (message if not ok else "accepted"),
                                  "ours: " + (ours or "accepted")))
    assert not disagreements, "\n".join(map(repr, disagreements))
    # the sample must exercise both sides
    assert 50 < accepted < len(exprs) - 50, accepted


@pytest.mark.parametrize("expr,stored", [
    ("0 0 * * 7", {"cron_expression": "0 0 * * 7", "timezone": "UTC", "misfire_policy": "skip"}),
    ("@every 1d/2h", {"cron_expression": "@every 1d/2h", "timezone": "UTC", "misfire_policy": "skip"}),
    ("CRON_TZ=Europe/Berlin 0 0 * * *",
     {"cron_expression": "0 0 * * *", "timezone": "Europe/Berlin", "misfire_policy": "skip"}),
])
def test_valid_expression_is_stored(conn, app, expr, stored):
    """A valid expression written by the application is stored normalised
    (the CRON_TZ= prefix moved to timezone, the defaults filled in), exactly."""
    name = "cron-store-" + uuid.uuid4().hex
    row = app.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                      "VALUES (%s, 'cron', jsonb_build_object('cron_expression', %s::text)) "
                      "RETURNING trigger_config", (name, expr)).fetchone()[0]
    try:
        assert row == stored, row
        assert conn.execute("SELECT trigger_config FROM ac_activity_definitions WHERE name = %s",
                            (name,)).fetchone()[0] == stored
    finally:
        app.execute("DELETE FROM ac_activity_definitions WHERE name = %s", (name,))


@pytest.mark.parametrize("expr", [
    ",".join(str(i % 60) for i in range(200)) + " 9 * * *",
    "*/4294967301 * * * *",
    "0 0 * * 1-7",
    "0 0 * * 0-7/7",
    "0 0 * * * *,2030",
], ids=["200-elements", "wrapped-step", "dow-1-7", "dow-0-7-step-7", "year-star-element"])
def test_compiled_calendar_is_in_sync(conn, expr):
    """Reconcile predicts what Temporal compiled: such a schedule is not drift."""
    name = "cron-sync-" + uuid.uuid4().hex
    aid = conn.execute("INSERT INTO ac_activity_definitions (name, trigger_type, trigger_config) "
                       "VALUES (%s, 'cron', jsonb_build_object('cron_expression', %s::text)) RETURNING id::text",
                       (name, expr)).fetchone()[0]
    try:
        assert conn.execute("SELECT ac_wait_sync('30s')").fetchone()[0]
        row = conn.execute("SELECT in_sync, drift FROM ac_schedules() WHERE activity_id = %s",
                           (aid,)).fetchone()
        assert row == (True, None), row
        actions = conn.execute("SELECT action, detail FROM ac_sync_schedules() WHERE activity_id = %s",
                               (aid,)).fetchall()
        assert actions == [], actions
    finally:
        conn.execute("DELETE FROM ac_activity_definitions WHERE id = %s", (aid,))
        conn.execute("SELECT ac_wait_sync('30s')")
