#!/usr/bin/env bash
# The GPU checks of the open model-speed and feed work as ONE device run, for a session lent a GPU
# (an H200 through the `device` tool: 15 minutes in all, the machine's start included).
#
# The device image has python3 with torch (CUDA), transformers, einops, timm, opencv, pyarrow,
# fsspec and yaml. It has no Ray, and Ray cannot travel (its wheel is 79 MB; a call carries at most
# 64 MiB), so only the Ray-free GPU benches run there: `bench.model --device cuda` (bf16 rows,
# TimeSformer-L MFU, clips/s and memory vs HF) and `bench.feed --device cuda --steps-only --nvdec`
# (measured training steps per preset, cores per GPU from a CPU run's per-clip figures, NVDEC vs
# CPU decode). PyAV travels as a wheel in .whl/ (36 MB):
#
#   here, once:   echo /.whl/ >> .git/info/exclude
#                 python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                     --implementation cp --platform manylinux_2_28_x86_64 -d .whl av==18.1.0
#   on the GPU:   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=600)
#
# Output: $OUT/gpu.txt (device, versions), model_l.txt, feed.txt, model.txt; record them in
# docs/BENCHMARKS.md. Each bench has its own time limit so one hang leaves the other's rows.
set -u
out=${OUT:-/tmp/gpu-session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_session: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name())"
  python3 -c "import av; print('av', av.__version__)" || echo "no PyAV: bench.feed will not run (carry .whl/)"
  nproc
} 2>&1 | tee "$out/gpu.txt"
# the targets first: TimeSformer-L (MFU, clips/s and memory per clip vs HF), then the feed's steps,
# then the ViT-B rows (divided, joint: bf16, compiled, peak memory); 560 s together
timeout "${L_S:-230}" python3 -m bench.model --device cuda --attention --reps 5 2>&1 | tee "$out/model_l.txt"
echo "bench.model (TimeSformer-L) exit ${PIPESTATUS[0]}" | tee -a "$out/model_l.txt"
timeout "${FEED_S:-140}" python3 -m bench.feed --device cuda --steps-only --nvdec --quick --seconds 20 \
  --cache /tmp/feed-cache 2>&1 | tee "$out/feed.txt"
echo "bench.feed exit ${PIPESTATUS[0]}" | tee -a "$out/feed.txt"
timeout "${MODEL_S:-190}" python3 -m bench.model --device cuda --skip-l --reps 5 2>&1 | tee "$out/model.txt"
echo "bench.model exit ${PIPESTATUS[0]}" | tee -a "$out/model.txt"
