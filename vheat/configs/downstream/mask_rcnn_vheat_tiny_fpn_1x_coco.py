# Official detection/configs/vheat/mask_rcnn_fpn_coco_tiny.py. Its `drop_path=0.1` is no
# argument of MMDET_VHEAT, so the inherited Swin-T drop_path_rate 0.2 applied. It builds a
# post-norm, layer-scale model although vHeat-T classification is pre-norm without layer
# scale: the official strict=False load left gamma1/2 at 1e-5; pretrained_strict=False keeps
# that (with a warning listing the keys).
_base_ = ["./_vheat_mask_rcnn_fpn_1x_coco.py"]
model = dict(
    backbone=dict(depths=(2, 2, 6, 2), dims=96, drop_path_rate=0.2, post_norm=True, layer_scale=1e-5,
                  pretrained_strict=False),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
