"""The fused CUDA C++ backend (csrc/cuda) vs scipy (float64) and the 'reference' backend.

GPU tests carry @pytest.mark.gpu and are skipped without a device (conftest.py); they need
the op library built with VHEAT_BUILD_CUDA=1. The tests without the marker run everywhere:
what a machine without a GPU can check about the CUDA backend (registration, errors).
"""
from __future__ import annotations

import pytest
import torch

import vheat_kernels as vk
from vheat_kernels import BackendUnavailableError, heat_conduction
from hco_oracle import AWKWARD_SHAPES, hco_grad_oracle, hco_oracle
from vheat_kernels.dct import compute_dtype
from vheat_kernels.testing import assert_close

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = AWKWARD_SHAPES + [(2, 56, 56, 24), (2, 7, 7, 768)]  # + vHeat stages
# Planes beyond shared memory (the line path) without forcing it.
LARGE_SHAPES = [(1, 130, 97, 6), (1, 211, 4, 3)]


def _cuda_built() -> bool:
    return vk.extension_available() and bool(vk.build_info().get("cuda", False))


needs_cuda_build = pytest.mark.skipif(not _cuda_built(), reason="op library built without CUDA kernels")


def _inputs(shape, dtype, device="cuda", requires_grad=False):
    x = torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype)
    E = torch.rand(shape[1:], dtype=torch.float64).to(device=device, dtype=dtype)
    return x.requires_grad_(requires_grad), E.requires_grad_(requires_grad)


@pytest.fixture(params=[False, True], ids=["fused", "lines"])
def path(request, monkeypatch):
    """Run a test on the fused plane kernels and on the line kernels (forced)."""
    if request.param:
        monkeypatch.setenv("VHEAT_CUDA_FORCE_LINES", "1")
    else:
        monkeypatch.delenv("VHEAT_CUDA_FORCE_LINES", raising=False)
    return "lines" if request.param else "fused"


# ---- everywhere -------------------------------------------------------------------


def test_backend_cuda_on_cpu_tensors_is_a_clear_error():
    x, E = _inputs((2, 5, 4, 3), torch.float32, device="cpu")
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' cannot run here"):
        heat_conduction(x, E, backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_tensor_without_a_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="NVIDIA driver|CUDA"):
        heat_conduction(*_inputs((1, 3, 3, 2), torch.float32, device="cuda"), backend="cuda")


@needs_cuda_build
def test_cuda_kernels_registered():
    for op in ("vheat::hco_forward", "vheat::hco_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op


@needs_cuda_build
@pytest.mark.parametrize(
    "x_shape, E_shape, dtype, match",
    [
        ((2, 3, 4), (3, 4, 1), torch.float32, "x must be channels-last"),
        ((2, 3, 4, 5), (3, 4, 6), torch.float32, "does not match"),
        ((2, 3, 4, 5), (3, 4, 5), torch.int32, "unsupported dtype"),
        ((1, 9000, 2, 1), (9000, 2, 1), torch.float32, "H and W must be <="),
        ((2, 3, 4, 5), (3, 4, 5), torch.float32, "needs CUDA tensors"),
    ],
)
def test_cuda_kernel_input_checks_without_a_device(x_shape, E_shape, dtype, match):
    """The CUDA kernel validates before touching the device: reach it with CPU tensors."""
    x = torch.zeros(x_shape, dtype=dtype)
    E = torch.zeros(E_shape, dtype=dtype)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.vheat.hco_forward.default.redispatch(torch._C.DispatchKeySet("CUDA"), x, E)


# ---- on a GPU ---------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_scipy(path, dtype, shape):
    x, E = _inputs(shape, dtype)
    y = heat_conduction(x, E, backend="cuda")
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert_close(y, hco_oracle(x, E), "cuda", dtype, "y", what=f"cuda {path} {shape}")


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=str)
def test_large_planes_take_the_line_path(dtype, shape):
    x, E = _inputs(shape, dtype)
    assert_close(heat_conduction(x, E, backend="cuda"), hco_oracle(x, E), "cuda", dtype, "y", what=f"cuda {shape}")


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[:8] + LARGE_SHAPES[:1], ids=str)
def test_gradients_match_scipy(path, dtype, shape):
    x, E = _inputs(shape, dtype, requires_grad=True)
    dy = torch.randn(shape, dtype=torch.float64).to(device="cuda", dtype=dtype)
    heat_conduction(x, E, backend="cuda").backward(dy)
    dx_want, dE_want = hco_grad_oracle(x, E, dy)
    assert x.grad.dtype == dtype and E.grad.dtype == dtype
    assert_close(x.grad, dx_want, "cuda", dtype, "dx", what=f"dx {path} {shape}")
    # dE sums B products of spectra: allow for B roundings of the output.
    assert_close(E.grad, dE_want, "cuda", dtype, "dE", what=f"dE {path} {shape}")


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 14, 14, 40), (1, 31, 29, 7), (2, 3, 64, 19)], ids=str)
def test_matches_reference_backend(dtype, shape):
    x, E = _inputs(shape, dtype, requires_grad=True)
    x_ref, E_ref = (t.detach().double().requires_grad_() for t in (x, E))
    dy = torch.randn(shape, device="cuda", dtype=torch.float64)
    heat_conduction(x, E, backend="cuda").backward(dy.to(dtype))
    y_ref = heat_conduction(x_ref, E_ref, backend="reference")
    y_ref.backward(dy.to(dtype).double())
    assert_close(heat_conduction(x, E, backend="cuda"), y_ref, "reference", dtype, "y")
    assert_close(x.grad, x_ref.grad, "reference", dtype, "dx")
    assert_close(E.grad, E_ref.grad, "reference", dtype, "dE")


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 6, 9), (3, 4, 1, 17), (2, 7, 6, 2)], ids=str)
def test_gradcheck_float64(path, shape):
    x, E = _inputs(shape, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: heat_conduction(a, b, backend="cuda"), (x, E))


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("shape", [(37, 14, 14, 40), (1500, 3, 5, 2), (5, 130, 97, 6)], ids=str)
def test_dE_is_bitwise_deterministic(shape):
    """Batch chunks and their reduction follow a fixed order: repeated calls agree bit for bit."""
    x, E = _inputs(shape, torch.float32)
    dy = torch.randn_like(x)
    results = [torch.ops.vheat.hco_backward(dy, x, E, False, True)[1] for _ in range(3)]
    assert all(torch.equal(results[0], r) for r in results[1:])
    assert_close(results[0], hco_grad_oracle(x, E, dy)[1], "cuda", torch.float32, "dE", what="dE")


@pytest.mark.gpu
@needs_cuda_build
def test_non_contiguous_and_mixed_dtype_inputs():
    base = torch.randn(2, 6, 9, 5, device="cuda").permute(0, 2, 1, 3)  # (2, 9, 6, 5), not contiguous
    E = torch.rand(9, 6, 5, device="cuda")
    assert not base.is_contiguous()
    y = heat_conduction(base, E, backend="cuda")
    assert_close(y, hco_oracle(base, E), "cuda", torch.float32, "y", what="permuted")
    xb = base.contiguous().to(torch.bfloat16).requires_grad_()
    E32 = E.clone().requires_grad_()  # fp32 E with bf16 x: dE comes back in fp32
    dy = torch.randn_like(xb)
    heat_conduction(xb, E32, backend="cuda").backward(dy)
    assert E32.grad.dtype == torch.float32 and xb.grad.dtype == torch.bfloat16
    assert_close(E32.grad, hco_grad_oracle(xb, E32, dy)[1], "cuda", torch.bfloat16, "dE", what="dE fp32")


@pytest.mark.gpu
@needs_cuda_build
def test_single_input_gradients_and_empty_batch():
    x, E = _inputs((2, 5, 7, 3), torch.float32)
    dy = torch.randn_like(x)
    dx, dE = torch.ops.vheat.hco_backward(dy, x, E, True, False)
    assert dE.numel() == 0 and dx.shape == x.shape
    dx, dE = torch.ops.vheat.hco_backward(dy, x, E, False, True)
    assert dx.numel() == 0 and dE.shape == E.shape
    empty = torch.empty(0, 5, 7, 3, device="cuda")
    assert heat_conduction(empty, E, backend="cuda").shape == empty.shape
    dx, dE = torch.ops.vheat.hco_backward(empty, empty, E, True, True)
    assert dx.shape == empty.shape and torch.equal(dE, torch.zeros_like(E))


@pytest.mark.gpu
@needs_cuda_build
def test_follows_the_current_device_and_stream():
    x, E = _inputs((2, 9, 8, 6), torch.float32)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # x and E were made on the default stream
    with torch.cuda.stream(stream):
        y = heat_conduction(x, E, backend="cuda")
    stream.synchronize()
    assert_close(y, hco_oracle(x, E), "cuda", torch.float32, "y", what="side stream")


@pytest.mark.gpu
@needs_cuda_build
def test_opcheck():
    x, E = _inputs((2, 5, 6, 3), torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.vheat.hco_forward.default, (x, E))
    dy = torch.randn(2, 5, 6, 3, device="cuda")
    torch.library.opcheck(torch.ops.vheat.hco_backward.default, (dy, x.detach(), E.detach(), True, True))


def _chunk_views(shape, dtype, second: bool):
    """x as Heat2D passes it: one channel half of a (B, H, W, 2C) linear output,
    strides (H*W*2C, W*2C, 2C, 1)."""
    B, H, W, C = shape
    wide = torch.randn(B, H, W, 2 * C, dtype=torch.float64).to(device="cuda", dtype=dtype)
    return wide[..., C:] if second else wide[..., :C]


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 56, 56, 24), (3, 14, 14, 40), (2, 7, 7, 16), (1, 5, 7, 3), (1, 130, 97, 6)],
                         ids=str)
def test_chunk_view_inputs_are_read_in_place(path, dtype, shape):
    """Forward, dx and dE of strided x / dy (channel stride 1) match the contiguous oracle,
    and the op makes no copy of them (no aten::copy_ / clone in the profile of the call)."""
    x, dy = _chunk_views(shape, dtype, True), _chunk_views(shape, dtype, False)
    # E in the accumulation dtype, so no conversion copy of E or dE shows in the profile either
    E = torch.rand(shape[1:], dtype=torch.float64).to(device="cuda", dtype=compute_dtype(dtype))
    assert x.stride() == (shape[1] * shape[2] * 2 * shape[3], shape[2] * 2 * shape[3], 2 * shape[3], 1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = torch.ops.vheat.hco_forward(x, E)
        dx, dE = torch.ops.vheat.hco_backward(dy, x, E, True, True)
    copies = [e.name for e in prof.events() if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert not copies, copies
    assert y.is_contiguous() and dx.is_contiguous()
    dx_want, dE_want = hco_grad_oracle(x, E, dy)
    assert_close(y, hco_oracle(x, E), "cuda", dtype, "y", what=f"y {path} {shape}")
    assert_close(dx, dx_want, "cuda", dtype, "dx", what=f"dx {path} {shape}")
    assert_close(dE, dE_want, "cuda", dtype, "dE", what=f"dE {path} {shape}")


@pytest.mark.gpu
@needs_cuda_build
def test_channels_not_innermost_are_copied_once_and_correct():
    x = torch.randn(2, 5, 6, 7, device="cuda").permute(0, 2, 3, 1)  # (2, 6, 7, 5), channel stride 42
    E = torch.rand(6, 7, 5, device="cuda")
    assert x.stride(3) != 1
    y = torch.ops.vheat.hco_forward(x, E)
    assert_close(y, hco_oracle(x, E), "cuda", torch.float32, "y", what="channels strided")
