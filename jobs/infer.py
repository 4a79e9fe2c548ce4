"""Classify long videos: cover each with clips, score them on model actors, aggregate.

`--videos` is a manifest (csv/tsv/jsonl/json/parquet) or a folder/prefix of videos. Outputs
under `--output`: `predictions.parquet` (+ `.jsonl` with `--jsonl`), `parts/`, `errors.parquet`,
`summary.json`, `labels.json`, `plots/` (with `--plot`). A rerun skips videos already done.
Exit 0 even when some videos failed (they are error rows); 2 for bad arguments.

Clip settings (--clip.num-frames, --clip.sampling-rate, --clip.short-side, --clip.crop-size,
--clip.crops; also `--set clip.num_frames=16` or a `clip:` mapping in --config) default to the
recipe recorded in the checkpoint (what the model was trained or published with). A flag that
differs from it is used, printed as a warning and recorded in summary.json; a frame count the
model would have to resample its time embedding for needs --allow-resample. How a video is
covered is the job's: --clip.sampling cover (the default: clips over the whole video) or uniform
with --clip.clips K; --clip.sampling null takes the recipe's eval protocol.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

from pipeline import storage
from pipeline.cli import parse_job
from pipeline.config import ConfigError
from pipeline.infer.config import InferConfig

EXAMPLES = """examples:
  python -m jobs.infer --checkpoint s3://b/run/model.pt --videos s3://b/howto100m/test.csv \\
      --output s3://b/preds --clip.sampling cover --clip.crops 3 --plot
  python -m jobs.infer --checkpoint model.pt --videos videos/ --output preds --clip.sampling uniform --clip.clips 4"""


@dataclass
class InferJobConfig(InferConfig):
    """What `jobs.infer` takes: where the model, videos and outputs are, and the InferConfig."""

    checkpoint: str = ""  # model checkpoint URI, pipeline.model format (required)
    videos: str = ""  # manifest file, or a folder/prefix of videos (required)
    output: str = ""  # output folder URI (required)
    howto100m_template: str = ""  # read --videos as a HowTo100M task CSV; paths like s3://b/howto100m/{video_id}.mp4
    # auto: GPU actors on CUDA whenever the cluster has or can add GPU nodes, else CPU actors; cpu: CPU
    # actors (with --actor-gpus N they still take N GPU slots each but compute on the CPU: fake GPUs).
    device: Literal["auto", "cpu", "cuda"] = "auto"  # model actors' device (auto: cuda when the cluster has or can add GPUs)
    ray_timeout_s: float = 60.0  # give up (exit 2) when the Ray to join does not answer within this
    overwrite: bool = False  # discard this job's earlier output in --output (another config's, or into a folder of other files)

    def infer_config(self) -> InferConfig:
        """The InferConfig part of the job's config."""
        fields = InferConfig.__dataclass_fields__
        return InferConfig(**{k: getattr(self, k) for k in fields})


def check_inputs(job: InferJobConfig):
    """Everything checkable before Ray starts, in order: the checkpoint, the clips it can take
    (its recipe under the flags given), the videos; then the output folder is claimed for this
    run. Returns the inference plan; raises ConfigError with one line."""
    from pipeline.infer import plan_inference
    from pipeline.infer.inputs import check_checkpoint, check_clips, check_videos
    from pipeline.guard import claim_output
    from pipeline.infer.outputs import MARKER, MARKER_FLAGS, OWNED, run_settings
    from pipeline.model.recipe import RecipeError

    model_cfg, ckpt = check_checkpoint(job.checkpoint)  # the one read of the checkpoint on the driver
    check_clips(job.infer_config(), model_cfg)
    try:
        plan = plan_inference(job.checkpoint, job.infer_config(), ckpt=ckpt)
    except RecipeError as e:
        raise ConfigError(str(e)) from e
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--checkpoint: {e}") from e
    check_videos(job.videos, job.howto100m_template or None)
    if job.labels and not storage.exists(job.labels):
        raise ConfigError(f"--labels {job.labels}: not found")
    claim_output(job.output, MARKER, run_settings(job.checkpoint, job.videos, job.infer_config(),
                                                  job.howto100m_template),
                 overwrite=job.overwrite, owned=OWNED, job="jobs.infer", flags=MARKER_FLAGS)
    return plan


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code (0 also when some videos are error rows)."""
    try:
        job, _ = parse_job(InferJobConfig, argv, prog="python -m jobs.infer", doc=__doc__, examples=EXAMPLES,
                           required=("checkpoint", "videos", "output"))
        plan = check_inputs(job)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    from pipeline.infer import run_inference

    from pipeline.raystart import connect

    try:
        connect(job.ray_timeout_s, job="jobs.infer")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        res = run_inference(job.checkpoint, job.videos, job.output, job.infer_config(), device=job.device,
                            howto100m_template=job.howto100m_template or None, plan=plan)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"videos: {res.total} (ok {res.ok}, errors {res.errors}, skipped as already done "
          f"{res.skipped}); clips scored {res.clips} in {res.wall_s:.1f} s on {res.actors_seen} model "
          f"actor(s) ({res.num_gpus:g} GPU each, pool up to {res.max_actors}); actor idle {res.actor_idle:.0%}")
    if res.top1 is not None and res.ok:
        print(f"top-1 accuracy against the manifest's labels: {res.top1:.3f}")
    print(f"predictions: {res.predictions}")
    if res.errors:
        from pipeline.data.errors import error_kinds

        errors_uri = storage.join(res.output, "errors.parquet")
        for line in error_kinds(storage.read_parquet(errors_uri).to_pylist()):
            print(f"  {line}")
        print(f"errors: {errors_uri} (a storage, worker or model error is retried by the same command again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
