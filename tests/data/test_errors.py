"""Error texts in output rows: short, plain, one line, the root cause."""

from __future__ import annotations

from conftest import write_index_video

from pipeline.data.errors import MAX_ERROR, error_row, error_text


class _TaskError(Exception):
    """Like Ray's task errors: a traceback with terminal colours in str(), the original in .cause."""

    def __init__(self, cause: BaseException):
        super().__init__("\x1b[36mray::ClipScorer.score()\x1b[39m (pid=1, ip=127.0.0.1)\n"
                         + '  File "actor.py", line 50, in score\n' * 40 + f"{type(cause).__name__}: {cause}")
        self.cause = cause


def test_root_cause_in_one_short_plain_line():
    err = _TaskError(RuntimeError("H and W (30x30) must be multiples of patch_size 8"))
    assert len(str(err)) > 1400
    assert error_text(err) == "RuntimeError: H and W (30x30) must be multiples of patch_size 8"
    text = error_text(str(err))  # the text alone: its last line, colours stripped
    assert text == "RuntimeError: H and W (30x30) must be multiples of patch_size 8"
    assert error_text("\x1b[31mboom\x1b[0m\x07 now") == "boom? now"
    long = error_text(ValueError("x" * 5000))
    assert len(long) == MAX_ERROR and long.endswith("...")
    row = error_row("s3://b/" + "k" * 5000, "decode", err)
    assert len(row["uri"]) <= 1000 and "\n" not in row["error"] and "\x1b" not in row["error"]


def test_error_kinds_count_per_stage_and_reason_with_one_example():
    from pipeline.data.errors import error_kinds

    rows = [{"uri": f"s3://b/t{i}.txt.mp4", "stage": "open",
             "error": f"not a video file (PyAV could not read a container): Invalid data at {i}"} for i in range(3)]
    rows += [{"uri": "s3://b/cut.mp4", "stage": "open", "error": "truncated or missing its index (no moov): x"},
             {"uri": "s3://b/big.mp4", "stage": "probe", "error": "frame size 5000x5000 = 25000000 pixels exceeds"},
             {"uri": "s3://b/big2.mp4", "stage": "probe", "error": "frame size 6000x5000 = 30000000 pixels exceeds"},
             {"uri": "s3://b/down.mp4", "stage": "storage", "error": "storage unavailable after 3 tries: OSError: x"}]
    assert error_kinds(rows) == [
        "3 x open: not a video file (PyAV could not read a container) e.g. s3://b/t0.txt.mp4",
        "2 x probe: frame size NxN = N pixels exceeds e.g. s3://b/big.mp4",  # the same kind, other numbers
        "1 x open: truncated or missing its index (no moov) e.g. s3://b/cut.mp4",
        "1 x storage: storage unavailable after 3 tries e.g. s3://b/down.mp4",
    ]
    assert error_kinds(rows, limit=2) == [error_kinds(rows)[0], "... and 3 more kinds of error (all in errors.parquet)"]
    assert error_kinds([]) == []


def test_one_vocabulary_of_stages_and_one_classification():
    import errno

    from pipeline import storage
    from pipeline.data import errors
    from pipeline.data.seek import DecodeError

    assert errors.is_retryable("storage") and not any(errors.is_retryable(s) for s in errors.STAGES if s != "storage")
    assert errors.classify(OSError(errno.EBUSY, "injected"), attempts=3) == (
        "storage", "storage unavailable after 3 tries: OSError: [Errno 16] injected")
    assert errors.classify(storage.StorageOutage("down for long"), attempts=3) == ("storage", "down for long")
    assert errors.classify(DecodeError("stream", "no video stream"), attempts=3) == ("stream", "no video stream")
    assert errors.classify(FileNotFoundError("x"), attempts=3) == ("open", "file not found")
    assert errors.classify(RuntimeError("x264 died"), attempts=3, default="encode") == ("encode", "RuntimeError: x264 died")

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionResetError("reset")
        raise DecodeError("probe", "a still image (png_pipe), not a video")

    assert errors.read_or_error("s3://b/x.mp4", flaky, attempts=3, backoff_s=0) == (
        None, {"uri": "s3://b/x.mp4", "stage": "probe", "error": "a still image (png_pipe), not a video"})
    assert errors.read_or_error("s3://b/y.mp4", lambda: 7, attempts=3, backoff_s=0) == (7, None)


def test_a_cut_mp4_without_its_index_is_told_from_a_text_file(tmp_path):
    """Real files: an mp4 written by PyAV with its moov box at the end, cut in half (a cut
    download), and a text file renamed .mp4; PyAV refuses both, for different reasons."""
    import pytest

    from pipeline.data.decode import DecodeError, probe

    good = write_index_video(tmp_path / "good.mp4", num_frames=60)
    data = open(good, "rb").read()
    assert data.rfind(b"moov") > len(data) // 2  # the index is at the end
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    messages = {}
    for name in ("cut", "text"):
        for src in (str(tmp_path / f"{name}.mp4"), open(tmp_path / f"{name}.mp4", "rb")):  # a path, a file object
            with pytest.raises(DecodeError) as e:
                probe(src)
            assert e.value.stage == "open"
            messages.setdefault(name, set()).add(e.value.message.split(":")[0])
    assert messages == {"cut": {"truncated or missing its index (an MP4/QuickTime file without its moov box"},
                        "text": {"not a video file (PyAV could not read a container)"}}
