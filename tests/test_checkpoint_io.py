"""vheat.checkpoint_io: one reader for every format, messages naming the file, content checksums."""
import os
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from vheat.checkpoint_io import (CHECKSUM_KEY, CheckpointFormatError, extract_state_dict, read_checkpoint,
                                 write_checkpoint)


def _payload():
    return {"model": {"module.w": torch.randn(64, 64), "b": torch.arange(5, dtype=torch.bfloat16)},
            "epoch": 3, "rng": {"python": (3, (1, 2), None)}}


def _tensor_entry(path):
    """(offset, size) of the largest tensor's bytes inside a torch.save zip archive."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_written_checkpoint_round_trips_with_its_checksum(tmp_path):
    path = tmp_path / "c.pth"
    payload = _payload()
    write_checkpoint(path, payload)
    ckpt = read_checkpoint(path)
    assert len(ckpt[CHECKSUM_KEY]) == 64 and ckpt["rng"]["python"] == (3, (1, 2), None)
    sd = extract_state_dict(ckpt)
    assert set(sd) == {"w", "b"} and torch.equal(sd["w"], payload["model"]["module.w"])
    assert torch.equal(sd["b"], payload["model"]["b"]) and sd["b"].dtype == torch.bfloat16


@pytest.mark.parametrize("where", ["tensor", "metadata"])
def test_flipped_bytes_are_an_error_naming_the_file(tmp_path, where):
    path = tmp_path / "c.pth"
    payload = _payload()
    payload["model"]["module.w"] = torch.randn(1024, 8)  # 32 KiB of tensor bytes
    write_checkpoint(path, payload)
    data = bytearray(path.read_bytes())
    if where == "tensor":
        offset, size = _tensor_entry(path)
        assert size >= 4096 + 100
        for i in range(offset + 100, offset + 100 + 4096):  # 4 KB flipped inside one tensor
            data[i] ^= 0xFF
    else:
        stored = read_checkpoint(path)[CHECKSUM_KEY].encode()
        i = data.index(stored)
        data[i:i + 4] = b"0000" if data[i:i + 4] != b"0000" else b"1111"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match=rf"{path} is damaged: its content checksum does not match"):
        read_checkpoint(path)


@pytest.mark.parametrize("content, expected", [
    (b"hello world\n", r"is not a checkpoint: it holds text starting 'hello world"),
    (b"", r"is not a checkpoint: it holds an empty file"),
    (b"\x00\x01\x02\xff" * 4, r"is not a checkpoint: it holds bytes 00 01 02 ff"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, expected):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(CheckpointFormatError, match=expected):
            read_checkpoint(path, allow_pickle=trust)


def test_truncated_file_says_so(tmp_path):
    path = tmp_path / "c.pth"
    write_checkpoint(path, _payload())
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CheckpointFormatError, match=rf"cannot read checkpoint {path}: a truncated or damaged"):
        read_checkpoint(path)


def test_missing_and_folder(tmp_path):
    with pytest.raises(CheckpointFormatError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointFormatError, match="is a folder"):
        read_checkpoint(tmp_path)


def test_pickled_objects_need_trust_and_are_read_once(tmp_path, monkeypatch):
    from argparse import Namespace

    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(2)}, "config": Namespace(a=1)}, path)
    with pytest.raises(CheckpointFormatError, match=r"argparse.Namespace.*allow_pickle=True"):
        read_checkpoint(path)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    ckpt = read_checkpoint(path, allow_pickle=True)
    assert ckpt["config"].a == 1 and calls == [dict(map_location="cpu", weights_only=False)]


def test_safetensors(tmp_path):
    path = str(tmp_path / "w.safetensors")
    save_file({"module.w": torch.randn(3, 4), "b": torch.zeros(2)}, path)
    sd = extract_state_dict(read_checkpoint(path))
    assert set(sd) == {"w", "b"} and sd["w"].shape == (3, 4)
    with open(path, "r+b") as f:  # a torn safetensors file: header longer than the data
        f.truncate(os.path.getsize(path) - 8)
    with pytest.raises(CheckpointFormatError, match=r"w\.safetensors: a damaged \.safetensors file"):
        read_checkpoint(path)
