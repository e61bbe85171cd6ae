#!/usr/bin/env python3
"""make mutants: apply each mutant of mutants.py, one at a time, to a scratch
copy of the tree, build and install it into the test PostgreSQL, restart
PostgreSQL so the new library loads, run the mutant's test selection and
report killed / survived / invalid.

  python3 test/mutants/run.py [ID ...]      (or MUTANTS="id1 id2")

Environment: PG (major, default 18), the AC_*_PORT variables of the stack,
MUTANT_TIMEOUT (seconds per selection, default 900), MUTANTS_KEEP=1 (leave
the stack running).  The stack lives in .local/mutants; the scratch tree in
.cache/mutants/<server version>.  The checkout itself is never modified.  Before the
first mutant every selection runs once on the unmutated tree and must pass;
the mutants of a selection that fails there are reported invalid, not run.
Exit status: 0 when every mutant was killed, 1 when one survived, 2 on a
runner error (an invalid mutant: it did not build or its selection fails
on the unmutated tree; a broken stack).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from mutants import MUTANTS  # noqa: E402

STATE = REPO / ".local" / "mutants"
SCRATCH = REPO / ".cache" / "mutants"  # + the server's version, set in main()
TIMEOUT = int(os.environ.get("MUTANT_TIMEOUT", "900"))
PYTHON = REPO / ".cache" / "venv" / "bin" / "python"


def log(msg):
    print(f"mutants: {msg}", flush=True)


def sh(cmd, env=None, cwd=None, check=True, quiet=True, timeout=None):
    """Run a command; return (returncode, output)."""
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=quiet, text=True, timeout=timeout)
    out = (res.stdout or "") + (res.stderr or "") if quiet else ""
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{out[-4000:]}")
    return res.returncode, out


def as_pg(*cmd):
    """A command as the postgres account (PostgreSQL refuses root)."""
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--", *map(str, cmd)]
    return list(map(str, cmd))


# ---------------------------------------------------------------- the tree

def copy_tree():
    """Refresh the scratch copy from the checkout.  Every file gets a fresh
    mtime (tar -m), so make rebuilds everything: an object built from an
    earlier mutant is never reused."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    tar = subprocess.Popen(["tar", "-C", str(REPO), "--exclude=./.cache", "--exclude=./.local",
                            "--exclude=./.git", "--exclude=*.o", "--exclude=*.so", "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(SCRATCH), "-xmf", "-"], stdin=tar.stdout, check=True)
    tar.wait()


def restore(path):
    """Put the checkout's version of one file back (a fresh mtime: make rebuilds it)."""
    shutil.copyfile(REPO / path, SCRATCH / path)


def apply(m):
    """Write the mutant into the scratch copy."""
    text = (REPO / m["file"]).read_text()
    if text.count(m["original"]) != 1:
        raise ValueError(f"{m['id']}: the original text occurs {text.count(m['original'])} times in {m['file']}")
    (SCRATCH / m["file"]).write_text(text.replace(m["original"], m["mutant"], 1))


def build(pg_config):
    """Build and install the scratch tree; (ok, output)."""
    rc, out = sh(["make", "-C", str(SCRATCH), "-s", f"PG_CONFIG={pg_config}"], check=False)
    if rc != 0:
        return False, out
    rc, out2 = sh(["make", "-C", str(SCRATCH), "-s", f"PG_CONFIG={pg_config}", "install"], check=False)
    return rc == 0, out + out2


# ---------------------------------------------------------------- the stack

def stack_env():
    """The environment of STATE/stack.env on top of ours."""
    out = subprocess.run(["bash", "-c", f"source {STATE}/stack.env && env -0"],
                         capture_output=True, check=True).stdout
    env = {}
    for item in out.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v.decode()
    return env


def psql(env, sql, db=None):
    return sh([f"{env['AC_PGBIN']}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
               db or env["PGDATABASE"], "-c", sql], env=env, check=False)


def restart_pg(env):
    """Restart PostgreSQL so the newly installed library loads; drop the
    extension first, so the selection installs the new SQL script."""
    rc, out = psql(env, "SET client_min_messages = warning; DROP EXTENSION IF EXISTS activity_core CASCADE")
    if rc != 0:
        raise RuntimeError(f"could not drop the extension: {out}")
    bindir = env["AC_PGBIN"]
    data = env["AC_PG_DATA"]
    sh(as_pg(f"{bindir}/pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", "60"), check=False)
    sh(as_pg(f"{bindir}/pg_ctl", "start", "-D", data, "-l", env["AC_PG_LOG"], "-w", "-t", "60"))
    for _ in range(100):
        if sh([f"{bindir}/pg_isready", "-q"], env=env, check=False)[0] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not come back")


# ---------------------------------------------------------------- selections

def run_regress(env, pg_config, files):
    """pg_regress files as make test runs them; (ok, first failing file)."""
    rdir = Path(env["AC_PG_DATA"]).parent / "regress-mutants"
    shutil.rmtree(rdir, ignore_errors=True)
    rdir.mkdir(parents=True)
    for name in ("sql", "expected"):
        shutil.copytree(REPO / name, rdir / name)
    for name in ("Makefile", "activity_core.control"):
        shutil.copy(REPO / name, rdir / name)
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "postgres", str(rdir)], check=False)
    rc, out = sh(as_pg("env", f"PGHOST={env['PGHOST']}", f"PGPORT={env['PGPORT']}", "PGUSER=postgres",
                       "make", "-C", str(rdir), "-s", "installcheck", f"PG_CONFIG={pg_config}",
                       f"REGRESS={' '.join(files)}", f"CONTRIB_TESTDB={env['PGDATABASE']}",
                       "EXTRA_REGRESS_OPTS=--use-existing"), check=False, timeout=TIMEOUT)
    if rc == 0:
        return True, None, out
    diffs = rdir / "regression.diffs"
    if diffs.is_file():
        out += "\n" + diffs.read_text(errors="replace")[:6000]
    failed = re.findall(r"not ok\s+\d+\s+-\s+(\S+)", out) or re.findall(r"^test (\S+)\s+\.\.\. FAILED", out, re.M)
    return False, f"pg_regress {failed[0] if failed else ' '.join(files)}", out


def run_pytest(env, args):
    """pytest -x on the selection, with a timeout; (ok, first failing test)."""
    cmd = [str(PYTHON), "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider", *args]
    proc = subprocess.Popen(cmd, cwd=REPO / "test", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return False, f"timeout after {TIMEOUT} s", out
    if proc.returncode == 0:
        return True, None, out
    if proc.returncode == 5:
        return False, "no test collected", out
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, re.M)
    return False, failed[0] if failed else f"pytest exit {proc.returncode}", out


def run_selection(env, pg_config, m):
    """(ok, first failing test, output) of a mutant's selection."""
    if m.get("regress"):
        ok, which, out = run_regress(env, pg_config, m["regress"])
        if not ok:
            return ok, which, out
    if m.get("pytest"):
        return run_pytest(env, m["pytest"])
    return True, None, ""


def selection_key(m):
    return (tuple(m.get("regress", ())), tuple(m.get("pytest", ())))


# ---------------------------------------------------------------- main

def main():
    wanted = sys.argv[1:] or os.environ.get("MUTANTS", "").split()
    known = {m["id"] for m in MUTANTS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        log(f"unknown mutant(s): {' '.join(unknown)}")
        return 2
    chosen = [m for m in MUTANTS if not wanted or m["id"] in wanted]
    for m in chosen:
        text = (REPO / m["file"]).read_text()
        if text.count(m["original"]) != 1:
            log(f"{m['id']}: the original text occurs {text.count(m['original'])} times in {m['file']}")
            return 2
    sh(["bash", str(REPO / "test/stack.sh"), "deps"], quiet=False)
    pg_config = os.environ.get("PG_CONFIG") or sh(
        ["bash", str(REPO / "test/pg.sh"), os.environ.get("PG") or "18"])[1].strip().splitlines()[-1]
    os.environ["PG_CONFIG"] = pg_config
    # one scratch tree per server, as test/build.sh keeps one build per server
    global SCRATCH
    version = sh([pg_config, "--version"])[1].strip()
    SCRATCH = REPO / ".cache" / "mutants" / re.sub(r"[^A-Za-z0-9.]", "-", version)

    log(f"building the unmutated tree in {SCRATCH}")
    copy_tree()
    ok, out = build(pg_config)
    if not ok:
        log(f"the unmutated tree does not build:\n{out[-3000:]}")
        return 2
    sh(["bash", str(REPO / "test/stack.sh"), "start", str(STATE), "test"], quiet=False)
    env = stack_env()
    env.pop("PYTEST_ADDOPTS", None)
    rows = []
    status = 0
    try:
        restart_pg(env)
        # every selection must pass on the unmutated tree, or "killed" means nothing
        baseline = {}
        for m in chosen:
            key = selection_key(m)
            if key in baseline:
                continue
            t0 = time.time()
            restart_pg(env)
            ok, which, out = run_selection(env, pg_config, m)
            log(f"baseline {'pass' if ok else 'FAIL'} ({int(time.time() - t0)} s): "
                f"{' '.join(key[0] + key[1])}")
            if not ok:
                baseline[key] = which
                print(out[-6000:])
            else:
                baseline[key] = None

        for m in chosen:
            t0 = time.time()
            if baseline[selection_key(m)]:
                # "killed" would mean nothing: the selection fails without the mutant
                rows.append((m["id"], "invalid", f"baseline fails: {baseline[selection_key(m)]}", 0, m["area"]))
                log(f"{m['id']}: not run, its selection fails on the unmutated tree")
                continue
            apply(m)
            ok, out = build(pg_config)
            if not ok:
                result, which = "invalid", "does not build"
                print(out[-3000:])
            else:
                restart_pg(env)
                passed, which, out = run_selection(env, pg_config, m)
                result = "survived" if passed else "killed"
                if passed:
                    which = "-"
            restore(m["file"])
            secs = int(time.time() - t0)
            rows.append((m["id"], result, which, secs, m["area"]))
            log(f"{m['id']}: {result} ({which}, {secs} s)")
    finally:
        log("reinstalling the unmutated tree")
        copy_tree()
        if build(pg_config)[0]:
            try:
                restart_pg(env)
            except RuntimeError as err:
                log(str(err))
        if os.environ.get("MUTANTS_KEEP") != "1":
            sh(["bash", str(REPO / "test/stack.sh"), "stop", str(STATE)], check=False)

    width = max([len(r[0]) for r in rows] + [2])
    print()
    print(f"{'id':<{width}} | result   | area | killing test (first failing) | seconds")
    for r in rows:
        print(f"{r[0]:<{width}} | {r[1]:<8} | {r[4]:<4} | {r[2]} | {r[3]}")
    counts = {k: sum(1 for r in rows if r[1] == k) for k in ("killed", "survived", "invalid")}
    print(f"\n{len(rows)} mutants: {counts['killed']} killed, {counts['survived']} survived, "
          f"{counts['invalid']} invalid")
    (STATE / "results.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    if counts["invalid"]:
        status = 2
    elif counts["survived"]:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
