# activity_core: PGXS build, and the two commands of the README.
#   make && make install   build and install the extension
#   make test              install everything, start the stack, run every suite
#   make demo / make stop  start / stop the local stack with sample definitions
#   make mutants           the mutation check of test/mutants (slow)
#   make fuzz              run the libFuzzer targets (FUZZ_SECONDS=N each)
#   make chaos             faults under load, 10,000 events per scenario (CHAOS_EVENTS=N)
#   make bench             every benchmark on a stack of its own; figures to
#                          bench/results/ and docs/benchmarks.md (QUICK=1: < 5 min)
#   make asan-test / valgrind-test / analyze   the memory-safety tools

EXTENSION = activity_core
EXTVERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = activity_core
OBJS = \
	src/activity_core.o \
	src/bench.o \
	src/catalog.o \
	src/condition.o \
	src/cron.o \
	src/cron_sql.o \
	src/dispatcher.o \
	src/envelope.o \
	src/event_index.o \
	src/guc.o \
	src/ids.o \
	src/intents.o \
	src/limits.o \
	src/metrics.o \
	src/nats_client.o \
	src/nats_publish.o \
	src/observe.o \
	src/publish.o \
	src/publish_check.o \
	src/publish_drain.o \
	src/reconcile.o \
	src/router.o \
	src/schedule.o \
	src/secrets.o \
	src/shmem.o \
	src/start_drain.o \
	src/temporal.o \
	src/temporal_json.o \
	src/temporal_sql.o \
	src/timezone.o \
	src/trigger.o \
	src/validate.o \
	src/wakeup.o \
	src/watch.o \
	src/worker_xact.o

DATA_built = $(EXTENSION)--$(EXTVERSION).sql
# the scripts of earlier releases and the upgrades from each of them
DATA = $(wildcard src/$(EXTENSION)--*.sql)
EXTRA_CLEAN = $(EXTENSION)--*.sql

# pg_regress: every file of sql/, against expected/.  `make installcheck`
# runs them against an installed server (the library preloaded or not; the
# suite needs neither Temporal nor NATS).  test/run.sh runs them the same
# way on the test stack, with CONTRIB_TESTDB and EXTRA_REGRESS_OPTS set.
REGRESS = $(sort $(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=.

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -DAC_VERSION=\"$(EXTVERSION)\"
SHLIB_LINK = -lcurl -ljansson $(shell pkg-config --libs libnats)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter

# ASAN=1: AddressSanitizer and UndefinedBehaviorSanitizer in the extension
# (PostgreSQL itself stays as it is: test/asan.sh preloads the runtime into
# the postmaster).  DEBUG=1: symbols and frame pointers only (valgrind).
ifeq ($(ASAN),1)
DEBUG = 1
PG_CFLAGS += -fsanitize=address,undefined
SHLIB_LINK += -fsanitize=address,undefined
endif
ifeq ($(DEBUG),1)
PG_CFLAGS += -g -fno-omit-frame-pointer
endif

# no LLVM bitcode: nothing here benefits from JIT inlining, and it needs clang
override with_llvm = no

# a new machine has no pg_config yet: `make test` and `make demo` install it
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
.DEFAULT_GOAL := all
all install installcheck:
	@echo "pg_config not found ($(PG_CONFIG)): run 'make test' or 'make demo', which fetch PostgreSQL and its headers" >&2
	@exit 1
endif

# every object depends on every header: the headers are few and small
$(OBJS): $(wildcard src/*.h)

$(EXTENSION)--$(EXTVERSION).sql: src/$(EXTENSION).sql $(EXTENSION).control
	cp $< $@

.PHONY: test demo stop mutants asan-test valgrind-test analyze fuzz chaos bench
# PG=<major> (14 to 18) runs against that PostgreSQL; default 18 (15 is Debian's)
test:
	PG="$(PG)" AC_PYTEST="$(AC_PYTEST)" AC_REGRESS="$(AC_REGRESS)" bash test/run.sh

# the mutation check (slow, not part of `make test`): MUTANTS="id1 id2" runs a subset
mutants:
	PG="$(PG)" MUTANTS="$(MUTANTS)" python3 test/mutants/run.py

demo:
	PG="$(PG)" bash test/demo.sh

stop:
	bash test/stack.sh stop .local/demo

# the memory-safety tools (docs/reliability.md); each fails on any report
asan-test:
	PG="$(PG)" bash test/asan.sh

valgrind-test:
	PG="$(PG)" bash test/valgrind.sh

# gcc -fanalyzer over src/ (no PostgreSQL needed beyond its headers)
analyze:
	PG="$(PG)" bash test/analyze.sh

# the benchmarks of bench/ (bench/README.md), the figures into docs/benchmarks.md
bench:
	PG="$(PG)" QUICK="$(QUICK)" bash bench/run.sh all

# the fuzz targets of test/fuzz, FUZZ_SECONDS=<n> each (default 180)
fuzz:
	PG="$(PG)" FUZZ_SECONDS="$(FUZZ_SECONDS)" bash test/fuzz/run.sh

# test/e2e/test_chaos.py at full size (make test runs it with 300 events per
# scenario): the stack of test/run.sh, no pg_regress, no fuzzing
chaos:
	PG="$(PG)" AC_REGRESS=none AC_FUZZ_SECONDS=0 AC_CHAOS_EVENTS="$(or $(CHAOS_EVENTS),10000)" \
		AC_PYTEST="-s e2e/test_chaos.py" bash test/run.sh
