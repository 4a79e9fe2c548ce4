#!/usr/bin/env bash
# The GPU benchmarks in one run, on any machine with a CUDA GPU and this project installed with a
# CUDA torch (`make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`):
#
#   bash bench/gpu.sh [OUT]          # OUT: where the numbers go (default bench_out/gpu-<UTC time>)
#
# What it measures, one file per step in OUT (targets: docs/BENCHMARKS.md, "GPU"):
#   gpu.txt      the GPU, its driver, torch / CUDA / transformers / PyAV versions, CPU cores, the date
#   model_l.txt  bench.model --attention: TimeSformer-L 96x224 training step, ours (bf16 autocast,
#                activation checkpointing, eager and compiled) vs Hugging Face's: MFU, clips/s,
#                peak memory per clip
#   model.txt    bench.model --skip-l: ViT-B 8x224 divided and joint, bf16 and compiled, peak memory
#   feed.txt     bench.feed --nvdec: CPU per training clip (source vs training-format copy), each
#                preset's measured training step, the decode cores one GPU needs, NVDEC vs CPU decode
#   train.txt    bench.train: TimeSformer-L step time, MFU, largest batch with and without checkpointing
#   infer.txt    bench.infer: inference on Ray Data vs the scheduler it replaced (TimeSformer base): clips/s, actor idle
#
# How long: each step runs under its own limit, so a step that hangs or fails leaves the others'
# files: 10 + 10 + 20 + 10 + 20 minutes, at most 70 minutes in all (override per step with
# MODEL_L_S, MODEL_S, FEED_S, TRAIN_S, INFER_S, in seconds). Each file ends with the step's exit
# status. Without a CUDA device it says so in one line and exits 2, before any step.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench_out/gpu-$(date -u +%Y%m%d-%H%M%S)}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "bench/gpu.sh: no CUDA device for $PYTHON (torch.cuda.is_available() is False): run it on a GPU machine with a CUDA torch" >&2
  exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name())"
  "$PYTHON" -c "import av; print('av', av.__version__)"
  echo "cpu cores $(nproc)"
} 2>&1 | tee "$out/gpu.txt"

step() {  # step NAME LIMIT_S ARGS...: one bench under a time limit, its output and exit status in OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name: $* (at most ${limit} s)"
  timeout "$limit" "$PYTHON" -m "$@" 2>&1 | tee "$out/$name.txt"
  echo "$name exit ${PIPESTATUS[0]}" | tee -a "$out/$name.txt"
}
step model_l "${MODEL_L_S:-600}" bench.model --device cuda --attention --reps 5
step model "${MODEL_S:-600}" bench.model --device cuda --skip-l --reps 5
step feed "${FEED_S:-1200}" bench.feed --device cuda --nvdec --cache "${TMPDIR:-/tmp}/pipeline-bench-feed"
step train "${TRAIN_S:-600}" bench.train --device cuda
step infer "${INFER_S:-1200}" bench.infer --device cuda
echo "numbers in $out"
