"""Checkpoint conversion for downstream sizes (replacement of the official interpolate4downstream.py)."""
from __future__ import annotations

import argparse
import os

import pytest
import torch
import torch.nn.functional as F

from vheat.checkpoint_io import CheckpointFormatError
from vheat.downstream import VHeatBackbone
from vheat.downstream.convert import ConversionError, convert_checkpoint, main, stage_grids
from vheat.models import VHeat


def fake_state_dict(img_size: int, stages: int, dim: int = 5, prefix: str = "") -> dict:
    sd = {f"{prefix}freq_embed.{i}": torch.randn(img_size // 4 // 2**i, img_size // 4 // 2**i, dim * 2**i) for i in range(stages)}
    sd[f"{prefix}patch_embed.conv1.weight"] = torch.randn(3, 3, 3, 3)
    return sd


def official_pad(freq: torch.Tensor, pt: int, tg: int, i: int) -> torch.Tensor:
    """interpolate4downstream.py restated: pad (tg - pt) // 2**(i + 2) zeros at the bottom and right."""
    n = (tg - pt) // 2 ** (i + 2)
    return F.pad(freq.permute(2, 0, 1), (0, n, 0, n), "constant", 0).permute(1, 2, 0)


@pytest.mark.parametrize("stages", [4, 3, 5])
def test_pad_matches_official_both_entries(stages):
    pt, tg = 32 * 2 ** max(stages - 3, 0) * 3, 32 * 2 ** max(stages - 3, 0) * 7  # exact for `stages`
    ckpt = {
        "model": fake_state_dict(pt, stages, prefix="module."),
        "model_ema": fake_state_dict(pt, stages),
        "epoch": 299,
        "optimizer": {"state": {0: {"exp_avg": torch.randn(4)}}},
    }
    out, reports = convert_checkpoint(ckpt, tg, mode="pad", source_size=pt)
    assert set(reports) == {"model", "model_ema"}
    for entry, prefix in (("model", "module."), ("model_ema", "")):
        for i in range(stages):
            key = f"{prefix}freq_embed.{i}"
            expect = official_pad(ckpt[entry][key], pt, tg, i)
            assert out[entry][key].shape == (tg // 4 // 2**i, tg // 4 // 2**i, 5 * 2**i)
            torch.testing.assert_close(out[entry][key], expect, rtol=0, atol=0)
        conv = f"{prefix}patch_embed.conv1.weight"
        assert out[entry][conv] is ckpt[entry][conv]
    assert out["epoch"] == 299 and out["optimizer"] is ckpt["optimizer"]
    assert ckpt["model"]["module.freq_embed.0"].shape[0] == pt // 4  # input left untouched


def test_interpolate_mode_and_bare_state_dict():
    sd = fake_state_dict(224, 4)
    out, reports = convert_checkpoint(sd, 800, mode="interpolate")
    assert list(reports) == ["<state_dict>"]
    for i in range(4):
        n = 800 // 4 // 2**i
        expect = F.interpolate(sd[f"freq_embed.{i}"].permute(2, 0, 1)[None], size=(n, n), mode="bicubic")[0].permute(1, 2, 0)
        torch.testing.assert_close(out[f"freq_embed.{i}"], expect)
    # shrinking works by interpolation, not by padding
    small, _ = convert_checkpoint(sd, 128, mode="interpolate")
    assert small["freq_embed.3"].shape == (4, 4, 40)
    with pytest.raises(ConversionError, match="cannot shrink"):
        convert_checkpoint(sd, 128, mode="pad")


def test_refusals():
    sd = fake_state_dict(224, 4)
    with pytest.raises(ConversionError, match="not a multiple of 32.*use 480 or 512"):
        convert_checkpoint({"model": sd}, 500)
    assert stage_grids(504, 2) == [126, 63]  # two stages only need a multiple of 8
    with pytest.raises(ConversionError, match="do not belong to source size 256"):
        convert_checkpoint({"model": sd}, 512, source_size=256)
    with pytest.raises(CheckpointFormatError, match="none of"):
        convert_checkpoint({"state": sd}, 512)
    with pytest.raises(CheckpointFormatError, match="no entries"):
        convert_checkpoint({"model": sd}, 512, keys=["model", "model_ema"])
    with pytest.raises(CheckpointFormatError, match="infer-mode"):
        convert_checkpoint({"model": dict(sd, **{"layers.0.0.op.k_exp": torch.ones(56, 56, 5)})}, 512)
    with pytest.raises(CheckpointFormatError, match="not 0..n-1"):
        convert_checkpoint({"model": {k: v for k, v in sd.items() if k != "freq_embed.1"}}, 512)
    with pytest.raises(ConversionError, match="mode"):
        convert_checkpoint({"model": sd}, 512, mode="nearest")


def test_stage_grids_exactness():
    assert stage_grids(512, 4) == [128, 64, 32, 16]
    assert stage_grids(224, 4) == [56, 28, 14, 7]
    with pytest.raises(ConversionError, match="multiple of 8"):
        stage_grids(500, 2)


def test_cli_end_to_end(tmp_path, capsys):
    micro = dict(depths=(1, 1, 2, 1), dims=16, drop_path_rate=0.0)
    cls = VHeat(img_size=64, num_classes=4, **micro)
    src, dst = tmp_path / "cls.pth", tmp_path / "det.pth"
    torch.save({"model": cls.state_dict(), "model_ema": cls.state_dict(), "config": argparse.Namespace(a=1)}, src)

    # official option names; pickled extras need explicit trust
    argv = ["--pt_pth", str(src), "--tg_pth", str(dst), "--pt_size", "64", "--tg_size", "128"]
    assert main(argv) == 2 and "allow_pickle" in capsys.readouterr().err and not dst.exists()
    assert main(argv + ["--trust-checkpoint"]) == 0
    printed = capsys.readouterr().out
    assert "model_ema: freq_embed.3 [2, 2, 128] -> [4, 4, 128] (pad)" in printed
    assert sorted(os.listdir(tmp_path)) == ["cls.pth", "det.pth"]  # no temp files left

    out = torch.load(dst, weights_only=False)
    assert out["config"].a == 1
    bb = VHeatBackbone(img_size=128, **micro)
    bb.load_classification_checkpoint(out, key="model_ema")  # exact grids: nothing refitted
    torch.testing.assert_close(bb.freq_embed[0][:16, :16].detach(), cls.freq_embed[0].detach(), rtol=0, atol=0)
    assert bb.freq_embed[0][16:].abs().sum() == 0

    assert main(["--input", str(src), "--output", str(dst), "--size", "128", "--trust-checkpoint"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["--input", str(src), "--output", str(dst), "--size", "100", "--trust-checkpoint", "--force"]) == 2
    assert "not a multiple of 32" in capsys.readouterr().err
    assert main(["--input", str(src), "--output", str(dst), "--size", "96", "--mode", "interpolate",
                 "--trust-checkpoint", "--force"]) == 0
    assert torch.load(dst, weights_only=False)["model"]["freq_embed.0"].shape == (24, 24, 16)
