#!/usr/bin/env bash
# Extra packages the benchmark programs need, installed into the project's venv (.venv, made by
# ../setup.sh). Idempotent: rerunning it changes nothing once they are there. Needs only PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "error: $PY not found; run 'bash setup.sh' first (or set PYTHON=/path/to/venv/python)" >&2
  exit 1
fi
# optimum's ONNX Runtime integration (the optimum-fp32 / optimum-int8 competitors). It pulls
# optimum~=2.1 and onnx, and NOT the onnxruntime CPU wheel (checked below: that wheel would
# overwrite onnxruntime-gpu's files).
"$PY" -m pip install --quiet optimum-onnx==0.1.0 optimum==2.1.0
# The published chapter-6 recipe ("Build a Large Language Model (From Scratch)"), the training
# reference. --no-deps: its requirements list tensorflow and jupyterlab, which it does not need
# for ch04/ch06; of its real imports only pandas is not already in the venv.
"$PY" -m pip install --quiet --no-deps llms-from-scratch==1.0.19
"$PY" -m pip install --quiet pandas==3.1.1
# onnxruntime-gpu (which carries the CPU provider) must stay the only onnxruntime.
"$PY" - <<'PY'
import importlib.metadata as md
import sys
names = sorted({d.metadata["Name"].lower() for d in md.distributions()
                if d.metadata["Name"] and d.metadata["Name"].lower().startswith("onnxruntime")})
if "onnxruntime" in names:
    sys.exit("error: the onnxruntime CPU wheel is installed beside onnxruntime-gpu; run "
             "'pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps "
             "onnxruntime-gpu==1.31.1'")
import llms_from_scratch.ch06, optimum.onnxruntime  # noqa: E401,F401  (imports work)
print("benchmarks set-up done:", ", ".join(f"{n} {md.version(n)}" for n in
      ["optimum", "optimum-onnx", "llms-from-scratch", "pandas", *names]))
PY
