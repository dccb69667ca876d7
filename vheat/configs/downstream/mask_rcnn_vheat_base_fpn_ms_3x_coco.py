# No official base 3x config exists: the base 1x model (drop_path_rate 0.5) on the
# official 3x multi-scale schedule.
_base_ = ["./_vheat_mask_rcnn_fpn_ms_3x_coco.py"]
model = dict(
    backbone=dict(depths=(2, 2, 18, 2), dims=128, drop_path_rate=0.5, post_norm=True, layer_scale=1e-5),
    neck=dict(in_channels=[128, 256, 512, 1024]),
)
