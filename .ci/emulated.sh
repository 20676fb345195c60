#!/usr/bin/env bash
# CI stage: the device side on emulated Raspberry Pis (Debian bookworm arm64 and armhf userlands under qemu-user).
# Builds both environments into .cache/emulated (reused while the pins match), then runs the emulated tests.
# Exits 0 when the environments cannot be built here (no x86_64 Debian host, registries unreachable): they skip.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET="${STATELITE_EMU_BUDGET:-1500}"  # seconds for the whole stage; the main CI run has 5,400 in all
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "emulated: skipped: no .venv (python3 dev.py test creates it)"
  exit 0
fi

start=$(date +%s)
timeout "$BUDGET" "$PY" -m tests.emulated.envs build
rc=$?
echo "emulated: build took $(( $(date +%s) - start )) s"
if [ "$rc" -eq 3 ]; then
  echo "emulated: skipped: the environments cannot be built on this host (see above)"
  exit 0
elif [ "$rc" -ne 0 ]; then
  echo "emulated: build failed (exit $rc)"
  exit "$rc"
fi

left=$(( BUDGET - ($(date +%s) - start) ))
timeout "$left" "$PY" -m pytest -m emulated tests/emulated -v -s -p no:cacheprovider -o addopts=""
rc=$?
echo "emulated: stage took $(( $(date +%s) - start )) s"
if [ "$rc" -eq 5 ]; then  # no test collected: nothing to run, not a failure
  exit 0
fi
exit "$rc"
