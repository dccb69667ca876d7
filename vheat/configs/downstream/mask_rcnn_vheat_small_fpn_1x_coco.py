# Official detection/configs/vheat/mask_rcnn_fpn_coco_small.py.
_base_ = ["./_vheat_mask_rcnn_fpn_1x_coco.py"]
model = dict(
    backbone=dict(depths=(2, 2, 18, 2), dims=96, drop_path_rate=0.3, post_norm=True, layer_scale=1e-5),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
