#!/usr/bin/env bash
# Create .venv with the project installed in editable mode (plus test tools).
# torch is installed first and pinned, so nothing pulls a multi-GB CUDA build by accident;
# set TORCH_SPEC to keep your own build, e.g. TORCH_SPEC="torch==2.13.0" (default) or "torch", and
# TORCH_INDEX_URL to take torch alone from another index (https://download.pytorch.org/whl/cpu: CPU build).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# the browser test (tests/test_webapp_browser.py) drives the system's Chromium, never a downloaded one
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "note: could not install chromium through apt; the browser test is skipped without it" >&2
  else
    echo "note: install Chromium for the browser test (Debian/Ubuntu: sudo apt-get install chromium); it is skipped without it" >&2
  fi
fi
echo "clapknn is installed in .venv: try .venv/bin/clapknn --help"
