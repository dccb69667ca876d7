"""Op numerics on every CPU-runnable backend (and Triton's interpreter): values and
gradients against the scipy float64 oracle and the official matmul-DCT reference, every
dtype, awkward and degenerate shapes, identities, gradcheck / gradgradcheck and higher
orders, the module, decay-map and rate-gradient helpers, and the torch-only oracle of
vheat_kernels.testing with the self-check built on it."""
import os
import subprocess
import sys

import pytest
import torch

import vheat_kernels as vk
from hco_oracle import AWKWARD_SHAPES, assert_matches_scipy, hco_grad_oracle, hco_oracle, random_inputs
from vheat_kernels import heat_conduction
from vheat_kernels import testing
from vheat_kernels.testing import assert_close


CPU_BACKENDS = ["reference", "fft", "cpu"]


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


SHAPES = AWKWARD_SHAPES + [(1, 56, 56, 16)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_scipy(backend, dtype, shape):
    x, E = random_inputs(shape, dtype)
    y = heat_conduction(x, E, backend=backend)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_close(y, hco_oracle(x, E), backend, dtype, what=f"{backend} {shape}")


@pytest.mark.parametrize("backend", ["fft", "cpu"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference_fp32(backend, shape):
    x, E = random_inputs(shape, torch.float32)
    expected = heat_conduction(x.double(), E.double(), backend="reference")
    assert_close(heat_conduction(x, E, backend=backend), expected, backend, torch.float32, what=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 6, 9), (3, 4, 1, 17), (2, 7, 6, 2)], ids=str)
def test_gradcheck_float64(backend, shape):
    x, E = random_inputs(shape, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: heat_conduction(a, b, backend=backend), (x, E))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 9, 12, 21), (1, 1, 5, 3), (4, 28, 28, 32)], ids=str)
def test_gradients_match_scipy(backend, dtype, shape):
    x, E = random_inputs(shape, dtype, requires_grad=True)
    E32 = E.detach().float().requires_grad_(True)  # vHeat feeds E in fp32 (computed from k)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    # dE sums B products of two rounded transforms: held to the input dtype's tolerance.
    assert_matches_scipy(backend, x, E32, dy)
    assert x.grad.dtype == dtype and E32.grad.dtype == torch.float32


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unit_attenuation_is_identity(backend):
    x, _ = random_inputs((2, 11, 7, 19), torch.float64)
    torch.testing.assert_close(heat_conduction(x, torch.ones(11, 7, 19, dtype=torch.float64), backend=backend), x)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_self_adjoint(backend):
    x, E = random_inputs((2, 9, 13, 5), torch.float64)
    z = torch.randn_like(x)
    lhs = (heat_conduction(x, E, backend=backend) * z).sum()
    rhs = (x * heat_conduction(z, E, backend=backend)).sum()
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    nchw = torch.randn(2, 24, 10, 7)
    x = nchw.permute(0, 2, 3, 1)  # channels-last view of an NCHW tensor
    E = torch.rand(7, 10, 24).transpose(0, 1)  # (10, 7, 24), non-contiguous
    assert not x.is_contiguous() and not E.is_contiguous()
    assert_close(heat_conduction(x, E, backend=backend), hco_oracle(x, E), backend, torch.float32)
    x_sliced = torch.randn(2, 10, 7, 48)[..., ::2]
    assert_close(heat_conduction(x_sliced, E, backend=backend), hco_oracle(x_sliced, E), backend, torch.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5, 4, 3), (2, 1, 6, 3), (2, 5, 1, 3), (2, 5, 4, 1), (1, 1, 1, 1), (0, 1, 1, 1)], ids=str)
def test_degenerate_shapes_forward_and_backward(backend, shape):
    _check_degenerate_shape(backend, shape)


@pytest.mark.parametrize("shape", [(0, 3, 2, 2), (1, 1, 1, 1), (2, 1, 5, 3), (2, 4, 1, 1)], ids=str)
def test_degenerate_shapes_triton_interpreter(shape, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _check_degenerate_shape("triton", shape)


def _check_degenerate_shape(backend, shape):
    """B = 0 (an empty batch), H = 1, W = 1, C = 1: values and both gradients vs scipy."""
    x, E = random_inputs(shape, torch.float64, requires_grad=True)
    y = heat_conduction(x, E, backend=backend)
    dy = torch.randn(shape, dtype=torch.float64)
    y.backward(dy)
    dx_ref, dE_ref = hco_grad_oracle(x, E, dy)
    for got, want, what in ((y, hco_oracle(x, E), "y"), (x.grad, dx_ref, "dx"), (E.grad, dE_ref, "dE")):
        assert got.shape == want.shape, what
        if want.numel():  # an empty batch has no values to compare, but dE is defined: zeros
            assert_close(got, want, backend, torch.float64, what, what=f"{backend} {what}")


# Small: a full gradgradcheck costs O(numel^2) evaluations.
GRADGRAD_SHAPES = [(2, 3, 4, 2), (1, 1, 5, 3), (2, 4, 1, 3), (0, 3, 2, 2), (1, 1, 1, 1)]


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["auto"])
@pytest.mark.parametrize("shape", GRADGRAD_SHAPES, ids=str)
def test_gradgradcheck_float64(backend, shape, recwarn):
    x, E = random_inputs(shape, torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: heat_conduction(a, b, backend=backend), (x, E))
    # Without a registered double backward torch would only warn ("autograd kernel ... not registered").
    assert not [w for w in recwarn if "autograd" in str(w.message)], [str(w.message) for w in recwarn]


@pytest.mark.parametrize("backend", ["fft", "cpu"])
def test_second_derivatives_match_reference(backend):
    # d/d(x, E) of <grad_x(HCO), v>: an explicit second-order quantity vs the reference.
    x0, E0 = random_inputs((2, 9, 7, 5), torch.float64)
    dy, v = torch.randn_like(x0), torch.randn_like(x0)
    out = {}
    for name in (backend, "reference"):
        x, E = x0.clone().requires_grad_(True), E0.clone().requires_grad_(True)
        (gx, gE) = torch.autograd.grad(heat_conduction(x, E, backend=name), (x, E), dy, create_graph=True)
        out[name] = torch.autograd.grad((gx * v).sum() + gE.square().sum(), (x, E))
    for got, want in zip(out[backend], out["reference"]):
        torch.testing.assert_close(got, want)


def test_third_order_gradients_cpu():
    x, E = random_inputs((2, 3, 2, 2), torch.float64, requires_grad=True)

    def grads(a, b):
        return torch.autograd.grad((heat_conduction(a, b, backend="cpu") ** 2).sum(), (a, b), create_graph=True)

    assert torch.autograd.gradgradcheck(grads, (x, E), fast_mode=True)


def test_gradgradcheck_triton_interpreter(monkeypatch):
    # Triton's interpreter on CPU tensors (tests/test_backend_triton.py); fast mode keeps it ~10 s.
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, E = random_inputs((2, 3, 4, 2), torch.float64, requires_grad=True)
    fn = lambda a, b: heat_conduction(a, b, backend="triton")
    assert torch.autograd.gradcheck(fn, (x, E), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, E), fast_mode=True)


def test_module_rates_match_official_decay():
    x, _ = random_inputs((2, 8, 6, 5), torch.float32)
    k = torch.rand(8, 6, 5)
    # Official: weight_exp = exp(-(n pi/H)^2 - (m pi/W)^2) with linspace(0, pi, N + 1)[:N].
    n = torch.linspace(0, torch.pi, 9)[:8].view(-1, 1)
    m = torch.linspace(0, torch.pi, 7)[:6].view(1, -1)
    E_official = torch.pow(torch.exp(-(n**2 + m**2))[:, :, None], k)
    for backend in CPU_BACKENDS:
        mod = vk.HeatConduction(backend=backend)
        assert_close(mod(x, k), hco_oracle(x, E_official), backend, torch.float32, what=backend)
        assert_close(mod(x, E=E_official), hco_oracle(x, E_official), backend, torch.float32, what=backend)


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    import numpy as np
    import scipy.fft as sf

    for n in (1, 2, 7, 56):
        C = vk.dct_matrix(n, dtype=torch.float64)
        torch.testing.assert_close(C @ C.T, torch.eye(n, dtype=torch.float64))
        torch.testing.assert_close(C, torch.from_numpy(sf.dct(np.eye(n), type=2, axis=0, norm="ortho")))


def test_rate_gradient_chain_rule():
    # dk = dE * E * log(D) (DESIGN.md): check autograd through attenuation() against it.
    k = torch.rand(5, 4, 3, dtype=torch.float64, requires_grad=True)
    E = vk.attenuation(k)
    g = torch.randn_like(E)
    E.backward(g)
    expected = g * E.detach() * torch.log(vk.decay_map(5, 4, dtype=torch.float64))[:, :, None]
    torch.testing.assert_close(k.grad, expected)


# ---- the torch-only float64 oracle and the self-check (vheat_kernels.testing) -----------


@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
def test_torch_oracle_matches_scipy_oracle(shape):
    x, E = random_inputs(shape, torch.float64)
    dy = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(testing.hco_oracle(x, E), hco_oracle(x, E))
    for got, want in zip(testing.hco_grad_oracle(x, E, dy), hco_grad_oracle(x, E, dy)):
        torch.testing.assert_close(got, want)


def test_selfcheck_runs_without_scipy():
    # scipy is a test dependency only: the self-check's oracle is vheat_kernels.testing's.
    script = ("import sys; sys.modules['scipy'] = None\n"
              "import vheat_kernels.selfcheck as s\n"
              "s.SHAPES = [(2, 7, 5, 3), (1, 1, 9, 4)]\n"
              "sys.exit(s.main())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "self-check passed" in out.stdout
