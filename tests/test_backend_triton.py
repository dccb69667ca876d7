"""Fused Triton HCO kernels run by Triton's CPU interpreter (TRITON_INTERPRET=1).

Checked against scipy's float64 DCT (independent oracle) and the 'reference' backend
(official matmul-DCT). The interpreter is real Triton semantics but slow, so the default
run covers a representative subset; the full shape x dtype x configuration matrix is
marked slow. The interpreter is switched on for this module only (see ``interpreter``):
``hco.kernels()`` re-decorates the kernels when TRITON_INTERPRET changes, so the order in
which pytest imports test files does not matter.
"""
from __future__ import annotations

import os

import pytest
import torch

from vheat_kernels import heat_conduction
from vheat_kernels.dispatch import BackendUnavailableError
from vheat_kernels.triton import configs as cfg

from hco_oracle import DTYPES, hco_oracle, oracle_dE, seeded_inputs
from vheat_kernels.testing import relative_error, tolerance

# Errors are relative to max |oracle| (vheat_kernels.testing: tolerance("triton", ...)). fp32
# dots emulate the GPU's tf32x3 here (hi/lo tf32 split, see kernels._mma), so fp32 is held
# to the GPU tests' tolerance; bf16 / fp16 round every dot operand like the reference does.

# (B, H, W, C): odd, prime, H != W, 1-wide, B = 1, C not a multiple of any block, and a
# plane at the register-resident limit (32 x 32 padded for every dtype; configs.SPILL_FREE).
FAST_SHAPES = [(2, 7, 7, 5), (1, 13, 11, 9), (3, 1, 17, 10), (2, 16, 1, 3), (1, 31, 29, 3)]
SLOW_SHAPES = FAST_SHAPES + [
    (1, 1, 1, 1),
    (4, 5, 3, 2),
    (2, 17, 31, 33),
    (2, 29, 14, 7),
    (5, 32, 32, 16),
    (2, 32, 32, 4),
    (2, 3, 60, 5),
    (8, 14, 14, 40),
    (3, 7, 7, 70),
]
# Planes beyond the register-resident limit (streamed schedule), small B and C: vHeat-T's
# stage 1 at 224, odd / prime / 1-wide sides, UperNet's 128 x 128 and Mask R-CNN's 200 x 334.
STREAMED_SHAPES = [(2, 56, 56, 3), (1, 57, 43, 5), (2, 64, 64, 2), (3, 65, 1, 4), (2, 1, 130, 3),
                   (1, 128, 128, 2), (1, 200, 334, 2)]


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """Run this module's kernels in Triton's interpreter, then restore the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        from vheat_kernels.triton import hco

        yield hco


inputs = seeded_inputs


def _forward(x, E, schedule=None):
    """heat_conduction, or with ``schedule`` the backend's forward on that schedule."""
    if schedule is None:
        return heat_conduction(x, E, backend="triton")
    from vheat_kernels.triton import hco

    return hco.forward(x, E, schedule=schedule)


def check_forward(shape, dtype, schedule=None):
    x, E = inputs(shape, dtype)
    y = _forward(x, E, schedule)
    assert y.dtype == dtype and y.shape == x.shape
    want = hco_oracle(x, E)
    err = relative_error(y, want)
    tol = tolerance("triton", dtype)
    assert err <= tol, f"{shape} {dtype}: error {err:.2e} > {tol:.0e}"
    if dtype in (torch.float16, torch.bfloat16):
        # No worse than the official formulation run in the same dtype.
        ref_err = relative_error(heat_conduction(x, E, backend="reference"), want)
        assert err <= 2 * ref_err + 1e-3, f"{shape} {dtype}: {err:.2e} vs reference {ref_err:.2e}"


def check_backward(shape, dtype, schedule=None):
    x, E = inputs(shape, dtype, seed=1)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    if schedule is None:
        x.requires_grad_(True)
        E.requires_grad_(True)
        y = heat_conduction(x, E, backend="triton")
        dx, dE = torch.autograd.grad(y, (x, E), g)
    else:
        from vheat_kernels.triton import hco

        dx, dE = hco.backward(g, x, E, True, True, schedule=schedule)
    assert dx.dtype == dtype and dE.dtype == E.dtype
    tol = tolerance("triton", dtype)
    # Self-adjoint in x: dx = HCO(g, E).
    assert relative_error(dx, hco_oracle(g, E)) <= tol
    # dE is a sum over the batch of products of two rounded transforms: allow 2x.
    assert relative_error(dE, oracle_dE(x, g)) <= tolerance("triton", dtype, "dE")


@pytest.mark.parametrize("shape", FAST_SHAPES)
def test_forward_fp32(shape):
    check_forward(shape, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_forward_dtypes(dtype):
    check_forward((2, 13, 11, 9), dtype)


@pytest.mark.parametrize("shape", [(2, 7, 7, 5), (3, 1, 17, 10), (5, 13, 11, 9)])
def test_backward_fp32(shape):
    check_backward(shape, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_backward_dtypes(dtype):
    check_backward((3, 9, 6, 5), dtype)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SLOW_SHAPES + STREAMED_SHAPES)
def test_full_matrix(shape, dtype):
    check_forward(shape, dtype)
    check_backward(shape, dtype)


@pytest.mark.parametrize(
    "shape, dtype, backward",
    [((1, 57, 43, 5), torch.float32, True), ((3, 65, 1, 4), torch.bfloat16, True), ((2, 1, 130, 3), torch.float16, True),
     ((2, 56, 56, 3), torch.float32, False), ((2, 66, 65, 2), torch.float32, True), ((1, 66, 65, 2), torch.bfloat16, False)],
)
def test_streamed_planes(shape, dtype, backward, interpreter):
    """The streamed schedule on a representative subset of STREAMED_SHAPES: the line pass
    along W (57 x 43, 65 x 1, 56 x 56), along H (1 x 130), and four streamed passes (66 x 65:
    both sides pad to 128). Planes up to 64 per side route to the plane kernels: forced here."""
    x, _ = inputs(shape, dtype)
    assert interpreter.schedule(x) == ("plane" if max(shape[1:3]) <= 64 else "streamed")
    check_forward(shape, dtype, "streamed")
    if backward:
        check_backward(shape, dtype, "streamed")


@pytest.mark.parametrize("shape", [(2, 33, 5, 3), (1, 66, 65, 1)])
def test_streamed_gradcheck_float64(interpreter, shape, monkeypatch):
    x, E = inputs(shape, torch.float64, e_dtype=torch.float64, seed=10)
    monkeypatch.setattr(interpreter, "schedule", lambda x, backward=False: "streamed")  # 33 x 5: plane kernels
    x.requires_grad_(True)
    E.requires_grad_(True)
    fn = lambda a, b: heat_conduction(a, b, backend="triton")
    assert torch.autograd.gradcheck(fn, (x, E), fast_mode=True)


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_every_axis_config(interpreter, every):
    """Each candidate tile of the streamed schedule gives the same answer (default run:
    the first, on a single channel; the interpreter is slow on the narrow tiles)."""
    shape = (2, 66, 65, 2) if every else (1, 66, 65, 1)
    B, H, W, C = shape
    x, E = inputs(shape, torch.float32, seed=11)
    g = torch.randn_like(x)
    want_y, want_dx, want_dE = hco_oracle(x, E), hco_oracle(g, E), oracle_dE(x, g)
    tiles = list(dict.fromkeys(cfg.axis_configs(H, W * C, 4) + cfg.axis_configs(W, C, 4)))
    assert len(tiles) > 2
    tiles = tiles if every else tiles[:2]
    for c in tiles:
        assert relative_error(interpreter.forward(x, E, config=c), want_y) <= tolerance("triton", torch.float32), c
        dx, dE = interpreter.backward(g, x, E, True, True, config=c)
        assert relative_error(dx, want_dx) <= tolerance("triton", torch.float32), c
        assert relative_error(dE, want_dE) <= tolerance("triton", torch.float32, "dE"), c


def test_matches_reference_backend_with_autograd():
    """dx, dE against autograd through the official formulation (float64)."""
    x, E = inputs((3, 10, 7, 6), torch.float64, e_dtype=torch.float64, seed=3)
    g = torch.randn(x.shape, dtype=torch.float64)
    grads = {}
    for name in ("triton", "reference"):
        xi, Ei = x.clone().requires_grad_(True), E.clone().requires_grad_(True)
        y = heat_conduction(xi, Ei, backend=name)
        grads[name] = (y, *torch.autograd.grad(y, (xi, Ei), g))
    for got, want in zip(grads["triton"], grads["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    x, E = inputs((2, 5, 3, 4), torch.float64, e_dtype=torch.float64, seed=4)
    x.requires_grad_(True)
    E.requires_grad_(True)
    fn = lambda a, b: heat_conduction(a, b, backend="triton")
    assert torch.autograd.gradcheck(fn, (x, E), fast_mode=True)


@pytest.mark.parametrize("which", ["x", "E"])
def test_backward_single_input(which):
    """Only one input needs a gradient: the kernel computes just that one."""
    x, E = inputs((4, 6, 9, 7), torch.float32, seed=5)
    leaf = x if which == "x" else E
    leaf.requires_grad_(True)
    y = heat_conduction(x, E, backend="triton")
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, (leaf,), g)
    want = hco_oracle(g, E) if which == "x" else oracle_dE(x, g)
    assert relative_error(grad, want) <= 4e-6


def test_every_block_config(interpreter):
    """Each candidate configuration gives the same answer (forward and backward)."""
    shape = (2, 20, 10, 19)  # padded 32 x 16: several spill-free blocks both ways in fp32
    x, E = inputs(shape, torch.float32, seed=6)
    g = torch.randn_like(x)
    want_y, want_dx, want_dE = hco_oracle(x, E), hco_oracle(g, E), oracle_dE(x, g)
    fwd = cfg.prune(20, 10, 19, 4, backward=False)
    bwd = cfg.prune(20, 10, 19, 4, backward=True)
    assert len(fwd) > 1 and len(bwd) > 1
    for c in fwd:
        assert relative_error(interpreter.forward(x, E, config=c), want_y) <= 2e-6, c
    for c in bwd:
        dx, dE = interpreter.backward(g, x, E, True, True, config=c)
        assert relative_error(dx, want_dx) <= 2e-6, c
        assert relative_error(dE, want_dE) <= 4e-6, c


@pytest.mark.parametrize("shape", [(7, 9, 9, 4), (5, 33, 3, 2), (3, 66, 65, 1)])
def test_backward_is_deterministic_with_batch_chunks(interpreter, shape):
    # B = 7 (register-resident) and B = 5 (plane kernels) with the interpreter's chunking
    # give uneven chunks (and a masked tail), summed in order by hco_de_sum; 66 x 65 takes
    # the streamed schedule, whose dE reduction loops over the batch in order.
    x, E = inputs(shape, torch.float32, seed=8)
    g = torch.randn_like(x)
    first = interpreter.backward(g, x, E, True, True)
    second = interpreter.backward(g, x, E, True, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert relative_error(first[1], oracle_dE(x, g)) <= tolerance("triton", torch.float32, "dE")


def test_every_line_config(interpreter):
    """Each candidate column tile of the line pass gives the same answer."""
    shape = (3, 33, 5, 2)
    x, E = inputs(shape, torch.float32, seed=13)
    g = torch.randn_like(x)
    want_y, want_dx, want_dE = hco_oracle(x, E), hco_oracle(g, E), oracle_dE(x, g)
    fwd, bwd = cfg.line_configs(5, 2, False, 4), cfg.line_configs(5, 2, True, 4)
    assert len(fwd) > 1 and len(bwd) > 1
    for c in fwd:  # 33 x 5 routes to the plane kernels: the streamed schedule is forced
        y = interpreter.forward(x, E, config=c, schedule="streamed")
        assert relative_error(y, want_y) <= tolerance("triton", torch.float32), c
    for c in bwd:
        dx, dE = interpreter.backward(g, x, E, True, True, config=c, schedule="streamed")
        assert relative_error(dx, want_dx) <= tolerance("triton", torch.float32), c
        assert relative_error(dE, want_dE) <= tolerance("triton", torch.float32, "dE"), c


def test_chunks_do_not_depend_on_the_gpu(interpreter, monkeypatch):
    """The backward's chunking (hence dE's summation order) is a function of the shape only."""
    from vheat_kernels.triton.chunks import backward_chunks

    from vheat_kernels.triton.chunks import wave_chunks

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: pytest.fail("SM count consulted"))
    # Register-resident backward (14 x 14 bf16) and the plane backward (28 x 28 bf16).
    x = torch.empty((64, 14, 14, 384), device="meta", dtype=torch.bfloat16)  # meta: planned as for a GPU
    E = torch.empty((14, 14, 384), device="meta")
    plan, de = interpreter.backward_plan(x, x, E, torch.empty_like(x), True, True)
    widest = cfg.prune(14, 14, 384, 2, backward=True)[0].BC
    per_prog = -(-64 // backward_chunks(64, 384, interpreter.PROGRAMS_WANTED, widest))
    assert plan[0].kernel == "hco_bwd" and plan[0].args["B_PER_PROG"] == per_prog
    assert plan[1].kernel == "hco_de_sum" and plan[1].args["CHUNKS"] == -(-64 // per_prog)
    x = torch.empty((64, 28, 28, 192), device="meta", dtype=torch.bfloat16)
    E = torch.empty((28, 28, 192), device="meta")
    plan, de = interpreter.backward_plan(x, x, E, torch.empty_like(x), True, True)
    widest = max(c.BC for c in cfg.plane_configs(28, 28, 192, 2))
    per_prog = -(-64 // wave_chunks(64, -(-192 // widest), interpreter.PLANE_BWD_WAVE))
    assert plan[0].kernel == "hco_plane_bwd" and plan[0].args["B_PER_PROG"] == per_prog
    assert plan[1].args["CHUNKS"] == -(-64 // per_prog)


@pytest.mark.parametrize("shape", [(70000, 8, 8, 4), (70000, 57, 43, 4), (70000, 66, 65, 4), (70000, 1, 130, 4)])
def test_forward_grid_is_1d(interpreter, shape):
    """No launch exceeds CUDA's 65535 limit on grid.y: the forward and the streamed
    kernels have 1-D grids; the register-resident backward caps its chunks."""
    B, H, W, C = shape
    x, E = torch.empty(shape, device="meta"), torch.empty((H, W, C), device="meta")
    for plan in (interpreter.forward_plan(x, E, x), interpreter.backward_plan(x, x, E, x, True, True)[0]):
        for launch in plan:
            for c in launch.configs or [None]:
                grid = launch.grid(c)
                if launch.kernel in ("hco_bwd", "hco_plane_bwd"):  # (channel blocks, chunks), chunks capped
                    assert grid[1] <= 65535 and grid[1] * launch.args["B_PER_PROG"] >= B
                else:
                    assert len(grid) == 1 and grid[0] < 2**31 - 1, (launch.kernel, grid)


def test_launches_guard_the_tensor_device(interpreter, monkeypatch):
    """Launches run under torch.cuda.device(x.device): x on cuda:1 while cuda:0 is current."""
    entered = []

    class FakeDeviceContext:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    class FakeCudaTensor:
        device = torch.device("cuda", 1)

    monkeypatch.setattr(torch.cuda, "device", FakeDeviceContext)
    with interpreter._device_guard(FakeCudaTensor()):
        pass
    assert entered == [torch.device("cuda", 1)]
    # The launchers take the guard for the tensors they launch on.
    guarded = []
    real = interpreter._device_guard
    monkeypatch.setattr(interpreter, "_device_guard", lambda t: guarded.append(t.shape) or real(t))
    x, E = inputs((2, 5, 4, 3), torch.float32, seed=12)
    interpreter.forward(x, E)
    interpreter.backward(x, x, E, True, True)
    assert guarded == [x.shape, x.shape]


def test_non_contiguous_inputs():
    base = torch.randn(2, 9, 6, 5)  # (B, W, H, C) -> transposed view (B, H, W, C)
    x = base.transpose(1, 2)
    E = torch.rand(5, 9, 6).permute(2, 1, 0)  # (H, W, C) = (6, 9, 5) view, channels not innermost
    assert not x.is_contiguous() and not E.is_contiguous()
    y = heat_conduction(x, E, backend="triton")
    assert relative_error(y, hco_oracle(x, E)) <= tolerance("triton", torch.float32)


def test_e_in_low_precision_and_empty_batch():
    x, E = inputs((2, 8, 5, 3), torch.float16, e_dtype=torch.float16, seed=9)
    E.requires_grad_(True)
    y = heat_conduction(x, E, backend="triton")
    assert relative_error(y, hco_oracle(x, E)) <= tolerance("triton", torch.float16)
    (dE,) = torch.autograd.grad(y.float().sum(), (E,))
    assert dE.dtype == torch.float16
    empty = torch.zeros(0, 8, 5, 3, requires_grad=True)
    E32 = torch.rand(8, 5, 3, requires_grad=True)
    out = heat_conduction(empty, E32, backend="triton")
    assert out.shape == empty.shape
    (dE0,) = torch.autograd.grad(out.sum(), (E32,))
    assert torch.equal(dE0, torch.zeros_like(E32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_plane_up_to_the_limit_is_accepted(interpreter, dtype):
    side = cfg.MAX_STREAMED_SIDE
    for H, W in ((1, 1), (56, 56), (57, 43), (128, 128), (200, 334), (side, side), (1, side), (side, 3)):
        x, E = _cpu_like(torch.empty((1, H, W, 96), dtype=dtype, device="meta")), _cpu_like(torch.empty((H, W, 96)))
        assert interpreter.unavailable_reason(x, E) is None, (H, W, dtype)


def _cpu_like(x):
    """A CPU tensor of x's shape and dtype without allocating it (expanded scalar)."""
    return torch.zeros((), dtype=x.dtype).expand(x.shape)


def test_unavailable_reasons(interpreter):
    side = cfg.MAX_STREAMED_SIDE
    x, E = _cpu_like(torch.empty(1, side + 1, 8, 4)), torch.rand(side + 1, 8, 4)
    reason = interpreter.unavailable_reason(x, E)
    assert reason is not None and "fft" in reason and f"{side + 1} x 8" in reason and str(side) in reason
    with pytest.raises(BackendUnavailableError, match="sides up to"):
        heat_conduction(x.contiguous(), E, backend="triton")
    with pytest.raises(ValueError, match="sides up to"):
        interpreter.heat_conduction_triton(x, E)
    # Without the interpreter, CPU tensors are refused with a reason naming the fix.
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        small = torch.randn(1, 4, 4, 2)
        reason = interpreter.unavailable_reason(small, torch.rand(4, 4, 2))
        assert reason is not None and "CUDA" in reason and "TRITON_INTERPRET=1" in reason
    finally:
        os.environ["TRITON_INTERPRET"] = "1"


def test_interpreter_after_compiled_import():
    """A process that imported the backend compiled, then set TRITON_INTERPRET=1, runs every
    kernel interpreted: no @jit helper of triton.language.standard (tl.cdiv, tl.zeros)
    may be called from a kernel, it would stay compiled-only."""
    import subprocess
    import sys

    code = (
        "import os, torch\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "from vheat_kernels.triton import hco\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "for shape in ((2, 7, 7, 3), (2, 33, 5, 2), (1, 66, 65, 1)):  # resident, plane, streamed\n"
        "    x, E = torch.randn(shape), torch.rand(shape[1:])\n"
        "    hco.forward(x, E)\n"
        "    hco.backward(x, x, E, True, True)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_interpreter_is_effective(interpreter):
    from triton.runtime.interpreter import InterpretedFunction

    assert interpreter.interpreting()
    assert isinstance(interpreter.kernels().hco_fwd_kernel, InterpretedFunction)
    assert isinstance(interpreter.kernels().hco_bwd_kernel, InterpretedFunction)
    assert isinstance(interpreter.plane().hco_plane_kernel, InterpretedFunction)
    assert isinstance(interpreter.plane().hco_plane_bwd_kernel, InterpretedFunction)
    assert isinstance(interpreter.plane().hco_de_sum_kernel, InterpretedFunction)
    assert isinstance(interpreter.streamed().hco_axis_kernel, InterpretedFunction)
    assert isinstance(interpreter.streamed().hco_de_kernel, InterpretedFunction)
    assert isinstance(interpreter.streamed().hco_line_kernel, InterpretedFunction)
    assert isinstance(interpreter.streamed().hco_line_bwd_kernel, InterpretedFunction)
