"""The Heat Conduction Operator on every CPU-runnable backend vs scipy (float64) and vs
the official matmul-DCT reference: values, gradients, identities, errors, dispatch."""
import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import vheat_kernels as vk
from vheat_kernels import BackendUnavailableError, heat_conduction
from hco_oracle import (AWKWARD_SHAPES, RTOL_OF_MAX_REFERENCE, assert_backend_matches_oracle, assert_close_to,
                        hco_grad_oracle, hco_oracle)

CPU_BACKENDS = ["reference", "fft", "cpu"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = AWKWARD_SHAPES + [(1, 56, 56, 16)]


def _inputs(shape, dtype, requires_grad=False):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    E = torch.rand(shape[1:], dtype=torch.float64).to(dtype)
    return x.requires_grad_(requires_grad), E.requires_grad_(requires_grad)


def test_extension_is_built():
    # CI builds the op library first (scripts/setup_env.sh); a missing build is a failure.
    assert vk.extension_available(), vk._extension.load_error()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_scipy(backend, dtype, shape):
    x, E = _inputs(shape, dtype)
    y = heat_conduction(x, E, backend=backend)
    assert y.shape == x.shape and y.dtype == x.dtype
    table = RTOL_OF_MAX_REFERENCE if backend == "reference" else None
    kwargs = {"table": table} if table else {}
    assert_close_to(y, hco_oracle(x, E), dtype, what=f"{backend} {shape}", **kwargs)


@pytest.mark.parametrize("backend", ["fft", "cpu"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference_fp32(backend, shape):
    x, E = _inputs(shape, torch.float32)
    expected = heat_conduction(x.double(), E.double(), backend="reference")
    assert_close_to(heat_conduction(x, E, backend=backend), expected, torch.float32, what=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 1, 6, 9), (3, 4, 1, 17), (2, 7, 6, 2)], ids=str)
def test_gradcheck_float64(backend, shape):
    x, E = _inputs(shape, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: heat_conduction(a, b, backend=backend), (x, E))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(3, 9, 12, 21), (1, 1, 5, 3), (4, 28, 28, 32)], ids=str)
def test_gradients_match_scipy(backend, dtype, shape):
    x, E = _inputs(shape, dtype, requires_grad=True)
    E32 = E.detach().float().requires_grad_(True)  # vHeat feeds E in fp32 (computed from k)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    heat_conduction(x, E32, backend=backend).backward(dy)
    dx_ref, dE_ref = hco_grad_oracle(x, E32, dy)
    table = RTOL_OF_MAX_REFERENCE if backend == "reference" else None
    kwargs = {"table": table} if table else {}
    assert x.grad.dtype == dtype and E32.grad.dtype == torch.float32
    assert_close_to(x.grad, dx_ref, dtype, what="dx", **kwargs)
    # dE sums B products of two rounded transforms; allow the input dtype's rounding.
    assert_close_to(E32.grad, dE_ref, dtype, what="dE", **kwargs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unit_attenuation_is_identity(backend):
    x, _ = _inputs((2, 11, 7, 19), torch.float64)
    torch.testing.assert_close(heat_conduction(x, torch.ones(11, 7, 19, dtype=torch.float64), backend=backend), x)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_self_adjoint(backend):
    x, E = _inputs((2, 9, 13, 5), torch.float64)
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
    assert_close_to(heat_conduction(x, E, backend=backend), hco_oracle(x, E), torch.float32)
    x_sliced = torch.randn(2, 10, 7, 48)[..., ::2]
    assert_close_to(heat_conduction(x_sliced, E, backend=backend), hco_oracle(x_sliced, E), torch.float32)


# A general plane, and small planes (7 x 7, 14 x 14) cut into several runs of channel blocks
# with a partial block at the end (csrc/cpu/hco_cpu.cpp, small_runs).
@pytest.mark.parametrize("shape", [(5, 12, 10, 40), (3, 7, 7, 16 * 70 + 5), (3, 14, 14, 16 * 17 + 9)], ids=str)
def test_cpu_backward_is_deterministic_across_thread_counts(shape):
    x, E = _inputs(shape, torch.float32, requires_grad=True)
    dy = torch.randn_like(x)
    grads = []
    old = torch.get_num_threads()
    try:
        for threads in (1, old):
            torch.set_num_threads(threads)
            x.grad = E.grad = None
            heat_conduction(x, E, backend="cpu").backward(dy)
            grads.append((x.grad.clone(), E.grad.clone()))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 7, 16 * 70 + 5), (2, 14, 14, 16 * 17 + 9), (1, 7, 7, 16)], ids=str)
def test_cpu_small_plane_runs_match_scipy(shape, dtype):
    # Small planes take the run sweep: more channel blocks than one run holds, a partial
    # block, and the saved-spectrum backward, against the float64 oracle.
    x, E = _inputs(shape, dtype, requires_grad=True)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    dx, dE = assert_backend_matches_oracle(x, E, dy, dtype, "cpu")
    # The plain backward (x itself, transformed inside the run), as the second order uses it.
    dx_plain, dE_plain = torch.ops.vheat.hco_backward(dy, x.detach(), E.detach(), True, True)
    assert_close_to(dx_plain, dx, dtype, what=f"plain dx {shape}")
    assert_close_to(dE_plain, dE, dtype, what=f"plain dE {shape}")


def test_forward_spectrum_is_dct2_of_x():
    vk.ops.compiled_ops()
    x, E = _inputs((2, 9, 6, 21), torch.bfloat16)
    y, x_hat = torch.ops.vheat.hco_forward_spectrum(x, E)
    assert x_hat.dtype == torch.float32 and torch.equal(y, torch.ops.vheat.hco_forward(x, E))
    from hco_oracle import dct2

    assert_close_to(x_hat, torch.from_numpy(dct2(x.double().numpy())), torch.float32, what="x_hat")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5, 4, 3), (2, 1, 6, 3), (2, 5, 1, 3), (2, 5, 4, 1), (1, 1, 1, 1), (0, 1, 1, 1)], ids=str)
def test_degenerate_shapes_forward_and_backward(backend, shape):
    # B = 0 (an empty batch), H = 1, W = 1, C = 1: values and both gradients vs scipy.
    x, E = _inputs(shape, torch.float64, requires_grad=True)
    y = heat_conduction(x, E, backend=backend)
    dy = torch.randn(shape, dtype=torch.float64)
    y.backward(dy)
    dx_ref, dE_ref = hco_grad_oracle(x, E, dy)
    for got, want, what in ((y, hco_oracle(x, E), "y"), (x.grad, dx_ref, "dx"), (E.grad, dE_ref, "dE")):
        assert got.shape == want.shape, what
        if want.numel():  # an empty batch has no values to compare, but dE is defined: zeros
            assert_close_to(got, want, torch.float64, what=f"{backend} {what}")


# ---- higher-order gradients ---------------------------------------------------------

# Small: a full gradgradcheck costs O(numel^2) evaluations.
GRADGRAD_SHAPES = [(2, 3, 4, 2), (1, 1, 5, 3), (2, 4, 1, 3), (0, 3, 2, 2), (1, 1, 1, 1)]


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["auto"])
@pytest.mark.parametrize("shape", GRADGRAD_SHAPES, ids=str)
def test_gradgradcheck_float64(backend, shape, recwarn):
    x, E = _inputs(shape, torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: heat_conduction(a, b, backend=backend), (x, E))
    # Before double backward was registered torch only warned ("autograd kernel ... not registered").
    assert not [w for w in recwarn if "autograd" in str(w.message)], [str(w.message) for w in recwarn]


@pytest.mark.parametrize("use_spectrum", [False, True], ids=["hco_forward", "hco_forward_spectrum"])
def test_gradgradcheck_compiled_op_pairs(use_spectrum):
    # Both CPU op pairs directly: the plain one (inference-style forward, then backward
    # with create_graph) and the training pair that saves DCT2(x) instead of x.
    ops = vk.ops.compiled_ops()
    fn = (lambda a, b: ops.hco_forward_spectrum(a, b)[0]) if use_spectrum else ops.hco_forward
    x, E = _inputs((2, 4, 3, 2), torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x, E))


@pytest.mark.parametrize("backend", ["fft", "cpu"])
def test_second_derivatives_match_reference(backend):
    # d/d(x, E) of <grad_x(HCO), v>: an explicit second-order quantity vs the reference.
    x0, E0 = _inputs((2, 9, 7, 5), torch.float64)
    dy, v = torch.randn_like(x0), torch.randn_like(x0)
    out = {}
    for name in (backend, "reference"):
        x, E = x0.clone().requires_grad_(True), E0.clone().requires_grad_(True)
        (gx, gE) = torch.autograd.grad(heat_conduction(x, E, backend=name), (x, E), dy, create_graph=True)
        out[name] = torch.autograd.grad((gx * v).sum() + gE.square().sum(), (x, E))
    for got, want in zip(out[backend], out["reference"]):
        torch.testing.assert_close(got, want)


def test_third_order_gradients_cpu():
    x, E = _inputs((2, 3, 2, 2), torch.float64, requires_grad=True)

    def grads(a, b):
        return torch.autograd.grad((heat_conduction(a, b, backend="cpu") ** 2).sum(), (a, b), create_graph=True)

    assert torch.autograd.gradgradcheck(grads, (x, E), fast_mode=True)


@pytest.mark.parametrize("shape", [(0, 3, 2, 2), (1, 1, 1, 1), (2, 1, 5, 3), (2, 4, 1, 1)], ids=str)
def test_degenerate_shapes_triton_interpreter(shape, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    test_degenerate_shapes_forward_and_backward("triton", shape)


def test_gradgradcheck_triton_interpreter(monkeypatch):
    # Triton's interpreter on CPU tensors (tests/test_triton.py); fast mode keeps it ~10 s.
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, E = _inputs((2, 3, 4, 2), torch.float64, requires_grad=True)
    fn = lambda a, b: heat_conduction(a, b, backend="triton")
    assert torch.autograd.gradcheck(fn, (x, E), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, E), fast_mode=True)


# ---- long odd / prime sides: the cpu kernel's FFT path, bounded memory -----------------

# Sides whose dense DCT block would exceed kDenseBlockMax = 384 (csrc/cpu/hco_cpu.cpp):
# primes 797 and 787, 2 x 773; plus the largest odd side still on the dense path (767).
FFT_PATH_SHAPES = [(2, 1, 797, 3), (1, 787, 3, 2), (2, 2, 1546, 3), (1, 3, 767, 17)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", FFT_PATH_SHAPES, ids=str)
def test_cpu_long_odd_sides_match_scipy(shape, dtype):
    x, E = _inputs(shape, dtype, requires_grad=True)
    E32 = E if dtype == torch.float64 else E.detach().float().requires_grad_(True)
    y = heat_conduction(x, E32, backend="cpu")
    assert_close_to(y, hco_oracle(x, E32), dtype, what=f"y {shape}")
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    y.backward(dy)
    dx_ref, dE_ref = hco_grad_oracle(x, E32, dy)
    assert_close_to(x.grad, dx_ref, dtype, what="dx")
    assert_close_to(E32.grad, dE_ref, dtype, what="dE")
    if dtype != torch.float64:
        x_hat = torch.ops.vheat.hco_forward_spectrum(x.detach(), E32.detach())[1]
        from hco_oracle import dct2

        assert_close_to(x_hat, torch.from_numpy(dct2(x.detach().double().numpy())), torch.float32, what="x_hat")


def test_cpu_fft_path_gradgradcheck():
    x, E = _inputs((1, 1, 797, 2), torch.float64, requires_grad=True)
    fn = lambda a, b: heat_conduction(a, b, backend="cpu")
    assert torch.autograd.gradgradcheck(fn, (x, E), fast_mode=True)


def _measure_in_subprocess(body: str) -> float:
    """Run `body` in a fresh interpreter after warm-up; return the number it prints (MB)."""
    script = textwrap.dedent("""
        import resource, torch, vheat_kernels as vk
        def run(shape):
            x = torch.randn(shape, requires_grad=True)
            E = torch.rand(shape[1:], requires_grad=True)
            vk.heat_conduction(x, E, backend="cpu").backward(torch.randn(shape))
        def peak_growth_mb():
            return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        def resident_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20
        torch.set_num_threads(1)
        run((1, 1, 1009, 2)); run((2, 9, 9, 20))  # load the FFT and kernel code paths first
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    """) + textwrap.dedent(body)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.split()[-1])


# Library overhead measured here: MKL's plan and Bluestein buffers for a 10^5 prime add
# about 60 MB to the first call of any backend (torch.fft too). O(N^2) tables would need
# 40 GB for 99991 and 1.6 GB for 20011.
LIBRARY_MB = 96


@pytest.mark.parametrize("shape", [(1, 1, 99991, 1), (1, 20011, 1, 1), (1, 1, 1, 20011), (2, 1, 20011, 16)], ids=str)
def test_cpu_prime_sides_run_in_bounded_memory(shape):
    input_mb = torch.Size(shape).numel() * 4 / 2**20
    growth = _measure_in_subprocess(f"run({shape!r}); print(peak_growth_mb())")
    assert growth <= 16 * input_mb + LIBRARY_MB, f"{shape}: peak RSS grew {growth:.1f} MB for a {input_mb:.2f} MB input"


def test_cpu_table_cache_is_bounded():
    # 84 odd sides on the dense path, each with about 2 MB of tables: an unbounded cache
    # holds about 180 MB, the LRU at most 32 MB (kCachedTableBytes).
    growth = _measure_in_subprocess("""
        for n in range(601, 769, 2):
            vk.heat_conduction(torch.randn(1, 1, n, 16), torch.rand(1, n, 16), backend="cpu")
        print(peak_growth_mb())
    """)
    assert growth <= 96, f"peak RSS grew {growth:.1f} MB over 84 distinct sides"


def test_cpu_large_plane_workspace_is_released():
    # A 2048 x 2048 plane of 16 channels needs 268 MB of per-thread workspace; above
    # kKeptWorkspace (16 MB) it is freed when the call ends. Current (not peak) RSS.
    held = _measure_in_subprocess("""
        x, E = torch.randn(1, 2048, 2048, 16), torch.rand(2048, 2048, 16)
        before = resident_mb()
        with torch.no_grad():
            vk.heat_conduction(x, E, backend="cpu")  # y (256 MB) is dropped at once
        print(resident_mb() - before)
    """)
    assert held <= 64, f"{held:.1f} MB still resident after the call"


# ---- module and helpers -------------------------------------------------------------

def test_module_rates_match_official_decay():
    x, _ = _inputs((2, 8, 6, 5), torch.float32)
    k = torch.rand(8, 6, 5)
    # Official: weight_exp = exp(-(n pi/H)^2 - (m pi/W)^2) with linspace(0, pi, N + 1)[:N].
    n = torch.linspace(0, torch.pi, 9)[:8].view(-1, 1)
    m = torch.linspace(0, torch.pi, 7)[:6].view(1, -1)
    E_official = torch.pow(torch.exp(-(n**2 + m**2))[:, :, None], k)
    for backend in CPU_BACKENDS:
        mod = vk.HeatConduction(backend=backend)
        assert_close_to(mod(x, k), hco_oracle(x, E_official), torch.float32, what=backend)
        assert_close_to(mod(x, E=E_official), hco_oracle(x, E_official), torch.float32, what=backend)


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


# ---- errors -------------------------------------------------------------------------

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


def test_unknown_backend_error():
    with pytest.raises(ValueError, match="unknown backend 'magic'.*accepted: 'auto', 'reference'"):
        heat_conduction(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2), backend="magic")


def test_named_backend_that_cannot_run_raises_not_falls_back():
    x, E = torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2)
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' cannot run here.*cuda tensors"):
        heat_conduction(x, E, backend="cuda")


def test_cpu_op_rejects_bad_input_with_clear_message():
    vk.ops.compiled_ops()
    with pytest.raises(RuntimeError, match="E shape .* does not match"):
        torch.ops.vheat.hco_forward(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 3))
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        torch.ops.vheat.hco_forward(torch.zeros(1, 3, 3, 2, dtype=torch.int32), torch.rand(3, 3, 2))


# ---- dispatch -----------------------------------------------------------------------

def test_dispatch_precedence(monkeypatch):
    x, E = torch.randn(1, 6, 6, 4), torch.rand(6, 6, 4)
    assert vk.resolve_backend(x, E).name == "cpu"  # auto on CPU with the extension built
    # the measured rule in dispatch.py: fft for large single-channel planes
    assert vk.resolve_backend(torch.randn(1, 256, 256, 1), torch.rand(256, 256, 1)).name == "fft"
    assert vk.resolve_backend(torch.randn(1, 256, 256, 2), torch.rand(256, 256, 2)).name == "cpu"
    assert vk.resolve_backend(torch.randn(1, 16, 16, 1), torch.rand(16, 16, 1)).name == "cpu"
    cpu = vk.dispatch._BACKENDS["cpu"]
    monkeypatch.setitem(vk.dispatch._BACKENDS, "cpu", vk.dispatch.Backend("cpu", lambda a, b: "not built", cpu.fn))
    assert vk.resolve_backend(x, E).name == "fft"  # auto without the op library
    monkeypatch.undo()
    monkeypatch.setenv(vk.ENV_VAR, "reference")
    assert vk.resolve_backend(x, E).name == "reference"
    assert vk.resolve_backend(x, E, "fft").name == "fft"  # the call wins over the environment
    seen = []
    real = vk.dispatch.resolve_backend
    monkeypatch.setattr(vk.functional, "resolve_backend", lambda a, b, r=None: seen.append(r) or real(a, b, r))
    vk.HeatConduction(backend="cpu")(x, E=E)  # the module's choice is passed per call
    assert seen == ["cpu"]
    monkeypatch.setenv(vk.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="from the \\$VHEAT_HCO_BACKEND"):
        heat_conduction(x, E)


def test_available_backends_on_cpu():
    names = vk.available_backends(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2))
    assert {"reference", "fft", "cpu"} <= set(names) and "cuda" not in names


# ---- torch.compile / export / opcheck -------------------------------------------------

def test_opcheck_forward_and_backward():
    vk.ops.compiled_ops()
    x = torch.randn(2, 5, 7, 9, requires_grad=True)
    E = torch.rand(5, 7, 9, requires_grad=True)
    torch.library.opcheck(torch.ops.vheat.hco_forward.default, (x, E))
    dy = torch.randn(2, 5, 7, 9)
    for need_dx, need_dE in itertools.product([True, False], repeat=2):
        torch.library.opcheck(torch.ops.vheat.hco_backward.default, (dy, x.detach(), E.detach(), need_dx, need_dE))
    torch.library.opcheck(torch.ops.vheat.hco_forward_spectrum.default, (x, E))
    x_hat = torch.ops.vheat.hco_forward_spectrum(x.detach(), E.detach())[1]
    for need_dx, need_dE in itertools.product([True, False], repeat=2):
        torch.library.opcheck(torch.ops.vheat.hco_backward_spectrum.default, (dy, x_hat, E.detach(), need_dx, need_dE))


def test_opcheck_strided_x():
    # x as Heat2D passes it (a chunk: row stride W 2C, point stride 2C): the kernels read it in
    # place and their outputs, like the fakes', are contiguous.
    vk.ops.compiled_ops()
    x = torch.randn(2, 5, 7, 18).chunk(2, dim=-1)[0].requires_grad_(True)
    E = torch.rand(5, 7, 9, requires_grad=True)
    assert not x.is_contiguous()
    torch.library.opcheck(torch.ops.vheat.hco_forward.default, (x, E))
    torch.library.opcheck(torch.ops.vheat.hco_forward_spectrum.default, (x, E))
    dy = torch.randn(2, 7, 5, 9).transpose(1, 2)
    torch.library.opcheck(torch.ops.vheat.hco_backward.default, (dy, x.detach(), E.detach(), True, True))


class _HeatLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.k = torch.nn.Parameter(torch.rand(6, 5, 8))
        self.hco = vk.HeatConduction(backend="cpu")

    def forward(self, x):
        return self.hco(self.proj(x), self.k)


def test_torch_compile_fullgraph_forward_backward():
    torch._dynamo.reset()
    model = _HeatLayer()
    x = torch.randn(3, 6, 5, 8, requires_grad=True)
    eager = model(x)
    eager.square().sum().backward()
    g_eager = (x.grad.clone(), model.k.grad.clone())
    x.grad = None
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(x.grad, g_eager[0])
    torch.testing.assert_close(model.k.grad, g_eager[1])


def test_torch_export():
    model = _HeatLayer().eval()
    x = torch.randn(2, 6, 5, 8)
    exported = torch.export.export(model, (x,))
    assert any("vheat.hco_forward" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), model(x))
