# intentd build.  `make` builds every program into build/; `make test` runs every test;
# `make SAN=address,undefined test` and `make SAN=thread test` build into their own folders.

VERSION    := 0.1.0
PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
STATEDIR   ?= /var/lib/intentd

comma := ,
SAN ?=
ifeq ($(SAN),)
BUILD := build
SANFLAGS :=
else
BUILD := build-san-$(subst $(comma),-,$(SAN))
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer
SANDEFS := -DINTENTD_NO_CLONES
ifneq ($(findstring undefined,$(SAN)),)
SANFLAGS += -fno-sanitize-recover=undefined
endif
ifneq ($(findstring thread,$(SAN)),)
# librdkafka's C11 threads through pthreads, so TSan sees them (src/tsan_threads.c)
SANLDFLAGS := -Wl,-u,intentd_tsan_threads
endif
endif

CC      ?= cc
PKGS    := rdkafka libmicrohttpd jansson yaml-0.1 libxxhash openblas libsystemd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow
CFLAGS  ?= -g -O2
CFLAGS  += -std=c11 -D_GNU_SOURCE $(WARN) -iquote include $(PKG_CFLAGS) $(SANFLAGS) \
           -DINTENTD_VERSION='"$(VERSION)"' $(SANDEFS) -MMD -MP
LDFLAGS += $(SANFLAGS) $(SANLDFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm

# Every src/*.c but main.c is a library module shared by the daemon, the tools and the tests.
LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
TOOL_SRC := $(wildcard src/tools/*.c)
TOOLS    := $(TOOL_SRC:src/tools/%.c=$(BUILD)/intentd-%)
PROGS    := $(BUILD)/intentd $(TOOLS)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_OBJ := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/obj/unit/%.o)
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

.PHONY: all deps test unit integration run install uninstall clean format format-check bench
.DEFAULT_GOAL := all

all: $(PROGS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

# model.c's Adam loop vectorises only without sqrtf's errno branch (errno is never read there).
$(BUILD)/obj/model.o: CFLAGS += -fno-math-errno

$(BUILD)/obj/tools/%.o: src/tools/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/unit/%.o: tests/unit/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit -c -o $@ $<

$(BUILD)/libintentd.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/intentd: $(BUILD)/obj/main.o $(BUILD)/libintentd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/intentd-%: $(BUILD)/obj/tools/%.o $(BUILD)/libintentd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The unit-test runner: every `void test_NAME(void)` in tests/unit/test_*.c is collected.
$(BUILD)/unit-main.c: $(UNIT_SRC) tests/unit/gen-main.sh
	@mkdir -p $(@D)
	sh tests/unit/gen-main.sh $(UNIT_SRC) > $@

$(BUILD)/obj/unit/unit-main.o: $(BUILD)/unit-main.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit -c -o $@ $<

$(BUILD)/obj/unit/unit.o: tests/unit/unit.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/unit -c -o $@ $<

# tests/unit/alloc_hook.c counts the allocations of the linked objects (model_predict's test).
UNIT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc \
             -Wl,--wrap=posix_memalign
$(BUILD)/unit-tests: $(BUILD)/obj/unit/unit-main.o $(BUILD)/obj/unit/unit.o $(UNIT_OBJ) \
                     $(BUILD)/obj/unit/alloc_hook.o $(BUILD)/libintentd.a
	$(CC) $(LDFLAGS) $(UNIT_WRAP) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libintentd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(filter %.c %.a,$^) $(LDFLAGS) $(LDLIBS)

# Debian packages the build, the tests and the benchmarks need.
DEB_PKGS := libmicrohttpd-dev librdkafka-dev libopenblas-dev libjansson-dev libyaml-dev \
            libxxhash-dev libsystemd-dev pkg-config kcat curl wrk prometheus clang clang-format \
            libclang-rt-14-dev systemd python3-yaml
deps:
	@missing=$$(for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' \
	    || printf '%s ' $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
	else \
	    echo "missing Debian packages; run:"; \
	    echo "  sudo apt-get install -y $$missing"; exit 1; \
	fi

# `make test`: unit tests (each isolated in its own process) and shell integration tests,
# counted in one summary that ends with "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory all $(BUILD)/unit-tests
	@BUILD=$(BUILD) SAN="$(SAN)" sh tests/run.sh $(TESTS)

unit: all $(BUILD)/unit-tests
	@BUILD=$(BUILD) SAN="$(SAN)" sh tests/run.sh unit

run: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tests/run-dev.sh

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	@BUILD=$(BUILD) sh tests/bench/run.sh $(BENCHES)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/intentd $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(STATEDIR)
	install -m 0755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/
	if [ ! -e $(DESTDIR)$(SYSCONFDIR)/intentd/intentd.yaml ]; then \
	    install -m 0644 config/intentd.yaml $(DESTDIR)$(SYSCONFDIR)/intentd/intentd.yaml; fi
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/etc/intentd/|$(SYSCONFDIR)/intentd/|g' \
	    systemd/intentd.service > $(DESTDIR)$(UNITDIR)/intentd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/intentd.service

uninstall:
	rm -f $(PROGS:$(BUILD)/%=$(DESTDIR)$(PREFIX)/bin/%) $(DESTDIR)$(UNITDIR)/intentd.service
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/intentd and $(DESTDIR)$(STATEDIR) (configuration and state)"

clean:
	rm -rf build build-san-*

FORMAT_SRC = $(wildcard src/*.c src/tools/*.c include/*.h tests/unit/*.c tests/unit/*.h \
                        tests/bench/*.c tests/fuzz/*.c)
format:
	clang-format -i $(FORMAT_SRC)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
