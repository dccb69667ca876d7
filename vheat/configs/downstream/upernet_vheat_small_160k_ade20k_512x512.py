# Official segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_small.py.
_base_ = ["./_vheat_upernet_160k_ade20k_512x512.py"]
model = dict(
    backbone=dict(depths=(2, 2, 18, 2), dims=96, drop_path_rate=0.4),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
