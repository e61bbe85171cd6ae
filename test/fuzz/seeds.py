"""Write the seed corpora of the fuzz targets from the test suites.

  python3 test/fuzz/seeds.py      (from the top of the checkout)

cron:      the expressions of test/e2e/test_cron_grammar.py (FIXED) and the
           cron_expression arguments of sql/validate_*.sql
validate:  "<trigger_type>\\n<trigger_config>" for every definition that
           sql/validate_*.sql inserts (pg_temp.def and pg_temp.cron calls)
envelope:  the envelopes of test/e2e/test_events.py (poison list,
           CloudEvents), plus nesting at the limit and one past it
temporal:  not generated: the replies of a real Temporal dev server,
           captured with test/fuzz/capture.sh and committed as they are

Seed files are named by the SHA-1 of their content, as libFuzzer names
the inputs it adds, so rerunning this is idempotent.
"""
import ast
import hashlib
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "test", "fuzz", "corpus")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def sql_literal_args(text, func):
    """The argument lists (SQL string literals only) of every call of func."""
    lit = r"'((?:[^']|'')*)'"
    for m in re.finditer(re.escape(func) + r"\(\s*" + lit + r"(?:\s*,\s*" + lit + r")?", text):
        yield [g.replace("''", "'") if g is not None else None for g in m.groups()]


def python_values(path, names, env):
    """Evaluate the assignments to names in a test file, with env for its free names."""
    src = open(path).read()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in names for t in node.targets):
            try:
                yield eval(compile(ast.Expression(node.value), path, "eval"), dict(env))
            except Exception as e:  # a name the stub env lacks: skip that one
                print(f"seeds.py: skipped an assignment at {path}:{node.lineno}: {e}", file=sys.stderr)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def main():
    sqls = [os.path.join(REPO, "sql", f) for f in sorted(os.listdir(os.path.join(REPO, "sql")))
            if f.startswith("validate_") and f.endswith(".sql")]
    n = {"cron": 0, "validate": 0, "envelope": 0}

    for expr_list in python_values(os.path.join(REPO, "test", "e2e", "test_cron_grammar.py"),
                                   {"FIXED"}, {}):
        for expr in expr_list:
            write("cron", expr)
            n["cron"] += 1
    for path in sqls:
        text = open(path).read()
        for expr, extra in sql_literal_args(text, "pg_temp.cron"):
            write("cron", expr)
            n["cron"] += 1
            config = {"cron_expression": expr}
            try:
                config.update(json.loads(extra) if extra else {})
            except ValueError:
                pass
            write("validate", "cron\n" + json.dumps(config))
            n["validate"] += 1
        for ttype, config in sql_literal_args(text, "pg_temp.def"):
            if config is not None:
                write("validate", ttype + "\n" + config)
                n["validate"] += 1

    env = {"dumps": dumps, "etype": "order.created", "run": "1", "fixable_id": "arr-1",
           "big": dumps({"event_id": "big-1", "type": "order.created",
                         "payload": {"blob": "z" * 3000}}).encode(),
           "unique": lambda p: p + "-1", "token": lambda: "t1"}
    events = os.path.join(REPO, "test", "e2e", "test_events.py")
    for value in python_values(events, {"poison", "ce", "ce2"}, env):
        for item in value if isinstance(value, list) else [value]:
            data = item[0] if isinstance(item, tuple) else item
            write("envelope", data if isinstance(data, bytes) else dumps(data))
            n["envelope"] += 1
    # the envelope test_events.py's envelope() builds, with the optional members
    write("envelope", dumps({"event_id": "ev-1", "type": "order.created",
                             "payload": {"region": "eu", "total": 10},
                             "occurred_at": "2025-01-02T03:04:05Z", "source": "tests"}))
    # every size and nesting: payloads nested to the limit (100) and past it
    for depth in (1, 2, 99, 100, 101):
        write("envelope", '{"event_id":"d","type":"t","payload":' + '{"a":' * depth + "1" +
              "}" * depth + "}")
        write("envelope", '{"event_id":"d","type":"t","payload":{"a":' + "[" * depth +
              "]" * depth + "}}")
        n["envelope"] += 2
    print("seeds.py: " + ", ".join(f"{k} {v}" for k, v in n.items()))


if __name__ == "__main__":
    main()
