# magn — the two commands a user needs are `make study` and `make test`.
# VENV may point at an existing environment (a conda env: `make setup VENV=$CONDA_PREFIX`).
SHELL       := /bin/bash
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check
LOCK        := requirements.lock
KERNEL      := magn
# The environment is (re)installed when the pins change, decided by content, not file times: the
# stamp is named by a hash of requirements.lock and pyproject.toml (a fresh clone beside an
# existing environment with the same pins installs nothing).
SETUP_HASH  := $(shell cat $(LOCK) pyproject.toml 2>/dev/null | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16)
STAMP       := $(VENV)/.magn-setup-$(SETUP_HASH)
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json
PROFILE     ?= demo
PYTEST_ARGS ?=

.PHONY: setup check browser test lint study smoke bench bench-gpu lab lock clean-reports help

help:
	@echo "make setup   create $(VENV) with the pinned environment (idempotent)"
	@echo "make test    lint + test suite (CPU, minutes)"
	@echo "make study   run the whole study on the embedded cohort (PROFILE=$(PROFILE)) -> reports/$(PROFILE)/index.html"
	@echo "make bench   timing and throughput measurements"
	@echo "make bench-gpu  paper-profile training throughput on a CUDA GPU (1, 2, 4 per GPU)"
	@echo "make lab     open the notebooks in JupyterLab"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Build prerequisites first: pyradiomics 3.0.1 is an sdist whose setup.py imports numpy and
# versioneer, so it must be built without isolation against the already-installed numpy.
$(STAMP): | $(PY)
	$(PIP) install -c $(LOCK) pip setuptools wheel numpy versioneer
	$(PIP) install -c $(LOCK) --no-build-isolation pyradiomics==3.0.1
	$(PIP) install -c $(LOCK) -e '.[dev,ray]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (magn)"
	rm -f $(VENV)/.magn-setup-*
	touch $@

# the kernel spec is written with the environment (above); this rule only restores a deleted one
$(KERNEL_SPEC): | $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (magn)"

setup: $(STAMP) $(KERNEL_SPEC)
	@$(PY) -m magn_lib.cli doctor

check: setup
	@$(PY) -m magn_lib.cli doctor

lint: setup
	$(PY) -m ruff check magn_lib tests benchmarks

# The report test opens the HTML in a real headless Chromium (driven by playwright, which uses the
# system browser and downloads none). Installed from Debian when missing and we may; otherwise
# that test skips and says why.
CHROMIUM ?= $(firstword $(wildcard /usr/bin/chromium /usr/bin/chromium-browser))
browser:
	@if [ -z "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the report test (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
		|| echo "could not install Chromium: the browser test will be skipped"; \
	fi

test: lint browser
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

study: setup
	$(VENV)/bin/magn study --profile $(PROFILE)

smoke: setup
	$(VENV)/bin/magn study --profile smoke

bench: setup
	$(PY) -m benchmarks

bench-gpu: setup
	$(PY) -m benchmarks gpu

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# Regenerate the exact pins from the current environment (after a deliberate upgrade).
lock: setup
	{ head -n 2 $(LOCK); $(PIP) freeze --all --exclude-editable | grep -v -i '^magn==' | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean-reports:
	rm -rf reports/*/ work/
