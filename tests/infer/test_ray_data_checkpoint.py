"""Why inference resumes from its own part files rather than Ray Data's job-level checkpointing.

`DataContext.checkpoint_config = CheckpointConfig(id_column=...)` records the ids its write has
stored and drops them from the input of the next run. It stores every written row's id, error
rows included, so a video that failed for a transient reason (a storage outage) would never be
tried again: shown here on a real local Ray (the other reasons are in docs/RAY.md, "Inference").
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture()
def checkpointing(tmp_path):
    import ray
    from ray.data.checkpoint import CheckpointConfig

    ctx = ray.data.DataContext.get_current()
    old = ctx.checkpoint_config
    ctx.checkpoint_config = CheckpointConfig(id_column="video_id", checkpoint_path=str(tmp_path / "ckpt"),
                                             delete_checkpoint_on_success=False)
    yield ctx
    ctx.checkpoint_config = old


def _classifier():
    def classify(batch):  # defined here, so that Ray ships it by value to its workers
        batch["status"] = ["error" if v == "v1" else "ok" for v in batch["video_id"]]  # v1: storage down
        return batch

    return classify


def test_a_failed_row_is_checkpointed_and_never_tried_again(ray_local, checkpointing, tmp_path):
    import ray

    pq.write_table(pa.table({"video_id": ["v0", "v1", "v2", "v3"]}), tmp_path / "videos.parquet")
    for run in ("first", "rerun"):
        ds = ray.data.read_parquet(str(tmp_path / "videos.parquet")).map_batches(_classifier(), batch_format="pandas")
        ds.write_parquet(str(tmp_path / run))
    first = pq.read_table(tmp_path / "first").to_pylist()
    assert {r["video_id"]: r["status"] for r in first}["v1"] == "error"
    rerun = pq.read_table(tmp_path / "rerun").to_pylist() if any((tmp_path / "rerun").glob("*.parquet")) else []
    assert "v1" not in {r["video_id"] for r in rerun}  # the error row's id was checkpointed: not retried
