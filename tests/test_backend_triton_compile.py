"""Ahead-of-time build of the fused Triton kernels for sm_80 / sm_90, sized by ``ptxas -v``.

No GPU needed. Builds come from the launch plans vHeat's shapes produce (tools/triton_aot.py), with
the specialisation Triton gives a real launch. The default run builds the launches of
vHeat-T's 56 x 56 stage (plane kernels), 28 x 28 stage (register-resident forward, plane
backward) and 14 x 14 stage (register-resident in bf16; fp32's backward takes the plane
kernel) and a detection plane (streamed, line pass), fp32 (and 14 x 14 bf16) for sm_90; the slow run builds every shape x dtype x autotune configuration x arch (what
``make triton-aot`` prints). A build fails on any register spill, on shared memory above
the architecture's per-block limit, or, for a vHeat-T stage at 224, on fewer than 8
resident warps per SM.
"""
from __future__ import annotations

import os

import pytest

from tools import triton_aot as aot
from vheat_kernels.triton import configs as cfg


@pytest.fixture(scope="module", autouse=True)
def compiler_mode():
    """Compile for real GPUs even if the environment asks for the interpreter."""
    pytest.importorskip("triton.backends.nvidia.compiler")
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    yield
    if old is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = old


def _check(builds: dict):
    rows = [aot.build(b, shapes=shapes) for b, shapes in builds.items()]
    print("\n" + aot.table(rows))
    bad = [f"{r.build.name}: {'; '.join(r.problems)}" for r in rows if r.problems]
    assert not bad, "builds over budget:\n" + "\n".join(bad)


def _stage_builds(shape, dtype, arch, first_only=True) -> dict:
    label = f"T/S@224 {'x'.join(map(str, shape))}"
    return {b: [label] for b in aot.shape_builds(shape, dtype, arch, first_only)}


def test_vheat_t_stage_builds_fit():
    builds = {}
    for shape in ((8, 56, 56, 96), (8, 28, 28, 192), (8, 14, 14, 384)):
        builds.update(_stage_builds(shape, "fp32", 90))
    builds.update(_stage_builds((8, 14, 14, 384), "bf16", 90))  # fp32's backward takes the plane kernel
    builds.update({b: ["det T/S 2x50x84x384"] for b in aot.shape_builds((2, 50, 84, 384), "fp32", 90, True)})
    kernels = {b.kernel for b in builds}
    assert {"hco_plane", "hco_plane_bwd", "hco_de_sum", "hco_fwd", "hco_bwd", "hco_axis", "hco_line",
            "hco_line_bwd"} <= kernels, kernels
    _check(builds)


@pytest.mark.slow
def test_every_build_fits():
    _check(aot.every_build())


def test_builds_carry_the_runtime_specialisation():
    """Integers divisible by 16 get tt.divisibility, 1 becomes a constant, pointers are
    16-byte aligned, and B_PER_PROG stays unspecialised (as the JIT does at launch)."""
    builds = aot.shape_builds((2, 100, 167, 192), "fp32", 90, first_only=True)  # four streamed passes
    axis_h = next(b for b in builds if b.kernel == "hco_axis" and dict(b.signature).get("E_PERIOD") == "constexpr")
    sig, attrs, consts = dict(axis_h.signature), dict(axis_h.attrs), dict(axis_h.constexprs)
    names = [n for n, _ in axis_h.signature]
    assert consts["E_PERIOD"] == 1 and sig["src_ptr"] == "*fp32"
    assert attrs[names.index("src_ptr")] == "D" and attrs[names.index("R")] == "D"  # R = 167 * 192
    assert attrs[names.index("N")] == ""  # N = 100
    bwd = aot.shape_builds((3, 14, 14, 384), "bf16", 90, first_only=True)
    resident_bwd = [b for b in bwd if b.kernel == "hco_bwd"]
    # dx-only backwards run the forward kernel on dy: every backward build computes dE.
    assert resident_bwd and all(dict(b.constexprs)["NEED_DE"] is True for b in resident_bwd)
    assert all(dict(b.signature)["B_PER_PROG"] == "i32" for b in resident_bwd)  # 1 here, but not a constant
    plane_bwd = [b for b in aot.shape_builds((1, 56, 56, 96), "bf16", 90, True) if b.kernel == "hco_plane_bwd"]
    assert plane_bwd and all(dict(b.signature)["B_PER_PROG"] == "i32" for b in plane_bwd)
    # The pixel stride of the chunk view (2C = 192) keeps its divisibility; C's does too.
    sig = dict(plane_bwd[0].signature)
    assert sig["X_SW"] == "i32" and sig["G_SW"] == "i32"


def test_shape_table_covers_the_issue():
    shapes = {s for rows in aot.SHAPES.values() for s in rows}
    for want in [(8, 56, 56, 96), (2, 128, 128, 96), (1, 256, 256, 128), (2, 200, 334, 96), (2, 100, 167, 192)]:
        assert want in shapes


def test_table_covers_vheat_shapes():
    """Every padded plane up to the register-resident side has configurations for both kernels."""
    for eb in (2, 4):
        side = cfg.max_side(eb)
        assert side >= 32, f"{eb}-byte dtypes: fused planes only up to {side}"
        for HP in cfg.PADDED_SIDES:
            for WP in cfg.PADDED_SIDES:
                if HP <= side and WP <= side:
                    for backward in (False, True):
                        configs = cfg.prune(HP, WP, 64, eb, backward)
                        assert configs, (HP, WP, eb, backward)
                        table = set(cfg.SPILL_FREE[cfg._table_key(HP, WP, eb, backward)])
                        assert {(c.BC, c.num_warps) for c in configs} <= table


def _build(arch=80, warps=8):
    return aot.Build("hco_fwd", "bf16", arch, (("HP", "constexpr"),), (("HP", 32), ("WP", 32), ("BC", 8)), (), warps, 1)


def test_parse_ptxas_and_problems():
    log = (
        "ptxas info    : Function properties for k\n"
        "    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 24 bytes cumulative stack size\n"
    )
    parsed = aot.parse_ptxas(log)
    assert parsed == dict(registers=255, spill_bytes=28, stack_bytes=24)
    b = _build()
    assert aot.Resources(b, 128, 0, 0, 160 * 1024).problems == []
    too_big = aot.Resources(b, 128, 0, 0, 164 * 1024).problems
    assert len(too_big) == 1 and "shared memory" in too_big[0]
    assert "spills" in aot.Resources(b, 255, 28, 24, 1024).problems[0]
    with pytest.raises(RuntimeError, match="register count"):
        aot.parse_ptxas("garbage")


def test_occupancy():
    # 128 registers x 8 warps: 32 Ki registers per block, two blocks per SM by registers.
    assert aot.Resources(_build(), 128, 0, 0, 0).blocks_per_sm == 2
    # 100 KiB shared (+1 KiB reserved) on sm_80's 164 KiB: one block of 4 warps.
    low = aot.Resources(_build(warps=4), 64, 0, 0, 100 * 1024, shapes=["T/S@224 8x56x56x96"])
    assert low.blocks_per_sm == 1 and low.resident_warps == 4
    assert any("resident warps" in p for p in low.problems)
    # The same kernel on sm_90 (228 KiB): two blocks, 8 warps, fine.
    assert aot.Resources(_build(arch=90, warps=4), 64, 0, 0, 100 * 1024, shapes=["T/S@224 x"]).problems == []
    # Outside the vHeat-T 224 shapes the warp target is not a problem.
    assert aot.Resources(_build(warps=4), 64, 0, 0, 100 * 1024, shapes=["det B 2x200x334x128"]).problems == []


def test_spill_tables_module_is_what_the_generator_writes():
    """vheat_kernels/triton/spill_tables.py is written whole by tools/triton_resources.py: a
    hand edit (or a generator change) shows up as a difference here."""
    from vheat_kernels.triton import spill_tables

    with open(spill_tables.__file__) as f:
        assert aot.spill_tables_source(spill_tables.SPILL_FREE, spill_tables.PLANE_SPILLED) == f.read()
