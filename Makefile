# The README's two commands: `make quickstart` and `make test`. Both start with the
# same idempotent set-up step (tools/setup_env.sh), which builds .venv/ from nothing.
PY := .venv/bin/python

.PHONY: setup test test-slow quickstart

setup:
	@bash tools/setup_env.sh

# `make test` stays under 10 minutes on 2 cores; the runs marked slow (whole trainings and
# evaluations through the tools) are `make test-slow`. CI runs both.
test: setup
	$(PY) -m pytest tests -q -m "not slow"

test-slow: setup
	$(PY) -m pytest tests -q -m slow

quickstart: setup
	@bash tools/quickstart.sh
