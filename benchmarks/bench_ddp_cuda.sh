#!/usr/bin/env bash
# DDP on a GPU machine (NCCL, one process per GPU): the step-time benchmark with 1 and 2
# processes (1 only, when the machine has one GPU), then one real clf-train run under torchrun.
#
# Usage, from anywhere: bash benchmarks/bench_ddp_cuda.sh   (PYTHON=/path/to/python to override
# .venv/bin/python). About 3-6 minutes on one node; nothing is downloaded (random init, SMS data
# from CLF_DATA_DIR). Results in benchmarks/results/: ddp_cuda.json (last block trainable),
# ddp_cuda_all.json (every parameter trainable: 124M all-reduced per step), and the run's
# ddp_cuda_run_history.json / ddp_cuda_run_metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CLF_DATA_DIR=${CLF_DATA_DIR:-../shared/data/sms_spam}

if ! command -v nvidia-smi >/dev/null; then
    echo "error: nvidia-smi not found: run this on a machine with an NVIDIA GPU" >&2
    exit 2
fi
gpus=$(nvidia-smi -L | grep -c '^GPU' || true)
if [ "$gpus" -lt 1 ]; then
    echo "error: nvidia-smi lists no GPU" >&2
    exit 2
fi
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else
    'error: this torch sees no CUDA device (a CPU-only build?): install a CUDA build of torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

runs="1x1"
procs=1
if [ "$gpus" -ge 2 ]; then
    runs="1x1,2x1"
    procs=2
fi
echo "GPUs: $gpus; benchmark runs (processes x threads): $runs"

"$PY" benchmarks/bench_ddp.py --device cuda --runs "$runs" --batch 32,128 --texts 1024 \
    --steps 30 --name ddp_cuda
"$PY" benchmarks/bench_ddp.py --device cuda --runs "$runs" --trainable all --batch 32,128 \
    --texts 1024 --steps 30 --name ddp_cuda_all

# The real CLI end to end: torchrun, NCCL, GPT-2 small shape from a seeded random init.
port=$("$PY" -c "from clf_train.launch import free_port; print(free_port('127.0.0.1'))")
out=$(mktemp -d)/run
time "$PY" -m torch.distributed.run --nproc-per-node "$procs" --master-addr 127.0.0.1 \
    --master-port "$port" -m clf_train --data sms-spam --balance --model gpt2 --init random \
    --trainable last-block --batch-size 32 --epochs 2 --device cuda --no-progress --out "$out"
cp "$out/history.json" benchmarks/results/ddp_cuda_run_history.json
cp "$out/metrics.json" benchmarks/results/ddp_cuda_run_metrics.json
echo "wrote benchmarks/results/ddp_cuda*.json"
