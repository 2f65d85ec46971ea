# journeyd — plain make. `make` builds build/journeyd and build/libjourneyd.a.
# Targets: all deps run test asan bench fuzz format format-check install clean

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
BUILD   ?= build
PKGS    := lua5.4 msgpack yajl libcrypto zlib lmdb libzstd
SERVE_PKGS := libevent
TEST_PKGS := cmocka libcurl
# redis-server, libhiredis-dev, nodejs, npm: the peers of `make bench`; npm only when there
# is no npm command (NodeSource's nodejs bundles npm and conflicts with Debian's package)
DEB_PKGS := build-essential pkg-config liblua5.4-dev lua5.4 libevent-dev libmsgpack-dev libyajl-dev \
            libcmocka-dev liblmdb-dev lmdb-utils libzstd-dev libcurl4-openssl-dev libssl-dev zlib1g-dev clang-format \
            libjansson-dev libcjson-dev wrk time clang libclang-rt-14-dev python3 chromium \
            redis-server libhiredis-dev nodejs $(if $(shell command -v npm),,npm)

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) $(SERVE_PKGS) $(TEST_PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wundef -Wwrite-strings -Wmissing-prototypes -Wstrict-prototypes \
        -Wpointer-arith -Wformat=2 -Wno-format-nonliteral -Wimplicit-fallthrough
OPT  ?= -O2 -g
CFLAGS_ALL = -std=c11 $(OPT) $(WARN) $(EXTRA_CFLAGS) $(PKG_CFLAGS) -Iinclude -Iengine
LDLIBS_ALL = $(PKG_LIBS) -lm -lpthread $(EXTRA_LDFLAGS)

CLI_SRC  := engine/main.c engine/replay.c engine/serve.c engine/http.c engine/stream.c engine/durable.c \
            engine/dispatch.c engine/delivery.c
CLI_SRC  += engine/trace_cmd.c engine/shard.c
LIB_SRC  := $(filter-out $(CLI_SRC),$(wildcard engine/*.c))
SCRIPTS  := $(sort $(filter-out scripts/stubs/%,$(wildcard scripts/*.lua scripts/*/*.lua scripts/*/*/*.lua)))
LIB_OBJ  := $(LIB_SRC:engine/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/scripts_embed.o
CLI_OBJ  := $(CLI_SRC:engine/%.c=$(BUILD)/obj/%.o)
CLI_OBJ  += $(BUILD)/obj/dashboard_embed.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
INTEG_BIN := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)
# libFuzzer targets: clang builds an instrumented copy of the library (and of the serve
# objects the stream and HTTP targets drive) in $(FUZZ_BUILD), by running this Makefile
# again with BUILD=$(FUZZ_BUILD) CC=clang (see fuzz-build).
FUZZ_BUILD ?= build-fuzz
FUZZ_CC    ?= clang
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_SERVE := $(BUILD)/fuzz/fuzz_http $(BUILD)/fuzz/fuzz_stream
FUZZ_SERVE_OBJ := $(BUILD)/obj/serve.o $(BUILD)/obj/http.o $(BUILD)/obj/stream.o $(BUILD)/obj/durable.o $(BUILD)/obj/delivery.o $(BUILD)/obj/dispatch.o
FUZZ_SERVE_OBJ += $(BUILD)/obj/dashboard_embed.o $(BUILD)/obj/shard.o

.PHONY: all deps run demo test unit examples fuzz-smoke fuzz-build asan bench fuzz format format-check install clean

all: $(BUILD)/journeyd $(BUILD)/libjourneyd.a $(BUILD)/jd-stream-send

$(BUILD)/obj/%.o: engine/%.c $(wildcard engine/*.h include/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/scripts_embed.c: $(SCRIPTS) tools/embed.sh | $(BUILD)/obj
	sh tools/embed.sh $(SCRIPTS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/scripts_embed.o: $(BUILD)/scripts_embed.c
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -c $< -o $@

# the dashboard page (GET /), built into the binary
$(BUILD)/dashboard_embed.c: engine/dashboard.html tools/embed_asset.sh | $(BUILD)/obj
	sh tools/embed_asset.sh jd_dashboard_html engine/dashboard.html > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/dashboard_embed.o: $(BUILD)/dashboard_embed.c
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libjourneyd.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/journeyd: $(CLI_OBJ) $(BUILD)/libjourneyd.a
	$(CC) $(CFLAGS_ALL) -o $@ $(CLI_OBJ) $(BUILD)/libjourneyd.a $(LDLIBS_ALL) $(shell pkg-config --libs $(SERVE_PKGS) libcurl)

$(BUILD)/jd-stream-send: examples/stream-client/jd_stream_send.c $(BUILD)/libjourneyd.a
	$(CC) $(CFLAGS_ALL) -o $@ $< $(BUILD)/libjourneyd.a $(LDLIBS_ALL)

$(BUILD)/obj $(BUILD)/tests $(BUILD)/fuzz:
	mkdir -p $@

$(BUILD)/tests/%: tests/unit/%.c tests/unit/testutil.h $(BUILD)/libjourneyd.a | $(BUILD)/tests
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(BUILD)/libjourneyd.a $(LDLIBS_ALL) $(shell pkg-config --libs cmocka)

# black-box tests of the daemon: they run build/journeyd; libcurl is the HTTP client
$(BUILD)/tests/test_%: tests/integration/test_%.c $(BUILD)/journeyd $(BUILD)/jd-stream-send | $(BUILD)/tests
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(shell pkg-config --libs cmocka libcurl libcrypto)

# the dispatcher against real receivers on loopback (tests/integration/receiver.py, smtp_sink.py)
$(BUILD)/tests/test_dispatch: tests/integration/test_dispatch.c $(BUILD)/obj/dispatch.o $(BUILD)/libjourneyd.a | $(BUILD)/tests
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(BUILD)/obj/dispatch.o $(BUILD)/libjourneyd.a $(LDLIBS_ALL) \
	  $(shell pkg-config --libs cmocka libcurl libevent)

# only with BUILD=$(FUZZ_BUILD) CC=clang (fuzz-build); the stream and HTTP targets also
# link the serve objects and libevent
$(BUILD)/fuzz/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(BUILD)/libjourneyd.a | $(BUILD)/fuzz
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_OBJ) \
	  $(BUILD)/libjourneyd.a $(LDLIBS_ALL) $(FUZZ_LIBS)
$(FUZZ_SERVE): $(FUZZ_SERVE_OBJ)
$(FUZZ_SERVE): FUZZ_OBJ = $(FUZZ_SERVE_OBJ)
$(FUZZ_SERVE): FUZZ_LIBS = $(shell pkg-config --libs $(SERVE_PKGS) libcurl)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" EXTRA_LDFLAGS= $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz/%)

# Installs the Debian packages the build, tests and benchmarks need; a no-op when all
# are present.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

# The main job: the daemon with the trial-onboarding example on ./data (Ctrl-C stops it).
RUN_LISTEN ?= 127.0.0.1:8080
RUN_DELIVERY ?= off
run: deps all
	@echo "journeyd serve on http://$(RUN_LISTEN) with examples/trial-onboarding; send an event with:"
	@echo "  curl -s http://$(RUN_LISTEN)/v1/track -d '{\"userId\":\"ada\",\"event\":\"Signed Up\",\"properties\":{\"plan\":\"trial\"}}'"
	@echo "  curl -s http://$(RUN_LISTEN)/v1/users/ada"
	@echo "  open http://$(RUN_LISTEN)/ (the dashboard); build/journeyd outbox ./data (the decided actions)"
	@echo "delivery: $(RUN_DELIVERY) (the example's channels have no receiver; RUN_DELIVERY=on with ESP_URL, SLACK_URL,"
	@echo "  CRM_WEBHOOK_URL pointing at yours delivers them)"
	JOURNEYD_DELIVERY=$(RUN_DELIVERY) $(BUILD)/journeyd serve -c examples/trial-onboarding/journeyd.lua \
	  --listen $(RUN_LISTEN) --data-dir ./data

# A dry run of the same example on a virtual clock: its actions, then its funnel.
demo: all
	$(BUILD)/journeyd replay -c examples/trial-onboarding/journeyd.lua examples/trial-onboarding/events.jsonl \
	  $$(cat examples/trial-onboarding/replay.args 2>/dev/null)

test: deps all $(UNIT_BIN) $(INTEG_BIN) fuzz-build
	@sh tests/run.sh $(BUILD) $(FUZZ_BUILD)

# allocator_may_return_null: the tests compare our msgpack reader with msgpack-c on inputs
# that claim huge containers; msgpack-c asks for the memory and copes with NULL
asan:
	ASAN_OPTIONS=allocator_may_return_null=1 $(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" test

# run.sh: the engine's own figures; table.sh: journeyd and its peers (Redis + Lua,
# json-rules-engine, the floor) measured in the same run, as one table.
bench: deps all
	@sh tests/bench/run.sh $(BUILD) && sh tests/bench/table.sh $(BUILD) && sh tests/bench/store.sh $(BUILD)

# Each target for FUZZ_SECONDS; new inputs go to $(FUZZ_BUILD)/corpus/NAME (kept between
# runs), crashes to $(FUZZ_BUILD)/artifacts/NAME/. The seeds in tests/fuzz/corpus/NAME are
# read, never written.
fuzz: deps fuzz-build
	@for f in $(FUZZ_NAMES); do \
	  echo "== $$f"; mkdir -p $(FUZZ_BUILD)/corpus/$$f $(FUZZ_BUILD)/artifacts/$$f; \
	  $(FUZZ_BUILD)/fuzz/$$f -max_total_time=$${FUZZ_SECONDS:-120} -timeout=10 \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$f/ $(FUZZ_BUILD)/corpus/$$f tests/fuzz/corpus/$$f || exit 1; \
	done

FORMATTED := engine/*.c engine/*.h include/*.h tests/unit/*.c tests/unit/*.h tests/fuzz/*.c tests/fuzz/*.h \
             tests/integration/*.c tests/bench/*.c examples/stream-client/*.c

format:
	clang-format -i $(FORMATTED)

format-check:
	@clang-format --dry-run --Werror $(FORMATTED) && echo "format: ok"

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/share/journeyd/scripts $(DESTDIR)$(PREFIX)/share/journeyd/examples
	install -m 755 $(BUILD)/journeyd $(DESTDIR)$(PREFIX)/bin/journeyd
	install -m 755 $(BUILD)/jd-stream-send $(DESTDIR)$(PREFIX)/bin/jd-stream-send
	install -m 644 $(BUILD)/libjourneyd.a $(DESTDIR)$(PREFIX)/lib/libjourneyd.a
	install -m 644 include/journeyd.h $(DESTDIR)$(PREFIX)/include/journeyd.h
	cp -r scripts/. $(DESTDIR)$(PREFIX)/share/journeyd/scripts/
	cp -r examples/. $(DESTDIR)$(PREFIX)/share/journeyd/examples/

clean:
	rm -rf build build-asan $(FUZZ_BUILD)
