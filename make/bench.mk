# Benchmarks: bench/run.py (bench/harness/) measures every case; bench/results.md holds the committed run.
BENCH_QUICK ?=
BENCH_ARGS ?=

.PHONY: bench

bench: setup ## Benchmarks -> bench/results.md (BENCH_QUICK=1: minutes; full: 10 M rows, ~30 min)
	@$(PY) bench/run.py $(if $(filter 1,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)
