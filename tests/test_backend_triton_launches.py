"""Every launch of the Triton backend is safe to repeat on its own arguments.

A launch with candidate configurations (``Launch.configs``) is one whose configuration can
be chosen by timing: Triton's autotuner did that on a GPU, launching the kernel many times
on the live arguments before the real launch, so an in-place kernel returned
IDCT(DCT(x) * E^k), k > 1, on the first call of every new shape. Such a launch must leave
memory exactly as one launch does. The interpreter never autotunes, so this is checked
here directly: every plan the package makes for vHeat's planes (224 / 512 / 1024 inputs
and the detection planes), every GPU dtype, the forward and the three backward variants,
each launch run once and then again, all its tensors compared bit for bit.

B and C are small: which kernels a plane takes, and how their arguments alias, depends on
(H, W) and the dtype, not on B or C.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from vheat_kernels import stages  # noqa: E402
from tools import triton_aot as aot  # noqa: E402

PLANES = sorted({(H, W) for planes in stages.PLANES.values() for H, W, _ in planes})
# The interpreter takes minutes on the largest planes. The default run keeps one plane of
# each schedule per dtype size: every plane up to 84 per side (register-resident, line
# along W, line along H) in fp32 and bf16, and 128 x 128 (four streamed passes) in fp32;
# the slow run adds the rest and fp16.
def _fast(plane, dtype) -> bool:
    if dtype == torch.float16:
        return False
    return max(plane) <= 84 or (plane == (128, 128) and dtype == torch.float32)


CASES = [pytest.param(plane, dtype, None, marks=[] if _fast(plane, dtype) else [pytest.mark.slow],
                      id=f"{plane[0]}x{plane[1]}-{str(dtype)[6:]}")
         for plane in PLANES for dtype in (torch.float32, torch.bfloat16, torch.float16)]
COSINE_ARGS = ("mat_ptr", "ch_ptr", "cw_ptr")  # cached cosine matrices: never overwritten


@pytest.fixture(scope="module")
def hco():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        from vheat_kernels.triton import hco

        hco.kernels()
        yield hco


def _plans(hco, B, H, W, C, dtype, schedule=None):
    x = torch.randn(B, H, W, C, dtype=dtype)
    E = torch.rand(H, W, C, dtype=dtype)
    dy = torch.randn_like(x)
    yield "forward", hco.forward_plan(x, E, torch.empty_like(x), schedule=schedule)
    for need_dx, need_dE in aot.BWD_VARIANTS:
        plan, _ = hco.backward_plan(dy, x, E, torch.empty_like(x), need_dx, need_dE, schedule=schedule)
        yield f"backward dx={need_dx} dE={need_dE}", plan


def _tensors(launch) -> dict[int, torch.Tensor]:
    """The launch's tensors that it may read or write, one per storage."""
    cosine = {launch.args[n].data_ptr() for n in COSINE_ARGS if n in launch.args}
    out = {}
    for value in launch.args.values():
        if isinstance(value, torch.Tensor) and value.numel() and value.data_ptr() not in cosine:
            out.setdefault(value.data_ptr(), value)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().contiguous().view(torch.uint8)


# The plane kernels on the planes the routing gives to the register-resident kernels (the
# compile check and gpu-check never build these, but forcing them is how the tests run them).
FORCED_PLANE = [pytest.param((side, side), dtype, "plane", id=f"{side}x{side}-{str(dtype)[6:]}-plane")
                for side in (14, 7) for dtype in (torch.float32, torch.bfloat16)]
CHECKED: set = set()  # kernels checked in this session (test_new_kernels_were_checked)


@pytest.mark.parametrize("plane, dtype, schedule", CASES + FORCED_PLANE)
def test_tunable_launches_are_idempotent(hco, plane, dtype, schedule):
    H, W = plane
    checked = 0
    # Forced plane cases: B = 5, so the plane forward's persistent programs (3 under the
    # interpreter) own several work items and the backward's chunks (3 of up to 2
    # elements) accumulate their partial in place. B = 1 elsewhere (the interpreter is slow
    # on the large planes).
    for name, plan in _plans(hco, 5 if schedule == "plane" else 1, H, W, 2, dtype, schedule):
        for launch in plan:
            if not launch.configs:
                continue
            tensors = _tensors(launch)
            for t in tensors.values():  # scratch starts as whatever memory held: make it finite
                t.copy_(torch.randn(t.shape, dtype=t.dtype))
            hco.run([launch])
            once = {k: _bits(t) for k, t in tensors.items()}
            hco.run([launch])
            for k, t in tensors.items():
                same = torch.equal(_bits(t), once[k])
                assert same, (
                    f"{H}x{W} {dtype} {name}: launching {launch.kernel} twice changed its arguments "
                    "(it reads memory it writes: a tuner's repeated launches would corrupt the first call)")
            checked += 1
            CHECKED.add(launch.kernel)
    assert checked, "no tunable launch was checked"


def test_new_kernels_were_checked():
    """Runs after the idempotence cases (file order): the plane kernels were among them."""
    if not CHECKED:
        pytest.skip("the idempotence cases were deselected")
    assert {"hco_plane", "hco_plane_bwd", "hco_fwd", "hco_bwd"} <= CHECKED, CHECKED


def test_no_kernel_is_wrapped_in_triton_autotune(hco):
    """Configurations come from ``configs.choose`` (a fixed table), never from timing at run
    time: autotuning costs seconds per new shape and breaks CUDA-graph capture."""
    from triton.runtime.autotuner import Autotuner

    for module in (hco.kernels(), hco.streamed()):
        tuned = [n for n, v in vars(module).items() if isinstance(v, Autotuner)]
        assert not tuned, f"{module.__name__}: {tuned} are triton.autotune wrappers"


def test_every_plane_has_a_tunable_launch(hco):
    # Guards the test above against silently checking nothing for a plane.
    for H, W in PLANES:
        x = torch.empty(1, H, W, 2, device="meta")
        plan = hco.forward_plan(x, torch.empty(H, W, 2, device="meta"), x)
        assert any(launch.configs for launch in plan), (H, W)
