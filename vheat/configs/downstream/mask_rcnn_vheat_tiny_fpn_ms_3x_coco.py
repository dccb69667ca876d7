# Official detection/configs/vheat/mask_rcnn_fpn_coco_tiny_ms_3x.py: no img_size (the
# wrapper's default 224 applied) and `drop_path=0.2` ignored (inherited Swin-T 0.2 applied);
# post-norm + layer scale as the tiny 1x config (see its note on pretrained_strict).
_base_ = ["./_vheat_mask_rcnn_fpn_ms_3x_coco.py"]
model = dict(
    backbone=dict(depths=(2, 2, 6, 2), dims=96, img_size=224, drop_path_rate=0.2, post_norm=True,
                  layer_scale=1e-5, pretrained_strict=False),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
