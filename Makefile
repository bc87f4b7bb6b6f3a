# `make demo` trains the reference 2-D VAE; `make test` runs the tests.
# Both create .venv and install what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Data: $PYRO_VAE_DATA if set, else ../shared/data if present, else ./data (downloaded).
DATA_DIR ?= $(or $(PYRO_VAE_DATA),$(if $(wildcard ../shared/data/MNIST/raw),../shared/data,data))

.PHONY: demo test bench install

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pyro_vae train --config experiments/vae_2d.toml --out runs/vae_2d --data-dir $(DATA_DIR) --overwrite

test: $(STAMP)
	PYRO_VAE_DATA=$(DATA_DIR) $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks --data-dir $(DATA_DIR) --out benchmarks/results.json
