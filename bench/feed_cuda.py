"""GPU side of `bench.feed --device cuda`: measured training steps, the cores per GPU they need, NVDEC.

Runs on a CUDA machine (`bash bench/gpu.sh`); the pure parts and the CPU peer of the decode loop
also run without a GPU (tests/bench/test_feed_cuda.py).

Step times: each preset's model (`pipeline.model.create`, SGD Nesterov momentum as the train
configs) trains on a fixed random batch in bf16 autocast, activation checkpointing where its train
config turns it on (HR, L), timed by `bench.train.step_time` (2 warm-up steps, then the mean of
REPEATS). MFU counts model FLOPs: 3 forwards per step (recomputed forwards not counted), 2 FLOP
per MAC. Cores per GPU = measured clips/s per GPU x CPU s per clip all-in, from the CPU part of the
same run.

NVDEC (`--nvdec`): a plain loop (`PlainReader`) reads the same random 8x32 train clips from the
source and the copy with FFmpeg's software h264 decoder, the same decoder with the CUDA hwaccel
(NVDEC) and NVIDIA's h264_cuvid decoder (NVDEC with its own parser); a clip opens the file, seeks
to the keyframe at or before each wanted frame unless decoding on is shorter, decodes forward and
converts the wanted frames to rgb24 at native size. A decoder that cannot start (no libcuda, no
device) prints one line and is skipped.
"""

from __future__ import annotations

import bisect
import time
from fractions import Fraction
from typing import Callable, Sequence

import av
import numpy as np
from av.codec.hwaccel import HWAccel

REPEATS = 10  # timed steps per preset, after 2 warm-up steps
GPU_BATCH = (32, 4, 4)  # clips per step of base, HR, L (the configs use 8, 2, 1 and accumulate)
# "h264": FFmpeg's decoder on the CPU; "nvdec": the same with the CUDA hwaccel; "h264_cuvid":
# NVIDIA's decoder. The GPU ones copy frames back to host memory (nv12) before rgb24.
DECODERS = ("h264", "nvdec", "h264_cuvid")


def no_cuda() -> str | None:
    """The one line to print when there is no CUDA device, else None."""
    import torch

    if torch.cuda.is_available():
        return None
    return (f"bench.feed --device cuda: no CUDA device (torch {torch.__version__}: "
            f"torch.cuda.is_available() is false); run it on a GPU node")


# ----------------------------------------------------------------------------- step times


def cores_needed(step_s: float, batch: int, cpu_s_per_clip: float) -> float:
    """CPU cores that keep one GPU fed: its clips/s (batch / step time) x CPU seconds per clip."""
    return batch / step_s * cpu_s_per_clip


def mfu(step_s: float, batch: int, gmac: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation of a step: 3 forwards of 2 FLOP per MAC per clip."""
    return 3 * 2 * gmac * 1e9 * batch / step_s / (peak_tflops * 1e12)


def measure_step(preset: str, batch: int, ckpt: bool, classes: int) -> float | str:
    """Seconds per training step of `preset` at `batch` on the GPU, or why there is none (one line)."""
    import torch

    from bench.train import step_time
    from pipeline import model as models

    model = opt = None
    try:
        model = models.create(preset, num_classes=classes, grad_checkpointing=ckpt).cuda().train()
        opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, nesterov=True)
        return step_time(model, opt, batch, model.config.num_frames, model.config.image_size, REPEATS)
    except torch.cuda.OutOfMemoryError:
        return "out of memory"
    except Exception as e:  # noqa: BLE001 - one preset failing leaves the others' rows (GPU time is scarce)
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        del model, opt
        torch.cuda.empty_cache()


def step_report(rows: Sequence[tuple], batches: Sequence[int], peak_tflops: float, load: Callable[[], str]) -> None:
    """Print measured step times and the cores per GPU they need.

    rows: (name, model preset, GMAC per clip forward, clips/s per GPU at the 40 % MFU estimate,
    CPU s per clip all-in from the source, from the copy, activation checkpointing and classes as
    its train config), one per bench.feed preset."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"\n## measured on {torch.cuda.get_device_name()} (torch {torch.__version__}): training step, "
          f"bf16 autocast, SGD, eager, mean of {REPEATS} steps; MFU at {peak_tflops:g} TFLOP/s; {load()}")
    print("| preset | batch | activation checkpointing | step ms | clips/s per GPU | MFU | cores (source) | "
          "cores (copy) | at 40 % MFU estimate: clips/s, cores (source, copy) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, preset, gmac, est_rate, cpu_s, cpu_c, ckpt, classes), batch in zip(rows, batches):
        est = f"{est_rate:.0f}, {est_rate * cpu_s:.1f}, {est_rate * cpu_c:.1f}"
        secs = measure_step(preset, batch, ckpt, classes)
        if isinstance(secs, str):
            print(f"| {name} | {batch} | {ckpt} | {secs} | | | | | {est} |", flush=True)
            continue
        print(f"| {name} | {batch} | {ckpt} | {secs * 1e3:.1f} | {batch / secs:.1f} | "
              f"{mfu(secs, batch, gmac, peak_tflops):.1%} | {cores_needed(secs, batch, cpu_s):.1f} | "
              f"{cores_needed(secs, batch, cpu_c):.1f} | {est} |", flush=True)
    print(load())


# ----------------------------------------------------------------------------- NVDEC


class PlainReader:
    """One video opened for the plain decode loop with `decoder` (see DECODERS).

        with PlainReader(path, "nvdec") as r:
            frames = r.read([0, 32, 64])        # uint8 [T, H, W, 3] RGB at native size

    Frame i is the i-th presented frame, found from its pts (constant frame rate: frame 0's pts +
    i frame durations). Opening demuxes every packet once to list the keyframes (no decoding).
    """

    def __init__(self, path: str, decoder: str = "h264"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        hw = None
        if decoder != "h264":  # NVDEC; primary_ctx: share the device's CUDA context across opens
            hw = HWAccel("cuda", allow_software_fallback=False, options={"primary_ctx": "1"})
        self.container = av.open(path, hwaccel=hw if decoder == "nvdec" else None)
        try:
            self.stream = stream = self.container.streams.video[0]
            self.ctx = stream.codec_context
            if decoder == "h264_cuvid":
                self.ctx = av.CodecContext.create("h264_cuvid", "r", hwaccel=hw)
                self.ctx.extradata = stream.codec_context.extradata  # SPS/PPS of the mp4 (avcC)
            if hw is not None and not self.ctx.is_hwaccel:
                raise RuntimeError(f"{decoder}: the decoder did not attach to the CUDA device")
            self.ctx.thread_count = 1  # as the pipeline's decode tasks
            packets = [(p.pts, p.is_keyframe) for p in self.container.demux(stream)
                       if p.pts is not None and not p.is_discard]
            self.first_pts = min(pts for pts, _ in packets)
            self.frame_pts = 1 / (Fraction(stream.average_rate) * stream.time_base)  # pts units per frame
            self.key_pts = sorted(pts for pts, key in packets if key)
            self.key_index = [self.index(pts) for pts in self.key_pts]
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> "PlainReader":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def index(self, pts: int) -> int:
        return round((pts - self.first_pts) / self.frame_pts)

    def _from_keyframe(self, j: int):
        """(index, frame) of every frame decoded from the keyframe at or before frame j on."""
        k = max(bisect.bisect_right(self.key_index, j) - 1, 0)
        self.container.seek(self.key_pts[k], stream=self.stream, backward=True)
        self.ctx.flush_buffers()  # the seek flushes the stream's decoder; a separate (cuvid) one too
        first = True
        for packet in self.container.demux(self.stream):  # ends with an empty packet: drains the decoder
            for frame in self.ctx.decode(packet):
                if frame.pts is None:
                    raise RuntimeError("a decoded frame has no pts")
                i = self.index(frame.pts)
                if first and i > j:
                    raise RuntimeError(f"seek for frame {j} landed at frame {i}")
                first = False
                yield i, frame

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames `indices` (any order, repeats allowed) -> uint8 [T, H, W, 3]."""
        want, got, frames, pos = {int(i) for i in indices}, {}, None, -1
        for j in sorted(want):
            if j in got:
                continue
            key = self.key_index[max(bisect.bisect_right(self.key_index, j) - 1, 0)]
            if frames is None or key > pos:  # a keyframe after the last decoded frame: seeking skips more
                frames = self._from_keyframe(j)
            for pos, frame in frames:  # goes on where the last wanted frame stopped
                if pos in want and pos not in got:
                    got[pos] = frame.to_ndarray(format="rgb24", threads=1)  # [H, W, 3], one swscale thread
                if pos >= j:
                    break
            if j not in got:
                raise RuntimeError(f"frame {j} was not decoded (stream ended or skipped it)")
        return np.stack([got[int(i)] for i in indices])


def train_clips(path: str, n: int, seed: int = 0) -> list[list[int]]:
    """Frame indices of n random 8x32 train clips (the pipeline's sampler)."""
    from pipeline.data.decode import probe
    from pipeline.data.sampling import clip_indices, clip_span, random_clip

    info, rng = probe(path), np.random.default_rng(seed)
    span = clip_span(8, 32, info.fps)
    return [clip_indices(*random_clip(info.num_frames, span, rng), 8, info.num_frames)[0].tolist()
            for _ in range(n)]


def time_decoder(path: str, clips: list[list[int]], decoder: str) -> tuple[float, float, np.ndarray]:
    """(CPU s, wall s) per clip of open + read, and the first clip's frames; one untimed warm-up
    clip first (CUDA context, libraries). CPU counts every thread of this process (driver too).
    Each clip opens the file, as the pipeline's rows do: an NVDEC decoder's setup counts per clip."""
    with PlainReader(path, decoder) as r:
        first = r.read(clips[0])
    c0, w0 = time.process_time(), time.perf_counter()
    for idx in clips:
        with PlainReader(path, decoder) as r:
            r.read(idx)
    return (time.process_time() - c0) / len(clips), (time.perf_counter() - w0) / len(clips), first


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def nvdec_report(files: dict[str, str], n: int, load: Callable[[], str]) -> None:
    """Print CPU and wall ms per 8x32 train clip of each decoder on each file (same clips)."""
    print(f"\n## NVDEC vs CPU decode: plain loop, {n} random 8x32 train clips per file (the same for every "
          f"decoder), open + seek + decode + rgb24 per clip, 1 decoder thread; {load()}")
    print("| file | decoder | CPU ms/clip | wall ms/clip | h264 CPU / this CPU | PSNR vs h264 dB |")
    print("|---|---|---|---|---|---|")
    failed: dict[str, str] = {}  # decoder -> why it could not run (printed once, after the table)
    for label, path in files.items():
        clips = train_clips(path, n)
        ref_cpu, ref_wall, ref = time_decoder(path, clips, "h264")
        print(f"| {label} | h264 (CPU) | {ref_cpu * 1e3:.1f} | {ref_wall * 1e3:.1f} | 1.00x | |", flush=True)
        for decoder in DECODERS[1:]:
            if decoder in failed:
                continue
            try:
                cpu, wall, frames = time_decoder(path, clips, decoder)
            except Exception as e:  # noqa: BLE001 - no libcuda / no device / unsupported stream: a line, not a traceback
                failed[decoder] = f"{type(e).__name__}: {e}"
                continue
            print(f"| {label} | {decoder} | {cpu * 1e3:.1f} | {wall * 1e3:.1f} | {ref_cpu / cpu:.2f}x | "
                  f"{psnr(frames, ref):.1f} |", flush=True)
    for decoder, why in failed.items():
        print(f"{decoder}: cannot decode on the GPU here ({why}); skipped")
    print(load())
