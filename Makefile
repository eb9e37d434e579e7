# Each target does its own set-up: the system packages napari needs (scripts/system-deps.sh installs
# the missing ones when it can, else says what to install) and .venv at the repository root.
# torch==2.13.0 is installed before the package on purpose: pip then satisfies the extras'
# `torch>=2.2` from that wheel instead of resolving a newer one. It is the CPU build only where the
# pip configuration finds a CPU wheel first (this project's machines: /opt/wheels); from PyPI alone
# it is the multi-GB CUDA build, so elsewhere point TORCH_SPEC at a CPU wheel (a path or URL from
# download.pytorch.org/whl/cpu: `make venv TORCH_SPEC=/path/to/torch-…+cpu-….whl`). The core
# (`pip install napari-lesionmix`) has no torch, Qt or napari: `qt` brings the studio
# (napari, magicgui, qtpy, npe2, PyQt6, torch), `test` that and MONAI, TorchIO, pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0

.PHONY: studio test test-random venv clean lint sample-data

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-qt: $(VENV)/.created pyproject.toml
	$(PIP) install --quiet -e ".[qt]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(PIP) install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed-test

# Without the system packages napari would abort in Qt: stop with the script's sentence instead.
studio: $(VENV)/.installed-qt
	@scripts/system-deps.sh
	$(PY) -m napari_lesionmix.studio

# Without the system packages the GUI tests are skipped (tests/conftest.py says why); the rest run.
# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: $(VENV)/.installed-test
	@scripts/system-deps.sh || echo "Running the tests that need no display; the GUI tests will be skipped."
	$(PY) -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$code

# The same suite in a random order (pytest-randomly), to catch tests that lean on each other.
# The seed is printed; `make test-random SEED=N` replays that order.
SEED ?= $(shell date +%s)
test-random:
	@echo "Random test order, seed $(SEED) (replay: make test-random SEED=$(SEED))"
	$(MAKE) test PYTEST_ARGS="-p randomly --randomly-seed=$(SEED) $(PYTEST_ARGS)"

lint: $(VENV)/.installed-test
	$(PY) -m ruff check napari_lesionmix tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
