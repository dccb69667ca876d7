"""The single-launch plane kernels (vheat_kernels/triton/plane.py), the per-pass routing,
strided inputs and the launch counts of issue 25, under Triton's interpreter.

The oracle and inputs are tests/hco_oracle.py's, the tolerances vheat_kernels.testing's.
Every classification plane of vHeat (56, 28, 14 and 7 per side) is run on the plane kernels
(forced where the routing picks the register-resident kernels), in every dtype, forward and both gradients, first and
second call. The launch-count test plans vHeat-T/S/B's channel counts at batch sizes up to
128 on meta tensors (nothing runs), and runs a small subset for real so the recorder is
known to see real launches.
"""
from __future__ import annotations

import math

import pytest
import torch

from vheat_kernels import heat_conduction
from vheat_kernels.stages import CLASSIFICATION_SIDES as CLASSIFICATION_PLANES, PLANES
from tools import triton_aot as aot
from vheat_kernels.triton import configs as cfg

from hco_oracle import hco_oracle, oracle_dE, seeded_inputs as inputs
from hco_oracle import DTYPES
from vheat_kernels.testing import relative_error, tolerance

# (B, H, W, C) per plane: small B and C; odd C, B = 1 and a single channel among them.
PLANE_SHAPES = {56: (2, 56, 56, 3), 28: (3, 28, 28, 5), 14: (1, 14, 14, 9), 7: (5, 7, 7, 1)}
# vHeat-T/S and -B channel counts per plane side (stages.PLANES at 224).
CHANNELS = {side: sorted({C for label in ("T/S@224", "B@224") for H, _, C in PLANES[label] if H == side})
            for side in CLASSIFICATION_PLANES}
GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.fixture(scope="module", autouse=True)
def hco():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        from vheat_kernels.triton import hco

        hco.kernels()
        yield hco


def _check_plane(hco, shape, dtype, schedule="plane"):
    """Forward, dx and dE of the forced schedule against the float64 oracle; a second call
    gives the same bits."""
    x, E = inputs(shape, dtype, seed=21)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(22)).to(dtype)
    tol = tolerance("triton", dtype)
    y = hco.forward(x, E, schedule=schedule)
    dx, dE = hco.backward(g, x, E, True, True, schedule=schedule)
    assert y.dtype == dtype and dx.dtype == dtype and dE.dtype == E.dtype
    assert relative_error(y, hco_oracle(x, E)) <= tol, relative_error(y, hco_oracle(x, E))
    assert relative_error(dx, hco_oracle(g, E)) <= tol
    assert relative_error(dE, oracle_dE(x, g)) <= tolerance("triton", dtype, "dE")
    # dE only (x a leaf, E frozen is the forward on dy): the same dE bits.
    _, dE_only = hco.backward(g, x, E, False, True, schedule=schedule)
    assert torch.equal(dE_only, dE)
    assert torch.equal(hco.forward(x, E, schedule=schedule), y)
    dx2, dE2 = hco.backward(g, x, E, True, True, schedule=schedule)
    assert torch.equal(dx2, dx) and torch.equal(dE2, dE)


def _default_run(side, dtype) -> bool:
    # The interpreter takes 3-20 s per case: the default run keeps every plane in fp32 and
    # bf16 and the 56 x 56 plane (the one routed here) in every dtype.
    return side == 56 or dtype in (torch.float32, torch.bfloat16)


@pytest.mark.parametrize("side, dtype", [
    pytest.param(side, dtype, id=f"{side}-{str(dtype)[6:]}", marks=[] if _default_run(side, dtype) else [pytest.mark.slow])
    for side in CLASSIFICATION_PLANES for dtype in DTYPES])
def test_plane_kernels_on_every_classification_plane(hco, side, dtype):
    _check_plane(hco, PLANE_SHAPES[side], dtype)


@pytest.mark.parametrize("shape, dtype", [((1, 56, 40, 3), torch.float32),
                                          pytest.param((2, 9, 61, 2), torch.bfloat16, marks=pytest.mark.slow),
                                          pytest.param((3, 33, 17, 6), torch.float16, marks=pytest.mark.slow),
                                          ((1, 1, 64, 2), torch.float32)])
def test_plane_kernels_on_uneven_planes(hco, shape, dtype):
    """H != W, odd sides, a side of 1, the 64 limit."""
    _check_plane(hco, shape, dtype)


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_plane_kernels_every_config(hco, every):
    """Each candidate tile gives the same answer within tolerance (a 9-channel plane keeps
    every candidate: none is much wider than C). Default run: the first two."""
    shape = (3, 20, 36, 9)
    x, E = inputs(shape, torch.float32, seed=23)
    g = torch.randn_like(x)
    want_y, want_dx, want_dE = hco_oracle(x, E), hco_oracle(g, E), oracle_dE(x, g)
    configs = cfg.plane_configs(20, 36, 9, 4)
    assert len(configs) > 2
    for c in configs if every else configs[:2]:
        y = hco.forward(x, E, config=c, schedule="plane")
        assert relative_error(y, want_y) <= tolerance("triton", torch.float32), c
        dx, dE = hco.backward(g, x, E, True, True, config=c, schedule="plane")
        assert relative_error(dx, want_dx) <= tolerance("triton", torch.float32), c
        assert relative_error(dE, want_dE) <= tolerance("triton", torch.float32, "dE"), c


def test_plane_empty_batch(hco):
    x, E = torch.zeros(0, 56, 56, 3), torch.rand(56, 56, 3)
    assert hco.forward(x, E).shape == x.shape
    dx, dE = hco.backward(x, x, E, True, True)
    assert dx.shape == x.shape and torch.equal(dE, torch.zeros_like(E))


def test_plane_gradcheck_float64(hco, monkeypatch):
    """Both gradients to second order through the autograd of the op, forward and backward
    routed to the plane kernels."""
    monkeypatch.setattr(hco, "schedule", lambda x, backward=False: "plane")
    x, E = inputs((2, 5, 6, 3), torch.float64, e_dtype=torch.float64, seed=24)
    x.requires_grad_(True)
    E.requires_grad_(True)
    fn = lambda a, b: heat_conduction(a, b, backend="triton")
    seen = _record(hco, monkeypatch, execute=True)
    assert torch.autograd.gradcheck(fn, (x, E), fast_mode=True)
    assert {"hco_plane", "hco_plane_bwd"} <= set(seen), seen


# --- routing ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d)[6:])
def test_routing_per_pass(hco, dtype):
    """56 x 56 takes the plane kernels both ways; 28 x 28 keeps the register-resident forward
    and its backward (too narrow to coalesce: BC <= 2) takes the plane kernel; 14 and 7 stay
    register-resident, except fp32's backward (its only spill-free block is BC = 2, 8 B per
    pixel); sides over 64 stream."""
    def sched(side, backward, w=None):
        return hco.schedule(torch.empty(1, side, w or side, 8, dtype=dtype, device="meta"), backward)

    assert sched(56, False) == sched(56, True) == "plane"
    # fp32 at padded 32 x 32: every plane tile spilled somewhere (configs.PLANE_SPILLED), so
    # its backward stays register-resident with a narrow block.
    assert sched(28, False) == "resident" and sched(28, True) == ("resident" if dtype == torch.float32 else "plane")
    for side in (14, 7):
        assert sched(side, False) == "resident"
        assert sched(side, True) == ("plane" if dtype == torch.float32 else "resident")
    assert sched(84, False) == sched(200, True, 334) == "streamed"


# --- strided input ---------------------------------------------------------------------


def _no_copy_of(hco, monkeypatch, base: torch.Tensor):
    """Records whether any launch read a tensor that does not share base's storage, i.e. a copy."""
    reads = []
    real_run = hco.run

    def run(plan, config=None):
        for launch in plan:
            for name in ("x_ptr", "dy_ptr"):
                if name in launch.args:
                    reads.append(launch.args[name].untyped_storage().data_ptr() == base.untyped_storage().data_ptr())
        return real_run(plan, config)

    monkeypatch.setattr(hco, "run", run)
    return reads


@pytest.mark.parametrize("side, dtype", [(56, torch.float32), (28, torch.bfloat16), (7, torch.float16)])
def test_chunk_view_is_read_in_place(hco, monkeypatch, side, dtype):
    """vHeat's Heat2D calls the op on x, the first half of a linear's output along channels
    (strides (H*W*2C, W*2C, 2C, 1)): the kernels read it through its strides, no copy, and
    match the oracle; outputs are contiguous."""
    B, C = 2, 3
    base = torch.randn(B, side, side, 2 * C).to(dtype)
    x = base.chunk(2, dim=-1)[0]
    assert x.stride() == (side * side * 2 * C, side * 2 * C, 2 * C, 1)
    E = torch.rand(side, side, C)
    g = torch.randn(B, side, side, C).to(dtype)
    reads = _no_copy_of(hco, monkeypatch, base)
    xl, El = x.detach().requires_grad_(True), E.clone().requires_grad_(True)
    y = heat_conduction(xl, El, backend="triton")
    dx, dE = torch.autograd.grad(y, (xl, El), g)
    assert reads and all(reads[:1]), "the forward copied x"
    assert y.is_contiguous() and dx.is_contiguous()
    tol = tolerance("triton", dtype)
    assert relative_error(y, hco_oracle(x, E)) <= tol
    assert relative_error(dx, hco_oracle(g, E)) <= tol
    assert relative_error(dE, oracle_dE(x, g)) <= tolerance("triton", dtype, "dE")


@pytest.mark.parametrize("schedule", ["plane", "resident"])
def test_transposed_spatial_view(hco, monkeypatch, schedule):
    """A (B, W, H, C) tensor transposed to (B, H, W, C): pixel stride H*C, row stride C."""
    base = torch.randn(2, 11, 13, 4)
    x = base.transpose(1, 2)
    g = torch.randn(2, 11, 13, 4).transpose(1, 2)
    E = torch.rand(13, 11, 4)
    reads = _no_copy_of(hco, monkeypatch, base)
    y = hco.forward(x, E, schedule=schedule)
    assert reads == [True]
    dx, dE = hco.backward(g, x, E, True, True, schedule=schedule)
    assert y.is_contiguous() and dx.is_contiguous()
    assert relative_error(y, hco_oracle(x, E)) <= tolerance("triton", torch.float32)
    assert relative_error(dx, hco_oracle(g, E)) <= tolerance("triton", torch.float32)
    assert relative_error(dE, oracle_dE(x, g)) <= tolerance("triton", torch.float32, "dE")


def test_channels_not_innermost_are_copied_once(hco):
    x = torch.randn(2, 4, 9, 6).permute(0, 2, 3, 1)  # (B, H, W, C) with channel stride H*W
    E = torch.rand(9, 6, 4)
    assert x.stride(3) != 1
    assert relative_error(hco.forward(x, E), hco_oracle(x, E)) <= tolerance("triton", torch.float32)


# --- launch counts ---------------------------------------------------------------------


def _record(hco, monkeypatch, execute: bool) -> list[str]:
    """Wraps hco._launcher: every kernel launch is recorded by name; ``execute`` runs it."""
    seen: list[str] = []
    real = getattr(hco._launcher, "real", hco._launcher)  # not a recorder set earlier in the test

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(**kwargs):
                seen.append(self.fn.__name__.removesuffix("_kernel") if hasattr(self.fn, "__name__")
                            else self.fn.fn.__name__.removesuffix("_kernel"))
                if execute:
                    real(self.fn)[grid](**kwargs)
            return launch

    Recorder.real = real
    monkeypatch.setattr(hco, "_launcher", Recorder)
    return seen


def _count(hco, monkeypatch, shape, dtype, need=(True, True)):
    """(forward launches, backward launches) of hco.forward / hco.backward on meta tensors."""
    seen = _record(hco, monkeypatch, execute=False)
    B, H, W, C = shape
    x = torch.empty(shape, dtype=dtype, device="meta")
    E = torch.empty((H, W, C), device="meta")
    hco.forward(x, E)
    forward = len(seen)
    hco.backward(x, x, E, *need)
    return forward, len(seen) - forward, list(seen)


@pytest.mark.parametrize("side", CLASSIFICATION_PLANES)
def test_launch_counts_every_classification_plane(hco, monkeypatch, side):
    """Every classification plane at vHeat-T/S/B's channel counts, B in 1 .. 128, fp32 /
    bf16 / fp16: the forward is exactly 1 launch, every backward variant at most 2."""
    for C in CHANNELS[side]:
        for dtype in GPU_DTYPES:
            for B in (1, 2, 3, 17, 64, 128):
                for need in aot.BWD_VARIANTS:
                    fwd, bwd, names = _count(hco, monkeypatch, (B, side, side, C), dtype, need)
                    assert fwd == 1 and 1 <= bwd <= 2, (side, C, dtype, B, need, names)


def test_launch_recorder_sees_real_launches(hco, monkeypatch):
    """The recorder counts real launches through heat_conduction and autograd: the same
    kernels as the meta plans, on a subset small enough to run."""
    for shape, dtype in [((2, 56, 56, 3), torch.float32), ((17, 28, 28, 2), torch.bfloat16),
                         ((3, 14, 14, 4), torch.float16), ((1, 7, 7, 5), torch.float32)]:
        seen = _record(hco, monkeypatch, execute=True)
        x, E = inputs(shape, dtype, seed=25)
        x.requires_grad_(True)
        E.requires_grad_(True)
        y = heat_conduction(x, E, backend="triton")
        forward = list(seen)
        torch.autograd.grad(y, (x, E), torch.randn_like(y))
        backward = seen[len(forward):]
        assert len(forward) == 1 and 1 <= len(backward) <= 2, (shape, dtype, seen)
        _, _, planned = _count(hco, monkeypatch, shape, dtype)
        assert forward + backward == planned, (shape, dtype)
        assert relative_error(y, hco_oracle(x, E)) <= tolerance("triton", dtype)


def test_backward_grid_fills_whole_waves(hco):
    """At B = 128 the plane backward's (channel blocks x chunks) grid of vHeat's 56 and 28
    planes fills whole waves of 132 SMs to at least 90 %, within 4 waves, with the widest
    configuration (the chunking is fixed by the shape, so narrower configurations run more
    programs)."""
    for side in (56, 28):
        for C in CHANNELS[side]:
            for dtype in GPU_DTYPES if side == 56 else (torch.bfloat16, torch.float16):  # 28 fp32: resident
                x = torch.empty((128, side, side, C), dtype=dtype, device="meta")
                E = torch.empty((side, side, C), device="meta")
                plan, _ = hco.backward_plan(x, x, E, x, True, True)
                launch = plan[0]
                assert launch.kernel == "hco_plane_bwd"
                widest = max(launch.configs, key=lambda c: c.BC)
                blocks, chunks = launch.grid(widest)
                programs, wave = blocks * chunks, hco.PLANE_BWD_WAVE
                waves = math.ceil(programs / wave)
                assert waves <= 4 and programs >= 0.9 * waves * wave, (side, C, dtype, blocks, chunks)
                assert chunks * launch.args["B_PER_PROG"] >= 128
