"""Input validation: what heat_conduction and the compiled ops reject, with which message."""
import pytest
import torch

import vheat_kernels as vk
from vheat_kernels import heat_conduction


@pytest.mark.parametrize(
    "x_shape, E_shape, match",
    [
        ((4, 5, 6), (4, 5, 6), "channels-last with shape \\(B, H, W, C\\)"),
        ((1, 4, 5, 6), (4, 5), "E must have shape \\(H, W, C\\)"),
        ((1, 4, 5, 6), (4, 6, 5), "does not match x's \\(H, W, C\\)"),
        ((1, 4, 5, 6), (4, 5, 7), "does not match"),
    ],
)
def test_shape_errors(x_shape, E_shape, match):
    with pytest.raises(ValueError, match=match):
        heat_conduction(torch.randn(x_shape), torch.rand(E_shape))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool], ids=str)
def test_dtype_errors(dtype):
    x = torch.zeros(1, 3, 3, 2, dtype=dtype)
    with pytest.raises(TypeError, match="accepted: float32, float64, bfloat16, float16"):
        heat_conduction(x, torch.rand(3, 3, 2))


def test_mixed_device_error():
    with pytest.raises(ValueError, match="on one device"):
        heat_conduction(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2, device="meta"))


def test_value_checks_are_opt_in():
    x = torch.randn(1, 3, 3, 2)
    E = torch.rand(3, 3, 2)
    E[0, 0, 0] = float("nan")
    assert torch.isnan(heat_conduction(x, E)).any()  # default: no scan, NaN propagates
    with pytest.raises(ValueError, match="NaN or Inf"):
        heat_conduction(x, E, check_values=True)
    with pytest.raises(ValueError, match="negative"):
        heat_conduction(x, -torch.rand(3, 3, 2), check_values=True)


def test_cpu_op_rejects_bad_input_with_clear_message():
    vk.ops.compiled_ops()
    with pytest.raises(RuntimeError, match="E shape .* does not match"):
        torch.ops.vheat.hco_forward(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 3))
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        torch.ops.vheat.hco_forward(torch.zeros(1, 3, 3, 2, dtype=torch.int32), torch.rand(3, 3, 2))
