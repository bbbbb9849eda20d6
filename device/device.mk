# The Raspberry Pi runner on this machine (include from the top-level Makefile:
# `-include device/device.mk`). The Pi itself is reached through device/deploy.
#   make device-run  [OUT=build] [ARGS="--source usb:0 --web"]
#   make device-bench [OUT=build] [ARGS="--seconds 10 --threads 1"]
.PHONY: device-run device-bench device-test

device-run: $(STAMP)
	$(PY) -m device run --model $(OUT) $(ARGS)

device-bench: $(STAMP)
	$(PY) -m device bench --model $(OUT) $(ARGS)

device-test: $(STAMP)
	$(PY) -m pytest -q $(wildcard tests/test_device_*.py) $(ARGS)
