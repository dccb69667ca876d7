"""The one place that reads and writes checkpoints: ours, the official vHeat ones, safetensors.

Reading (:func:`read_checkpoint`) looks at the file's first bytes before handing it to a
loader, so a text file, a torn write or a foreign format gets a message saying what the file
is and what was expected; it loads ``weights_only`` unless the caller trusts the file, and
checks the content checksum of files this project wrote. Every error is a
:class:`CheckpointFormatError` naming the file.

Writing (:func:`write_checkpoint`) stores ``payload_sha256``, a SHA-256 over every tensor's
bytes (and every other entry's value) in the dict, and writes atomically (temp file, fsync,
os.replace).

Layouts: released checkpoints are ``{"model": state_dict, "model_ema": state_dict, ...}``
(keys possibly prefixed ``module.``) in the train-mode layout (freq_embed, to_k);
``infer_init`` models save the infer-mode layout (k_exp). :func:`load_official_checkpoint`
takes either into a :class:`vheat.models.VHeat`; :func:`load_weights` takes any of our
formats into any timm model.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .models.freq_embed import resize_freq_embed
from .io import atomic_torch_save

PathOrDict = Union[str, os.PathLike, Mapping[str, Any]]
CLASSIFIER_KEYS = ("classifier.3.weight", "classifier.3.bias")
CHECKSUM_KEY = "payload_sha256"
TRUST_HINT = "allow_pickle=True (CLI: --set model.trust_checkpoint=true, convert: --trust-checkpoint)"


class CheckpointFormatError(ValueError):
    """A checkpoint cannot be read, is damaged, or does not fit what it is loaded into."""


# ------------------------------------------------------------------------------- reading
def sniff_format(path: str) -> str:
    """'zip' (torch.save), 'legacy' (pre-1.6 torch.save) or 'safetensors', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # a pickle protocol header
        return "legacy"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        return "safetensors"
    if not head:
        found = "an empty file"
    else:
        try:
            text = head.decode("utf-8")
            found = f"text starting {text[:12]!r}"
        except UnicodeDecodeError:
            found = f"bytes {head[:8].hex(' ')}"
    raise CheckpointFormatError(
        f"{path} is not a checkpoint: it holds {found}; expected a torch.save file (.pth, a zip archive) "
        f"or a .safetensors file")


def read_checkpoint(path: Union[str, os.PathLike], allow_pickle: bool = False) -> Any:
    """The checkpoint at ``path`` on CPU, its checksum verified when it carries one.

    ``allow_pickle`` loads with full pickle (only for trusted files: a released checkpoint
    may carry e.g. a pickled training config); otherwise ``weights_only``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointFormatError(f"checkpoint not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"checkpoint {path} is a folder, not a file")
    kind = sniff_format(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointFormatError(f"cannot read {path}: a damaged .safetensors file ({exc})") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        # a callable of a module that can run code (os.system, subprocess, eval): never a damaged file
        unsafe = re.search(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked", str(exc))
        if unsafe:
            raise CheckpointFormatError(
                f"checkpoint {path} is refused as unsafe: loading it would call {unsafe.group(1)} (module "
                f"{unsafe.group(2)} can run arbitrary code, so weights-only loading blocks it); do not load it "
                f"with trust_checkpoint unless you know what it runs") from None
        # weights-only loading names what it refused: a class ("Unsupported global: GLOBAL x.Y") or an opcode
        refused = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc)) or \
            re.search(r"WeightsUnpickler error: ([^\n.]+)", str(exc))
        if refused and not allow_pickle:
            raise CheckpointFormatError(
                f"checkpoint {path} holds objects beyond tensors ({refused.group(1)}), which "
                f"weights-only loading refuses. If you trust the file, load it with {TRUST_HINT}.") from None
        raise CheckpointFormatError(f"cannot read checkpoint {path}: a damaged torch.save file "
                                    f"({_first_line(exc)})") from None
    except Exception as exc:  # torn zip archive, bad record, ...
        raise CheckpointFormatError(f"cannot read checkpoint {path}: a truncated or damaged torch.save file "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from None
    verify_checksum(checkpoint, path)
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------ integrity
def payload_sha256(checkpoint: Mapping[str, Any]) -> str:
    """SHA-256 over every entry except the checksum itself: tensor bytes, dtypes, shapes, values."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(repr(k).encode() + b":")
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.dtype, torch.device)):
        h.update(repr(obj).encode())
    else:  # a pickled object (trusted files only): its repr may hold a memory address
        h.update(f"<{type(obj).__module__}.{type(obj).__qualname__}>".encode())


def verify_checksum(checkpoint: Any, path: str) -> None:
    """A file this project wrote must still hold what was written (silent bit flips, edits)."""
    if not isinstance(checkpoint, Mapping) or CHECKSUM_KEY not in checkpoint:
        return
    stored, actual = checkpoint[CHECKSUM_KEY], payload_sha256(checkpoint)
    if stored != actual:
        raise CheckpointFormatError(
            f"checkpoint {path} is damaged: its content checksum does not match (stored sha256 {str(stored)[:12]}..., "
            f"content {actual[:12]}...); the file changed after it was written. Use another checkpoint.")


def write_checkpoint(path: Union[str, os.PathLike], checkpoint: Mapping[str, Any]) -> None:
    """Writes ``checkpoint`` with its content checksum, atomically (temp file, fsync, os.replace)."""
    payload = {k: v for k, v in checkpoint.items() if k != CHECKSUM_KEY}
    payload[CHECKSUM_KEY] = payload_sha256(payload)
    atomic_torch_save(payload, os.fspath(path))


# ------------------------------------------------------------------------------- layouts
def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> Dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key that has it (DistributedDataParallel / EMA wrappers)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drops every ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefix."""
    out = {}
    for k, v in state_dict.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(checkpoint: Any, key: str = "model", source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state_dict under ``key`` ('model', 'model_ema', 'state_dict'; 'auto': the first of those
    present), or ``checkpoint`` itself if it is one; prefixes stripped. ``source`` names it in errors."""
    return pick_state_dict(checkpoint, key, source)[0]


def pick_state_dict(checkpoint: Any, key: str = "auto", source: str = "checkpoint") -> tuple[Dict[str, torch.Tensor], str]:
    """:func:`extract_state_dict` and the entry it used ('state_dict' for a bare one)."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(f"{source} holds a {type(checkpoint).__name__}; expected a state_dict or a "
                                    f"checkpoint dict with a 'model' entry")
    if _is_state_dict(checkpoint):
        return strip_prefixes(checkpoint), "state_dict"
    if key == "auto":
        key = next((k for k in ("model", "state_dict") if k in checkpoint), "model")
    if key not in checkpoint or checkpoint[key] is None:
        raise CheckpointFormatError(
            f"{source} has no {key!r} entry; it has {sorted(map(str, checkpoint))[:10]} "
            "(official checkpoints hold 'model' and 'model_ema')")
    sd = checkpoint[key]
    if isinstance(sd, Mapping) and isinstance(sd.get("module"), Mapping):
        sd = sd["module"]  # some EMA wrappers nest the weights
    if not _is_state_dict(sd):
        raise CheckpointFormatError(f"{source}[{key!r}] is not a state_dict of tensors")
    return strip_prefixes(sd), key


def is_infer_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for the infer-mode layout (folded k_exp), False for train mode (freq_embed, to_k)."""
    return any(k.endswith(".op.k_exp") for k in state_dict)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official keys -> ``model``'s: strips ``module.``, resizes freq_embed (bicubic) to the model's grids.

    Does not change the layout (train vs infer); :func:`load_official_checkpoint` switches the model.
    """
    sd = strip_prefixes(state_dict)
    own = model.state_dict()
    for i, _ in enumerate(getattr(model, "res", [])):
        key = f"freq_embed.{i}"
        if key in sd and key in own and sd[key].shape != own[key].shape:
            if sd[key].shape[2] != own[key].shape[2]:
                raise CheckpointFormatError(
                    f"{key}: checkpoint has {sd[key].shape[2]} channels, the model {own[key].shape[2]} (another variant?)"
                )
            sd[key] = resize_freq_embed(sd[key], own[key].shape[:2]).contiguous()
    return sd


# ------------------------------------------------------------------------------- loading
def describe_mismatch(model: nn.Module, state_dict: Mapping[str, Any], limit: int = 5) -> Optional[str]:
    """None when ``state_dict`` fits ``model`` exactly, else what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_state_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str, arch: str) -> None:
    problem = describe_mismatch(model, state_dict)
    if problem:
        raise CheckpointFormatError(f"checkpoint {source} does not fit model {arch!r} (another architecture or "
                                    f"size?): {problem}")
    model.load_state_dict(state_dict, strict=True)


def load_official_checkpoint(
    model: nn.Module,
    checkpoint: PathOrDict,
    key: str = "model",
    strict: bool = True,
    keep_classifier_if_mismatch: bool = False,
    allow_pickle: bool = False,
):
    """Load an official vHeat checkpoint (path, checkpoint dict or state_dict) into a VHeat model.

    A train-layout checkpoint into an infer-mode model is folded into k_exp on the way; an
    infer-layout checkpoint folds a train-mode model first (k_exp cannot give back freq_embed /
    to_k); a load that fails leaves the model as it was.
    ``keep_classifier_if_mismatch`` keeps the model's own head when the class counts differ
    (fine-tuning). Returns ``load_state_dict``'s result.
    """
    source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
    sd = convert_official_state_dict(extract_state_dict(checkpoint, key, source), model)
    if keep_classifier_if_mismatch:
        own = model.state_dict()
        for k in CLASSIFIER_KEYS:
            if k in sd and k in own and sd[k].shape != own[k].shape:
                sd.update({kk: own[kk] for kk in CLASSIFIER_KEYS if kk in own})
                break
    return model.load_official_state_dict(sd, strict=strict)


def classifier_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the classification head (timm's get_classifier())."""
    if not hasattr(model, "get_classifier"):
        return []
    head = model.get_classifier()
    for prefix, module in model.named_modules():
        if module is head:
            return [f"{prefix}.{k}" if prefix else k for k in head.state_dict()]
    return []


def load_weights(model: nn.Module, checkpoint: PathOrDict, key: str = "auto", drop_head_if_mismatch: bool = False,
                 arch: Optional[str] = None, allow_pickle: bool = False, source: Optional[str] = None) -> str:
    """Loads weights (a path, or a checkpoint already read) into ``model`` strictly; returns the entry used.

    vHeat models take the official layouts (train / infer mode, freq_embed resized to the
    model's resolution). ``drop_head_if_mismatch``: fine-tuning on another label set keeps the
    freshly initialised classifier when its shape differs.
    """
    arch = arch or type(model).__name__
    if isinstance(checkpoint, (str, os.PathLike)):
        source = source or os.fspath(checkpoint)
        checkpoint = read_checkpoint(checkpoint, allow_pickle)
    source = source or "checkpoint"
    sd, used = pick_state_dict(checkpoint, key, source)
    where = f"{source}[{used!r}]"
    if hasattr(model, "set_infer_mode"):  # vheat.models.VHeat
        try:
            load_official_checkpoint(model, sd, keep_classifier_if_mismatch=drop_head_if_mismatch)
        except (CheckpointFormatError, RuntimeError) as exc:
            problem = describe_mismatch(model, sd) or str(exc)
            raise CheckpointFormatError(f"checkpoint {where} does not fit model {arch!r} (another architecture or "
                                        f"size?): {problem}") from None
        return used
    if drop_head_if_mismatch:
        own = model.state_dict()
        head = classifier_keys(model)
        if any(k in sd and tuple(sd[k].shape) != tuple(own[k].shape) for k in head):
            sd = dict(sd, **{k: own[k] for k in head})
    load_state_strict(model, sd, where, arch)
    return used


# ------------------------------------------------------------------------------- writing
def save_official_checkpoint(
    path: Union[str, os.PathLike], model: nn.Module, model_ema: Optional[nn.Module] = None, **extra: Any
) -> None:
    """Write ``{"model": ..., ["model_ema": ...], **extra}`` with its checksum, atomically."""
    payload = {"model": model.state_dict(), **extra}
    if model_ema is not None:
        payload["model_ema"] = model_ema.state_dict()
    write_checkpoint(path, payload)
