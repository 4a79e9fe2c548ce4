"""See what a model sees: attention rollout maps, video features, their t-SNE and silhouette.

For every video of `--videos` (a manifest or a folder/prefix of videos), with the checkpoint's clip
recipe (uniform sampling, `--clips` clips, the centre crop): the attention rollout from the
classification token back to the input patches, `maps/<id>.npy` (float32 [T', h, w]: the clips'
maps averaged, summing to 1; T' = frames, or temporal tokens for ViViT tubelets) and
`maps/<id>.png` (each clip's frames with its map overlaid); the pre-head feature averaged over
the clips in `features.parquet` (video_id, label from the manifest when it has one, embedding);
`tsne.png` (coloured by label) and the features' silhouette by label, printed and in
`summary.json`. Bad videos are error rows in features.parquet. Exit 0 even when some videos
failed; 2 for bad arguments (before Ray starts). See docs/EXPLAIN.md for the rollout composition.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Literal

from pipeline import storage
from pipeline.cli import parse_job
from pipeline.config import ConfigError

EXAMPLES = """examples:
  python -m jobs.explain --checkpoint runs/debug/model.pt --videos data/synthetic/val.csv --output explain
  python -m jobs.explain --checkpoint s3://b/run/model.pt --videos s3://b/clips/ --output s3://b/explain --clips 4"""


@dataclass
class ExplainJobConfig:
    """What `jobs.explain` takes."""

    checkpoint: str = ""  # model checkpoint URI, pipeline.model format (required)
    videos: str = ""  # manifest file, or a folder/prefix of videos (required)
    output: str = ""  # output folder URI (required)
    clips: int | None = None  # clips per video, evenly spaced (None: the checkpoint recipe's)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # the model actor's device (auto: cuda when the cluster has GPUs)
    actor_cpus: float = 1.0  # CPUs reserved by the model actor (its torch threads on CPU)
    batch_size: int = 8  # clips per forward pass in the actor
    max_videos_in_flight: int = 8  # videos decoding or waiting for the model (bounds memory)
    perplexity: float = 30.0  # t-SNE perplexity (capped at (videos - 1) / 3)
    seed: int = 0  # t-SNE seed
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    overwrite: bool = False  # discard this job's earlier output in --output

    def __post_init__(self) -> None:
        if self.clips is not None and self.clips < 1:
            raise ValueError(f"clips must be >= 1, got {self.clips}")
        for name in ("batch_size", "max_videos_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.actor_cpus > 0 or not self.perplexity > 0:
            raise ValueError("actor_cpus and perplexity must be > 0")


def check_inputs(job: ExplainJobConfig):
    """The checks of `jobs.infer` (checkpoint, clips, videos), then the output folder is claimed.
    Returns (clip spec, plan); raises ConfigError with one line."""
    from pipeline.explain.outputs import MARKER, OWNED
    from pipeline.guard import claim_output
    from pipeline.infer.config import ClipOverrides, InferConfig, clip_config, plan_inference
    from pipeline.infer.inputs import check_checkpoint, check_clips, check_videos
    from pipeline.model.recipe import RecipeError, read_recipe

    model_cfg, ckpt = check_checkpoint(job.checkpoint)
    clips = job.clips or read_recipe(job.checkpoint, ckpt)[2]["clips"]  # uniform clips: --clips or the recipe's
    infer = InferConfig(clip=ClipOverrides(sampling="uniform", clips=clips, crops=1))
    check_clips(infer, model_cfg)
    try:
        plan = plan_inference(job.checkpoint, infer, ckpt=ckpt)
    except RecipeError as e:
        raise ConfigError(str(e)) from e
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--checkpoint: {e}") from e
    check_videos(job.videos)
    settings = {k: v for k, v in dataclasses.asdict(job).items()
                if k not in ("overwrite", "device", "actor_cpus", "ray_timeout_s")}
    claim_output(job.output, MARKER, settings, overwrite=job.overwrite, owned=OWNED, job="jobs.explain")
    return clip_config(infer, plan.resolved.values), plan


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code."""
    try:
        job, _ = parse_job(ExplainJobConfig, argv, prog="python -m jobs.explain", doc=__doc__, examples=EXAMPLES,
                           required=("checkpoint", "videos", "output"))
        spec, plan = check_inputs(job)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fixed = {k: v for k, v in plan.resolved.overrides.items() if k in ("sampling", "crops")}
    for warning in plan.warnings:
        if not warning.startswith(("--clip.sampling ", "--clip.crops ")):  # explain's own choice, noted below
            print(f"warning: {warning}", file=sys.stderr)
    if fixed:
        print("note: jobs.explain uses uniform clips and one centre crop (the checkpoint's recipe: "
              + ", ".join(f"{k}={v['recipe']}" for k, v in fixed.items()) + ")", file=sys.stderr)
    import ray

    from pipeline.explain.run import run_explain
    from pipeline.infer.inputs import list_videos

    try:
        items, bad_rows = list_videos(job.videos)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pipeline.raystart import connect

    try:
        connect(job.ray_timeout_s, job="jobs.explain")  # RAY_ADDRESS / the `ray start` cluster, else a local one
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    gpus = float(ray.cluster_resources().get("GPU", 0)) if job.device != "cpu" else 0.0
    device = job.device if job.device != "auto" else ("cuda" if gpus else "cpu")
    res = run_explain(job.checkpoint, items, bad_rows, job.output, spec, device=device, actor_cpus=job.actor_cpus,
                      actor_gpus=1.0 if device == "cuda" else 0.0, max_videos_in_flight=job.max_videos_in_flight,
                      batch_size=job.batch_size, perplexity=job.perplexity, seed=job.seed)
    storage.write_json(storage.join(job.output, "summary.json"), {
        "checkpoint": job.checkpoint, "videos": job.videos, "config": dataclasses.asdict(job),
        "clip_spec": dataclasses.asdict(spec), "recipe": plan.record(), "family": plan.family,
        "counts": {"videos": res.total, "ok": res.ok, "errors": res.errors}, "clips": res.clips,
        "silhouette": res.silhouette, "wall_s": res.wall_s})
    print(f"videos: {res.total} (ok {res.ok}, errors {res.errors}); clips {res.clips} in {res.wall_s:.1f} s")
    sil = "n/a (fewer than two labelled classes)" if res.silhouette is None else f"{res.silhouette:.3f}"
    print(f"silhouette of the features by label: {sil}")
    print(f"maps: {storage.join(job.output, 'maps')}; features: {storage.join(job.output, 'features.parquet')}; "
          f"t-SNE: {storage.join(job.output, 'tsne.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
