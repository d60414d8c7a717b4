# The two commands of README.md. Each creates the virtualenv and installs what it needs.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)  ## run the demo pipeline on the embedded default (Ctrl-C to stop)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(VENV)/bin/neuraflow run pipelines/demo.py --config configs/default.yaml $(ARGS)

test: $(STAMP)  ## run the whole test suite
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(VENV)/bin/python -m pytest $(ARGS)

bench: $(STAMP)  ## run the benchmarks and print the table
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(VENV)/bin/python -m benchmarks $(ARGS)
