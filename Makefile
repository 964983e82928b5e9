# Two commands do all set-up on a fresh machine:
#   make test   provision ComfyUI 0.3.75 + .venv (first run ~2 min), then run the suite
#   make host   provision only (idempotent; seconds when nothing changed)
#   make demo   provision, then run workflows/demo_tiny.json through a real ComfyUI
#               on a tiny generated model; results in output/demo/ (~1 min after set-up)
PY := .venv/bin/python

.PHONY: host test lint demo
host:
	@scripts/host.sh >/dev/null

test: host
	$(PY) -m pytest $(PYTEST_ARGS)

lint: host
	$(PY) -m ruff check .

demo: host
	$(PY) scripts/demo.py
