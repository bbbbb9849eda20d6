# The benchmark (included by the top-level Makefile: `-include bench.mk`).
#   make bench [OUT=build] [BENCH_REPEATS=7] [BENCH_BOARDS=mps2-an386,...] [BENCH_SKIP=firmware]
#              [BENCH_PERSON_DETECT=path/to/person_detect.tflite] [TFLM_DIR=...]
# Builds the default model first when $(OUT) has none; writes $(OUT)/bench.json and prints
# the table. Takes minutes (conversions, timing, QEMU); see bench/__init__.py.
.PHONY: bench bench-test

bench: $(STAMP)
	@test -f $(OUT)/model_int8.tflite -a -f $(OUT)/report.json || $(MAKE) --no-print-directory build OUT=$(OUT)
	$(PY) -m bench --out $(OUT) $(ARGS)

bench-test: $(STAMP)
	$(PY) -m pytest -q tests/test_bench.py $(ARGS)
