"""Error texts in output rows: short, plain, one line, the root cause."""

from __future__ import annotations

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
