"""Model speed against a peer in the same run: our TimeSformer vs Hugging Face's, same weights.

    python -m bench.model                               # small CPU setting (a few seconds each)
    python -m bench.model --full --device cuda          # ViT-B, 8 x 224, batch 8, on a GPU

For each attention scheme both share (divided, joint, space_only) it loads the same random weights
into both models, checks the outputs agree, then times forward (inference) and forward+backward
(training) steps, interleaved, and prints our time / peer time (below 1.0 = we are faster).
Target: ratio <= 1.05 for every row. It also prints the divided / joint / space-only cost of our
model against each other.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from einops import rearrange

from pipeline.model import create
from pipeline.model.weights import official_key_to_hf

HF_ATTENTION = {"divided": "divided_space_time", "joint": "joint_space_time", "space_only": "space_only"}


def peer_model(ours: torch.nn.Module) -> torch.nn.Module:
    """HF TimesformerForVideoClassification with our model's architecture and weights."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    c = ours.config
    cfg = TimesformerConfig(image_size=c.image_size, patch_size=c.patch_size, num_frames=c.num_frames,
                            hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                            intermediate_size=int(c.embed_dim * c.mlp_ratio), num_labels=c.num_classes,
                            attention_type=HF_ATTENTION[c.attention], layer_norm_eps=c.layer_norm_eps)
    peer = TimesformerForVideoClassification(cfg)
    peer.load_state_dict({official_key_to_hf(k): v for k, v in ours.state_dict().items()
                          if not (c.attention == "space_only" and k == "time_embed")}, strict=True)
    return peer


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_pair(ours, peer, x, device: str, reps: int, train: bool) -> tuple[float, float]:
    """Median seconds per step for (ours, peer), runs interleaved so load changes hit both."""
    xp = rearrange(x, "b c t h w -> b t c h w").contiguous()  # HF layout

    def step_ours():
        if train:
            ours(x).sum().backward()
        else:
            with torch.no_grad():
                ours(x)

    def step_peer():
        if train:
            peer(pixel_values=xp).logits.sum().backward()
        else:
            with torch.no_grad():
                peer(pixel_values=xp)

    for m in (ours, peer):
        m.train(train)
    step_ours(), step_peer()  # warm-up
    a, b = [], []
    for _ in range(reps):
        a.append(timed(step_ours, device))
        b.append(timed(step_peer, device))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="ViT-B, 8 x 224 (default: a small ViT, 8 x 112)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.full:
        arch, batch = dict(num_frames=8, image_size=224), args.batch or 8
    else:
        arch, batch = dict(num_frames=8, image_size=112, embed_dim=192, depth=4, num_heads=3), args.batch or 2
    print(f"device={args.device} batch={batch} {arch} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'attention':<11} {'mode':<6} {'ours s':>8} {'peer s':>8} {'ratio':>6}  max|diff|")
    ours_times = {}
    for attention in HF_ATTENTION:
        ours = create("timesformer_base", attention=attention, drop_path_rate=0.0, **arch).to(args.device)
        peer = peer_model(ours).to(args.device)
        x = torch.randn(batch, 3, arch["num_frames"], arch["image_size"], arch["image_size"], device=args.device)
        ours.eval(), peer.eval()
        with torch.no_grad():
            if attention == "space_only":
                diff = float("nan")  # HF returns per-frame logits there; equivalence is in tests
            else:
                diff = (ours(x) - peer(pixel_values=rearrange(x, "b c t h w -> b t c h w")).logits).abs().max().item()
        for train in (False, True):
            a, b = bench_pair(ours, peer, x, args.device, args.reps, train)
            mode = "train" if train else "infer"
            ours_times[(attention, mode)] = a
            print(f"{attention:<11} {mode:<6} {a:8.4f} {b:8.4f} {a / b:6.2f}  {diff:.2e}")
    for mode in ("infer", "train"):
        d = ours_times[("divided", mode)]
        print(f"ours {mode}: joint/divided {ours_times[('joint', mode)] / d:.2f}, "
              f"space_only/divided {ours_times[('space_only', mode)] / d:.2f}")


if __name__ == "__main__":
    main()
