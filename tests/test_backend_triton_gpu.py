"""The fused Triton kernels on a real GPU (skipped without one; marker ``gpu``).

What the CPU interpreter cannot show: compiled kernels, autotuning, tf32x3 / tensor-core
accuracy, opcheck's fake-tensor and AOT tests, and torch.compile running the kernels.
"""
from __future__ import annotations

import os

import pytest
import torch

from vheat_kernels import heat_conduction
from vheat_kernels.testing import relative_error, tolerance

pytestmark = pytest.mark.gpu

DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # tolerances: vheat_kernels.testing
# Register-resident planes, then the streamed schedule: line pass (56 x 56, 57 x 43,
# 1 x 130) and four passes (128 x 128, 200 x 334).
SHAPES = [(8, 28, 28, 192), (8, 14, 14, 384), (8, 7, 7, 768), (3, 13, 11, 9), (2, 1, 17, 5),
          (8, 56, 56, 96), (2, 57, 43, 40), (2, 1, 130, 24), (2, 128, 128, 32), (1, 200, 334, 24)]


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 set: these tests need the compiled kernels")


def _fp64(x, E):
    return heat_conduction(x.double(), E.double(), backend="fft")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_match_fp64(shape, dtype):
    B, H, W, C = shape
    x = torch.randn(shape, device="cuda").to(dtype).requires_grad_(True)
    E = torch.rand(H, W, C, device="cuda", requires_grad=True)
    y = heat_conduction(x, E, backend="triton")
    g = torch.randn_like(y)
    dx, dE = torch.autograd.grad(y, (x, E), g)
    xd, Ed = x.detach().double().requires_grad_(True), E.detach().double().requires_grad_(True)
    yd = _fp64(xd, Ed)
    dxd, dEd = torch.autograd.grad(yd, (xd, Ed), g.double())
    assert relative_error(y, yd) <= tolerance("triton", dtype)
    assert relative_error(dx, dxd) <= tolerance("triton", dtype, "dx")
    assert relative_error(dE, dEd) <= tolerance("triton", dtype, "dE")


@pytest.mark.parametrize("shape", [(16, 14, 14, 96), (4, 56, 56, 96), (2, 100, 167, 32)])
def test_dE_is_bitwise_deterministic(shape):
    B, H, W, C = shape
    x = torch.randn(shape, device="cuda")
    E = torch.rand(H, W, C, device="cuda")
    g = torch.randn_like(x)
    from vheat_kernels.triton import hco

    first = hco.backward(g, x, E, True, True)[1]
    assert all(torch.equal(first, hco.backward(g, x, E, True, True)[1]) for _ in range(3))


def test_batch_above_grid_y_limit():
    x = torch.randn(70000, 4, 4, 2, device="cuda", requires_grad=True)
    E = torch.rand(4, 4, 2, device="cuda", requires_grad=True)
    y = heat_conduction(x, E, backend="triton")
    dx, dE = torch.autograd.grad(y, (x, E), torch.randn_like(y))
    xd, Ed = x.detach().double(), E.detach().double()
    assert relative_error(y, _fp64(xd, Ed)) <= tolerance("triton", torch.float32)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensor_on_another_device():
    x = torch.randn(2, 56, 56, 8, device="cuda:1")
    E = torch.rand(56, 56, 8, device="cuda:1")
    with torch.cuda.device(0):
        y = heat_conduction(x, E, backend="triton")
    assert y.device == x.device
    assert relative_error(y, _fp64(x.double(), E.double())) <= tolerance("triton", torch.float32)


def test_opcheck():
    from vheat_kernels.triton import hco  # noqa: F401  (registers the ops)

    x = torch.randn(2, 9, 7, 12, device="cuda", requires_grad=True)
    E = torch.rand(9, 7, 12, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.vheat.hco_triton.default, (x, E))
    g = torch.randn(2, 9, 7, 12, device="cuda")
    for need in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(torch.ops.vheat.hco_triton_backward.default, (g, x.detach(), E.detach(), *need))


def test_torch_compile_fullgraph():
    from vheat_kernels.triton import hco

    x = torch.randn(4, 14, 14, 40, device="cuda", requires_grad=True)
    E = torch.rand(14, 14, 40, device="cuda", requires_grad=True)
    fn = torch.compile(lambda a, b: hco.heat_conduction_triton(a, b).square().sum(), fullgraph=True)
    loss = fn(x, E)
    dx, dE = torch.autograd.grad(loss, (x, E))
    x2, E2 = x.detach().clone().requires_grad_(True), E.detach().clone().requires_grad_(True)
    ref = hco.heat_conduction_triton(x2, E2).square().sum()
    rdx, rdE = torch.autograd.grad(ref, (x2, E2))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dx, rdx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dE, rdE, rtol=1e-5, atol=1e-4)
