"""The verdicts of make valgrind-test and the suppressions it uses: the log
summary fails on a memcheck error and on a definite leak through the
extension, and passes PostgreSQL's own leaks; every suppression is explained
and names no function of the extension.  Plain file checks, no stack."""
import re
import subprocess
import sys

from conftest import REPO

SUMMARY = REPO / "test" / "memory" / "vg_summary.py"

HEAP = """==100== HEAP SUMMARY:
==100==     in use at exit: 10 bytes in 1 blocks
==100==
"""
ERROR = """==100== Invalid read of size 1
==100==    at 0x4C1: AcParseEnvelope (envelope.c:120)
==100==    by 0x4C2: ProcessBatch (router.c:300)
==100==  Address 0x5 is 0 bytes after a block of size 4 alloc'd
==100==
"""
OUR_LEAK = """==100== 64 bytes in 1 blocks are definitely lost in loss record 3 of 9
==100==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==100==    by 0x7B2BE2E: AcNatsConnect (nats_client.c:92)
==100==    by 0x7B2C164: ac_router_main (router.c:610)
==100==    by 0x53B77D: BackgroundWorkerMain (in /pg/bin/postgres)
==100==
"""
NODEBUG_LEAK = """==100== 8 bytes in 1 blocks are definitely lost in loss record 4 of 9
==100==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==100==    by 0x7B2C164: ac_router_main (in /x/lib/activity_core.so)
==100==
"""
PG_LEAK = """==100== 37 bytes in 1 blocks are definitely lost in loss record 19 of 148
==100==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==100==    by 0x520C9A9: strdup (strdup.c:42)
==100==    by 0x542ADE: PostmasterMain (in /pg/bin/postgres)
==100==
"""


def summary(tmp_path, *logs):
    for i, text in enumerate(logs):
        (tmp_path / f"vg.{100 + i}").write_text(text)
    return subprocess.run([sys.executable, str(SUMMARY), str(tmp_path)], capture_output=True, text=True)


def test_clean_logs_pass_and_postgres_leaks_are_information(tmp_path):
    res = summary(tmp_path, HEAP + PG_LEAK + "==100== ERROR SUMMARY: 0 errors from 0 contexts\n")
    assert res.returncode == 0, res.stdout
    assert "definite leaks through activity_core: 0" in res.stdout
    assert "definite leaks elsewhere (PostgreSQL, libraries): 1 records, 37 bytes" in res.stdout


def test_a_memcheck_error_fails(tmp_path):
    res = summary(tmp_path, HEAP, ERROR + "==100== ERROR SUMMARY: 1 errors from 1 contexts\n")
    assert res.returncode == 1, res.stdout
    assert "memcheck errors: 1" in res.stdout and "AcParseEnvelope" in res.stdout


def test_a_leak_through_the_extension_fails(tmp_path):
    res = summary(tmp_path, HEAP + OUR_LEAK + PG_LEAK + "==100== ERROR SUMMARY: 0 errors from 0 contexts\n")
    assert res.returncode == 1, res.stdout
    assert "definite leaks through activity_core: 1" in res.stdout and "AcNatsConnect" in res.stdout
    # a build without symbols names the library instead of the file
    res = summary(tmp_path, HEAP + NODEBUG_LEAK + "==100== ERROR SUMMARY: 0 errors from 0 contexts\n")
    assert res.returncode == 1, res.stdout


def test_every_suppression_is_explained_and_none_names_the_extension():
    text = (REPO / "test" / "valgrind.supp").read_text()
    blocks = re.findall(r"((?:#[^\n]*\n)*)\{\n(.*?)\n\}", text, re.S)
    assert blocks, "no suppression in test/valgrind.supp"
    for comment, body in blocks:
        name = body.split("\n")[0].strip()
        assert comment.strip(), f"suppression {name} has no comment saying why"
        funcs = re.findall(r"fun:(\S+)", body)
        assert not [f for f in funcs if f.startswith(("ac_", "Ac"))], f"{name} hides the extension's own code"
