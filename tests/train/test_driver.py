"""Driver helpers: Ray Train storage, manifests of both splits (pipeline.train.driver)."""

from __future__ import annotations

import pyarrow.fs as pafs

from pipeline.config import from_dict
from pipeline.train.config import TrainJobConfig
from pipeline.train.driver import load_splits, ray_storage


def test_ray_storage_local_and_s3(tmp_path, s3_server):
    path, fs = ray_storage(str(tmp_path / "runs"))
    assert path == str(tmp_path / "runs") and fs is None
    path, fs = ray_storage("s3://bucket/runs")
    assert path == "bucket/runs" and isinstance(fs, pafs.S3FileSystem)


def test_howto100m_task_csvs_load_through_the_template(tmp_path):
    (tmp_path / "train.csv").write_text("vid_a,101\nvid_b,205\nvid_c,101\n")
    (tmp_path / "test.csv").write_text("vid_d,205\n")
    cfg = from_dict(TrainJobConfig, {"train_manifest": str(tmp_path / "train.csv"),
                                     "val_manifest": str(tmp_path / "test.csv"),
                                     "howto100m_template": "s3://bucket/howto100m/{video_id}.mp4"})
    train, val = load_splits(cfg)
    assert [r["path"] for r in train.rows] == [f"s3://bucket/howto100m/vid_{c}.mp4" for c in "abc"]
    assert train.rows[0]["label"] == train.rows[2]["label"] != train.rows[1]["label"]
    assert val.rows[0]["label"] == train.rows[1]["label"]  # one label map for both splits
