"""Input validation shared by every backend: errors say what was wrong and what is accepted."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_hco_inputs(x: torch.Tensor, E: torch.Tensor, *, check_values: bool = False) -> None:
    """Validate ``x`` (B, H, W, C) and ``E`` (H, W, C) for the Heat Conduction Operator.

    Values are not inspected unless ``check_values``: the operator is linear in E and
    well defined for any real E, and a NaN/negativity scan costs a pass over E and, on
    a GPU, a host sync on every call. vHeat's E = D ** ReLU(.) always lies in (0, 1].
    """
    if not isinstance(x, torch.Tensor) or not isinstance(E, torch.Tensor):
        raise TypeError(f"heat_conduction: x and E must be tensors, got {type(x).__name__} and {type(E).__name__}")
    xs, es = x.shape, E.shape
    if len(xs) != 4:
        raise ValueError(
            f"heat_conduction: x must be channels-last with shape (B, H, W, C), got {len(xs)}-D shape {tuple(xs)}"
        )
    if len(es) != 3:
        raise ValueError(f"heat_conduction: E must have shape (H, W, C), got {len(es)}-D shape {tuple(es)}")
    if es != xs[1:]:
        raise ValueError(
            f"heat_conduction: E shape {tuple(es)} does not match x's (H, W, C) = {tuple(xs[1:])}; "
            "E must be (H, W, C) for x of shape (B, H, W, C)"
        )
    if x.dtype not in FLOAT_DTYPES or E.dtype not in FLOAT_DTYPES:
        name, t = ("x", x) if x.dtype not in FLOAT_DTYPES else ("E", E)
        raise TypeError(f"heat_conduction: {name} has dtype {t.dtype}; accepted: float32, float64, bfloat16, float16")
    if not (x.is_cpu and E.is_cpu) and x.device != E.device:  # CPU flags first: no device objects
        raise ValueError(f"heat_conduction: x is on {x.device} but E is on {E.device}; put both on one device")
    if min(xs[1:]) < 1:
        raise ValueError(f"heat_conduction: H, W and C must be >= 1, got x shape {tuple(xs)}")
    if check_values:
        if not bool(torch.isfinite(E).all()):
            raise ValueError("heat_conduction: E contains NaN or Inf (check_values=True)")
        if bool((E < 0).any()):
            raise ValueError("heat_conduction: E has negative entries; vHeat's E = D ** k lies in (0, 1] (check_values=True)")
