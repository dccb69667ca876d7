"""mmdetection / mmsegmentation integration (optional extra, scripts/install_mm_extra.sh).

Run in the overlay environment: ``.venv-mm/bin/python -m pytest tests/test_downstream_mm.py``.
Builds the shipped configs (vheat/configs/downstream) with a tiny vHeat loaded from a fabricated
classification checkpoint, then does one training step and one inference of Mask R-CNN on
fabricated COCO-format data and of UperNet on fabricated ADE20K-format data.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

mmdet = pytest.importorskip("mmdet", reason="mm extra not installed (scripts/install_mm_extra.sh)")
mmseg = pytest.importorskip("mmseg", reason="mm extra not installed (scripts/install_mm_extra.sh)")
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from PIL import Image  # noqa: E402

from vheat.checkpoint_io import save_official_checkpoint  # noqa: E402
from vheat.configs import downstream_config_dir  # noqa: E402
from vheat.models import VHeat  # noqa: E402

CONFIGS = downstream_config_dir()
ARCH = dict(depths=(1, 1, 1, 1), dims=8, post_norm=True, layer_scale=1e-5)
CHANNELS = [8, 16, 32, 64]


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture
def classification_ckpt(tmp_path):
    cls = VHeat(num_classes=10, img_size=64, drop_path_rate=0.0, **ARCH)
    path = tmp_path / "cls.pth"
    save_official_checkpoint(path, cls, cls)
    return path, cls


def tiny_shipped_config(package: str, config_file: str, ckpt: Path):
    """(registry module, config) of ``package`` (mmdet / mmseg), its modules registered as the
    default scope: the shipped ``config_file`` with a tiny vHeat backbone loading ``ckpt``."""
    importlib.import_module(f"{package}.utils").register_all_modules()
    cfg = Config.fromfile(str(CONFIGS / config_file))
    cfg.model.backbone.update(ARCH, img_size=96, drop_path_rate=0.0, hco_backend="fft", pretrained=str(ckpt),
                              pretrained_strict=True)
    return importlib.import_module(f"{package}.registry"), cfg


def changed(before: dict, model: torch.nn.Module, prefix: str) -> bool:
    return any(not torch.equal(before[k], p.detach()) for k, p in model.named_parameters() if k.startswith(prefix))


def fake_coco(root: Path, sizes, num_classes: int = 2) -> None:
    (root / "imgs").mkdir()
    rng = np.random.default_rng()
    images, anns = [], []
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        images.append(dict(id=i, file_name=f"{i}.png", height=h, width=w))
        for k in range(2):
            x, y = float(rng.integers(0, w // 2)), float(rng.integers(0, h // 2))
            bw, bh = float(rng.integers(8, w // 2)), float(rng.integers(8, h // 2))
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=int(rng.integers(1, num_classes + 1)),
                             bbox=[x, y, bw, bh], area=bw * bh, iscrowd=0,
                             segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
    cats = [dict(id=c + 1, name=f"c{c}") for c in range(num_classes)]
    (root / "ann.json").write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))


def test_mask_rcnn_train_step_and_inference(tmp_path, classification_ckpt):
    ckpt, cls = classification_ckpt
    registry, cfg = tiny_shipped_config("mmdet", "mask_rcnn_vheat_small_fpn_1x_coco.py", ckpt)
    assert cfg.model.backbone.type == "MMDET_VHEAT" and cfg.model.backbone.freq_embed_fit == "pad"
    cfg.model.neck.in_channels = CHANNELS
    cfg.model.roi_head.bbox_head.num_classes = 2
    cfg.model.roi_head.mask_head.num_classes = 2
    model = revert_sync_batchnorm(registry.MODELS.build(cfg.model))
    model.init_weights()
    bb = model.backbone
    torch.testing.assert_close(bb.freq_embed[0][:16, :16].detach(), cls.freq_embed[0].detach(), rtol=0, atol=0)
    assert bb.freq_embed[0].shape == (24, 24, 8) and bb.freq_embed[0][16:].abs().sum() == 0
    torch.testing.assert_close(bb.patch_embed.conv1.weight, cls.patch_embed.conv1.weight, rtol=0, atol=0)

    fake_coco(tmp_path, [(70, 91), (83, 60)])
    small = dict(type="Resize", scale=(96, 64), keep_ratio=True)

    def dataset(pipeline):
        pipeline = [small if p["type"] == "Resize" else p for p in pipeline]
        return registry.DATASETS.build(dict(type="CocoDataset", data_root=str(tmp_path), ann_file="ann.json",
                                   data_prefix=dict(img="imgs/"), metainfo=dict(classes=("c0", "c1")),
                                   filter_cfg=None, pipeline=pipeline, test_mode=False))

    train = dataset(cfg.train_dataloader.dataset.pipeline)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    model.train()
    log = model.train_step(pseudo_collate([train[0], train[1]]), optim)
    for key in ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask", "loss"):
        assert torch.isfinite(log[key]), (key, log)
    assert changed(before, model, "backbone.layers") and changed(before, model, "neck")

    test = dataset(cfg.test_dataloader.dataset.pipeline)
    model.eval()
    with torch.no_grad():
        results = model.test_step(pseudo_collate([test[0], test[1]]))
    assert len(results) == 2
    for res, (h, w) in zip(results, [(70, 91), (83, 60)]):
        pred = res.pred_instances
        n = len(pred)
        assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n,) and pred.labels.shape == (n,)
        assert tuple(pred.masks.shape) == (n, h, w)


def test_upernet_train_step_and_inference(tmp_path, classification_ckpt):
    ckpt, cls = classification_ckpt
    registry, cfg = tiny_shipped_config("mmseg", "upernet_vheat_tiny_160k_ade20k_512x512.py", ckpt)
    assert cfg.model.backbone.type == "MMSEG_VHEAT" and cfg.model.test_cfg.mode == "slide"
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.model.decode_head.update(in_channels=CHANNELS, channels=32)
    cfg.model.auxiliary_head.update(in_channels=CHANNELS[2], channels=32)
    cfg.model.test_cfg.update(crop_size=(64, 64), stride=(43, 43))  # official 512 / 341, scaled
    model = revert_sync_batchnorm(registry.MODELS.build(cfg.model))
    model.init_weights()
    torch.testing.assert_close(model.backbone.layers[1][0].op.to_k[0].weight, cls.layers[1][0].op.to_k[0].weight)

    rng = np.random.default_rng()
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    sizes = [(80, 101), (67, 90)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 151, (h, w), dtype=np.uint8)).save(tmp_path / "ann" / f"{i}.png")

    def dataset(pipeline):
        fixed = []
        for p in pipeline:
            p = dict(p)
            if p["type"] in ("RandomResize", "Resize"):
                p["scale"] = (128, 64)
            if p["type"] == "RandomCrop":
                p["crop_size"] = (64, 64)
            fixed.append(p)
        return registry.DATASETS.build(dict(type="ADE20KDataset", data_root=str(tmp_path),
                                   data_prefix=dict(img_path="img", seg_map_path="ann"), pipeline=fixed))

    train = dataset(cfg.train_dataloader.dataset.pipeline)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    model.train()
    log = model.train_step(pseudo_collate([train[0], train[1]]), optim)
    assert torch.isfinite(log["decode.loss_ce"]) and torch.isfinite(log["aux.loss_ce"]) and torch.isfinite(log["loss"])
    assert changed(before, model, "backbone.layers") and changed(before, model, "decode_head")

    test = dataset(cfg.test_dataloader.dataset.pipeline)
    model.eval()
    with torch.no_grad():  # one image per batch, as the official val/test loaders (sizes differ)
        results = [model.test_step(pseudo_collate([test[i]]))[0] for i in range(len(sizes))]
    for res, (h, w) in zip(results, sizes):
        seg = res.pred_sem_seg.data
        assert tuple(seg.shape) == (1, h, w) and seg.min() >= 0 and seg.max() < 150
