"""Ahead-of-time build of the fused Triton kernels for sm_80 / sm_90, sized by ``ptxas -v``.

No GPU needed. The default run builds the most register-hungry configuration per (arch,
kernel) and dtype size; the slow run builds every kernel x dtype x plane x autotune
configuration (the same set ``benchmarks/triton_resources.py`` prints). A build fails on
any register spill or on shared memory above the architecture's per-block limit.
"""
from __future__ import annotations

import os

import pytest

from vheat_kernels.triton import configs as cfg

aot = pytest.importorskip("vheat_kernels.triton.aot")


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


def _check(builds):
    rows = [aot.build(b) for b in builds]
    print("\n" + aot.table(rows))
    bad = [f"{r.build.name}: {'; '.join(r.problems)}" for r in rows if r.problems]
    assert not bad, "builds over budget:\n" + "\n".join(bad)


def test_hungriest_builds_fit():
    builds = [b for b in aot.largest_builds(dtypes=("bf16", "fp32"))]
    assert {b.arch for b in builds} == set(aot.ARCHS) and {b.kernel for b in builds} == {"fwd", "bwd"}
    _check(builds)


@pytest.mark.slow
def test_every_build_fits():
    _check(aot.every_build())


def test_table_covers_vheat_shapes():
    """Every padded plane up to the supported side has configurations for both kernels."""
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


def test_parse_ptxas_and_problems():
    log = (
        "ptxas info    : Function properties for k\n"
        "    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 24 bytes cumulative stack size\n"
    )
    parsed = aot.parse_ptxas(log)
    assert parsed == dict(registers=255, spill_bytes=28, stack_bytes=24)
    b = aot.Build("fwd", "bf16", 32, 32, cfg.BlockConfig(8, 8), 80)
    assert aot.Resources(b, 128, 0, 0, 160 * 1024).problems == []
    too_big = aot.Resources(b, 128, 0, 0, 164 * 1024).problems
    assert len(too_big) == 1 and "shared memory" in too_big[0]
    assert "spills" in aot.Resources(b, 255, 28, 24, 1024).problems[0]
    with pytest.raises(RuntimeError, match="register count"):
        aot.parse_ptxas("garbage")
