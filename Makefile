# The user's door. Each target calls one CLI command; the logic lives in the code.
#   make                       build the default model on the generated dataset (offline)
#   make build DATA=folder     the same on your own class-folder dataset
#   make test                  the test suite (behaviour and bounds; under 15 min warm on 2 cores)
#   make test-slow             the re-measurements kept out of it (accuracy sweeps, full trainings)
#   make fit BOARD=name DATA=folder   the most accurate model that fits the board, built (docs/FIT.md)
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
OUT     ?= build
DATA    ?=
ARGS    ?=
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := build
.PHONY: build venv test test-slow lint clean data train export convert microcode report models fit

# Reinstall only when requirements.txt changes.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

build: $(STAMP)
	$(PY) -m pipeline build --out $(OUT) $(if $(DATA),--data "$(DATA)") $(ARGS)

data train export convert microcode report: $(STAMP)
	$(PY) -m pipeline $@ --out $(OUT) $(if $(DATA),--data "$(DATA)") $(ARGS)

models: $(STAMP)
	$(PY) -m pipeline models $(ARGS)

# BOARD must be named: the firmware targets' default (an emulator) is no board to fit a model to.
fit: $(STAMP)
	@case "$(origin BOARD)" in command*|environment*) ;; *) echo "error: make fit needs BOARD=NAME" \
	  "(python -m pipeline boards lists them) and DATA=folder" >&2; exit 2;; esac
	$(PY) -m pipeline fit --board "$(BOARD)" --out $(OUT) $(if $(DATA),--data "$(DATA)") $(ARGS)

# Skip reasons and the slowest tests are printed every run; under CI=true a skip fails (tests/conftest.py).
PYTEST_REPORT := -rs --durations=15
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_REPORT) -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_REPORT) -m slow $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline device tests firmware/tools bench

clean:
	rm -rf $(OUT)

# Board, device and deploy targets live beside their code.
-include firmware/firmware.mk
-include device/device.mk
-include device/deploy/deploy.mk
-include bench.mk
