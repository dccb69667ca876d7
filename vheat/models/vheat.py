"""The vHeat classification model (Wang et al., arXiv 2405.16555) on the vheat_kernels HCO.

Same modules, parameter names, shapes and init as the official ``vHeat`` class, so official
checkpoints load with ``strict=True``; internally the blocks run channels-last. Adds what the
official class lacks: any input resolution in train mode (bicubic freq_embed resize), a
per-model HCO backend, gradient checkpointing,
timm's model interface (forward_features / forward_head / forward_intermediates, global_pool,
reset_classifier) and timm's registration: ``checkpoint_filter_fn``, ``_create_vheat``,
``default_cfgs`` and ``vheat_tiny`` / ``vheat_small`` / ``vheat_base`` (as timm/models/convnext.py).
"""
# No ``from __future__ import annotations`` in this module: torch.fx copies forward's
# annotations into the code it generates, and TorchScript cannot read them as strings
# ("Unknown type name '_torch_Tensor_'" when scripting an FX graph of the model).
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import SelectAdaptivePool2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import adapt_input_conv

from vheat_kernels import attenuation
from vheat_kernels.stages import VARIANTS

from . import tracing
from .heat import HeatBlock
from .load_guard import fold_for, unchanged_on_failure
from .layers import LayerNorm2d, StemLayer, make_downsample

GLOBAL_POOLS = ("", "avg", "max", "avgmax", "catavgmax")


def _check_global_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"VHeat: global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    if not global_pool and num_classes > 0:
        raise ValueError("VHeat: global_pool='' (no pooling) needs num_classes=0: the Linear classifier takes pooled features")


def _pool_and_fc(num_features: int, num_classes: int, global_pool: str) -> List[nn.Module]:
    """classifier[1:]: pooling (flattened) and the Linear, at the official Sequential positions."""
    pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=False)
    fc = nn.Linear(num_features * pool.feat_mult(), num_classes) if num_classes > 0 else nn.Identity()
    return [pool, nn.Flatten(1) if global_pool else nn.Identity(), fc]


def _contiguous_state_dict(module: nn.Module, state_dict: Dict[str, Any], prefix: str, local_metadata: Any) -> None:
    # Conv weights are channels_last in memory (see _channels_last_conv_weights); savers such
    # as safetensors and timm's save_for_hf take only contiguous tensors. state_dict(keep_vars=True)
    # (torch.jit.trace finds the parameters through it) keeps the Parameters themselves.
    for key, value in state_dict.items():
        if key.startswith(prefix) and not isinstance(value, nn.Parameter) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


class HeatStage(nn.Sequential):
    """``depth`` HeatBlocks followed by the downsample (official ``AdditionalInputSequential``).

    forward takes and returns NCHW tensors (channels-last in memory, so the permutes to the
    blocks' (B, H, W, C) are views) and returns both the stage features before the
    downsample (stride 4/8/16/32) and the downsampled output.
    """

    __jit_unused_properties__ = ["blocks", "downsample"]

    @property
    def blocks(self) -> List[HeatBlock]:
        return list(self)[:-1]

    @property
    def downsample(self) -> nn.Module:
        return self[-1]

    def forward(self, x: torch.Tensor, freq: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        # One loop over the Sequential, telling blocks from the downsample by their ``op``:
        # TorchScript unrolls the loop and resolves hasattr per module.
        x = x.permute(0, 2, 3, 1)
        feat, out = x, x
        for module in self:
            if hasattr(module, "op"):
                x = module(x, freq)
            else:
                feat = x.permute(0, 3, 1, 2)
                out = module(feat)
        return feat, out


class VHeat(nn.Module):
    """vHeat backbone + classifier. Mirrors the official constructor's arguments.

    Args:
        depths, dims: blocks per stage and channels (an int ``dims`` doubles per stage).
        img_size: training resolution; fixes the stored freq_embed grids (img_size / 4 / 2**i).
            Other input sizes work: each stage's embedding is resized to its (H, W).
        post_norm, layer_scale, mlp_ratio, drop_path_rate: as the official model.
        infer_mode: fold E into ``k_exp`` at construction (official infer_init); see set_infer_mode.
        hco_backend: HCO backend of every block (see "HCO backend" below).
        use_checkpoint: gradient checkpointing per block (timm: set_grad_checkpointing).
        drop_rate: dropout before the final Linear (not in the official model; default 0).
        global_pool: timm's pooling before the Linear: 'avg' (official), 'max', 'avgmax',
            'catavgmax' (2x wide Linear input) or '' (none: forward_head returns the normed 4-D map,
            only with num_classes=0).
        device, dtype: timm's factory arguments: where and in which float type the parameters live
            (``create_model(..., device="meta")`` builds the structure without real weights).

    HCO backend: the model has one carrier, each block's ``op.hco_backend``, set by the
    constructor's ``hco_backend=`` (the YAML ``model.hco_backend`` and ``vheat ... --backend``
    feed that argument) or later by :meth:`set_hco_backend`. The blocks pass it as the
    ``backend=`` of every HCO call, so the narrower setting wins: the model's (the call's),
    then the process's ``$VHEAT_HCO_BACKEND``, then ``auto``.
    """

    # Properties TorchScript must not compile (they return modules or Python objects).
    __jit_unused_properties__ = ["global_pool", "infer_mode"]

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: Union[int, Sequence[int]] = 96,
        drop_path_rate: float = 0.2,
        post_norm: bool = True,
        layer_scale: Optional[float] = None,
        use_checkpoint: bool = False,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        infer_mode: bool = False,
        hco_backend: Optional[str] = None,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        _check_global_pool(global_pool, num_classes)
        num_layers = len(depths)
        if isinstance(dims, int):
            dims = [int(dims * 2**i) for i in range(num_layers)]
        if len(dims) != num_layers:
            raise ValueError(f"VHeat: dims {list(dims)} and depths {list(depths)} must have the same length")
        if isinstance(img_size, (tuple, list)):
            if len(set(img_size)) != 1:
                raise ValueError(f"VHeat: img_size fixes square freq_embed grids; got {img_size}, pass one int")
            img_size = img_size[0]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_layers = num_layers
        self.depths = list(depths)
        self.dims = list(dims)
        self.embed_dim = dims[0]
        self.num_features = dims[-1]
        self.drop_rate = drop_rate
        res0 = img_size / patch_size
        self.res = [int(res0 // 2**i) if i else int(res0) for i in range(num_layers)]
        self.feature_info = [dict(num_chs=dims[i], reduction=patch_size * 2**i, module=f"layers.{i}") for i in range(num_layers)]

        self.patch_embed = StemLayer(in_chans, self.embed_dim)
        self.freq_embed = nn.ParameterList(
            [nn.Parameter(torch.zeros(self.res[i], self.res[i], dims[i])) for i in range(num_layers)]
        )
        for p in self.freq_embed:
            trunc_normal_(p, std=0.02)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # meta-device safe
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            blocks = [
                HeatBlock(
                    dims[i], self.res[i], drop_path=dpr[sum(depths[:i]) + d], mlp_ratio=mlp_ratio,
                    post_norm=post_norm, layer_scale=layer_scale, hco_backend=hco_backend,
                )
                for d in range(depths[i])
            ]
            down = make_downsample(dims[i], dims[i + 1]) if i < num_layers - 1 else nn.Identity()
            self.layers.append(HeatStage(*blocks, down))
        # Official head: Sequential(LayerNorm2d, pool, Flatten, Linear), so the state_dict keeps
        # classifier.0.* and classifier.3.*; the pool is timm's SelectAdaptivePool2d.
        self.classifier = nn.Sequential(LayerNorm2d(self.num_features), *_pool_and_fc(self.num_features, num_classes, global_pool))
        self.head_hidden_size = self.num_features * self.classifier[1].feat_mult()
        self.head_drop = nn.Dropout(drop_rate)
        self.apply(self._init_weights)
        self._channels_last_conv_weights()
        self.register_state_dict_post_hook(_contiguous_state_dict)

        self.set_grad_checkpointing(use_checkpoint)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        if infer_mode:
            self.set_infer_mode(True)

    def _channels_last_conv_weights(self) -> None:
        # Every convolution sees channels-last activations (the stem converts its input;
        # the rest are permuted views of (B, H, W, C) tensors); with contiguous NCHW weights
        # oneDNN would lay each weight out again on every call, a cost of the size of the
        # convolution itself for the downsamples. load_state_dict copies into these tensors, so
        # the layout persists; state_dict() hands out contiguous copies (_contiguous_state_dict).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Official init: Linear trunc_normal(0.02) / zero bias, LayerNorm (1, 0); Conv2d keeps PyTorch's.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # --- infer mode -------------------------------------------------------------------------
    @property
    def infer_mode(self) -> bool:
        return "freq_embed" not in self._modules

    @torch.jit.ignore
    def set_infer_mode(self, enabled: bool = True) -> "VHeat":
        """Fold E = D ** to_k(freq_embed) into per-block ``k_exp`` (official ``infer_init``), in place.

        Folded, the state_dict is the official infer-mode one (k_exp, no freq_embed / to_k) and
        the output at the training resolution is unchanged; other resolutions need the train
        weights, which folding drops. Folding is one-way, like timm's reparameterisation: to
        keep a train-mode model, fold a copy (``copy.deepcopy(model).infer_init()``); to go back,
        load a train-mode checkpoint into a new model.
        """
        if enabled == self.infer_mode:
            return self
        if not enabled:
            raise RuntimeError(
                "VHeat.set_infer_mode(False): folding is one-way (the train-mode weights freq_embed and "
                "to_k are gone); build a new model and load a train-mode checkpoint, or fold a copy "
                "(copy.deepcopy(model).infer_init()) next time"
            )
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                block.op.fold(self.freq_embed[i])
        del self.freq_embed
        return self

    @torch.jit.ignore
    def infer_init(self) -> "VHeat":
        """Official name for folding (see set_infer_mode)."""
        return self.set_infer_mode(True)

    def __prepare_scriptable__(self) -> "VHeat":
        # torch.jit.script calls this first: the scripted model calls torch.ops.vheat.hco_forward
        # directly (the fused kernel of the input's device), which needs the op library.
        from vheat_kernels import extension_available

        if not extension_available():
            raise RuntimeError(
                "VHeat: torch.jit.script needs the compiled vheat ops (the scripted model calls "
                "torch.ops.vheat.hco_forward); build them (bash scripts/setup_env.sh), or use "
                "torch.jit.trace / torch.export / torch.fx, which run any hco_backend"
            )
        return self

    @torch.jit.ignore
    def load_pretrained(self, path: str, key: str = "model", keep_classifier_if_mismatch: bool = True,
                        allow_pickle: bool = False) -> None:
        """Load an official checkpoint file (``key``: 'model' or 'model_ema') through checkpoint_filter_fn.

        The one loader for files outside timm's path (same mapping as ``timm.create_model(...,
        pretrained=True)``, including timm's first-conv adaptation for another ``in_chans``);
        keeps this model's head when the class counts differ.
        """
        from ..checkpoint_io import extract_state_dict, read_checkpoint

        checkpoint = read_checkpoint(path, allow_pickle=allow_pickle)
        state_dict = extract_state_dict(checkpoint, key)
        with unchanged_on_failure(self):
            fold_for(self, state_dict)
            self._load_filtered(checkpoint_filter_fn(state_dict, self), keep_classifier_if_mismatch)

    @torch.jit.ignore
    def load_official_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True):
        """An official state_dict of either layout, through checkpoint_filter_fn; an infer-layout one
        (k_exp) folds this model first. A load that fails leaves the model as it was."""
        with unchanged_on_failure(self):
            fold_for(self, state_dict)
            return self.load_state_dict(checkpoint_filter_fn(state_dict, self), strict=strict)

    def _load_filtered(self, sd: Dict[str, torch.Tensor], keep_classifier_if_mismatch: bool) -> None:
        from ..checkpoint_io import CLASSIFIER_KEYS

        stem = "patch_embed.conv1.weight"
        in_chans = self.patch_embed.conv1.in_channels
        if stem in sd and sd[stem].shape[1] != in_chans:
            sd[stem] = adapt_input_conv(in_chans, sd[stem])
        if keep_classifier_if_mismatch:
            own = self.state_dict()
            if any(k in own and sd.get(k, own[k]).shape != own[k].shape for k in CLASSIFIER_KEYS):
                sd.update({k: own[k] for k in CLASSIFIER_KEYS if k in own})
        self.load_state_dict(sd, strict=True)

    # --- configuration ----------------------------------------------------------------------
    @torch.jit.ignore
    def set_hco_backend(self, backend: Optional[str]) -> "VHeat":
        """Backend for every block's HCO: 'reference', 'fft', 'cpu', ..., or None for auto."""
        for stage in self.layers:
            for block in stage.blocks:
                block.op.hco_backend = backend
        return self

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.layers:
            for block in stage.blocks:
                block.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Nothing beyond timm's default rule (1-D params and biases), as the official optimizer.

        The official ``build_optimizer`` skips decay for 1-D parameters, names ending in
        ``.bias`` and ``model.no_weight_decay()``, which vHeat does not define: ``freq_embed``
        (3-D) is decayed and ``gamma1/2`` are not. timm applies the same rule.
        """
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        return dict(
            stem=r"^patch_embed",
            blocks=[(r"^layers\.(\d+)", None), (r"^freq_embed\.(\d+)", None)] if coarse else [
                (r"^layers\.(\d+)\.(\d+)\.", None),
                (r"^freq_embed\.(\d+)", (0,)),
                (r"^classifier\.0", (99999,)),
            ],
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    @property
    def global_pool(self) -> SelectAdaptivePool2d:
        """The pooling module (timm's SelectAdaptivePool2d); its ``pool_type`` is the global_pool name."""
        return self.classifier[1]

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """New Linear for ``num_classes`` (0: none) and, if given, another pooling (see GLOBAL_POOLS).

        Without ``global_pool`` the current pooling stays, except that a new classifier on a
        model without pooling ('') gets the official 'avg' back: the Linear takes pooled features.
        """
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        if global_pool is None and not pool and num_classes > 0:
            pool = "avg"
        _check_global_pool(pool, num_classes)
        device, dtype = self.patch_embed.conv1.weight.device, self.patch_embed.conv1.weight.dtype
        self.num_classes = num_classes
        for idx, module in enumerate(_pool_and_fc(self.num_features, num_classes, pool), start=1):
            self.classifier[idx] = module
        self.classifier[3].apply(self._init_weights)
        self.classifier.to(device=device, dtype=dtype).train(self.training)
        self.head_hidden_size = self.num_features * self.classifier[1].feat_mult()

    # --- forward ------------------------------------------------------------------------------
    @torch.jit.ignore
    def _stage_freq(self, i: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Stage i's freq embedding at the NCHW feature map x's size; None in infer mode (k_exp)."""
        return tracing.freq_embed_like(self.freq_embed[i], x) if "freq_embed" in self._modules else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> last stage's features (B, C, H/32, W/32), before the classifier norm."""
        x = self.patch_embed(x)
        # hasattr: TorchScript resolves the mode when compiling, and zips the unrolled stages
        # with their embeddings (it cannot index a ParameterList with a loop variable).
        if hasattr(self, "freq_embed"):
            for stage, freq in zip(self.layers, self.freq_embed):
                x = stage(x, tracing.freq_embed_like(freq, x))[1]
        else:
            for stage in self.layers:
                x = stage(x, None)[1]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[2](self.classifier[1](self.classifier[0](x)))
        x = self.head_drop(x)
        return x if pre_logits else self.classifier[3](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """timm's feature API: stage outputs before each downsample (strides 4, 8, 16, 32), NCHW.

        ``norm`` applies the classifier's LayerNorm2d to the last stage's features.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"VHeat.forward_intermediates: output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        intermediates = []
        x = self.patch_embed(x)
        last = len(self.layers) - 1
        n_run = max_index + 1 if (stop_early or intermediates_only) else len(self.layers)
        for i in range(n_run):
            feat, x = self.layers[i](x, self._stage_freq(i, x))
            if i in take_indices:
                out = self.classifier[0](feat) if norm and i == last else feat
                intermediates.append(out.permute(0, 2, 3, 1) if output_fmt == "NHWC" else out)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages (and downsample) after the last requested feature, and the head."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[max_index][-1] = nn.Identity()
        if prune_norm:
            self.classifier[0] = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take_indices


# --- pretrained weights and timm registration ------------------------------------------------

def fold_state_dict(state_dict: Dict[str, torch.Tensor], model: VHeat) -> Dict[str, torch.Tensor]:
    """Train layout -> infer layout: k_exp = D ** ReLU(to_k(freq_embed)) per block, as Heat2D.fold."""
    sd = dict(state_dict)
    for i, stage in enumerate(model.layers):
        freq = sd.pop(f"freq_embed.{i}")
        for j in range(len(stage.blocks)):
            p = f"layers.{i}.{j}.op."
            k = F.relu(F.linear(freq, sd.pop(p + "to_k.0.weight"), sd.pop(p + "to_k.0.bias")))
            sd[p + "k_exp"] = attenuation(k).to(freq.dtype)
    return sd


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: VHeat) -> Dict[str, torch.Tensor]:
    """Official vHeat checkpoint -> ``model``'s state_dict (timm's ``pretrained_filter_fn``); pure.

    Takes a checkpoint dict (its ``model`` entry) or a state_dict; strips ``module.``; resizes
    freq_embed (bicubic) to the model's img_size; a train-layout checkpoint for an infer-mode
    model is folded into k_exp here. An infer-layout checkpoint (k_exp) needs an infer-mode
    model: k_exp cannot give back freq_embed / to_k (``VHeat.load_pretrained`` and
    ``vheat.checkpoint_io.load_official_checkpoint`` fold the model first). timm's loader then
    adapts the first conv for ``in_chans != 3`` and drops the head for another class count.
    """
    from ..checkpoint_io import CheckpointFormatError, convert_official_state_dict, extract_state_dict, is_infer_layout

    sd = convert_official_state_dict(extract_state_dict(state_dict, "model"), model)
    if is_infer_layout(sd):
        for i, res in enumerate(model.res):
            key = f"layers.{i}.0.op.k_exp"
            if key in sd and tuple(sd[key].shape[:2]) != (res, res):
                raise CheckpointFormatError(
                    f"{key}: the infer-mode checkpoint is folded for a {tuple(sd[key].shape[:2])} grid, the model "
                    f"has {(res, res)}: build the model with the checkpoint's img_size, or load a train-mode checkpoint"
                )
        if not model.infer_mode:
            raise CheckpointFormatError(
                "this checkpoint is in the infer-mode layout (k_exp): build the model with infer_mode=True "
                "(or load it with VHeat.load_pretrained / vheat.checkpoint_io.load_official_checkpoint, which fold the model)"
            )
        return sd
    if model.infer_mode:
        return fold_state_dict(sd, model)
    return sd


# Official configs (classification/configs/vHeat/*.yaml and DESIGN.md); depths and widths
# from the one stage table (vheat_kernels.stages), the rest per variant here.
MODEL_ARGS: Dict[str, Dict[str, Any]] = {
    "vheat_tiny": dict(depths=VARIANTS["T"].depths, dims=VARIANTS["T"].dims[0], drop_path_rate=0.1, post_norm=False,
                       layer_scale=None),
    "vheat_small": dict(depths=VARIANTS["S"].depths, dims=VARIANTS["S"].dims[0], drop_path_rate=0.3, post_norm=True,
                        layer_scale=1e-5),
    "vheat_base": dict(depths=VARIANTS["B"].depths, dims=VARIANTS["B"].dims[0], drop_path_rate=0.5, post_norm=True,
                       layer_scale=1e-5),
}


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    # No url / hf_hub_id: nothing is downloaded unless the caller names a source (file=,
    # hf_hub_id= in pretrained_cfg_overlay, or create_model("local-dir:...") / "hf-hub:...").
    return dict(
        url="",
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,
        interpolation="bicubic",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        first_conv="patch_embed.conv1",
        classifier="classifier.3",
        license="apache-2.0",
        paper_ids="arXiv:2405.16555",
        **kwargs,
    )


default_cfgs = generate_default_cfgs({f"{name}.official": _cfg() for name in MODEL_ARGS})

_SOURCE_KEYS = ("url", "file", "state_dict", "hf_hub_id")


def _create_vheat(variant: str, pretrained: bool = False, **kwargs: Any) -> VHeat:
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")
        ).to_dict()
        if not any(cfg.get(k) for k in _SOURCE_KEYS):
            raise ValueError(
                f"{variant}: pretrained=True needs a source (nothing is downloaded by default): pass "
                f"pretrained_cfg_overlay=dict(file='/path/{variant}.pth') (or .safetensors), "
                f"or create_model('local-dir:/path/to/dir') / create_model('hf-hub:org/repo')"
            )
    return build_model_with_cfg(
        VHeat,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **dict(MODEL_ARGS[variant], **kwargs),
    )


@register_model
def vheat_tiny(pretrained: bool = False, **kwargs) -> VHeat:
    return _create_vheat("vheat_tiny", pretrained, **kwargs)


@register_model
def vheat_small(pretrained: bool = False, **kwargs) -> VHeat:
    return _create_vheat("vheat_small", pretrained, **kwargs)


@register_model
def vheat_base(pretrained: bool = False, **kwargs) -> VHeat:
    return _create_vheat("vheat_base", pretrained, **kwargs)
