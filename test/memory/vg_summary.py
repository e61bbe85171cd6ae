"""Summarise the valgrind logs of test/valgrind.sh (one vg.<pid> per process).

Prints the processes, the memcheck errors (with the first stacks), and the
definite leaks, split into those whose stack passes through the extension
(activity_core.so or a file of src/) and the others (PostgreSQL, libc, the
libraries), with the deepest frames of each.  Exits 1 on any error or any
definite leak of the extension.  Processes killed before valgrind's own
summary are listed.
"""
import collections
import os
import re
import sys

PREFIX = re.compile(r"^==\d+== ?")


def records(path):
    """The blank-line separated records of one log, prefixes stripped."""
    rec = []
    with open(path, errors="replace") as f:
        for line in f:
            line = PREFIX.sub("", line.rstrip("\n"))
            if line.strip() == "":
                if rec:
                    yield rec
                rec = []
            else:
                rec.append(line)
    if rec:
        yield rec


# the extension's files: a frame of a build with symbols names its file
# ("(router.c:305)"), one without them the library ("(in .../activity_core.so)")
OWN = {p for p in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "src"))
       if p.endswith((".c", ".h"))}
FRAME_FILE = re.compile(r"\(([^():]+):\d+\)$")


def ours(rec):
    """True when a frame of the record is in the extension."""
    for line in rec:
        if "activity_core.so" in line:
            return True
        m = FRAME_FILE.search(line.strip())
        if m and os.path.basename(m.group(1)) in OWN:
            return True
    return False


def frames(rec, k=6):
    out = []
    for l in rec[1:]:
        m = re.match(r"\s+(?:at|by) 0x[0-9A-F]+: (\S+)", l)
        if m:
            out.append(m.group(1))
    return " < ".join(out[:k])


def main(d):
    logs = sorted(f for f in os.listdir(d) if f.startswith("vg."))
    errors = 0
    error_recs = []
    ext_leaks = []
    other = collections.Counter()
    other_bytes = 0
    for name in logs:
        for rec in records(os.path.join(d, name)):
            head = rec[0]
            summary = [l for l in rec if l.startswith("ERROR SUMMARY:")]
            if summary:
                errors += int(re.match(r"ERROR SUMMARY: ([\d,]+)", summary[0]).group(1).replace(",", ""))
                continue
            m = re.match(r"([\d,]+) bytes in ([\d,]+) blocks are definitely lost", head)
            if m:
                if ours(rec):
                    ext_leaks.append((name, rec))
                else:
                    other[frames(rec)] += 1
                    other_bytes += int(m.group(1).replace(",", ""))
                continue
            if (rec[0].startswith(("Invalid ", "Conditional jump", "Use of uninitialised",
                                   "Syscall param", "Mismatched free", "Source and destination",
                                   "Argument ")) and len(rec) > 1):
                error_recs.append((name, rec))
    print(f"processes: {len(logs)}")
    print(f"memcheck errors: {errors}")
    kinds = collections.OrderedDict()
    for name, rec in error_recs:
        kinds.setdefault((rec[0], frames(rec, 8)), []).append((name, rec))
    for (head, stack), seen in kinds.items():
        name, rec = seen[0]
        print(f"---- {len(seen)} x {head}, first in {name}")
        print("\n".join(rec[1:30]))
    print(f"definite leaks through activity_core: {len(ext_leaks)}")
    for name, rec in ext_leaks[:5]:
        print(f"---- {name}")
        print("\n".join(rec[:25]))
    print(f"definite leaks elsewhere (PostgreSQL, libraries): {sum(other.values())} records, {other_bytes} bytes")
    for stack, count in other.most_common(8):
        print(f"  {count:4d} x {stack}")
    unfinished = [n for n in logs if "ERROR SUMMARY:" not in open(os.path.join(d, n), errors="replace").read()]
    if unfinished:
        print(f"processes that ended without valgrind's summary (killed): {' '.join(unfinished)}")
    # an error printed by a process that was killed before its summary counts too
    return 1 if errors or error_recs or ext_leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
