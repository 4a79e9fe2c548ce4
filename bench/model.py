"""Model speed against a peer in the same run: our TimeSformer (eager and compiled) vs Hugging Face's.

    python -m bench.model                          # CPU: ViT-B, 8 x 224, batch 1, divided + joint
    python -m bench.model --depth 2 --reps 3       # quicker CPU check (fewer blocks, same widths)
    python -m bench.model --device cuda            # GPU: + bf16 rows, peak memory, TimeSformer-L MFU
    python -m bench.model --depth 1 --image-size 32 --frames 4 --l --l-frames 8 --reps 1   # logic check, seconds

For each attention scheme both implement (divided, joint) it builds our model, a second copy with
the same weights whose blocks are compiled (`pipeline.model.compile`, Inductor), and
`transformers.TimesformerForVideoClassification` as shipped with the same config and weights;
checks the logits agree; then times inference (forward under no_grad) and training (forward +
backward) steps. The three alternate inside every repeat (the order rotates) so that load from
other processes hits them alike; torch's threads are fixed.

SPEEDUP = HF time / our time (> 1: ours faster), the median of the per-repeat paired ratios;
`noise` is their min..max. FLOP/s = the step's FLOPs (`pipeline.model.flops`: 2 x MACs of the
matmuls, convolution and attention, forward + backward) / median step time; `of peak` divides it
by the practical peak: plain `torch.matmul`s of the step's own GEMM shapes (count-weighted), timed
in the same run on the same device and dtype; on a GPU it also prints MFU against the device's
nominal dense bf16 peak (`--peak-tflops`).

Targets (training steps): CPU fp32 8 x 224 ViT-B: divided >= 1.2x HF, joint >= 1.6x HF, FLOP/s >=
60 % of the matmul peak. GPU: TimeSformer-L (96 x 224) of ours (bf16 autocast, activation
checkpointing) >= 45 % MFU, >= 3x the clips/s of HF's (as shipped: fp32, no checkpointing) at <=
1/4 of its peak memory per clip. A target row prints PASS or MISS only when other processes kept
at most `BUSY_LOAD` x the cores busy (from /proc) before and during the run; otherwise it says
why it gives no verdict.

On the CPU each training step is followed by its GEMM share (`bench.gemm_share`: one profiled
step of ours and of HF's): the share of the step spent in matrix multiplies, and the ceiling it
leaves, HF's step over our GEMM time (equal FLOPs run the same GEMMs at the library's speed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from bench.gemm_share import ceiling, gemm_share
from pipeline.model import create
from pipeline.model.compile import compile_blocks
from pipeline.model.flops import step_flops, step_gemms
from pipeline.model.weights import official_key_to_hf

HF_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}
CPU_TARGETS = {("divided", "train"): 1.2, ("joint", "train"): 1.6}  # minimum speedup vs HF
PEAK_SHARE = 0.6  # training step FLOP/s >= this share of the matmul peak (CPU)
L_SPEEDUP, L_MEMORY, L_MFU = 3.0, 0.25, 0.45  # TimeSformer-L: clips/s ratio >=, memory/clip ratio <=, MFU >=
BUSY_LOAD = 0.25  # no verdict when other processes kept more than this x the cores busy


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


def compiled_twin(ours: nn.Module, device: str) -> tuple[nn.Module, str]:
    """A copy of `ours` (same weights) with compiled blocks, and its label ("compiled", or
    "compiled->eager" when the compiler could not run here)."""
    twin = type(ours)(dataclasses.replace(ours.config)).to(device)
    twin.load_state_dict(ours.state_dict())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", RuntimeWarning)
        ok = compile_blocks(twin, device)
    for w in seen:
        print(f"  warning: {w.message}", flush=True)
    return twin, "compiled" if ok else "compiled->eager"


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
        """Seconds for one step and its peak device memory (bytes; 0 on CPU; every model's weights
        stay resident, so peaks include the other models' parameter bytes)."""
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
        self.model.zero_grad(set_to_none=True)  # the other models' peaks must not count these grads
        return dt, peak


@dataclass
class Timing:
    """One runner's timed repeats (and its untimed warm-up step, which holds a compile)."""

    secs: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    warmup: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.secs)


def interleaved(runners: dict[str, Runner | Matmuls], train: bool, reps: int) -> dict[str, Timing]:
    """Time every runner `reps` times, rotating their order each repeat; one warm-up step each
    (allocator, kernels, autotuning; the compile for a compiled model)."""
    names = list(runners)
    out = {name: Timing() for name in names}
    for name, r in runners.items():
        t0 = time.perf_counter()
        r.step(train)
        out[name].warmup = time.perf_counter() - t0
    for i in range(reps):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in (order if i % 2 == 0 else order[::-1]):
            dt, peak = runners[name].timed(train)
            out[name].secs.append(dt)
            out[name].peaks.append(peak)
    return out


def paired(peer: Timing, ours: Timing) -> tuple[float, float, float]:
    """(median, min, max) of the per-repeat ratios peer time / our time."""
    ratios = [p / o for p, o in zip(peer.secs, ours.secs)]
    return statistics.median(ratios), min(ratios), max(ratios)


class Matmuls:
    """The practical peak: plain `torch.matmul`s with the GEMM shapes of a model's step, each shape
    once per repeat, its time weighted by how often the step runs it. It takes part in the
    interleaved repeats like a model, so it sees the same load."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], train: bool, device: str, dtype: torch.dtype):
        self.device = device
        self.gemms = [(torch.randn(b, m, k, device=device, dtype=dtype), torch.randn(b, k, n, device=device, dtype=dtype),
                       count) for (b, m, k, n), count in step_gemms(model, shape, train=train).items()]
        self.flops = sum(2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] * c for a, b, c in self.gemms)

    def step(self, train: bool) -> None:
        for a, b, _ in self.gemms:
            torch.matmul(a, b)

    def timed(self, train: bool) -> tuple[float, int]:
        secs = 0.0
        for a, b, count in self.gemms:
            sync(self.device)
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync(self.device)
            secs += (time.perf_counter() - t0) * count
        return secs, 0


def matmul_peak(model: nn.Module, shape: tuple[int, ...], train: bool, device: str, dtype: torch.dtype) -> float:
    """FLOP/s of `Matmuls` on its own (median of 3)."""
    mm = Matmuls(model, shape, train, device, dtype)
    return mm.flops / interleaved({"matmul": mm}, train, 3)["matmul"].median


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds every process used since boot, CPU seconds of this process and its waited-for
    children) from /proc; None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            jiffies = [int(x) for x in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait
    own = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return busy / hz, own / hz


class Load:
    """How busy OTHER processes kept the machine while we measured; the verdicts depend on the
    worst sample. Each sample is the cores other processes used since the sample before (all CPU
    time minus this process's, from /proc), the first one over `settle_s` before the bench starts.
    The load average would count the bench's own threads during the run, and before it the jobs
    that ended in the last minutes (it decays over ~1 min); it stands in only without /proc."""

    def __init__(self, settle_s: float = 3.0) -> None:
        self.cores = os.cpu_count() or 1
        self._last = (time.monotonic(), cpu_seconds())
        if self._last[1] is None:  # no /proc: the load average before the bench starts
            self.samples = [os.getloadavg()[0]]
        else:  # what other processes use now (the load average still counts jobs that just ended)
            self.samples = []
            time.sleep(settle_s)
            self.sample()

    def sample(self) -> float:
        now, cpu = time.monotonic(), cpu_seconds()
        then, before = self._last
        if cpu is None or before is None or now <= then:  # no /proc: the load average, own threads off
            other = max(0.0, os.getloadavg()[0] - torch.get_num_threads())
        else:
            other = max(0.0, (cpu[0] - before[0]) - (cpu[1] - before[1])) / (now - then)
        self._last = (now, cpu)
        self.samples.append(other)
        return other

    def restart(self) -> None:
        """The next sample covers only what runs from now (not compiles or set-up before)."""
        self._last = (time.monotonic(), cpu_seconds())

    def busy(self) -> str | None:
        """Why no verdict may be given, or None."""
        worst = max(self.samples)
        if worst > BUSY_LOAD * self.cores:
            return f"no verdict: other processes kept {worst:.2f} cores busy > {BUSY_LOAD} x {self.cores} cores"
        return None


def verdict(value: float, target: float, load: Load, at_least: bool = True) -> str:
    sign = ">=" if at_least else "<="
    if load.busy():
        return f"no verdict, load ({sign} {target:g})"
    ok = value >= target if at_least else value <= target
    return f"{'PASS' if ok else 'MISS'} ({sign} {target:g})"


def bench_scheme(attention: str, args: argparse.Namespace, arch: dict, load: Load) -> None:
    """Rows for one attention scheme: inference and training, fp32 (and bf16 on a GPU)."""
    torch.manual_seed(0)
    ours = create("timesformer_base", attention=attention, drop_path_rate=0.0, **arch).to(args.device)
    peer = peer_model(ours).to(args.device)
    twin, twin_name = compiled_twin(ours, args.device) if args.compile else (None, "")
    x = torch.randn(args.batch, 3, arch["num_frames"], arch["image_size"], arch["image_size"], device=args.device)
    xp = rearrange(x, "b c t h w -> b t c h w").contiguous()  # HF takes [B, T, 3, H, W]
    ours.eval(), peer.eval()
    with torch.no_grad():
        diff = (ours(x) - peer(pixel_values=xp).logits).abs().max().item()
    print(f"{attention}: max|logit diff| ours vs HF {diff:.1e}", flush=True)
    gpu = args.device.startswith("cuda")
    for bf16 in ([False, True] if gpu else [False]):
        runners: dict[str, Runner | Matmuls] = {
            "HF": Runner(peer, lambda: peer(pixel_values=xp).logits, args.device, bf16),
            "eager": Runner(ours, lambda: ours(x), args.device, bf16)}
        if twin is not None:
            runners[twin_name] = Runner(twin, lambda: twin(x), args.device, bf16)
        for train in (False, True):
            mode = "train" if train else "infer"
            t0 = time.perf_counter()
            matmuls = Matmuls(ours, tuple(x.shape), train, args.device, torch.bfloat16 if bf16 else torch.float32)
            load.restart()
            times = interleaved({**runners, "matmul peak": matmuls}, train, args.reps)
            load.sample()
            flops = step_flops(ours, tuple(x.shape), train=train)
            peak = matmuls.flops / times.pop("matmul peak").median
            prec = "bf16" if bf16 else "fp32"
            compiled = "".join(f", {n} warm-up (compile) {t.warmup:.0f} s" for n, t in times.items() if "comp" in n)
            print(f"{attention} {mode} {prec}: {flops / 1e9:,.2f} GFLOP/step, matmul peak {peak / 1e9:,.1f} GFLOP/s"
                  f"{f', device peak {args.peak_tflops:g} TFLOP/s' if gpu else ''}{compiled} "
                  f"({time.perf_counter() - t0:.0f} s, other processes {load.samples[-1]:.2f} cores)", flush=True)
            for name, timing in times.items():
                print(row(attention, mode, prec, name, times["HF"], timing, flops, peak, args, load), flush=True)
            if train and not gpu:
                print(breakdown(attention, runners, times), flush=True)
    del ours, peer, twin


def row(attention: str, mode: str, prec: str, name: str, hf: Timing, t: Timing, flops: float, peak: float,
        args: argparse.Namespace, load: Load) -> str:
    """One printed row: time, speedup vs HF with its noise, FLOP/s and share of the peak, verdicts."""
    rate = flops / t.median
    text = f"{attention:<8} {mode:<5} {prec} {name:<15} {t.median:8.3f} s "
    if name == "HF":
        text += f"{'-':>7}  {'':<10}"
    else:
        speedup, lo, hi = paired(hf, t)
        text += f"{speedup:6.2f}x  {lo:.2f}..{hi:.2f}"
    text += f"  {rate / 1e9:8.1f} GFLOP/s {100 * rate / peak:4.0f}% of matmul peak"
    if args.device.startswith("cuda"):
        text += f", MFU {100 * rate / (args.peak_tflops * 1e12):4.1f}%"
        text += f", peak {max(t.peaks) / 2**20:,.0f} MiB"
    target = CPU_TARGETS.get((attention, mode)) if args.device == "cpu" and name != "HF" else None
    if target:
        text += f"  speed {verdict(paired(hf, t)[0], target, load)}, FLOP/s {verdict(rate / peak, PEAK_SHARE, load)}"
    return text


def breakdown(attention: str, runners: dict[str, Runner], times: dict[str, Timing]) -> str:
    """GEMM share of the eager and HF training steps (one profiled step each) and the speedup
    ceiling it leaves: what ours would reach if everything but its GEMMs cost nothing."""
    share = {name: gemm_share(lambda r=runners[name]: r.step(True)) for name in ("eager", "HF")}
    gemm_s = {name: share[name] * times[name].median for name in share}
    top = ceiling(times["HF"].median, times["eager"].median, share["eager"])
    return (f"{attention} train: GEMMs are {share['eager']:.0%} of our eager step ({gemm_s['eager']:.2f} s) and "
            f"{share['HF']:.0%} of HF's ({gemm_s['HF']:.2f} s); ceiling with nothing but our GEMMs: {top:.2f}x HF")


def bench_timesformer_l(args: argparse.Namespace, load: Load) -> None:
    """TimeSformer-L (divided) training step: clips/s, memory per clip and MFU, ours vs HF.

    Ours: bf16 autocast on a GPU (SDPA flash / memory-efficient kernels) + activation
    checkpointing per block, batch `--l-batch`, eager and compiled. HF: as shipped (fp32, eager
    softmax attention, no checkpointing), batch `--l-peer-batch`; also HF under bf16 autocast for
    reference (not the target). On a CPU (`--l`, for checking the logic with tiny settings) there
    is no bf16 and no peak memory.
    """
    frames, size, gpu = args.l_frames, args.image_size, args.device.startswith("cuda")
    torch.manual_seed(0)
    ours = create("timesformer_l", drop_path_rate=0.0, grad_checkpointing=True, depth=args.depth,
                  image_size=size, num_frames=frames).to(args.device)
    peer = peer_model(ours).to(args.device)
    x = torch.randn(args.l_batch, 3, frames, size, size, device=args.device)
    xp = rearrange(torch.randn(args.l_peer_batch, 3, frames, size, size, device=args.device),
                   "b c t h w -> b t c h w").contiguous()
    rows = {"ours": (Runner(ours, lambda: ours(x), args.device, gpu), args.l_batch)}
    if args.compile:
        twin, twin_name = compiled_twin(ours, args.device)
        rows[f"ours {twin_name}"] = (Runner(twin, lambda: twin(x), args.device, gpu), args.l_batch)
    rows["HF fp32"] = (Runner(peer, lambda: peer(pixel_values=xp).logits, args.device, False), args.l_peer_batch)
    if gpu:
        rows["HF bf16"] = (Runner(peer, lambda: peer(pixel_values=xp).logits, args.device, True), args.l_peer_batch)
    clip_flops = step_flops(ours, (1, 3, frames, size, size), train=True)
    peak = args.peak_tflops * 1e12 if gpu else matmul_peak(ours, (1, 3, frames, size, size), True, args.device,
                                                           torch.float32)
    stats = {}
    for name, (runner, batch) in rows.items():
        timing = interleaved({name: runner}, True, args.reps)[name]
        cps, mem = batch / timing.median, max(timing.peaks) / batch
        stats[name] = (cps, mem)
        print(f"TimeSformer-L ({frames}x{size}, depth {args.depth}) train {name:<22} batch {batch}: {cps:7.3f} clips/s, "
              f"{mem / 2**30:6.2f} GiB/clip, {'MFU' if gpu else 'of matmul peak'} "
              f"{100 * cps * clip_flops / peak:5.1f}%", flush=True)
    load.sample()
    hf_cps, hf_mem = stats["HF fp32"]
    for name in [n for n in stats if n.startswith("ours")]:
        cps, mem = stats[name]
        share = cps * clip_flops / peak
        mem_ratio = mem / hf_mem if hf_mem else float("nan")  # no peak memory off the GPU
        print(f"TimeSformer-L {name} vs HF fp32: clips/s {cps / hf_cps:.2f}x {verdict(cps / hf_cps, L_SPEEDUP, load)}, "
              f"memory/clip {mem_ratio:.3f} {verdict(mem_ratio, L_MEMORY, load, at_least=False) if hf_mem else '(n/a)'}, "
              f"{'MFU' if gpu else 'FLOP/s share'} {100 * share:.1f}% {verdict(share, L_MFU, load)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--attention", nargs="*", default=["divided", "joint"], choices=list(HF_ATTENTION))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--depth", type=int, default=12, help="blocks (default 12 = ViT-B; fewer for a quick run)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default: 1 on CPU, 8 on GPU)")
    p.add_argument("--reps", type=int, default=None, help="timed repeats per model (default: 5 CPU, 10 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled rows")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--l", action="store_true", help="TimeSformer-L rows on this device (default: on a GPU only)")
    p.add_argument("--skip-l", action="store_true", help="GPU: skip the TimeSformer-L rows")
    p.add_argument("--l-frames", type=int, default=96, help="TimeSformer-L frames (fewer for a logic check)")
    p.add_argument("--l-batch", type=int, default=4, help="TimeSformer-L: our clips per step")
    p.add_argument("--l-peer-batch", type=int, default=1, help="TimeSformer-L: HF's clips per step")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise SystemExit(f"bench.model --device {args.device}: no CUDA device (torch {torch.__version__}); "
                         f"run it on a GPU node")
    args.batch = args.batch or (8 if gpu else 1)
    args.reps = args.reps or (10 if gpu else 5)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    load = Load()
    arch = dict(num_frames=args.frames, image_size=args.image_size, depth=args.depth)
    print(f"device={args.device} batch={args.batch} reps={args.reps} {arch} (ViT-B widths) torch={torch.__version__} "
          f"threads={torch.get_num_threads()} cores={load.cores} load before={load.samples[0]:.1f} "
          f"(verdicts need other processes <= {BUSY_LOAD * load.cores:g} cores busy)")
    print("SPEEDUP = HF time / our time (>1: ours faster), median of paired ratios, then their min..max")
    for attention in args.attention:
        bench_scheme(attention, args, arch, load)
    if (gpu and not args.skip_l) or args.l:
        bench_timesformer_l(args, load)
    print(f"load: start {load.samples[0]:.1f}, other processes max {max(load.samples):.2f}, end {load.sample():.2f} cores "
          f"({load.cores} cores){'; ' + load.busy() if load.busy() else ''}")


if __name__ == "__main__":
    main()
