# `make demo` trains the reference 2-D VAE; `make test` runs the tests.
# Both create .venv and install what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Data: $PYRO_VAE_DATA if set, else ../shared/data if present, else ./data (downloaded).
DATA_DIR ?= $(or $(PYRO_VAE_DATA),$(if $(wildcard ../shared/data/MNIST/raw),../shared/data,data))

EXPERIMENTS := vae_2d vae_conv_2d vae_3d vae_correlated amortized_vs_meanfield latent_sweep beta_sweep

.PHONY: demo test test-fast bench install experiments report notebooks

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pyro_vae run vae_2d --data-dir $(DATA_DIR) --overwrite

# Every reference experiment in turn (hours on 2 CPU cores: see experiments/README.md; finished runs are not redone), then the report.
experiments: $(STAMP)
	for name in $(EXPERIMENTS); do $(PY) -m pyro_vae run $$name --data-dir $(DATA_DIR) || exit 1; done
	$(PY) -m pyro_vae report

report: $(STAMP)
	$(PY) -m pyro_vae report

# Execute the notebooks against the runs above and store their outputs.
notebooks: $(STAMP)
	PYRO_VAE_DATA=$(DATA_DIR) $(PY) notebooks/execute.py

# Every test, on two worker processes of one torch thread each (pytest-xdist).
test: $(STAMP)
	PYRO_VAE_DATA=$(DATA_DIR) OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

# The inner loop: every module, without the long tests (marked slow), in about a minute.
test-fast: $(STAMP)
	PYRO_VAE_DATA=$(DATA_DIR) OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks --data-dir $(DATA_DIR) --out benchmarks/results.json
