"""Convert official / Hugging Face / timm weights into this package's checkpoint format, or a
checkpoint into a Hugging Face `save_pretrained` folder (`--to hf`).

Writes the checkpoint (`pipeline.model/1`, loadable with `pipeline.model.load`) and, beside it,
`summary.json` with the load report (every resized / dropped / fresh key), the config and the clip
recipe; `labels.json` is copied beside it when `--labels` is given. TimeSformer presets take
`official`, `hf` (state dict, safetensors or save_pretrained folder) and `timm` weights; ViViT `hf`
(Model 1). A Hugging Face folder needs no preset: geometry, attention type, layer-norm eps and the
class names (`id2label`) come from its config.json. `ours` re-fits one of our checkpoints (resized
to the flags) or, with `--to hf`, exports it. A checkpoint that does not fit the model exits with
status 1 and the list of offending keys; nothing is written then. Checkpoint layouts: docs/WEIGHTS.md.

The checkpoint records the clip recipe the weights expect (`pipeline.model.recipe`), which
`jobs.infer` defaults to: frames and crop are the model's num_frames / image_size; the sampling
rate, short side and eval protocol come from the flags below, else from an input checkpoint of ours
that has a recipe, else the defaults (rate 32, short side = crop, 1 uniform clip x 1 crop).
"""

from __future__ import annotations

import dataclasses
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.cli import parse_job
from pipeline.config import ConfigError

SOURCES = ("official", "hf", "timm", "ours")
RECIPE_FLAGS = ("sampling_rate", "short_side", "sampling", "clips", "crops")
EXAMPLES = """examples:
  python -m jobs.convert --source official --input TimeSformer_divST_8x32_224_K400.pyth \\
      --preset timesformer_base --sampling-rate 32 --crops 3 --output s3://bucket/models/k400/model.pt
  python -m jobs.convert --source timm --input vit_base_patch16_224.pt --preset timesformer_l \\
      --num-frames 96 --num-classes 1059 --output models/howto100m_init.pt
  python -m jobs.convert --source hf --input timesformer-base-finetuned-k400/ --output m.pt
  python -m jobs.convert --source ours --input runs/debug/model.pt --to hf --output hf_debug/"""


@dataclass
class ConvertConfig:
    source: str = ""  # layout of the input weights: official, hf, timm or ours (required)
    input: str = ""  # path or URI of the input weights (required)
    output: str = ""  # path or URI of the converted checkpoint, or of the folder with --to hf (required)
    to: Literal["ours", "hf"] = "ours"  # output: our checkpoint, or a Hugging Face save_pretrained folder
    preset: str = ""  # model preset (pipeline.model.presets()); default: config.json for hf, the checkpoint's for ours, else timesformer_base
    labels: str = ""  # labels.json to store in the checkpoint and copy beside it
    num_frames: int | None = None  # target frames (time_embed resampled, reported)
    image_size: int | None = None  # target image size (pos_embed resampled on the 2-D grid)
    num_classes: int | None = None  # target classes (a head of another size is re-initialised)
    attention: str | None = None  # TimeSformer attention scheme (divided, joint, space_only, ...)
    overrides: dict[str, Any] = field(default_factory=dict)  # any model config field, e.g. --set overrides.drop_path_rate=0.1
    sampling_rate: int | None = None  # recipe: source frames between sampled frames at 30 fps (None: the input's recipe, else 32)
    short_side: int | None = None  # recipe: val/test short side before cropping (None: the input's recipe, else the image size)
    sampling: Literal["uniform", "cover"] | None = None  # recipe: eval clips evenly spaced or covering the video (None: input's, else uniform)
    clips: int | None = None  # recipe: eval clips per video (None: input's, else 1)
    crops: Literal[1, 3] | None = None  # recipe: eval crops per clip (None: input's, else 1)


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
    for name in ("sampling_rate", "short_side", "clips"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(cfg, name)}")
    from pipeline import storage

    try:
        found = storage.exists(cfg.input)
    except Exception as e:  # noqa: BLE001 - credentials, endpoint, permissions: the user's to fix
        raise ConfigError(f"--input {cfg.input}: cannot read ({type(e).__name__}: {e})") from None
    if not found:
        raise ConfigError(f"--input {cfg.input}: not found")


def build_target(cfg: ConvertConfig) -> tuple[Any, dict[str, Any] | None, list[str] | None]:
    """(model to load into, the input's recipe or None, the input's class names or None).

    The model: `--preset` (+ overrides) when given, else an HF folder's config.json, our input
    checkpoint's config, or timesformer_base (+ overrides)."""
    from pipeline import model as models
    from pipeline.model.recipe import checkpoint_recipe
    from pipeline.model.weights import WeightError, hf_folder_config

    overrides = model_overrides(cfg)
    base = labels = hf = ckpt = None
    if cfg.source == "hf":
        try:
            hf = hf_folder_config(cfg.input, **overrides)
            labels = hf[2]
        except WeightError:
            if not cfg.preset:
                raise
    if cfg.source == "ours":
        ckpt = models.read_checkpoint(cfg.input)
        recipe, notes = checkpoint_recipe(ckpt)
        base, labels = (None if notes else recipe), recipe.get("labels")
    if cfg.preset:
        model = models.create(cfg.preset, **overrides)
    elif hf is not None:
        model = models.build(hf[0], dataclasses.asdict(hf[1]))
    elif ckpt is not None:
        model = models.build(ckpt["family"], {**ckpt["config"], **overrides})
    else:
        model = models.create("timesformer_base", **overrides)
    return model, base, labels


def recipe_of(cfg: ConvertConfig, model: Any, base: dict[str, Any] | None, labels: list[str] | None) -> dict:
    """The recipe recorded with the converted model: the flags, else `base` (the input's), else
    the defaults; frames and crop are the model's."""
    from pipeline.model.recipe import make_recipe

    mc = model.config
    same_crop = base is not None and base["crop_size"] == mc.image_size
    clip = {"num_frames": mc.num_frames, "crop_size": mc.image_size,
            "short_side": base["short_side"] if same_crop else None}
    for name in ("sampling_rate", "sampling", "clips", "crops"):
        if base is not None:
            clip[name] = base[name]
    clip.update({k: getattr(cfg, k) for k in RECIPE_FLAGS if getattr(cfg, k) is not None})
    return make_recipe(clip, mc, labels=labels)


def convert(cfg: ConvertConfig) -> dict:
    """Load `cfg.input` strictly into the target model, save it (ours or an HF folder); returns the summary."""
    from pipeline import storage
    from pipeline.data.manifest import read_labels
    from pipeline.model import save
    from pipeline.model.weights import export_hf, load_weights, sources

    model, base, labels = build_target(cfg)
    known = [s for s in sources(model.family) if s in SOURCES]
    if cfg.source not in known:
        what = f"preset {cfg.preset!r}" if cfg.preset else "the model"
        raise ValueError(f"{what} is a {model.family} model: --source must be one of {known}")
    state, report = load_weights(model, cfg.source, cfg.input)
    model.load_state_dict(state)  # strict
    labels_json = storage.read_json(cfg.labels) if cfg.labels else None
    if cfg.labels:
        labels = list(read_labels(cfg.labels).names)
    if labels is not None and len(labels) != model.config.num_classes:
        labels = None  # a new head: the input's names no longer apply
    recipe = recipe_of(cfg, model, base, labels)
    summary = {"input": cfg.input, "source": cfg.source, "to": cfg.to, "preset": cfg.preset or None,
               "output": cfg.output, "config": dataclasses.asdict(model.config), "recipe": recipe,
               "report": report.as_dict()}
    if cfg.to == "hf":
        export_hf(model, cfg.output, labels)
        storage.write_json(storage.join(cfg.output, "summary.json"), summary)
    else:
        meta = {"converted_from": cfg.input, "source_layout": cfg.source, "recipe": recipe}
        if labels_json is not None:
            meta["labels"] = labels_json
        save(model, cfg.output, **meta)
        folder = posixpath.dirname(cfg.output.rstrip("/"))
        storage.write_json(storage.join(folder, "summary.json") if folder else "summary.json", summary)
        if labels_json is not None:
            storage.write_json(storage.join(folder, "labels.json") if folder else "labels.json", labels_json)
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
        convert(cfg)
    except (WeightError, ValueError, FileNotFoundError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
