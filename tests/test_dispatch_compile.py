"""auto inside torch.compile: the cpu backend's opaque op, never the fft backend's graph
(Inductor took 30-44 s per static shape and 150 s with dynamic=True lowering it)."""
import pytest
import torch

import vheat_kernels as vk

pytestmark = pytest.mark.skipif(not vk.extension_available(), reason="vheat_kernels._C not built")


def test_auto_keeps_the_fft_backend_out_of_compiled_graphs():
    x, E = torch.randn(2, 64, 64, 1), torch.rand(64, 64, 1)
    assert vk.resolve_backend(x, E).name == "fft"  # eager: a single-channel plane of this size
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda x, E: vk.heat_conduction(x, E), backend=capture, fullgraph=True)
    torch.testing.assert_close(compiled(x, E), vk.heat_conduction(x, E), rtol=1e-5, atol=1e-5)
    targets = [str(node.target) for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]
    assert any("vheat.hco_forward" in t for t in targets), targets
    assert not any("fft" in t for t in targets), targets
