"""pg_upgrade from the oldest supported PostgreSQL major to the newest, with
definitions and queued work in place (test/pg_upgrade.sh does the work)."""
import subprocess

from conftest import REPO


def test_pg_upgrade_from_14_to_18_keeps_definitions_and_queued_work():
    res = subprocess.run(["bash", str(REPO / "test" / "pg_upgrade.sh"), "14", "18"],
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pg_upgrade 14 -> 18: passed" in res.stdout
