#!/usr/bin/env bash
# One command to set up beatbus on a fresh Debian/Ubuntu machine:
#   system packages, then a virtual environment at .venv with every extra the tests need.
# Usage: ./install.sh            (everything)
#        BEATBUS_EXTRAS=audio ./install.sh   (a lighter install)
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS="${BEATBUS_EXTRAS:-all}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

APT_PKGS=(python3-venv python3-dev build-essential portaudio19-dev libsndfile1 ffmpeg
          redis-server alsa-utils fluidsynth fluid-soundfont-gm chromium chromium-driver openssl systemd prometheus)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's redis-server and prometheus packages start system services on install; beatbus
# only needs their binaries (tests start private instances).
for svc in redis-server prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels.
case "$EXTRAS" in *all*|*ml*) .venv/bin/python -m pip install -q "torch==2.13.0" ;; esac
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "install: done. Try: .venv/bin/beatbus run --click 120 --duration 5"
