# Two commands do all set-up on a fresh machine:
#   make test   provision ComfyUI 0.3.75 + .venv (first run ~2 min), then run the suite
#   make host   provision only (idempotent; seconds when nothing changed)
PY := .venv/bin/python

.PHONY: host test lint
host:
	@scripts/host.sh >/dev/null

test: host
	$(PY) -m pytest $(PYTEST_ARGS)

lint: host
	$(PY) -m ruff check .
