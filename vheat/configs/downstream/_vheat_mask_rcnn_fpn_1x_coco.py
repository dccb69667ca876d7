# Shared part of the vHeat Mask R-CNN configs (mmdet 3.3.0): the official vHeat detection
# configs inherit mmdet's Swin-T Mask R-CNN 1x (FPN, AdamW 1e-4, wd 0.05, 12 epochs, 2 images
# x 8 GPUs) and replace the backbone. The official MMDET_VHEAT swallowed the inherited Swin
# arguments it had no use for; `_delete_` drops them here, except drop_path_rate, which the
# official wrapper did take from the Swin config when a vHeat config did not set it.
_base_ = ["mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"]
custom_imports = dict(imports=["vheat.downstream.mm_backbones"], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type="MMDET_VHEAT",
        out_indices=(0, 1, 2, 3),
        img_size=512,
        # A classification checkpoint (official format) or None; its freq_embed is zero-padded
        # to img_size exactly as the official interpolate4downstream.py + load did.
        pretrained=None,
        freq_embed_fit="pad",
    ),
)
train_dataloader = dict(batch_size=2)  # x 8 GPUs, as the official runs
val_dataloader = dict(batch_size=2)

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type="MultiStepLR", begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type="OptimWrapper",
    paramwise_cfg=dict(custom_keys={"norm": dict(decay_mult=0.0)}),
    optimizer=dict(_delete_=True, type="AdamW", lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
)
