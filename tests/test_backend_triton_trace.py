"""The triton ops trace as graph ops under FakeTensors (what torch.compile / export rely on).

Runs on CPU with the compiled (not interpreted) kernels: tracing never launches them.
Launching through torch.compile needs a GPU (or, for the interpreter, cannot work: Triton's
interpreter reads real data pointers, which FakeTensors do not have).
"""
from __future__ import annotations


import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx


@pytest.fixture(scope="module", autouse=True)
def hco():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "0")
        from vheat_kernels.triton import hco as module

        yield module


def _fwd_bwd(x, E):
    y = torch.ops.vheat.hco_triton(x, E)
    return (y, *torch.ops.vheat.hco_triton_backward(y, x, E, True, True))


@pytest.mark.parametrize("mode", ["fake", "symbolic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ops_trace_under_fake_tensors(mode, dtype):
    x, E = torch.randn(3, 9, 6, 5, dtype=dtype), torch.rand(9, 6, 5)
    gm = make_fx(_fwd_bwd, tracing_mode=mode)(x, E)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.vheat.hco_triton.default in calls
    assert torch.ops.vheat.hco_triton_backward.default in calls
    out = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    y, dx, dE = (node.meta["val"] for node in out)
    assert y.shape == x.shape and y.dtype == dtype
    assert dx.shape == x.shape and dx.dtype == dtype
    assert dE.shape == E.shape and dE.dtype == E.dtype


def test_cosine_cache_holds_no_fake_tensors(hco):
    x, E = torch.randn(2, 19, 26, 3), torch.rand(19, 26, 3)  # sizes no other test uses
    make_fx(_fwd_bwd, tracing_mode="fake")(x, E)
    from torch._subclasses.fake_tensor import is_fake

    from vheat_kernels.dct import MAPS  # the one cosine-matrix cache, Triton's included

    assert not any(is_fake(t) for t in MAPS.values())
    assert not any(key[:2] in (("dct", 19), ("dct", 26)) for key in MAPS)
