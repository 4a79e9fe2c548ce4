"""`jobs.infer` refuses user errors before Ray starts (one line, exit 2, nothing written), and
never writes outside `--output` or into another job's output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.infer import main
from pipeline import storage
from pipeline.config import ConfigError
from pipeline.infer import ClipOverrides, InferConfig
from pipeline.guard import claim_output as guard_claim
from pipeline.infer.outputs import MARKER, MARKER_FLAGS, OWNED, plot_uri, run_settings


@pytest.fixture()
def inputs(tmp_path, untrained_ckpt):
    """(checkpoint, manifest, output) of a job that would run."""
    man = tmp_path / "m.csv"
    man.write_text("path,video_id\n/nowhere/a.mp4,a\n")
    return untrained_ckpt, str(man), str(tmp_path / "out")


@pytest.mark.parametrize("extra, text", [
    (["--clip.crop-size", "30"], "--clip.num-frames / --clip.crop-size: clips of 4 x 30 px do not fit"),
    (["--clip.crop-size", "30"], "not divisible by patch_size 8"),  # the debug model's patch is 8  # the debug model's patch is 8
    (["--min-actors", "0"], "--min-actors must be >= 1"),
    (["--actors", "-1"], "--actors must be >= 0"),
    (["--decode-num-cpus", "0"], "--decode-num-cpus must be > 0"),
    (["--actor-cpus", ".nan"], "actor_cpus: must be a finite number"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--labels", "/nowhere/labels.json"], "--labels /nowhere/labels.json: not found"),
])
def test_bad_settings_exit_2_in_one_line(user_error, inputs, extra, text):
    ckpt, man, out = inputs
    user_error(main, ["--checkpoint", ckpt, "--videos", man, "--output", out, *extra], text)


def test_missing_and_corrupt_checkpoints_exit_2_before_ray(user_error, inputs, tmp_path):
    import torch

    _, man, out = inputs
    user_error(main, ["--checkpoint", tmp_path / "none.pt", "--videos", man, "--output", out], "not found")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint" * 64)
    user_error(main, ["--checkpoint", tmp_path / "garbage.pt", "--videos", man, "--output", out],
               "not a readable torch checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    user_error(main, ["--checkpoint", tmp_path / "plain.pt", "--videos", man, "--output", out],
               "not a pipeline.model/1 checkpoint")
    torch.save({"format": "pipeline.model/1", "family": "timesformer", "config": {"nosuch": 1},
                "state_dict": {}, "meta": {}}, tmp_path / "badconfig.pt")
    user_error(main, ["--checkpoint", tmp_path / "badconfig.pt", "--videos", man, "--output", out],
               "bad model config")
    user_error(main, ["--checkpoint", inputs[0], "--videos", tmp_path / "none.csv", "--output", out],
               "--videos")
    (tmp_path / "noise.csv").write_bytes(bytes(range(256)) * 4)
    user_error(main, ["--checkpoint", inputs[0], "--videos", tmp_path / "noise.csv", "--output", out],
               "--videos")
    (tmp_path / "nopath.jsonl").write_text('{"video": 1}\n')
    user_error(main, ["--checkpoint", inputs[0], "--videos", tmp_path / "nopath.jsonl", "--output", out],
               "no usable rows")


def test_refuses_another_jobs_output_folder(user_error, inputs, tmp_path):
    """A preprocess output (its labels.json would be rewritten in another id order) is refused."""
    ckpt, man, _ = inputs
    pre = tmp_path / "shards"
    (pre / "_progress").mkdir(parents=True)
    (pre / "_progress" / "config.json").write_text("{}")
    (pre / "labels.json").write_text(json.dumps({"names": ["z", "y", "x", "w"]}))
    user_error(main, ["--checkpoint", ckpt, "--videos", man, "--output", pre], "did not write")


def claim_output(out, checkpoint, videos, cfg, *, overwrite):
    """What jobs.infer does with its output folder before Ray starts."""
    guard_claim(out, MARKER, run_settings(checkpoint, videos, cfg), overwrite=overwrite, owned=OWNED, job="jobs.infer",
                flags=MARKER_FLAGS)


def test_same_settings_resume_other_settings_are_refused(s3_bucket):
    out = f"s3://{s3_bucket}/preds"
    cfg = InferConfig(clip=ClipOverrides(sampling="uniform", clips=2))
    claim_output(out, "m.pt", "v.csv", cfg, overwrite=False)
    faster = InferConfig(clip=ClipOverrides(sampling="uniform", clips=2, clips_per_decode=2), batch_size=3)
    claim_output(out, "m.pt", "v.csv", faster, overwrite=False)  # throughput settings may change on a rerun
    storage.write_bytes_atomic(storage.join(out, "parts", "part-x.parquet"), b"old")
    three = InferConfig(clip=ClipOverrides(sampling="uniform", clips=3))
    with pytest.raises(ConfigError, match=r"differs in --clip\.clips \(2 there, 3 now\)"):
        claim_output(out, "m.pt", "v.csv", three, overwrite=False)
    claim_output(out, "m.pt", "v.csv", three, overwrite=True)
    assert not storage.exists(storage.join(out, "parts"))  # the earlier run's rows are gone
    storage.write_bytes_atomic(f"s3://{s3_bucket}/other/labels.json", b"{}")
    with pytest.raises(ConfigError, match="did not write"):
        claim_output(f"s3://{s3_bucket}/other", "m.pt", "v.csv", cfg, overwrite=False)


BAD_IDS = ["../../../x/victim", "/etc/passwd", "a/../../b", "..", ".", "", "/", "sub/./../..",
           "c:\\windows\\x", "name with spaces?*<>|\"'", "\x1b[31mred", "é/ü", "a" * 600, ".hidden"]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_plot_names_stay_inside_the_output(kind, tmp_path, request):
    out = str(tmp_path / "out") if kind == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/out"
    plots = storage.join(out, "plots") + "/"
    uris = [plot_uri(out, vid) for vid in BAD_IDS]
    assert len(set(uris)) == len(BAD_IDS)  # different ids never share a file
    for vid, uri in zip(BAD_IDS, uris):
        assert uri.startswith(plots) and "/../" not in uri and "/./" not in uri and uri.endswith(".png"), vid
        assert all(0 < len(seg) <= 120 and not seg.startswith(".") for seg in uri[len(plots):].split("/")), vid
        if kind == "local":
            assert str(Path(uri).resolve()).startswith(str(Path(out).resolve()) + "/")
    assert plot_uri(out, "sub/clip2") == storage.join(out, "plots", "sub", "clip2.png")  # plain ids unchanged


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_plots_of_hostile_ids_land_inside_the_output(kind, ray_local, untrained_ckpt, short_videos, tmp_path,
                                                     request, file_snapshot):
    """A real `--plot` run over ids with `..`, an absolute path and odd characters."""
    _files = file_snapshot
    ids = ["../../../x/victim", "/abs/evil", "odd name?*<\x1b[31m>"]
    victim = tmp_path / "a" / "x" / "victim.png"  # where plots/../../../x/victim.png would land
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"keep")
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps({"path": p, "video_id": v}) + "\n" for p, v in zip(short_videos, ids)))
    if kind == "local":
        out = str(tmp_path / "a" / "b" / "out")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        out = f"s3://{bucket}/a/b/out"
    before = _files(tmp_path)
    assert main(["--checkpoint", untrained_ckpt, "--videos", str(man), "--output", out, "--plot",
                 "--clip.sampling-rate", "8", "--clip.short-side", "32", "--clip.crop-size", "32"]) == 0
    assert victim.read_bytes() == b"keep"
    new = set(_files(tmp_path)) - set(before)
    assert all(p.startswith(out + "/") for p in new) if kind == "local" else not new
    written = storage.list_files(out)
    pngs = [u for u in written if u.endswith(".png")]
    assert len(pngs) == 3 and all(u.startswith(storage.join(out, "plots") + "/") for u in pngs)
    assert all(storage.read_bytes(u)[:4] == b"\x89PNG" for u in pngs)
    if kind == "s3":
        import boto3

        keys = [o.key for o in boto3.resource("s3").Bucket(bucket).objects.all()]
        assert keys and all(k.startswith("a/b/out/") and "/../" not in k and "/./" not in k for k in keys)
