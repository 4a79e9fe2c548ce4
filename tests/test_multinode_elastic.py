"""Elastic training on a real multi-node Ray (`ray.cluster_utils.Cluster`), slow: [1, 2] workers,
each needing a `trainer` slot, on a cluster of its own (a head with 0 CPUs, two 1-CPU nodes for
decode tasks, two 1-slot nodes), so that no earlier job's resource requests linger in the
cluster's autoscaling coordinator, from which Ray Train sizes an elastic group.

Once Ray Train has registered a checkpoint of the group of two, a worker's node goes -> the run
goes on with one worker (no replacement node exists), grows back to two when a slot node is
added, and consumes each clip of each epoch once.
"""

from __future__ import annotations

import pytest

from test_multinode import _run, new_cluster

pytestmark = pytest.mark.slow
SLOT = {"num_cpus": 1, "resources": {"trainer": 1}, "object_store_memory": 150 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster()
    yield c
    c.shutdown()


@pytest.mark.timeout(700)
def test_elastic_training_loses_a_node_goes_on_with_one_worker_and_grows_back(cluster, tmp_path):
    """Each clip of each epoch is consumed once (the records of the steps each attempt kept)."""
    added = [cluster.add_node(**SLOT) for _ in range(2)]
    cluster.wait_for_nodes()
    r = _run(cluster, "train_elastic", tmp_path, timeout=600, node_args=SLOT, added=added,
             workers=4)  # the two slot nodes and two CPU nodes
    worlds = [w for _, w in r["starts"]]
    assert worlds[:2] == [2, 1] and worlds[-1] == 2, r["starts"]  # shrank to one, grew back to two
    assert r["starts"][0][0] is None and all(s is not None for s, _ in r["starts"][1:])
    assert r["train_steps"] == list(range(1, r["total_steps"] + 1)), "every step once"
    assert r["end"] == [r["total_steps"]]
    epochs = r["epoch_clips"]
    assert sorted(int(e) for e in epochs) == list(range(5))
    for clips in epochs.values():  # each epoch: 8-clip steps over 24 clips, each clip once
        assert len(clips) == 24 and set(clips.values()) == {1}
    assert r["clips_consumed"] == r["total_steps"] * 8 <= r["clips_decoded"]
