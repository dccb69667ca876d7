# Official segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_base.py.
_base_ = ["./_vheat_upernet_160k_ade20k_512x512.py"]
model = dict(
    backbone=dict(depths=(2, 2, 18, 2), dims=128, drop_path_rate=0.5),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512),
)
