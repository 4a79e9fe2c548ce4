"""Convert official / Hugging Face / timm weights into this package's checkpoint format.

    python -m jobs.convert --source official --input TimeSformer_divST_8x32_224_K400.pyth \\
        --preset timesformer_base --output s3://bucket/models/k400/model.pt
    python -m jobs.convert --source timm --input vit_base_patch16_224.pt --preset timesformer_l \\
        --num-frames 96 --num-classes 1059 --output models/howto100m_init.pt

Writes the checkpoint (`pipeline.model/1`, loadable with `pipeline.model.load`) and, beside it,
`summary.json` with the load report (every resized / derived / fresh / dropped key) and the config;
`labels.json` is copied beside it when `--labels` is given. TimeSformer presets take `official`,
`hf` (state dict, safetensors or save_pretrained folder) and `timm` weights; ViViT presets `hf`
(HF ViViT is Model 1: use a preset / `--set model=1` that matches). A checkpoint that does not fit the
model exits with status 1 and the list of offending keys; nothing is written then.
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
import sys

import yaml

SOURCES = ("official", "hf", "timm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=SOURCES, required=True, help="layout of the input weights")
    p.add_argument("--input", required=True, help="path or URI of the input weights")
    p.add_argument("--preset", default="timesformer_base", help="model preset (pipeline.model.presets())")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config field override, e.g. num_classes=1059 (repeatable)")
    p.add_argument("--num-frames", type=int, help="target frames (time_embed resampled, reported)")
    p.add_argument("--image-size", type=int, help="target image size (pos_embed resampled on the 2-D grid)")
    p.add_argument("--num-classes", type=int, help="target classes (a head of another size is re-initialised)")
    p.add_argument("--attention", help="TimeSformer attention scheme (divided, joint, space_only, ...)")
    p.add_argument("--labels", default=None, help="labels.json to store in the checkpoint and copy beside it")
    p.add_argument("--output", required=True, help="path or URI of the converted checkpoint")
    return p.parse_args(argv)


def _overrides(items: list[str], args: argparse.Namespace | None = None) -> dict:
    """`--set FIELD=VALUE` items plus the named shortcuts (--num-frames, ...) as config fields."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    for field in ("num_frames", "image_size", "num_classes", "attention"):
        value = getattr(args, field, None) if args is not None else None
        if value is not None:
            out[field] = value
    return out


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
    args = parse_args(argv)
    from pipeline.model.weights import WeightError

    try:
        convert(args.source, args.input, args.preset, _overrides(args.overrides, args), args.output, args.labels)
    except (WeightError, ValueError, FileNotFoundError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
