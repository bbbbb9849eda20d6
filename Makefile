# The user's door. Each target calls one CLI command; the logic lives in the code.
#   make                       build the default model on the generated dataset (offline)
#   make build DATA=folder     the same on your own class-folder dataset
#   make test                  the test suite
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
OUT     ?= build
DATA    ?=
ARGS    ?=
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := build
.PHONY: build venv test lint clean data train export convert microcode report models

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

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline device tests firmware/tools bench

clean:
	rm -rf $(OUT)

# Board, device and deploy targets live beside their code.
-include firmware/firmware.mk
-include device/device.mk
-include device/deploy/deploy.mk
-include bench.mk
