# rewind — GNU Makefile.
#
#   make              build build/rewind (and the library, tests, benches)
#   make test         install missing packages, then run every CUnit suite and
#                     every end-to-end script, normally and under ASan+UBSan
#   make demo         install missing packages, build, run the demo
#   make SANITIZE=address,undefined   sanitizer build in build-san/
#   make V=1          show full commands
#
# Dependencies come from pkg-config; scripts/deps.sh installs the Debian
# packages when they are missing.

SANITIZE ?=
ifeq ($(SANITIZE),)
  B := build
  SANFLAGS :=
else
  B := build-san
  SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

CC ?= cc
PKGS := liburing lmdb libzstd
# Headers only: vm/virt.c, vm/xml.c and capture/metrics.c dlopen libvirt,
# libxml2 and libmicrohttpd on first use (linked, they cost every start of
# the binary ~15, ~1 and ~2 ms of dynamic loading and constructors).
DLOPEN_PKGS := libvirt libxml-2.0 libmicrohttpd
TEST_PKGS := cunit

OPT ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wpedantic -Wformat=2 -Wformat-security \
        -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition \
        -Wpointer-arith -Wcast-align -Wwrite-strings -Wundef -Wvla \
        -Wnull-dereference -Wimplicit-fallthrough -Wunused -Wuninitialized \
        -Wno-format-nonliteral
CPPFLAGS += -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) $(DLOPEN_PKGS) 2>/dev/null)
CFLAGS += -std=c11 $(OPT) $(WARN) $(SANFLAGS) -pthread -MMD -MP
LDFLAGS += $(SANFLAGS) -pthread
LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl
ifneq ($(SANITIZE),)
# ASan intercepts the XDR functions libvirt calls (from libtirpc) and binds
# its interceptors to the real ones at start-up: a libtirpc that arrives
# later with a dlopened libvirt leaves them NULL (SEGV at pc 0 in
# virNetMessageEncodeHeader).  The sanitizer build links it from the start.
LDLIBS += -Wl,--no-as-needed -l:libtirpc.so.3 -Wl,--as-needed
endif
TEST_LIBS := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

ifeq ($(V),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-6s %s\n' $(1) $(2)
endif

LIB_SRCS := $(wildcard common/*.c journal/*.c index/*.c capture/*.c restore/*.c vm/*.c)
CLI_SRCS := $(wildcard cli/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_SUPPORT := $(filter-out $(TEST_SRCS),$(wildcard tests/*.c))
BENCH_SRCS := $(wildcard bench/*.c)

LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(B)/%.o)
TEST_SUPPORT_OBJS := $(TEST_SUPPORT:%.c=$(B)/%.o)
TEST_BINS := $(TEST_SRCS:%.c=$(B)/%)
BENCH_BINS := $(BENCH_SRCS:%.c=$(B)/%)
LIB := $(B)/librewind.a
REWIND := $(B)/rewind

.PHONY: all deps test test-long test-one demo clean install \
        bench-journal bench-index bench-capture bench-restore bench-compact
.DEFAULT_GOAL := all
.SECONDARY:

all: $(REWIND) $(TEST_BINS) $(BENCH_BINS)

$(B)/%.o: %.c
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(REWIND): $(CLI_OBJS) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB) $(LDLIBS)

$(B)/tests/test_%: $(B)/tests/test_%.o $(TEST_SUPPORT_OBJS) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(TEST_SUPPORT_OBJS) $(LIB) $(LDLIBS) $(TEST_LIBS)

$(B)/bench/%: $(B)/bench/%.o $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

deps:
	@scripts/deps.sh build

# One pass of every suite against one build directory.
test-one: all
	@scripts/run-tests.sh $(B)

# The whole suite: normal build, then ASan+UBSan build.
test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory test-one
	@$(MAKE) --no-print-directory test-one SANITIZE=address,undefined

test-long:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory all
	@REWIND_LONG=1 scripts/run-tests.sh $(B)

demo:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(B)

bench-journal:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all OPT="-O2 -g -DNDEBUG"
	@bench/journal.sh $(B)

bench-index:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all OPT="-O2 -g -DNDEBUG"
	@$(B)/bench/bench_index

bench-capture:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all OPT="-O2 -g -DNDEBUG"
	@bench/capture.sh $(B)

# Installs build/rewind and the scheduled-compaction systemd units
# (PREFIX, DESTDIR, UNITDIR as in scripts/install.sh).
install: $(REWIND)
	@scripts/install.sh $(B)

bench-compact:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all OPT="-O2 -g -DNDEBUG"
	@bench/compact.sh $(B)

bench-restore:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all OPT="-O2 -g -DNDEBUG"
	@bench/restore.sh $(B)

clean:
	rm -rf build build-san

# Header dependencies of every build directory, B=... ones included (a
# build dir whose .d files are not read rebuilds nothing when a header
# changes: stale objects with an old struct layout).
-include $(shell find $(sort build build-san $(B)) -name '*.d' 2>/dev/null)
