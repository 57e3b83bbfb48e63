"""Checkpoint sources: a local file, a named source with a known hash, a URL, offline."""

import pytest

from asdlib import checkpoints
from asdlib.atomic import file_sha256
from asdlib.encoder import build_beats, save_beats


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return save_beats(build_beats("tiny", seed=0), tmp_path / "tiny.pt")


def test_a_local_file_is_verified(tiny_checkpoint, tmp_path):
    assert checkpoints.resolve(tiny_checkpoint) == tiny_checkpoint
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoints.CheckpointSourceError, match="not a usable BEATs checkpoint"):
        checkpoints.resolve(broken)


def test_a_named_rehost_is_downloaded_and_its_hash_checked(tiny_checkpoint, tmp_path, monkeypatch):
    mirror = {"mirror": tiny_checkpoint.as_uri()}
    good = checkpoints.Source("tiny.pt", mirror, {"mirror": file_sha256(tiny_checkpoint)})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, "tiny", good)
    path = checkpoints.resolve("tiny@mirror", cache_dir=tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / "mirror" / "tiny.pt" and path.is_file()
    bad = checkpoints.Source("tiny.pt", mirror, {"mirror": "0" * 64})
    monkeypatch.setitem(checkpoints.CHECKPOINTS, "tiny", bad)
    with pytest.raises(checkpoints.CheckpointSourceError, match="differs from the recorded"):
        checkpoints.resolve("tiny@mirror", cache_dir=tmp_path / "other", progress=False)
    with pytest.raises(checkpoints.CheckpointSourceError, match="no re-host named 'elsewhere'"):
        checkpoints.resolve("tiny@elsewhere", cache_dir=tmp_path / "x", progress=False)


def test_offline_says_what_to_do(tmp_path):
    with pytest.raises(checkpoints.CheckpointSourceError, match="offline") as err:
        checkpoints.resolve("http://127.0.0.1:9/BEATs_iter3.pt", cache_dir=tmp_path, progress=False)
    assert "--encoder" in str(err.value)
    with pytest.raises(checkpoints.CheckpointSourceError, match="known checkpoint"):
        checkpoints.resolve("BEATs_iter9", cache_dir=tmp_path)
    source = checkpoints.CHECKPOINTS["BEATs_iter3_plus_AS2M"]
    assert source.official.startswith("https://valle.blob.core.windows.net/share/BEATs/"
                                      "BEATs_iter3_plus_AS2M.pt?")
    assert "huggingface" in source.rehosts and len(source.sha256["huggingface"]) == 64
