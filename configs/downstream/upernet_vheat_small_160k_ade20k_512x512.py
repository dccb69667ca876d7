# Official segmentation/configs/vheat/upernet_vheat_160k_ade20k_512x512_small.py (mmseg 1.2.2):
# mmseg's Swin-Small UperNet 160k ADE20K 512x512 recipe (AdamW 6e-5, poly, 2 images x 8 GPUs,
# auxiliary FCN head on stage 3 with 384 channels) with the vHeat backbone; the official
# wrapper ignored the inherited Swin arguments, `_delete_` drops them here.
_base_ = ["mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"]
custom_imports = dict(imports=["vheat.downstream.mm_backbones"], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type="MMSEG_VHEAT",
        img_size=512,
        post_norm=True,
        layer_scale=1e-5,
        drop_path_rate=0.4,
        depths=(2, 2, 18, 2),
        dims=96,
        out_indices=(0, 1, 2, 3),
        pretrained=None,  # classification checkpoint; freq_embed zero-padded as interpolate4downstream.py
        freq_embed_fit="pad",
    ),
    decode_head=dict(num_classes=150, in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(num_classes=150, in_channels=384),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
