"""Does the model look at the moving object, and do its features know the motion? (no Ray)

    python -m bench.explain                       # the figures of docs/EXPLAIN.md ("Proof")
    python -m bench.explain --images docs/images  # + the README pictures, through jobs.explain

On the synthetic motion corpus (`pipeline.data.synthetic`, which records the object's box in every
frame), small TimeSformers are trained in-process (plain torch loop on pre-decoded clips, one
thread; the recipe of tests/infer's trained checkpoint), a divided one and a space-only peer with
the same data, steps and seed. On the validation videos it then measures, for each model:

- OBJECT: the rollout mass on the moving object / the object's share of the frame area (both
  over the patch grid: a patch counts by the fraction of it the object covers; target >= 3);
- SILHOUETTE of the videos' pre-head features by motion class (target divided >= 0.3, and above
  space-only's);
- clip accuracy, for reference.

With `--randaugment N` the divided model trains with RandAugment (N ops at `--magnitude`), which
shows training still learns with it on. Prints the machine load with the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.data import randaugment, sampling, synthetic
from pipeline.data.clips import ClipConfig
from pipeline.data.transforms import _short_side_shape
from pipeline.infer import read_video

FPS, SIZE = 15, (96, 72)  # the synthetic videos (W, H)
CLIP = dict(num_frames=4, sampling_rate=8, short_side=32, crop_size=32)
PATCH = 8
TRAIN_OVERRIDES = dict(num_classes=4, linear_init_std=0.1, time_embed_init_std=1.0, temporal_fc_init_std=0.02)


@dataclass
class Split:
    x: np.ndarray  # uint8 [N, T, S, S, 3]
    y: np.ndarray  # int64 [N]
    video: np.ndarray  # int64 [N]: the clip's video
    cover: np.ndarray | None = None  # float32 [N, T, h, w]: the object's share of each patch


def patch_cover(boxes: list[list[float]], frames: list[int]) -> np.ndarray:
    """The object's coverage of each patch [T, h, w] of a test-mode clip (short side 32, centre
    crop 32) made of source `frames` of a SIZE video."""
    import cv2

    w, h = SIZE
    nh, nw = _short_side_shape(h, w, CLIP["short_side"])
    top, left, c = (nh - CLIP["crop_size"]) // 2, (nw - CLIP["crop_size"]) // 2, CLIP["crop_size"]
    out = []
    for f in frames:
        mask = cv2.resize(synthetic.box_mask(boxes[f], SIZE), (nw, nh), interpolation=cv2.INTER_AREA)
        crop = mask[top:top + c, left:left + c]
        out.append(crop.reshape(c // PATCH, PATCH, c // PATCH, PATCH).mean(axis=(1, 3)))
    return np.stack(out).astype(np.float32)


def make_split(folder: Path, n: int, seed: int, clips: int, object_fraction: float) -> Split:
    """`n` videos (classes round-robin), `clips` uniform clips each, decoded like inference does."""
    cfg = ClipConfig(sampling="uniform", clips=clips, crops=1, **CLIP)
    xs, ys, vids, covers = [], [], [], []
    for i in range(n):
        path = str(folder / f"v{seed}_{i}.mp4")
        boxes = synthetic.write_motion_video(path, i % 4, seconds=3, fps=FPS, size=SIZE, seed=seed * 10_000 + i,
                                             object_fraction=object_fraction)
        meta, frames = read_video({"uri": path}, cfg)
        total = meta["num_frames"]
        span = sampling.clip_span(CLIP["num_frames"], CLIP["sampling_rate"], meta["fps"])
        for k, (s, e) in enumerate(sampling.uniform_clips(total, span, clips)):
            idx, _ = sampling.clip_indices(s, e, CLIP["num_frames"], total)
            covers.append(patch_cover(boxes, [int(j) for j in idx]))
            xs.append(frames[k, 0])
            ys.append(i % 4)
            vids.append(i)
    return Split(np.stack(xs), np.array(ys), np.array(vids), np.stack(covers))


def train(attention: str, data: Split, steps: int, seed: int = 0, ra_n: int = 0, ra_m: float = 9.0,
          batch: int = 16, lr: float = 1e-3):
    """A debug TimeSformer of `attention` trained on `data` (AdamW, plain loop, one thread)."""
    import torch.nn.functional as F

    from pipeline.model import create
    from pipeline.model.forward import to_model_input

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = create("debug", attention=attention, **TRAIN_OVERRIDES)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, len(data.x), batch)
        clips = data.x[idx]
        if ra_n:
            clips = np.stack([randaugment.randaugment(c, ra_n, ra_m, rng) for c in clips])
        loss = F.cross_entropy(model(to_model_input(torch.from_numpy(clips))), torch.from_numpy(data.y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def measure(model, data: Split) -> dict[str, float]:
    """Clip accuracy, OBJECT (rollout mass on the object / its area share) and the silhouette
    of the per-video features (clip features averaged) by class."""
    from pipeline.explain.tsne import silhouette
    from pipeline.model.forward import to_model_input
    from pipeline.model.rollout import explain

    with torch.no_grad():
        x = to_model_input(torch.from_numpy(data.x))
        feats, maps = explain(model, x)
        acc = float((model.head(feats).argmax(1).numpy() == data.y).mean())
    maps = maps.numpy()
    mass = (maps * data.cover).sum(axis=(1, 2, 3))  # [N]
    share = data.cover.mean(axis=(1, 2, 3))  # [N]
    videos = np.unique(data.video)
    per_video = np.stack([feats.numpy()[data.video == v].mean(0) for v in videos])
    labels = [int(data.y[data.video == v][0]) for v in videos]
    return {"acc": acc, "object": float(mass.mean() / share.mean()), "mass": float(mass.mean()),
            "share": float(share.mean()), "silhouette": silhouette(per_video, labels), "features": per_video,
            "labels": labels}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-videos", type=int, default=96)
    ap.add_argument("--val-videos", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--object-fraction", type=float, default=synthetic.OBJECT_FRACTION)
    ap.add_argument("--randaugment", type=int, default=0, help="RandAugment ops for the divided model (0: off)")
    ap.add_argument("--magnitude", type=float, default=9.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/bench_explain", help="videos and checkpoints go here")
    ap.add_argument("--images", default="", help="write the README pictures here (runs jobs.explain)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tr = make_split(work, args.train_videos, 1 + args.seed, 6, args.object_fraction)
    va = make_split(work, args.val_videos, 1000 + args.seed, 2, args.object_fraction)
    print(f"load {os.getloadavg()[0]:.2f}; data {time.perf_counter() - t0:.0f} s: {len(tr.x)} train clips, "
          f"{len(va.x)} val clips; object fraction {args.object_fraction}; {args.steps} steps")
    models = {}
    for name, attention, ra in (("divided", "divided", args.randaugment), ("space_only", "space_only", 0)):
        t1 = time.perf_counter()
        models[name] = model = train(attention, tr, args.steps, args.seed, ra, args.magnitude, lr=args.lr)
        m = measure(model, va)
        sil = "n/a" if m["silhouette"] is None else f"{m['silhouette']:.3f}"
        print(f"{name:10s} randaugment={ra}: val clip acc {m['acc']:.3f}  OBJECT {m['object']:.2f}x "
              f"(mass {m['mass']:.3f} / share {m['share']:.3f})  SILHOUETTE {sil}  "
              f"train {time.perf_counter() - t1:.0f} s  load {os.getloadavg()[0]:.2f}")
    if args.images:
        write_images(models["divided"], work, Path(args.images), args.object_fraction)


def write_images(model, work: Path, images: Path, object_fraction: float) -> None:
    """Save the divided model with its recipe, run `jobs.explain` on a fresh labelled corpus, copy
    one rollout PNG and the t-SNE plot to `images`."""
    import shutil

    from jobs import explain as explain_job
    from pipeline.model import save
    from pipeline.model.recipe import make_recipe

    ckpt = str(work / "divided.pt")
    save(model, ckpt, recipe=make_recipe(dict(CLIP, sampling="uniform", clips=2, crops=1), model.config,
                                         labels=synthetic.CLASSES))
    corpus = work / "corpus"
    if not (corpus / "val.csv").exists():
        synthetic.make_corpus(str(corpus), videos=80, seconds=3, size=SIZE, fps=FPS, val_fraction=1.0,
                              seed=7, object_fraction=object_fraction)
    out = work / "explain_out"
    assert explain_job.main(["--checkpoint", ckpt, "--videos", str(corpus / "val.csv"), "--output", str(out),
                             "--overwrite"]) == 0
    images.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "tsne.png", images / "explain_tsne.png")
    first = (corpus / "val.csv").read_text().splitlines()[1].split(",")[2]  # path,label,video_id
    shutil.copy(out / "maps" / f"{first}.png", images / "explain_rollout.png")


if __name__ == "__main__":
    main()
