"""The scheduler's pure rules: batch packing across videos, actor choice, the in-flight bound.

(The loop itself runs end to end on Ray in `test_run_inference.py`.)
"""

from __future__ import annotations

from collections import deque

from pipeline.infer import InferConfig
from pipeline.infer.scheduler import default_max_videos, pack_batch, pick_actor


def test_a_batch_mixes_videos_in_queue_order_and_drops_closed_ones():
    queue = deque([("a", 0), ("a", 1), ("b", 0), ("c", 0), ("b", 1), ("a", 2)])
    groups = pack_batch(queue, 5, open_ids={"a", "b"})  # c already failed
    assert groups == {"a": [0, 1], "b": [0, 1]}
    assert list(groups) == ["a", "b"]
    assert list(queue) == [("a", 2)]  # the 5 clips popped, c's included
    assert pack_batch(queue, 5, open_ids={"a"}) == {"a": [2]} and not queue
    assert pack_batch(deque([("c", 0)]), 5, open_ids=set()) == {}


def test_full_batches_go_to_the_least_loaded_actor_with_room():
    assert pick_actor([2, 1, 1], queued=8, batch_size=8, max_per_actor=2, decoding=True) == 1
    assert pick_actor([2, 2], queued=8, batch_size=8, max_per_actor=2, decoding=True) is None


def test_a_partial_batch_waits_unless_an_actor_is_idle_or_nothing_can_arrive():
    assert pick_actor([1, 1], queued=3, batch_size=8, max_per_actor=2, decoding=True) is None
    assert pick_actor([1, 0], queued=3, batch_size=8, max_per_actor=2, decoding=True) == 1
    assert pick_actor([1, 1], queued=3, batch_size=8, max_per_actor=2, decoding=False) == 0
    assert pick_actor([2], queued=3, batch_size=8, max_per_actor=2, decoding=False) is None


def test_videos_in_flight_default_to_twice_the_decode_slots_plus_two():
    assert default_max_videos(InferConfig(), cluster_cpus=8) == 18
    assert default_max_videos(InferConfig(decode_num_cpus=2.0), cluster_cpus=8) == 10
    assert default_max_videos(InferConfig(decode_num_cpus=4.0), cluster_cpus=2) == 4  # at least one slot
    assert default_max_videos(InferConfig(max_videos_in_flight=3), cluster_cpus=8) == 3


def test_decodes_are_bounded_in_bytes_not_videos():
    from pipeline.infer.scheduler import may_decode

    mb = 2**20
    # 100 MB budget, videos of 30 MB on average: 60 MB held + 1 decoding + the new one (2 x 30) is too much
    assert not may_decode(60 * mb, decoding=1, open_videos=2, video_bytes=30 * mb, budget_bytes=100 * mb,
                          max_videos=18)
    assert may_decode(30 * mb, decoding=1, open_videos=1, video_bytes=30 * mb, budget_bytes=100 * mb,
                      max_videos=18)
    # one long video (a HowTo100M hour: 400 MB of clips) is alone in flight: nothing else starts ...
    assert not may_decode(400 * mb, decoding=0, open_videos=1, video_bytes=40 * mb, budget_bytes=100 * mb,
                          max_videos=18)
    # ... but with nothing in flight a video always starts, however large videos are
    assert may_decode(0, decoding=0, open_videos=0, video_bytes=400 * mb, budget_bytes=100 * mb, max_videos=18)
    # the video count still bounds small videos; budget 0 turns the byte bound off
    assert not may_decode(0, decoding=3, open_videos=1, video_bytes=1, budget_bytes=100 * mb, max_videos=4)
    assert may_decode(10**12, decoding=1, open_videos=1, video_bytes=10**12, budget_bytes=0, max_videos=4)


def test_a_lost_actor_is_probed_again_with_backoff():
    from pipeline.infer.scheduler import probe_delay

    assert [probe_delay(n) for n in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
