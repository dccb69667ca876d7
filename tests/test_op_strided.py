"""Strided input: x (and grad_y) with channel stride 1 and any batch, row and point strides,
as Heat2D passes the chunk of its linear output, on every CPU-runnable backend.

The cpu backend reads such views in place (csrc/cpu/hco_cpu.cpp, ImageStrides); the
reference and fft backends are baselines that may copy internally. Each layout is checked
against the float64 oracle and against the same call on ``x.contiguous()``: the cpu kernel
reads the same values into the same order of arithmetic whatever the strides, and reduces
the batch in a fixed order, so there the results are bitwise equal.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import vheat_kernels as vk
from vheat_kernels import extension_available, heat_conduction
from hco_oracle import AWKWARD_SHAPES, hco_grad_oracle, hco_oracle
from vheat_kernels.dct import compute_dtype
from vheat_kernels.testing import assert_close
from hco_oracle import cpu_supports as _supported, run_with_cpu_isa as _run

NEEDS_OP_LIBRARY = pytest.mark.skipif(not extension_available(), reason="op library not built")
CPU_BACKENDS = ["reference", "fft", pytest.param("cpu", marks=NEEDS_OP_LIBRARY)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# Views of shape (B, H, W, C) whose channels are adjacent, made from a larger base tensor.
LAYOUTS = {
    # Heat2D: x, z = linear(x).chunk(2, dim=-1); strides (H W 2C, W 2C, 2C, 1), and z at offset C.
    "chunk": (lambda B, H, W, C: (B, H, W, 2 * C), lambda t, C: t.chunk(2, dim=-1)[0]),
    "chunk_second": (lambda B, H, W, C: (B, H, W, 2 * C), lambda t, C: t.chunk(2, dim=-1)[1]),
    # Spatially transposed: row stride C, point stride H C.
    "transposed": (lambda B, H, W, C: (B, W, H, C), lambda t, C: t.transpose(1, 2)),
    # Every other image of a batch: batch stride 2 H W C.
    "batch_slice": (lambda B, H, W, C: (2 * B, H, W, C), lambda t, C: t[::2]),
    # A crop: row stride (W + 3) C and a storage offset.
    "crop": (lambda B, H, W, C: (B, H + 2, W + 3, C), lambda t, C: t[:, 1 : t.shape[1] - 1, 2 : t.shape[2] - 1]),
}

SHAPES = AWKWARD_SHAPES + [(0, 5, 4, 3), (2, 7, 7, 32), (2, 12, 10, 40)]
# The cpu kernel's FFT path (a prime side above the dense-block limit, csrc/cpu/fft_path.cpp).
FFT_PATH_SHAPES = [(2, 2, 797, 3), (1, 787, 3, 2)]


def strided(layout: str, shape, dtype) -> torch.Tensor:
    base_shape, view = LAYOUTS[layout]
    base = torch.randn(base_shape(*shape), dtype=torch.float64).to(dtype)
    x = view(base, shape[3])
    assert tuple(x.shape) == tuple(shape) and x.stride(3) == 1
    return x


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_are_views_with_adjacent_channels(layout):
    x = strided(layout, (2, 5, 4, 3), torch.float32)
    assert not x.is_contiguous() and x.stride(3) == 1 and x._base is not None


def _run_hco(backend, x, E, dy):
    """y, dx, dE of heat_conduction(x, E) for the gradient dy (x may be a view: not a leaf)."""
    x = x.detach().requires_grad_(True)
    E = E.detach().requires_grad_(True)
    y = heat_conduction(x, E, backend=backend)
    dx, dE = torch.autograd.grad(y, (x, E), dy)
    return y.detach(), dx, dE


def _check_layout(backend, shape, dtype, layout):
    x = strided(layout, shape, dtype)
    # E in fp32 beside low-precision x, as vHeat feeds it (computed from k in fp32).
    E = torch.rand(shape[1:], dtype=torch.float64).to(compute_dtype(dtype))
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    y, dx, dE = _run_hco(backend, x, E, dy)
    assert y.shape == x.shape and y.dtype == x.dtype
    if backend == "cpu":  # the op library's outputs are contiguous (and so are its fakes)
        assert y.is_contiguous() and dx.is_contiguous()
    y_c, dx_c, dE_c = _run_hco(backend, x.contiguous(), E, dy)
    if backend == "cpu":  # deterministic kernel: the same arithmetic whatever the strides
        for name, a, b in (("y", y, y_c), ("dx", dx, dx_c), ("dE", dE, dE_c)):
            assert torch.equal(a, b), f"{name} on a {layout} view differs from the contiguous call"
    if x.numel() == 0:  # an empty batch: nothing to compare, dE is defined (zeros)
        assert dx.shape == x.shape and dE.shape == E.shape and not dE.any()
        return
    if backend != "cpu":
        assert_close(y, y_c, backend, dtype, what=f"{backend} {layout} y vs contiguous")
    assert_close(y, hco_oracle(x, E), backend, dtype, what=f"{backend} {layout} y {shape}")
    dx_ref, dE_ref = hco_grad_oracle(x, E, dy)
    assert_close(dx, dx_ref, backend, dtype, "dx", what=f"{backend} {layout} dx {shape}")
    assert_close(dE, dE_ref, backend, dtype, "dE", what=f"{backend} {layout} dE {shape}")


# Every layout on the cpu kernel; the baselines (which copy internally) on the three kinds of
# stride: point and row (chunk), transposed axes, batch.
BACKEND_LAYOUTS = [(backend, layout) for backend in ("reference", "fft") for layout in ("chunk", "transposed", "batch_slice")]
BACKEND_LAYOUTS += [pytest.param("cpu", layout, marks=NEEDS_OP_LIBRARY) for layout in LAYOUTS]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend, layout", BACKEND_LAYOUTS)
def test_strided_x_matches_oracle_and_contiguous(backend, layout, shape, dtype):
    _check_layout(backend, shape, dtype, layout)


@NEEDS_OP_LIBRARY
@pytest.mark.parametrize("layout", ["chunk", "transposed", "batch_slice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", FFT_PATH_SHAPES, ids=str)
def test_cpu_fft_path_strided(shape, dtype, layout):
    _check_layout("cpu", shape, dtype, layout)


@pytest.mark.parametrize("layout", ["chunk", "transposed", "batch_slice", "crop"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_and_gradgradcheck_on_strided_view(backend, layout):
    # The view is taken inside the function, so the checks perturb its (contiguous) base.
    shape = (2, 4, 3, 2)  # small: gradgradcheck costs O(numel^2) evaluations
    base_shape, view = LAYOUTS[layout]
    base = torch.randn(base_shape(*shape), dtype=torch.float64, requires_grad=True)
    E = torch.rand(shape[1:], dtype=torch.float64, requires_grad=True)

    def fn(b, e):
        return heat_conduction(view(b, shape[3]), e, backend=backend)

    assert torch.autograd.gradcheck(fn, (base, E))
    assert torch.autograd.gradgradcheck(fn, (base, E))


@NEEDS_OP_LIBRARY
@pytest.mark.parametrize("use_spectrum", [False, True], ids=["hco_forward", "hco_forward_spectrum"])
def test_cpu_ops_accept_strided_grad_y(use_spectrum):
    # The backward ops read grad_y at its strides too (autograd passes it contiguous, but a
    # direct caller or a second-order pass need not).
    shape = (3, 7, 7, 40)
    x = strided("chunk", shape, torch.float32)
    E = torch.rand(shape[1:])
    dy = strided("transposed", shape, torch.float32)
    ops = vk.ops.compiled_ops()
    if use_spectrum:
        saved = ops.hco_forward_spectrum(x, E)[1]
        backward = ops.hco_backward_spectrum
    else:
        saved, backward = x, ops.hco_backward
    dx, dE = backward(dy, saved, E, True, True)
    dx_c, dE_c = backward(dy.contiguous(), saved.contiguous(), E, True, True)
    assert torch.equal(dx, dx_c) and torch.equal(dE, dE_c) and dx.is_contiguous()


_COPY_OPS = ("aten::clone", "aten::contiguous", "aten::copy_")


def _copies_in(fn, shape) -> list:
    """Copy ops on a tensor of ``shape`` in a CPU profiler trace of fn() (E's own copies:
    padding to whole channel blocks, dE's narrowing, have E's shape and do not count)."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in _COPY_OPS and list(e.input_shapes[0]) == list(shape)]


@NEEDS_OP_LIBRARY
@pytest.mark.parametrize("shape", [(3, 7, 7, 40), (3, 10, 12, 40)], ids=str)
def test_cpu_backend_makes_no_copy_of_a_chunk_view(shape):
    # Forward and backward through heat_conduction (functional, dispatch, backends, the C++
    # autograd and the op): no clone / contiguous / copy_ of x (or of anything of its shape).
    x0 = strided("chunk", shape, torch.float32)
    E = torch.rand(shape[1:], requires_grad=True)
    dy = torch.randn(shape)

    def step(x):
        x = x.detach().requires_grad_(True)
        y = heat_conduction(x, E, backend="cpu")
        torch.autograd.grad(y, (x, E), dy)

    step(x0)  # warm-up
    assert _copies_in(lambda: step(x0), shape) == []
    # Channels not adjacent (an NCHW tensor seen channels-last): the op copies once, and
    # the trace shows it (so the count above can fail).
    nchw = torch.randn(shape[0], shape[3], shape[1], shape[2]).permute(0, 2, 3, 1)
    assert nchw.stride(3) != 1
    copies = _copies_in(lambda: step(nchw), shape)
    assert copies.count("aten::contiguous") >= 1, copies


@NEEDS_OP_LIBRARY
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_strided_x_on_each_isa_build(isa):
    # Every instruction-set build of the plane kernels (forced with $VHEAT_CPU_ISA in a
    # subprocess, as test_backend_cpu_isa.py does): the strided call is bitwise equal to the
    # contiguous one and matches the oracle, on general planes, the small-plane runs
    # (7 x 7, 14 x 14 with a partial block) and the FFT path.
    if not _supported(isa):
        pytest.skip(f"this CPU does not run {isa}")
    r = _run(isa, ISA_CHECK, int.from_bytes(os.urandom(4), "little"))
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), f"{isa}:\n{r.stdout}\n{r.stderr[-3000:]}"


ISA_CHECK = r"""
import sys, torch
sys.path.insert(0, "tests")
from test_op_strided import _check_layout
torch.manual_seed(int(sys.argv[1]))
for shape in [(2, 56, 28, 20), (2, 13, 16, 35), (1, 1, 7, 3), (2, 7, 7, 32), (2, 14, 14, 40), (1, 2, 797, 3)]:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for layout in ("chunk", "transposed", "batch_slice"):
            _check_layout("cpu", shape, dtype, layout)
print("ok")
"""
