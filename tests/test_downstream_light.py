"""Light downstream paths (no compiled extras): torchvision Mask R-CNN and smp UPerNet on a tiny
vHeat, one training step and one inference each on fabricated data."""
from __future__ import annotations

import pytest
import torch

from vheat.checkpoint_io import save_official_checkpoint
from vheat.downstream import VHeatBackbone
from vheat.downstream.torchvision_detection import VHeatFPN, vheat_maskrcnn
from vheat.models import VHeat

TINY = dict(depths=(1, 1, 1, 1), dims=8, img_size=64, drop_path_rate=0.0, hco_backend="fft")


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def fake_instances(h: int, w: int, n: int, num_classes: int) -> dict:
    """n random boxes with a filled-rectangle mask each."""
    x0 = torch.randint(0, w // 2, (n,))
    y0 = torch.randint(0, h // 2, (n,))
    x1 = x0 + torch.randint(6, w // 2, (n,))
    y1 = y0 + torch.randint(6, h // 2, (n,))
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    for k in range(n):
        masks[k, y0[k]:y1[k], x0[k]:x1[k]] = 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return dict(boxes=boxes, labels=torch.randint(1, num_classes, (n,)), masks=masks)


def changed(before: dict, model: torch.nn.Module, prefix: str) -> bool:
    return any(not torch.equal(before[k], p.detach()) for k, p in model.named_parameters() if k.startswith(prefix))


def test_fpn_levels():
    fpn = VHeatFPN(VHeatBackbone(**TINY), out_channels=16)
    out = fpn(torch.randn(1, 3, 70, 45))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(18, 12), (9, 6), (5, 3), (3, 2), (2, 1)]
    assert all(v.shape[1] == 16 for v in out.values())


def test_maskrcnn_train_step_and_inference():
    num_classes = 4
    model = vheat_maskrcnn(
        num_classes, dict(TINY), fpn_channels=16, min_size=64, max_size=96,
        rpn_batch_size_per_image=32, box_batch_size_per_image=16, representation_size=32,
    )
    images = [torch.rand(3, 61, 90), torch.rand(3, 77, 53)]  # odd, non-square, different sizes
    targets = [fake_instances(61, 90, 3, num_classes), fake_instances(77, 53, 2, num_classes)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}

    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    opt.zero_grad()
    total.backward()
    grads = [p.grad for k, p in model.named_parameters() if k.startswith("backbone.body.freq_embed")]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    opt.step()
    assert changed(before, model, "backbone.body.layers") and changed(before, model, "roi_heads.mask_head")

    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images):
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["masks"].shape == (n, 1) + tuple(img.shape[1:])
        if n:
            assert (det["boxes"][:, 2] <= img.shape[2]).all() and (det["boxes"][:, 3] <= img.shape[1]).all()


def test_maskrcnn_rejects_wrong_backbone():
    with pytest.raises(TypeError, match="VHeatBackbone"):
        vheat_maskrcnn(3, torch.nn.Conv2d(3, 8, 3))


def test_upernet_train_step_and_inference(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    from vheat.downstream.smp_segmentation import vheat_upernet

    arch = dict(depths=(1, 1, 1, 1), dims=8, drop_path_rate=0.0)
    cls = VHeat(num_classes=10, img_size=64, **arch)
    ckpt = tmp_path / "cls.pth"
    save_official_checkpoint(ckpt, cls)

    num_classes = 5
    model = vheat_upernet(num_classes, img_size=96, checkpoint=str(ckpt), decoder_channels=16, hco_backend="fft", **arch)
    encoder = model.encoder.model
    # pretrained encoder: weights from the checkpoint, freq_embed resized bicubically 16 -> 24
    enc_sd = {k.split("model.", 1)[-1]: v for k, v in encoder.state_dict().items()}
    conv = [v for k, v in enc_sd.items() if k.endswith("patch_embed.conv1.weight")]
    assert len(conv) == 1 and torch.equal(conv[0], cls.patch_embed.conv1.weight.detach())
    freq0 = [v for k, v in enc_sd.items() if k.endswith("freq_embed.0")][0]
    assert freq0.shape == (24, 24, 8)

    x = torch.randn(2, 3, 64, 96)
    y = torch.randint(0, num_classes, (2, 64, 96))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    model.train()
    logits = model(x)
    assert logits.shape == (2, num_classes, 64, 96)
    loss = torch.nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert changed(before, model, "encoder") and changed(before, model, "decoder")

    model.eval()
    with torch.no_grad():
        pred = model(torch.randn(1, 3, 96, 32)).argmax(1)
    assert pred.shape == (1, 96, 32) and pred.min() >= 0 and pred.max() < num_classes
