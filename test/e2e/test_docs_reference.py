"""The reference docs cannot drift from the code: every setting the library
defines is in docs/configuration.md with the default, unit, context and
visibility the server really has, and every SQL object the extension
installs (functions with their argument types, tables, views, sequences,
types) has a section `## name(args)` in docs/sql-api.md."""
import re
from pathlib import Path

from conftest import REPO

UNITS = {"ms": ("time", 1), "s": ("time", 1000), "min": ("time", 60000), "h": ("time", 3600000),
         "d": ("time", 86400000), "B": ("bytes", 1), "kB": ("bytes", 1024),
         "MB": ("bytes", 1024 ** 2), "GB": ("bytes", 1024 ** 3)}


CONTEXTS = {"sighup": "reload", "postmaster": "restart", "superuser": "superuser", "user": "user"}


def settings_table():
    """{setting: {column: cell}} from the table of docs/configuration.md."""
    out, header = {}, None
    for line in (REPO / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "setting":
            header = cells
            continue
        if header is None or len(cells) != len(header) or not cells[0].startswith("`activity_core."):
            continue
        for name in re.findall(r"`(activity_core\.\w+)`", cells[0]):
            out[name] = dict(zip(header, cells))
    return out


def documented_settings():
    """{setting: default text} from the table of docs/configuration.md."""
    return {name: row["default"].strip("`") for name, row in settings_table().items()}


def defined_settings():
    """Every activity_core.* setting the C code defines."""
    text = "\n".join(p.read_text() for p in (REPO / "src").glob("*.c"))
    return set(re.findall(r'Define\w*\(\s*"(activity_core\.\w+)"', text))


def in_base_units(value):
    m = re.fullmatch(r"(-?\d+)\s*([A-Za-z]*)", value)
    assert m, f"not a number with a unit: {value}"
    n, unit = int(m.group(1)), m.group(2)
    if not unit:
        return ("none", n)
    kind, factor = UNITS[unit]
    return (kind, n * factor)


def test_every_setting_is_documented_with_its_real_default(conn):
    docs = documented_settings()
    defined = defined_settings()
    assert len(defined) > 25, defined
    assert defined - set(docs) == set(), f"settings missing from docs/configuration.md: {defined - set(docs)}"
    assert set(docs) - defined == set(), f"documented settings the code does not define: {set(docs) - defined}"
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT name, boot_val, unit, vartype FROM pg_settings WHERE name LIKE 'activity_core.%'")}
    for name, default in docs.items():
        if name not in rows:     # hidden from pg_settings (GUC_NO_SHOW_ALL): a secret, empty by default
            assert default == "empty", (name, default)
            continue
        boot, unit, vartype = rows[name]
        if vartype == "string":
            assert (boot == "" and default == "empty") or boot == default, (name, boot, default)
        elif unit:
            kind, factor = UNITS[{"8kB": "kB"}.get(unit, unit)]
            assert in_base_units(default) == (kind, int(boot) * factor), (name, boot, unit, default)
        else:
            assert in_base_units(default) == ("none", int(boot)), (name, boot, default)


def test_every_setting_states_its_unit_context_and_visibility(conn, viewer):
    """The unit, context (reload/restart) and visibility columns of each row
    are those of pg_settings; a setting hidden from pg_settings (a secret) is
    defined as reloadable in guc.c."""
    table = settings_table()
    assert table and all({"unit", "context", "visible to"} <= set(row) for row in table.values()), table
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT name, unit, context FROM pg_settings WHERE name LIKE 'activity_core.%'")}
    seen_by_viewer = {r[0] for r in viewer.execute(
        "SELECT name FROM pg_settings WHERE name LIKE 'activity_core.%'")}
    guc_c = (REPO / "src" / "guc.c").read_text()
    for name, row in table.items():
        if name not in rows:
            # GUC_NO_SHOW_ALL: defined by DefineString, which makes PGC_SIGHUP settings
            assert re.search(rf'DefineString\("{re.escape(name)}"', guc_c), name
            assert "PGC_SIGHUP" in guc_c[guc_c.index("DefineString("):guc_c.index("DefineCheckedString(")]
            assert (row["unit"], row["context"], row["visible to"]) == ("—", "reload", "superusers, hidden"), (name, row)
            continue
        unit, context = rows[name]
        assert row["unit"] == (unit or "—"), (name, row["unit"], unit)
        assert row["context"] == CONTEXTS[context], (name, row["context"], context)
        want = "everyone" if name in seen_by_viewer else "superusers"
        assert row["visible to"] == want, (name, row["visible to"], want)


def sql_api_headings():
    """The `## ` headings of docs/sql-api.md, without white space."""
    text = (REPO / "docs" / "sql-api.md").read_text()
    return {re.sub(r"\s+", "", h) for h in re.findall(r"^## (.+)$", text, re.M)}


def extension_objects(conn):
    """Every object of the extension a user may name: functions as
    name(argtypes), tables, views, sequences not owned by a column, and types
    that are neither a relation's row type nor an array."""
    return [r[0] for r in conn.execute("""
        SELECT CASE WHEN d.classid = 'pg_proc'::regclass
                    THEN p.proname || '(' || oidvectortypes(p.proargtypes) || ')'
                    WHEN d.classid = 'pg_class'::regclass THEN c.relname
                    ELSE t.typname END
        FROM pg_depend d
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'activity_core'
        LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
        LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
        LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
        WHERE d.deptype = 'e'
          AND (p.oid IS NOT NULL
               OR c.relkind IN ('r', 'v', 'm', 'p', 'f')
               OR (c.relkind = 'S' AND NOT EXISTS (
                   SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass
                   AND o.objid = c.oid AND o.deptype IN ('a', 'i')))
               OR (t.oid IS NOT NULL AND t.typrelid = 0 AND t.typelem = 0))""")]


def test_every_sql_object_of_the_extension_has_a_section_in_sql_api(conn):
    objects = extension_objects(conn)
    assert len(objects) > 25, objects
    assert any(o.startswith("ac_trigger(") for o in objects), objects
    headings = sql_api_headings()
    missing = sorted(o for o in objects if re.sub(r"\s+", "", o) not in headings)
    assert missing == [], f"SQL objects without a `## name(args)` section in docs/sql-api.md: {missing}"


def test_the_admin_api_of_the_original_plan_is_mapped_to_sql():
    """Each endpoint of the seed's admin API (list, get, create, update,
    delete, trigger) has its row in docs/sql-api.md, with its SQL."""
    text = (REPO / "docs" / "sql-api.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `((?:GET|POST|PUT|DELETE) [^`]+)`[^|]*\| (.+) \|$", text, re.M)}
    want = {"GET /activity-definitions/": "SELECT", "GET /activity-definitions/{id}": "SELECT",
            "POST /activity-definitions/": "INSERT", "PUT /activity-definitions/{id}": "UPDATE",
            "DELETE /activity-definitions/{id}": "DELETE",
            "POST /activity-definitions/{id}/trigger": "ac_trigger("}
    for endpoint, sql in want.items():
        assert endpoint in rows and sql in rows[endpoint], (endpoint, rows)
