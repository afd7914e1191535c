# tests/fuzz/fuzz.mk - libFuzzer targets, included by the top Makefile.
#
#   make fuzz                  deps, build, replay tests/fuzz/regress/, then
#                              fuzz each target for FUZZ_SECONDS (default 60)
#   make fuzz-regress          build, and run every reproducer and seed once
#   make fuzz-cov              line coverage of daemon/ by corpus and seeds
#   make fuzz FUZZ_TARGETS=log FUZZ_SECONDS=600 FUZZ_ARGS=-use_value_profile=1
#
# Built with clang in their own directory, so build/ and build/asan are not
# touched. The corpus each run grows stays in $(FUZZ_BUILD)/corpus/TARGET;
# the hand-made seeds are tests/fuzz/corpus/TARGET and crash reproducers
# tests/fuzz/regress/TARGET (each also a unit test in tests/unit/). A crash
# is saved as $(FUZZ_BUILD)/artifacts/TARGET/crash-*, and fails the run.

FUZZ_BUILD	?= build/fuzz
FUZZ_SECONDS	?= 60
FUZZ_TARGETS	?= config parse log connect_reply
FUZZ_ARGS	?=
FUZZ_CC		?= clang
# clang, and libFuzzer with the sanitizer runtimes for that clang (Debian's
# libclang-rt-dev pulls the libclang-rt-N-dev of the default clang), and
# llvm-symbolizer for readable stacks.
FUZZ_PKGS	:= clang libclang-rt-dev llvm

FUZZ_SAN	:= -fsanitize=address,undefined -fno-sanitize-recover=all \
		   -fno-omit-frame-pointer
FUZZ_BASE_CFLAGS = -std=c11 -pthread -D_GNU_SOURCE \
		  -DTLSFWD_VERSION='"$(VERSION)"' $(WARN) -O1 -g \
		  $(PKG_CFLAGS)
FUZZ_CFLAGS	= $(FUZZ_BASE_CFLAGS) $(FUZZ_SAN)
FUZZ_OBJS	:= $(SRCS:daemon/%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LIBOBJS	:= $(filter-out $(FUZZ_BUILD)/obj/main.o,$(FUZZ_OBJS))
FUZZ_BINS	:= $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

# Per target: the longest input worth trying, and a dictionary if any.
FUZZ_OPTS_config := -max_len=4096 -dict=tests/fuzz/config.dict
FUZZ_OPTS_parse	 := -max_len=512 -dict=tests/fuzz/parse.dict
FUZZ_OPTS_log	 := -max_len=12288
FUZZ_OPTS_connect_reply := -max_len=9000
FUZZ_RUN_OPTS	:= -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_ENV	:= ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 \
		   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: fuzz fuzz-deps fuzz-build fuzz-regress fuzz-run fuzz-cov

fuzz: fuzz-deps
	$(MAKE) --no-print-directory fuzz-regress
	$(MAKE) --no-print-directory fuzz-run

# The same installer as `make deps`, for the fuzzing packages (after it,
# so that two apt-get never run at once under make -j).
fuzz-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(FUZZ_PKGS)"

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: daemon/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c \
	    -o $@ $<

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIBOBJS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Idaemon -fsanitize=fuzzer -o $@ $< \
	    $(FUZZ_LIBOBJS) $(LIBS)

# Only pattern rules name the objects: keep make from deleting them.
.SECONDARY: $(FUZZ_OBJS)

-include $(FUZZ_OBJS:.o=.d)

# Each reproducer and seed, once: quick, and fails on any crash.
fuzz-regress: $(FUZZ_BINS)
	@failed=""; for t in $(FUZZ_TARGETS); do \
		files=$$(find tests/fuzz/regress/$$t tests/fuzz/corpus/$$t \
		    -type f 2>/dev/null | sort); \
		[ -n "$$files" ] || continue; \
		echo "== fuzz-regress $$t: $$(echo "$$files" | wc -l) inputs"; \
		$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $$files \
		    >$(FUZZ_BUILD)/regress-$$t.log 2>&1 || { \
			tail -n 40 $(FUZZ_BUILD)/regress-$$t.log; \
			failed="$$failed $$t"; }; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz-regress: FAILED:$$failed"; \
	    exit 1; fi

# FUZZ_SECONDS per target, one after the other; every target runs even
# when one crashes, and then the run fails.
fuzz-run: $(FUZZ_BINS)
	@failed=""; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s (log: $(FUZZ_BUILD)/fuzz-$$t.log)"; \
		opts=""; case $$t in \
		config) opts="$(FUZZ_OPTS_config)";; \
		parse) opts="$(FUZZ_OPTS_parse)";; \
		log) opts="$(FUZZ_OPTS_log)";; \
		esac; \
		$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_RUN_OPTS) $$opts \
		    -max_total_time=$(FUZZ_SECONDS) \
		    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t/ $(FUZZ_ARGS) \
		    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t \
		    >$(FUZZ_BUILD)/fuzz-$$t.log 2>&1 && rc=0 || rc=$$?; \
		grep -E '^#[0-9]+' $(FUZZ_BUILD)/fuzz-$$t.log | tail -n 1; \
		grep -E '^stat::(number_of_executed_units|new_units_added)' \
		    $(FUZZ_BUILD)/fuzz-$$t.log; \
		if [ $$rc -ne 0 ]; then \
			tail -n 60 $(FUZZ_BUILD)/fuzz-$$t.log; \
			failed="$$failed $$t"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then \
		echo "fuzz: FAILED:$$failed (reproducers in $(FUZZ_BUILD)/artifacts/)"; \
		exit 1; \
	fi

# Source line coverage of what the corpora reach (after a run of make fuzz):
# the same targets built with clang's coverage instead of the sanitizers,
# run once over the grown corpus, the seeds and the reproducers.
FUZZ_COV	:= $(FUZZ_BUILD)/cov
FUZZ_COV_FLAGS	:= -fprofile-instr-generate -fcoverage-mapping
FUZZ_COV_OBJS	:= $(filter-out $(FUZZ_COV)/obj/main.o,\
		   $(SRCS:daemon/%.c=$(FUZZ_COV)/obj/%.o))
# What each target is for (the others link in, unused).
FUZZ_COV_SRCS_config := daemon/config.c daemon/config_keys.c \
			daemon/config_values.c daemon/parse.c
FUZZ_COV_SRCS_parse  := daemon/parse.c
FUZZ_COV_SRCS_log    := daemon/log.c

$(FUZZ_COV)/obj/%.o: daemon/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_BASE_CFLAGS) $(FUZZ_COV_FLAGS) \
	    -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_COV)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_COV_OBJS)
	$(FUZZ_CC) $(FUZZ_BASE_CFLAGS) $(FUZZ_COV_FLAGS) -Idaemon \
	    -fsanitize=fuzzer -o $@ $< $(FUZZ_COV_OBJS) $(LIBS)

.SECONDARY: $(FUZZ_COV_OBJS)

fuzz-cov: $(FUZZ_TARGETS:%=$(FUZZ_COV)/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
		rm -f $(FUZZ_COV)/$$t.profraw; \
		LLVM_PROFILE_FILE=$(FUZZ_COV)/$$t.profraw \
		    $(FUZZ_COV)/fuzz_$$t -runs=0 $(FUZZ_BUILD)/corpus/$$t \
		    tests/fuzz/corpus/$$t $$(ls -d tests/fuzz/regress/$$t \
		    2>/dev/null) >$(FUZZ_COV)/$$t.log 2>&1 || exit 1; \
		llvm-profdata merge -o $(FUZZ_COV)/$$t.profdata \
		    $(FUZZ_COV)/$$t.profraw || exit 1; \
		echo "== fuzz-cov $$t"; \
		srcs=""; case $$t in \
		config) srcs="$(FUZZ_COV_SRCS_config)";; \
		parse) srcs="$(FUZZ_COV_SRCS_parse)";; \
		log) srcs="$(FUZZ_COV_SRCS_log)";; \
		esac; \
		llvm-cov report $(FUZZ_COV)/fuzz_$$t \
		    -instr-profile=$(FUZZ_COV)/$$t.profdata $$srcs || exit 1; \
	done
