# Shared part of the vHeat UperNet configs (mmseg 1.2.2): the official vHeat segmentation
# configs inherit mmseg's Swin UperNet 160k ADE20K 512x512 recipe (AdamW 6e-5, poly, 2 images
# x 8 GPUs, auxiliary FCN head on stage 3) and replace the backbone. The Swin-T/S/B recipes
# differ only in the Swin backbone and the head channels, which are replaced here and in the
# per-size files. The official wrapper ignored the inherited Swin arguments; `_delete_`
# drops them.
_base_ = ["mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"]
custom_imports = dict(imports=["vheat.downstream.mm_backbones"], allow_failed_imports=False)
checkpoint_file = None  # the inherited Swin checkpoint URL: unused once the backbone is replaced

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
        out_indices=(0, 1, 2, 3),
        pretrained=None,  # classification checkpoint; freq_embed zero-padded as interpolate4downstream.py
        freq_embed_fit="pad",
    ),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
