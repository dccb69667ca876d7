"""Registration of the compiled ops (vheat_kernels/ops.py): the library loads, the spectrum
forward's second output, autograd of both op pairs to second order, opcheck (schema, fakes,
autograd) on contiguous and strided inputs, torch.compile(fullgraph=True) and torch.export."""
import itertools

import pytest
import torch

import vheat_kernels as vk
from hco_oracle import dct2, random_inputs
from vheat_kernels.testing import assert_close


def test_extension_is_built():
    # CI builds the op library first (scripts/setup_env.sh); a missing build is a failure.
    assert vk.extension_available(), vk._extension.load_error()


def test_forward_spectrum_is_dct2_of_x():
    vk.ops.compiled_ops()
    x, E = random_inputs((2, 9, 6, 21), torch.bfloat16)
    y, spectrum = torch.ops.vheat.hco_forward_spectrum(x, E)
    assert spectrum.dtype == torch.float32 and torch.equal(y, torch.ops.vheat.hco_forward(x, E))
    assert_close(spectrum, torch.from_numpy(dct2(x.double().numpy())), "cpu", torch.float32, what="spectrum")


@pytest.mark.parametrize("use_spectrum", [False, True], ids=["hco_forward", "hco_forward_spectrum"])
def test_gradgradcheck_compiled_op_pairs(use_spectrum):
    # Both CPU op pairs directly: the plain one (inference-style forward, then backward
    # with create_graph) and the spectrum pair that saves DCT2(x) instead of x.
    ops = vk.ops.compiled_ops()
    fn = (lambda a, b: ops.hco_forward_spectrum(a, b)[0]) if use_spectrum else ops.hco_forward
    x, E = random_inputs((2, 4, 3, 2), torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x, E))


def test_opcheck_forward_and_backward():
    vk.ops.compiled_ops()
    x = torch.randn(2, 5, 7, 9, requires_grad=True)
    E = torch.rand(5, 7, 9, requires_grad=True)
    torch.library.opcheck(torch.ops.vheat.hco_forward.default, (x, E))
    dy = torch.randn(2, 5, 7, 9)
    for need_dx, need_dE in itertools.product([True, False], repeat=2):
        torch.library.opcheck(torch.ops.vheat.hco_backward.default, (dy, x.detach(), E.detach(), need_dx, need_dE))
    torch.library.opcheck(torch.ops.vheat.hco_forward_spectrum.default, (x, E))
    spectrum = torch.ops.vheat.hco_forward_spectrum(x.detach(), E.detach())[1]
    for need_dx, need_dE in itertools.product([True, False], repeat=2):
        torch.library.opcheck(torch.ops.vheat.hco_backward_spectrum.default, (dy, spectrum, E.detach(), need_dx, need_dE))


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
