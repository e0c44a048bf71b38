# Smartpole: one entry point for developers, CI and installers.
#   make run    a whole simulated pole on the bundled sample clip
#   make test   lint, types, firmware build, unit + HIL tests (CI runs this)
#   make bench  benchmarks that print figures
#   make soak   long firmware heap soak (100,000 frames)
#   make soak-controller       whole-pole soak, 1 h real time (SOAK_MINUTES=10 for less)
#   make soak-controller-fast  accelerated whole-pole soak, 10 min
#   make fuzz   long fuzzing run (200,000 examples per entry point)
#   make test-ha  a real Home Assistant 2024.3.3 (own venv, HA_VENV) discovers and drives a
#               simulated pole (CI runs it after make test)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv firmware test test-ha ha-venv lint typecheck-firmware run bench soak soak-controller soak-controller-fast fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

firmware: venv
	$(PY) firmware/build.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(MAKE) -s typecheck-firmware

typecheck-firmware: venv
	$(PY) firmware/build.py --typecheck

# Fuzzing in make test: 3,000 examples per entry point keeps the suite near its time
# budget; `make fuzz` runs 200,000.
test: lint firmware
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-3000} $(PY) -m pytest -q

# Home Assistant in its own venv (it pins its own versions of half our dependencies);
# josepy 2 breaks acme and with it every REST call. The warm start installs what HA
# installs on its first start (the frontend included) so the test starts in seconds.
HA_VENV ?= /opt/havenv
ha-venv:
	@$(HA_VENV)/bin/python -c "import homeassistant.const as c; assert c.__version__ == '2024.3.3'" 2>/dev/null || { \
	  $(PYTHON) -m venv $(HA_VENV) && \
	  $(HA_VENV)/bin/pip install -q --upgrade pip && \
	  $(HA_VENV)/bin/pip install -q 'homeassistant==2024.3.3' 'josepy<2' && \
	  HA_VENV=$(HA_VENV) $(PY) -m tests.profiles.hass; }

test-ha: venv firmware ha-venv
	HA_VENV=$(HA_VENV) $(PY) -m pytest -q -s -m homeassistant hil_tests/test_homeassistant.py

run: venv firmware
	$(VENV)/bin/polectl sim --allow-apt

bench: venv firmware
	$(PY) bench/run_all.py

soak: venv firmware
	SOAK_FRAMES=100000 $(PY) -m pytest -q -s tests/firmware/test_soak.py

# A whole simulated pole for SOAK_MINUTES (default 60) in real time, broker outages
# every 5 min; prints slopes of RSS, PSS, heap, fds, threads, tasks and a verdict.
# SOAK_ARGS: the command replay cache is sized to fill during the warm-up (its own bound
# is tested in tests/controller/test_command_trust.py); add --no-tracemalloc to run the
# controller on Python's own allocator, as on a pole (see docs/operations.md).
SOAK_MINUTES ?= 60
SOAK_ARGS ?= --replay-cache 200
soak-controller: venv firmware
	$(PY) bench/soak_controller.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# The accelerated soak: camera as fast as analysis takes frames, outages every 30 s.
soak-controller-fast: venv firmware
	$(PY) bench/soak_controller.py --accelerated --minutes 10 $(SOAK_ARGS)

fuzz: venv
	FUZZ_EXAMPLES=200000 $(PY) -m pytest -q tests/fuzz

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
