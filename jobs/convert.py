"""Convert official / Hugging Face / timm weights into this package's checkpoint format.

Writes the checkpoint (`pipeline.model/1`, loadable with `pipeline.model.load`) and, beside it,
`summary.json` with the load report (every resized / derived / fresh / dropped key) and the config;
`labels.json` is copied beside it when `--labels` is given. TimeSformer presets take `official`,
`hf` (state dict, safetensors or save_pretrained folder) and `timm` weights; ViViT presets `hf`
(HF ViViT is Model 1: use a preset / `--set overrides.model=1` that matches). A checkpoint that
does not fit the model exits with status 1 and the list of offending keys; nothing is written then.
Checkpoint layouts and what is resized: docs/WEIGHTS.md.
"""

from __future__ import annotations

import dataclasses
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any

from pipeline.cli import parse_job
from pipeline.config import ConfigError

SOURCES = ("official", "hf", "timm")
EXAMPLES = """examples:
  python -m jobs.convert --source official --input TimeSformer_divST_8x32_224_K400.pyth \\
      --preset timesformer_base --output s3://bucket/models/k400/model.pt
  python -m jobs.convert --source timm --input vit_base_patch16_224.pt --preset timesformer_l \\
      --num-frames 96 --num-classes 1059 --output models/howto100m_init.pt
  python -m jobs.convert --source hf --input hf_folder/ --preset debug --set overrides.attention=joint --output m.pt"""


@dataclass
class ConvertConfig:
    source: str = ""  # layout of the input weights: official, hf or timm (required)
    input: str = ""  # path or URI of the input weights (required)
    output: str = ""  # path or URI of the converted checkpoint (required)
    preset: str = "timesformer_base"  # model preset (pipeline.model.presets())
    labels: str = ""  # labels.json to store in the checkpoint and copy beside it
    num_frames: int | None = None  # target frames (time_embed resampled, reported)
    image_size: int | None = None  # target image size (pos_embed resampled on the 2-D grid)
    num_classes: int | None = None  # target classes (a head of another size is re-initialised)
    attention: str | None = None  # TimeSformer attention scheme (divided, joint, space_only, ...)
    overrides: dict[str, Any] = field(default_factory=dict)  # any model config field, e.g. --set overrides.drop_path_rate=0.1


def model_overrides(cfg: ConvertConfig) -> dict[str, Any]:
    """`overrides` plus the named shortcuts (num_frames, image_size, num_classes, attention)."""
    out = dict(cfg.overrides)
    for name in ("num_frames", "image_size", "num_classes", "attention"):
        if getattr(cfg, name) is not None:
            out[name] = getattr(cfg, name)
    return out


def validate(cfg: ConvertConfig) -> None:
    """Checks the schema cannot express (raises ConfigError)."""
    if cfg.source not in SOURCES:
        raise ConfigError(f"--source: must be one of {list(SOURCES)}, got {cfg.source!r}")


def convert(source: str, input_uri: str, preset: str, overrides: dict, output_uri: str,
            labels_uri: str | None = None) -> dict:
    """Load `input_uri` strictly into `preset` (+ `overrides`), save it; returns the summary."""
    from pipeline import storage
    from pipeline.model import create, save
    from pipeline.model.weights import load_weights, sources

    model = create(preset, **overrides)
    known = [s for s in sources(model.family) if s in SOURCES]  # `ours` is already this format
    if source not in known:
        raise ValueError(f"preset {preset!r} is a {model.family} model: --source must be one of {known}")
    state, report = load_weights(model, source, input_uri)
    model.load_state_dict(state)  # strict
    labels = storage.read_json(labels_uri) if labels_uri else None
    meta = {"converted_from": input_uri, "source_layout": source}
    if labels is not None:
        meta["labels"] = labels
    save(model, output_uri, **meta)
    folder = posixpath.dirname(output_uri.rstrip("/"))
    summary = {"input": input_uri, "source": source, "preset": preset, "output": output_uri,
               "config": dataclasses.asdict(model.config), "report": report.as_dict()}
    storage.write_json(storage.join(folder, "summary.json") if folder else "summary.json", summary)
    if labels is not None:
        storage.write_json(storage.join(folder, "labels.json") if folder else "labels.json", labels)
    print(report)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 written, 1 the weights do not fit the model, 2 bad arguments."""
    try:
        cfg, _ = parse_job(ConvertConfig, argv, prog="python -m jobs.convert", doc=__doc__, examples=EXAMPLES,
                           required=("source", "input", "output"))
        validate(cfg)
    except ConfigError as e:
        print(f"convert: {e}", file=sys.stderr)
        return 2
    from pipeline.model.weights import WeightError

    try:
        convert(cfg.source, cfg.input, cfg.preset, model_overrides(cfg), cfg.output, cfg.labels or None)
    except (WeightError, ValueError, FileNotFoundError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
