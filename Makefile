# sonde: eBPF objects (clang -target bpf, CO-RE), skeleton (bpftool), agent.
CLANG ?= clang-19
BPFTOOL ?= bpftool
CC ?= gcc
BUILD := build
ARCH := x86

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Iinclude -Iuser -I$(BUILD) -D_GNU_SOURCE
LDLIBS := -lbpf -lelf -lz -lpthread
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -I. -Iinclude -I/usr/include/x86_64-linux-gnu -Wall

# Everything but main.c and probe.c is plain C with no kernel dependency:
# unit tests and the fuzzer link these.
CORE_SRCS := user/chars.c user/clock.c user/console.c user/exporter.c user/http1.c user/ids.c user/kvlist.c user/log.c \
	user/procinfo.c user/reorder.c user/route.c user/semconv.c user/tracker.c user/config.c
AGENT_SRCS := $(CORE_SRCS) user/probe.c user/main.c
CORE_OBJS := $(CORE_SRCS:user/%.c=$(BUILD)/%.o)
AGENT_OBJS := $(AGENT_SRCS:user/%.c=$(BUILD)/%.o)

UNIT_SRCS := $(wildcard tests/unit/test_*.c) tests/unit/harness.c
UNIT_BIN := $(BUILD)/unit_tests

.PHONY: all deps test unit e2e fuzz bench clean run install
all: $(BUILD)/sonde

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/sonde.bpf.o: bpf/sonde.bpf.c include/sonde_events.h vmlinux.h | $(BUILD)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/sonde.skel.h: $(BUILD)/sonde.bpf.o
	$(BPFTOOL) gen skeleton $< name sonde_bpf > $@

$(BUILD)/probe.o: $(BUILD)/sonde.skel.h

$(BUILD)/%.o: user/%.c $(wildcard user/*.h) include/sonde_events.h | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/sonde: $(AGENT_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(UNIT_BIN): $(UNIT_SRCS) $(CORE_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcriterion -lcjson

unit: $(UNIT_BIN)
	$(UNIT_BIN) --jobs 2

# libFuzzer over reassembly + HTTP parsing, under ASan and UBSan.
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz_stream: tests/fuzz/fuzz_stream.c $(CORE_SRCS) | $(BUILD)
	$(CLANG) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-Iinclude -Iuser -D_GNU_SOURCE $^ -o $@ -lpthread

fuzz: $(BUILD)/fuzz_stream
	mkdir -p $(BUILD)/fuzz_corpus
	$(BUILD)/fuzz_stream -max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=4096 \
		$(BUILD)/fuzz_corpus tests/fuzz/seeds tests/fuzz/regressions

e2e: $(BUILD)/sonde
	/usr/bin/python3 -m pytest -v tests/e2e

deps:
	bash scripts/deps.sh

test: deps all unit e2e fuzz

bench: $(BUILD)/sonde
	/usr/bin/python3 bench/nginx_bench.py

run: deps all
	$(BUILD)/sonde

clean:
	rm -rf $(BUILD)

$(BUILD)/agent_path: bench/agent_path.c $(CORE_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

PREFIX ?= /usr/local
install: $(BUILD)/sonde
	install -D -m 0755 $(BUILD)/sonde $(DESTDIR)$(PREFIX)/bin/sonde
	install -D -m 0644 deploy/systemd/sonde.service $(DESTDIR)/etc/systemd/system/sonde.service
	test -e $(DESTDIR)/etc/sonde/sonde.env || \
		install -D -m 0644 deploy/systemd/sonde.env $(DESTDIR)/etc/sonde/sonde.env
