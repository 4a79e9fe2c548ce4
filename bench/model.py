"""Model speed against a peer in the same run: our TimeSformer vs Hugging Face's, same weights.

    python -m bench.model                          # CPU: ViT-B, 8 x 224, batch 1, divided + joint
    python -m bench.model --depth 2 --reps 3       # quicker CPU check (fewer blocks, same widths)
    python -m bench.model --device cuda            # GPU: + bf16 rows, peak memory, TimeSformer-L

For each attention scheme both implement (divided, joint) it builds our model, copies its weights
into `transformers.TimesformerForVideoClassification` with the same config, checks that the logits
agree, then times inference (forward under no_grad) and training (forward + backward) steps. The
two models alternate inside every repeat (ours-peer, then peer-ours) so that load from other
processes hits both alike; the threads are fixed with `torch.set_num_threads`.

SPEEDUP = peer time / our time (> 1: we are faster), the median of the per-repeat paired ratios;
`noise` is the spread (min..max) of those paired ratios. Targets, on training steps:
divided >= 1.05x, joint >= 1.5x on CPU; on a GPU, a TimeSformer-L (96 x 224) training step of ours
(bf16 autocast, activation checkpointing) >= 3x the clips/s of HF's (as shipped: fp32, no
checkpointing) at <= 1/4 of its peak memory per clip. Each target row prints PASS or MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from pipeline.model import create
from pipeline.model.weights import official_key_to_hf

HF_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}
CPU_TARGETS = {("divided", "train"): 1.05, ("joint", "train"): 1.5}  # minimum speedup
L_SPEEDUP, L_MEMORY = 3.0, 0.25  # TimeSformer-L: clips/s ratio >=, peak memory per clip ratio <=


def peer_model(ours: nn.Module, num_frames: int | None = None) -> nn.Module:
    """HF TimesformerForVideoClassification with our model's architecture and weights.

    HF reshapes with `config.num_frames` / `config.image_size`, so they must equal the input's.
    """
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    c = ours.config
    cfg = TimesformerConfig(image_size=c.image_size, patch_size=c.patch_size, num_frames=num_frames or c.num_frames,
                            hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                            intermediate_size=int(c.embed_dim * c.mlp_ratio), num_labels=c.num_classes,
                            attention_type=HF_ATTENTION[c.attention], layer_norm_eps=c.layer_norm_eps,
                            qkv_bias=c.qkv_bias)  # its defaults: dropout 0, drop_path 0
    peer = TimesformerForVideoClassification(cfg)
    peer.load_state_dict({official_key_to_hf(k): v for k, v in ours.state_dict().items()
                          if not (c.attention == "space_only" and k == "time_embed")}, strict=True)
    return peer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Runner:
    """One model's step (inference or training) on one input, with its autocast setting."""

    model: nn.Module
    call: Callable[[], torch.Tensor]  # returns logits
    device: str
    bf16: bool = False

    def step(self, train: bool) -> None:
        self.model.train(train)
        amp = (torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16) if self.bf16
               else contextlib.nullcontext())
        if train:
            self.model.zero_grad(set_to_none=True)
            with amp:
                loss = self.call().float().sum()
            loss.backward()
        else:
            with torch.no_grad(), amp:
                self.call()

    def timed(self, train: bool) -> tuple[float, int]:
        """Seconds for one step and its peak device memory (bytes; 0 on CPU; both models' weights
        stay resident, so peaks include ~2 x the parameter bytes)."""
        if self.device.startswith("cuda"):
            self.model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(self.device)
        t0 = time.perf_counter()
        self.step(train)
        sync(self.device)
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else 0
        self.model.zero_grad(set_to_none=True)  # the other model's peak must not count these grads
        return dt, peak


@dataclass
class Result:
    ours_s: float  # median seconds per step
    peer_s: float
    speedup: float  # median of paired peer/ours ratios
    lo: float  # min and max paired ratio (noise)
    hi: float
    ours_peak: int
    peer_peak: int


def compare(ours: Runner, peer: Runner, train: bool, reps: int) -> Result:
    """Interleaved timing (ABBA order) of two runners; one warm-up step each."""
    ours.step(train), peer.step(train)  # warm-up (allocator, kernels, autotuning)
    a, b, pa, pb = [], [], [], []
    for i in range(reps):
        pair = (ours, peer) if i % 2 == 0 else (peer, ours)
        for r in pair:
            dt, peak = r.timed(train)
            (a if r is ours else b).append(dt)
            (pa if r is ours else pb).append(peak)
    ratios = [y / x for x, y in zip(a, b)]
    return Result(statistics.median(a), statistics.median(b), statistics.median(ratios), min(ratios), max(ratios),
                  max(pa), max(pb))


def runners(ours: nn.Module, peer: nn.Module, x: torch.Tensor, device: str, bf16: bool) -> tuple[Runner, Runner]:
    """The two models on the same clip `x` [B, 3, T, H, W] (HF takes [B, T, 3, H, W])."""
    xp = rearrange(x, "b c t h w -> b t c h w").contiguous()
    return (Runner(ours, lambda: ours(x), device, bf16),
            Runner(peer, lambda: peer(pixel_values=xp).logits, device, bf16))


def verdict(value: float, target: float, at_least: bool = True) -> str:
    ok = value >= target if at_least else value <= target
    return f"{'PASS' if ok else 'MISS'} ({'>=' if at_least else '<='} {target:g})"


def bench_scheme(attention: str, args: argparse.Namespace, arch: dict) -> None:
    """Rows for one attention scheme: inference and training, fp32 (and bf16 on a GPU)."""
    torch.manual_seed(0)
    ours = create("timesformer_base", attention=attention, drop_path_rate=0.0, **arch).to(args.device)
    peer = peer_model(ours).to(args.device)
    x = torch.randn(args.batch, 3, arch["num_frames"], arch["image_size"], arch["image_size"], device=args.device)
    ours.eval(), peer.eval()
    diff = float("nan")  # HF's space-only returns per-frame logits; its equivalence is in tests/model
    if attention != "space_only":
        with torch.no_grad():
            diff = (ours(x) - peer(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits).abs().max().item()
    precisions = [False, True] if args.device.startswith("cuda") else [False]
    for bf16 in precisions:
        r_ours, r_peer = runners(ours, peer, x, args.device, bf16)
        for train in (False, True):
            mode = "train" if train else "infer"
            res = compare(r_ours, r_peer, train, args.reps)
            target = CPU_TARGETS.get((attention, mode)) if args.device == "cpu" else None
            mem = (f" peak MiB ours {res.ours_peak / 2**20:,.0f} / HF {res.peer_peak / 2**20:,.0f}"
                   if args.device.startswith("cuda") else "")
            print(f"{attention:<10} {mode:<5} {'bf16' if bf16 else 'fp32':<4} {res.ours_s:8.3f} {res.peer_s:8.3f} "
                  f"{res.speedup:7.2f}x  {res.lo:.2f}..{res.hi:.2f}  {verdict(res.speedup, target) if target else '-':<14}"
                  f" max|logit diff| {diff:.1e}{mem}", flush=True)
    del ours, peer


def bench_timesformer_l(args: argparse.Namespace) -> None:
    """GPU: TimeSformer-L (96 x 224, divided) training step, clips/s and peak memory per clip.

    Ours: bf16 autocast (SDPA flash / memory-efficient kernels) + activation checkpointing per
    block, batch `--l-batch`. HF: as shipped (fp32, eager softmax attention, no checkpointing),
    batch `--l-peer-batch`; also HF under bf16 autocast for reference (not the target).
    """
    frames = 96
    torch.manual_seed(0)
    size = args.image_size  # 224 unless asked otherwise (quick checks), like --depth
    ours = create("timesformer_l", drop_path_rate=0.0, grad_checkpointing=True, depth=args.depth,
                  image_size=size).to(args.device)
    peer = peer_model(ours, num_frames=frames).to(args.device)
    x = torch.randn(args.l_batch, 3, frames, size, size, device=args.device)
    xp = torch.randn(args.l_peer_batch, 3, frames, size, size, device=args.device)
    r_ours = runners(ours, peer, x, args.device, bf16=True)[0]
    rows = {"ours bf16+ckpt": (r_ours, args.l_batch)}
    for name, bf16 in (("HF fp32", False), ("HF bf16", True)):
        rows[name] = (runners(ours, peer, xp, args.device, bf16)[1], args.l_peer_batch)
    stats = {}
    for name, (runner, batch) in rows.items():
        runner.step(True)  # warm-up
        runs = [runner.timed(True) for _ in range(args.reps)]
        sec = statistics.median(dt for dt, _ in runs)
        peak = max(p for _, p in runs)
        stats[name] = (batch / sec, peak / batch)
        print(f"TimeSformer-L ({frames}x{size}, depth {args.depth}) train {name:<15} batch {batch}: {batch / sec:6.2f} clips/s, "
              f"peak {peak / 2**30:6.2f} GiB ({peak / batch / 2**30:.2f} GiB/clip)", flush=True)
    ours_cps, ours_mem = stats["ours bf16+ckpt"]
    for ref in ("HF fp32", "HF bf16"):
        cps, mem = stats[ref]
        target = ref == "HF fp32"
        mem_ratio = ours_mem / mem if mem else float("nan")  # no peak memory off the GPU
        print(f"TimeSformer-L vs {ref}: clips/s {ours_cps / cps:.2f}x "
              f"{verdict(ours_cps / cps, L_SPEEDUP) if target else '(reference)'}, memory/clip {mem_ratio:.3f} "
              f"{verdict(mem_ratio, L_MEMORY, at_least=False) if target else '(reference)'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--attention", nargs="+", default=["divided", "joint"], choices=list(HF_ATTENTION))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--depth", type=int, default=12, help="blocks (default 12 = ViT-B; fewer for a quick run)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: 1 on CPU, 8 on GPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repeats per model (default: 3 CPU, 10 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--l-batch", type=int, default=4, help="GPU TimeSformer-L: our clips per step")
    p.add_argument("--l-peer-batch", type=int, default=1, help="GPU TimeSformer-L: HF's clips per step")
    p.add_argument("--skip-l", action="store_true", help="GPU: skip the TimeSformer-L rows")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    args.batch = args.batch or (8 if gpu else 1)
    args.reps = args.reps or (10 if gpu else 3)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    arch = dict(num_frames=args.frames, image_size=args.image_size, depth=args.depth)
    print(f"device={args.device} batch={args.batch} reps={args.reps} {arch} (ViT-B widths) torch={torch.__version__} "
          f"threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f}")
    print("SPEEDUP = HF time / our time (>1: ours faster), median of paired ratios; noise = min..max paired ratio")
    print(f"{'scheme':<10} {'mode':<5} {'prec':<4} {'ours s':>8} {'HF s':>8} {'SPEEDUP':>8}  {'noise':<10}  target")
    for attention in args.attention:
        bench_scheme(attention, args, arch)
    if gpu and not args.skip_l:
        bench_timesformer_l(args)


if __name__ == "__main__":
    main()
