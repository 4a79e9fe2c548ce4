"""The videos to classify (a manifest or a folder/prefix of videos) and the class names (no Ray)."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from pipeline import storage
from pipeline.config import ConfigError
from pipeline.data.errors import error_text
from pipeline.infer.config import InferConfig
from pipeline.data.errors import error_row
from pipeline.infer.outputs import failed_row



def list_videos(videos_uri: str, howto100m_template: str | None = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input videos from a manifest file or a folder/prefix of videos.

    Returns (items `{video_id, uri, target, segments, start_sec, end_sec}`, error rows for bad
    manifest lines). A video id seen twice is an error row for the second one (its id gets a
    `#n` suffix, so no row shadows another). A folder's video ids are paths relative to it,
    without the extension. `howto100m_template` reads a HowTo100M task CSV
    (`video_id,task_id`) with paths such as `s3://bucket/howto100m/{video_id}.mp4`.
    """
    from pipeline.data.manifest import TABLE_SUFFIXES, VIDEO_SUFFIXES, load_manifest

    errors: list[dict[str, Any]] = []
    if howto100m_template or videos_uri.lower().rstrip("/").endswith(TABLE_SUFFIXES):
        man = load_manifest(videos_uri, howto100m_template=howto100m_template)
        items = [{"video_id": str(r["video_id"]), "uri": r["path"], "target": r.get("label_name"),
                  "segments": r.get("segments"), "start_sec": r.get("start_sec"), "end_sec": r.get("end_sec")}
                 for r in man.rows]
        for e in man.errors:
            errors.append(failed_row(_stem(e["uri"]), error_row(e["uri"], e["stage"], e["error"])))
    else:
        root = storage.filesystem(videos_uri)[1].rstrip("/")
        items = []
        for uri in storage.list_files(videos_uri, VIDEO_SUFFIXES):
            rel = storage.filesystem(uri)[1][len(root):].lstrip("/")
            # a folder's videos: their paths inside it; one video file: its name
            items.append({"video_id": posixpath.splitext(rel)[0] or _stem(uri), "uri": uri, "target": None})
        if not items and not storage.exists(videos_uri):
            raise FileNotFoundError(f"--videos: nothing at {videos_uri}")
    seen: set[str] = set()
    unique = []
    for it in items:
        if it["video_id"] in seen:
            errors.append(failed_row(it["video_id"], error_row(it["uri"], "manifest",
                                                                f"duplicate video_id {it['video_id']!r}")))
            continue
        seen.add(it["video_id"])
        unique.append(it)
    bad = []
    for e in errors:  # one row per id: an id already taken gets a #n suffix
        e["video_id"] = _unique_id(e["video_id"], seen)
        seen.add(e["video_id"])
        bad.append(e)
    return unique, bad


def _unique_id(video_id: str, seen: set[str]) -> str:
    """`video_id`, or `video_id#2`, `#3`, ... when it is taken."""
    n, out = 2, video_id
    while out in seen:
        out, n = f"{video_id}#{n}", n + 1
    return out


def _stem(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0] or uri


def read_label_names(labels_uri: str | None, checkpoint: str, num_classes: int,
                     recorded: list[str] | None = None) -> list[str]:
    """Class names: the given labels file, else the names the checkpoint records (`recorded`),
    else `labels.json` beside the checkpoint, else ids."""
    from pipeline.data.manifest import LABELS_FILE, read_labels

    if not labels_uri and recorded and len(recorded) == num_classes:
        return [str(n) for n in recorded]
    candidates = [labels_uri] if labels_uri else [_sibling(checkpoint, LABELS_FILE)]
    for uri in candidates:
        if uri and storage.exists(uri):
            names = list(read_labels(uri).names)
            if len(names) != num_classes:
                raise ValueError(f"{uri}: {len(names)} labels for a model with {num_classes} classes")
            return names
        if labels_uri:
            raise FileNotFoundError(f"labels file not found: {labels_uri}")
    return [str(i) for i in range(num_classes)]


def _sibling(uri: str, name: str) -> str:
    if storage.is_local(uri) and not uri.startswith("file://"):
        return os.path.join(os.path.dirname(os.path.abspath(uri)), name)
    return uri.rsplit("/", 1)[0] + "/" + name


def check_checkpoint(uri: str) -> tuple[Any, dict[str, Any]]:
    """(model config, checkpoint dict) of the checkpoint at `uri`, read once on the driver before
    any Ray work (raises ConfigError with one line when it is missing, not a checkpoint, or holds a
    bad config)."""
    from pipeline.model import model_config, read_checkpoint

    try:
        found = storage.exists(uri)
        ckpt = read_checkpoint(uri) if found else None
    except ValueError as e:  # read, but not our format (the message names the file)
        raise ConfigError(f"--checkpoint {error_text(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - unreadable: truncated, not a torch file, no access
        raise ConfigError(f"--checkpoint {uri}: not a readable torch checkpoint ({type(e).__name__})") from None
    if ckpt is None:
        raise ConfigError(f"--checkpoint {uri}: not found")
    try:
        return model_config(ckpt["family"], ckpt["config"]), ckpt
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--checkpoint {uri}: bad model config ({error_text(e)})") from None


def check_clips(cfg: InferConfig, model_cfg: Any) -> None:
    """ConfigError when the clips `cfg` asks for cannot go through the model (e.g. a crop that is
    not a multiple of its patch size)."""
    from pipeline.model import check_clip_shape

    frames = cfg.clip.num_frames or model_cfg.num_frames
    crop = cfg.clip.crop_size or model_cfg.image_size
    try:
        check_clip_shape(model_cfg, frames, crop)
    except ValueError as e:
        raise ConfigError(f"--clip.num-frames / --clip.crop-size: {e}") from None


def check_videos(uri: str, howto100m_template: str | None = None) -> None:
    """ConfigError when `--videos` names nothing, or is a manifest that cannot be read or has no
    usable row (a folder is only checked to exist: listing it is the run's work)."""
    from pipeline.data.manifest import TABLE_SUFFIXES, load_manifest

    if not storage.exists(uri):
        raise ConfigError(f"--videos {uri}: not found")
    if not (howto100m_template or uri.lower().rstrip("/").endswith(TABLE_SUFFIXES)):
        return
    try:
        man = load_manifest(uri, howto100m_template=howto100m_template)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--videos {uri}: {error_text(e)}") from None
    if not man.rows:
        first = f"; first: {man.errors[0]['error']}" if man.errors else ""
        raise ConfigError(f"--videos {uri}: no usable rows ({len(man.errors)} bad{first})")
