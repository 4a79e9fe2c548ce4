"""pipeline.storage against the local filesystem and a real S3 endpoint on loopback (moto)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import storage


@pytest.fixture(params=["local", "file", "s3"])
def root(request, tmp_path):
    """A writable folder URI of each kind."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file":
        return "file://" + str(tmp_path / "root")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/root"


def test_join_keeps_scheme(tmp_path):
    assert storage.join("s3://b/x", "y", "z.mp4") == "s3://b/x/y/z.mp4"
    assert storage.join("s3://b/x/", "y") == "s3://b/x/y"
    assert storage.join("gs://b", "k") == "gs://b/k"
    assert storage.join("file:///a/b", "c") == "file:///a/b/c"
    assert storage.join(str(tmp_path), "c") == os.path.join(str(tmp_path), "c")


def test_write_read_list_remove(root):
    storage.write_bytes_atomic(storage.join(root, "a", "one.mp4"), b"1")
    storage.write_bytes_atomic(storage.join(root, "a", "two.MP4"), b"22")
    storage.write_bytes_atomic(storage.join(root, "b", "c", "three.webm"), b"333")
    storage.write_bytes_atomic(storage.join(root, "notes.txt"), b"x")
    assert storage.read_bytes(storage.join(root, "a", "two.MP4")) == b"22"
    assert storage.exists(storage.join(root, "a", "one.mp4"))
    assert not storage.exists(storage.join(root, "a", "nope.mp4"))

    videos = storage.list_files(root, (".mp4", ".webm"))
    assert [v.rsplit("/", 1)[-1] for v in videos] == ["one.mp4", "two.MP4", "three.webm"]
    # listed URIs are usable URIs of the same kind
    assert all(storage.exists(v) for v in videos)
    if root.startswith("s3://"):
        assert all(v.startswith("s3://") for v in videos)
    assert len(storage.list_files(root)) == 4
    assert storage.list_files(storage.join(root, "missing")) == []

    storage.remove(storage.join(root, "a"), recursive=True)
    assert storage.list_files(root, (".mp4",)) == []
    storage.remove(storage.join(root, "never-existed.bin"))  # missing is not an error


def test_atomic_overwrite_leaves_no_temporaries(root):
    uri = storage.join(root, "state.json")
    storage.write_json(uri, {"step": 1})
    storage.write_json(uri, {"step": 2, "names": ["a", "b"]})
    assert storage.read_json(uri) == {"step": 2, "names": ["a", "b"]}
    assert [u.rsplit("/", 1)[-1] for u in storage.list_files(root)] == ["state.json"]


def test_open_uri_roundtrip(root):
    uri = storage.join(root, "deep", "folder", "f.bin")
    with storage.open_uri(uri, "wb") as f:
        f.write(b"hello world")
    with storage.open_uri(uri, "rb") as f:
        f.seek(6)
        assert f.read() == b"world"


def test_parquet_roundtrip_and_arrow_filesystem(root):
    table = pa.table({"uri": ["a", "b"], "n": [1, 2]})
    uri = storage.join(root, "t", "part.parquet")
    storage.write_parquet_atomic(uri, table)
    assert storage.read_parquet(uri).equals(table)
    fs, path = storage.arrow_filesystem(uri)  # what Ray Data's read/write_parquet get
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_missing_file_raises_file_not_found(root):
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "absent.bin"))


def test_s3_endpoint_comes_from_standard_variables(s3_server, monkeypatch):
    assert storage.endpoint_url() == s3_server
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    assert storage.endpoint_url() == "http://127.0.0.1:1"
    fs, path = storage.filesystem("s3://bucket/key")
    assert path == "bucket/key"
    assert fs.endpoint_url == "http://127.0.0.1:1"


def test_open_for_reading_gives_local_paths_and_remote_file_objects(tmp_path, s3_bucket):
    from pipeline.storage import open_for_reading, write_bytes_atomic

    local = tmp_path / "v.bin"
    local.write_bytes(b"abc")
    with open_for_reading(f"file://{local}") as src:
        assert src == str(local)  # native readers (PyAV) open local files themselves
    write_bytes_atomic(f"s3://{s3_bucket}/v.bin", b"xyz")
    with open_for_reading(f"s3://{s3_bucket}/v.bin", block_size=1024) as src:
        src.seek(1)
        assert src.read() == b"yz"
    with pytest.raises(FileNotFoundError):
        with open_for_reading(f"s3://{s3_bucket}/missing.bin"):
            pass


def test_transient_failures_are_told_from_bad_files():
    import errno

    from botocore.exceptions import ClientError

    def client_error(code):
        return ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObject")

    for e in (OSError(errno.EBUSY, "SlowDown"), ConnectionResetError(), TimeoutError(), client_error("SlowDown"),
              client_error("ExpiredToken"), client_error("503")):
        assert storage.is_transient(e), e
    wrapped = ValueError("cannot open")
    wrapped.__cause__ = OSError(errno.EBUSY, "injected")
    assert storage.is_transient(wrapped)  # the cause decides, however it was wrapped
    for e in (FileNotFoundError(), ValueError("not a video"), client_error("NoSuchKey"),
              client_error("AccessDenied"), OSError(errno.EINVAL, "bad")):
        assert not storage.is_transient(e), e


def test_with_retries_retries_only_transient_failures():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert storage.with_retries(flaky, attempts=3, backoff_s=0) == "ok" and len(calls) == 3

    def always(exc):
        def fn():
            calls.append(1)
            raise exc
        return fn

    calls.clear()
    with pytest.raises(ConnectionResetError):
        storage.with_retries(always(ConnectionResetError("reset")), attempts=2, backoff_s=0)
    assert len(calls) == 2  # the last failure propagates after every try
    calls.clear()
    with pytest.raises(ValueError):
        storage.with_retries(always(ValueError("not a video")), attempts=5, backoff_s=0)
    assert len(calls) == 1  # a bad file is not retried
