"""What a user could run instead of our HCO backends, as benchmark candidates.

Every candidate is a pair of callables on fixed inputs: ``forward()`` (inference, no graph)
and ``fwd_bwd()`` (forward, then the gradients of x and E for a given dy). Peers:

- ``matmul4``: the plain channels-last 4-matmul formulation (reference.hco_matmul4), the
  strongest peer at small planes;
- ``scipy``: ``scipy.fft.dctn`` / ``idctn`` with ``workers`` = torch threads; its backward
  written as a user would: dE = sum_b DCT2(x) DCT2(dy), dx = IDCT2(DCT2(dy) E).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

import vheat_kernels as vk
from vheat_kernels.reference import hco_matmul4

PEERS = ("matmul4", "scipy")
Pair = Tuple[Callable[[], object], Callable[[], object]]


def _torch_pair(fn, x, E, dy) -> Pair:
    xg, Eg = x.clone().requires_grad_(True), E.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            fn(x, E)

    def fwd_bwd():
        xg.grad = Eg.grad = None
        fn(xg, Eg).backward(dy)

    return forward, fwd_bwd


def _scipy_pair(x, E, dy, workers: int) -> Pair:
    import scipy.fft as sf

    xs, es, gs = x.numpy(), E.numpy(), dy.numpy()
    dct = lambda a: sf.dctn(a, type=2, axes=(1, 2), norm="ortho", workers=workers)
    idct = lambda a: sf.idctn(a, type=2, axes=(1, 2), norm="ortho", workers=workers)

    def forward():
        return idct(dct(xs) * es)

    def fwd_bwd():
        X = dct(xs)
        idct(X * es)  # y
        G = dct(gs)
        return (X * G).sum(axis=0), idct(G * es)  # dE, dx

    return forward, fwd_bwd


def candidates(x: torch.Tensor, E: torch.Tensor, dy: torch.Tensor, backends) -> Dict[str, Pair]:
    """Our backends (by name) and the peers, each as (forward, fwd_bwd) on (x, E, dy)."""
    out = {b: _torch_pair(lambda a, e, b=b: vk.heat_conduction(a, e, backend=b), x, E, dy) for b in backends}
    out["matmul4"] = _torch_pair(hco_matmul4, x, E, dy)
    if x.dtype in (torch.float32, torch.float64):  # scipy has no bfloat16
        out["scipy"] = _scipy_pair(x, E, dy, torch.get_num_threads())
    return out
