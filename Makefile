# The README's two commands: `make quickstart` and `make test`. Both start with the
# same idempotent set-up step (tools/setup_env.sh), which builds .venv/ from nothing.
PY := .venv/bin/python

.PHONY: setup test quickstart

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

quickstart: setup
	@bash tools/quickstart.sh
