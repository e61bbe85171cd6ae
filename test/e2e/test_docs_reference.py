"""The reference docs cannot drift from the code: every setting the library
defines is in docs/configuration.md with the default the server really has,
and every SQL object the extension installs is named in the docs."""
import re
from pathlib import Path

from conftest import REPO

UNITS = {"ms": ("time", 1), "s": ("time", 1000), "min": ("time", 60000), "h": ("time", 3600000),
         "d": ("time", 86400000), "B": ("bytes", 1), "kB": ("bytes", 1024),
         "MB": ("bytes", 1024 ** 2), "GB": ("bytes", 1024 ** 3)}


def documented_settings():
    """{setting: default text} from the table of docs/configuration.md."""
    out = {}
    for line in (REPO / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`activity_core."):
            continue
        for name in re.findall(r"`(activity_core\.\w+)`", cells[0]):
            out[name] = cells[1].strip("`")
    return out


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
        elif vartype == "bool":
            assert boot == default, (name, boot, default)
        elif unit:
            kind, factor = UNITS[{"8kB": "kB"}.get(unit, unit)]
            assert in_base_units(default) == (kind, int(boot) * factor), (name, boot, unit, default)
        else:
            assert in_base_units(default) == ("none", int(boot)), (name, boot, default)


def test_every_sql_object_of_the_extension_is_named_in_the_docs(conn):
    docs = "\n".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    objects = [r[0] for r in conn.execute(
        "SELECT coalesce(p.proname, c.relname) FROM pg_depend d "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'activity_core' "
        "LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid "
        "LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid "
        "WHERE d.deptype = 'e' AND (p.oid IS NOT NULL OR c.relkind IN ('r', 'v'))")]
    assert len(objects) > 25, objects
    missing = sorted(o for o in objects if not re.search(rf"\b{re.escape(o)}\b", docs))
    assert missing == [], f"SQL objects named nowhere in README.md or docs/: {missing}"
