# Two commands do all set-up on a fresh machine:
#   make test       provision ComfyUI 0.3.75 + .venv (first run ~2 min), then run the suite on it
#   make demo       provision, then run workflows/demo_tinyworld.json through a real ComfyUI:
#                   a mosaic-style LoRA on the tiny-world Turbo, measured; results in output/demo/
#                   (2-3 minutes on two free cores after set-up)
# More:
#   make test-0.33  the same suite on ComfyUI 0.33 (.comfyui/ComfyUI-0.33, .venv-0.33)
#   make test-all   both hosts, one after the other (what CI runs)
#   make demo-u1    the same on the tiny-world SenseNova-U1 (workflows/demo_tinyworld_u1.json; output/demo-u1/)
#   make host       provision only (idempotent; seconds when nothing changed); host-0.33 likewise
PY := .venv/bin/python

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one worker (its module
# fixtures, a live server or a trained LoRA, are built once), one torch thread per process: faster on these
# tiny models than one process with two threads (figures in README, "For developers"). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST = -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
test test-0.33: export OMP_NUM_THREADS = 1

.PHONY: host host-0.33 test test-0.33 test-all lint demo demo-u1
host:
	@scripts/host.sh 0.3.75 >/dev/null

host-0.33:
	@scripts/host.sh 0.33 >/dev/null

test: host
	$(PY) $(PYTEST)

# COMFYUI_PATH comes from host.sh (its last line), so the suite runs in the 0.33 tree and venv
# (host.sh's output captured whole first: a failed set-up stops here instead of running pytest without a host)
test-0.33:
	@out=$$(scripts/host.sh 0.33) && comfy=$$(printf '%s\n' "$$out" | tail -n 1) && \
	  echo "COMFYUI_PATH=$$comfy .venv-0.33/bin/python $(PYTEST)" && \
	  COMFYUI_PATH=$$comfy .venv-0.33/bin/python $(PYTEST)

test-all: test test-0.33

lint: host
	$(PY) -m ruff check .

demo: host
	$(PY) scripts/demo.py

demo-u1: host
	$(PY) scripts/demo.py --workflow demo_tinyworld_u1 --out output/demo-u1
