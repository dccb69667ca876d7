"""Backend dispatch (vheat_kernels/dispatch.py, backends.py): the precedence call >
module > process, errors for unknown or unrunnable backends, auto on CPU (and inside
torch.compile), and auto on CUDA tensors without a GPU: the compiled-architecture check of
the cuda backend and auto's order, with the device capability and the build info mocked.

CUDA tensors cannot be created here, so the dispatcher gets a stand-in with the
attributes the backends' predicates read (device, dtype, shape, dim, element_size).
"""
from __future__ import annotations

import pytest
import torch

import vheat_kernels as vk
import vheat_kernels.backends as backends
from vheat_kernels import BackendUnavailableError, _extension, dispatch, heat_conduction
from vheat_kernels.cuda_arch import Arch, arch_reason, parse_arch_list
from vheat_kernels.dispatch import CUDA_FP64_LINES_MAX_HW, _auto, cuda_order, resolve_backend
from vheat_kernels.stages import CLASSIFICATION_SIDES
from vheat_kernels.triton import configs as triton_configs


class FakeCudaTensor:
    def __init__(self, shape, dtype):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.device = torch.device("cuda", 0)
        self.is_cpu, self.is_cuda = False, True

    def dim(self):
        return len(self.shape)

    def element_size(self):
        return torch.empty((), dtype=self.dtype).element_size()


# (name, compute capability) of GPUs users have.
DEVICES = [("T4", (7, 5)), ("V100", (7, 0)), ("A100", (8, 0)), ("A10", (8, 6)), ("L4", (8, 9)),
           ("H100", (9, 0)), ("B200", (10, 0)), ("RTX 5090", (12, 0))]
# Which of them each arch list runs on, written out from NVIDIA's compatibility rules
# (SASS: same major, minor <= device; PTX: any arch <= device, JIT by the driver).
RUNS_ON = {
    "8.0;9.0": {"A100", "A10", "L4", "H100"},
    "8.0;9.0+PTX": {"A100", "A10", "L4", "H100", "B200", "RTX 5090"},
    "7.5": {"T4"},
    "7.0+PTX": {"V100", "T4", "A100", "A10", "L4", "H100", "B200", "RTX 5090"},
    "9.0a": {"H100"},
    "Ampere": {"A100", "A10", "L4", "H100", "B200", "RTX 5090"},  # 8.0;8.6+PTX
}


def test_parse_arch_list():
    archs = parse_arch_list("8.0;9.0+PTX")
    assert archs.sass == (Arch(8, 0), Arch(9, 0)) and archs.ptx == (Arch(9, 0),)
    assert parse_arch_list("8.6 9.0a").sass == (Arch(8, 6), Arch(9, 0, "a"))
    assert parse_arch_list("Ampere;Hopper").ptx == (Arch(8, 6), Arch(9, 0))
    with pytest.raises(ValueError, match="cannot parse CUDA architecture 'sm_80'"):
        parse_arch_list("sm_80")


@pytest.mark.parametrize("arch_list", sorted(RUNS_ON))
@pytest.mark.parametrize("device, cap", DEVICES)
def test_arch_reason_follows_the_compatibility_rules(arch_list, device, cap):
    reason = arch_reason(cap, {"cuda_arch_list": arch_list})
    if device in RUNS_ON[arch_list]:
        assert reason is None
    else:
        assert f"none of which runs on this sm_{cap[0]}{cap[1]} GPU" in reason
        assert f'TORCH_CUDA_ARCH_LIST="{cap[0]}.{cap[1]}"' in reason


def test_arch_reason_when_the_build_did_not_record_its_archs():
    for info in ({}, {"cuda_arch_list": None}):
        reason = arch_reason((9, 0), info)
        assert "does not record which CUDA architectures" in reason and "TORCH_CUDA_ARCH_LIST" in reason
    assert "unreadable" in arch_reason((9, 0), {"cuda_arch_list": "sm_90"})


def test_build_info_parses_the_arch_list():
    info = _extension._with_cuda_archs({"cuda": True, "cuda_arch_list": "8.0;9.0+PTX"})
    assert info["cuda_sass"] == ["8.0", "9.0"] and info["cuda_ptx"] == ["9.0"]
    old = _extension._with_cuda_archs({"cuda": True})
    assert old["cuda_arch_list"] is None and old["cuda_sass"] is None and old["cuda_ptx"] is None
    bad = _extension._with_cuda_archs({"cuda": True, "cuda_arch_list": "sm_90"})
    assert bad["cuda_sass"] is None and "sm_90" in bad["cuda_arch_error"]


def test_build_info_of_this_build_says_what_it_knows():
    if not _extension.extension_available():
        pytest.skip("op library not built")
    info = _extension.build_info()
    for key in ("cuda", "cuda_arch_list", "cuda_sass", "cuda_ptx", "cuda_max_axis"):
        assert key in info
    assert isinstance(info["cuda_max_axis"], int) and info["cuda_max_axis"] > 0  # kMaxAxis, compiled in
    if not info["cuda"]:
        assert info["cuda_sass"] is None or info["cuda_arch_list"]


@pytest.fixture
def no_auto_table(monkeypatch):
    """The default order alone, whatever vheat_kernels/auto_table.json holds."""
    monkeypatch.setattr(dispatch, "auto_table", lambda: {})


@pytest.mark.parametrize(
    "shape, dtype, expected",
    [
        ((2, 56, 56, 96), torch.float32, ["triton", "cuda", "reference", "fft"]),
        ((2, 56, 56, 96), torch.bfloat16, ["triton", "cuda", "reference", "fft"]),
        ((2, 200, 334, 96), torch.float16, ["triton", "cuda", "reference", "fft"]),
        ((1, 4000, 4000, 2), torch.float32, ["triton", "cuda", "reference", "fft"]),
        ((2, 56, 56, 96), torch.float64, ["cuda", "reference", "fft"]),
        ((2, 200, 334, 96), torch.float64, ["fft", "cuda", "reference"]),
    ],
)
def test_cuda_order_per_plane_size_and_dtype(no_auto_table, shape, dtype, expected):
    assert cuda_order(FakeCudaTensor(shape, dtype)) == expected


def test_cuda_order_fp64_threshold_is_on_h_plus_w(no_auto_table):
    at = FakeCudaTensor((1, CUDA_FP64_LINES_MAX_HW // 2, CUDA_FP64_LINES_MAX_HW // 2, 1), torch.float64)
    above = FakeCudaTensor((1, CUDA_FP64_LINES_MAX_HW // 2, CUDA_FP64_LINES_MAX_HW // 2 + 1, 1), torch.float64)
    assert cuda_order(at).index("cuda") < cuda_order(at).index("fft")
    assert cuda_order(above).index("fft") < cuda_order(above).index("cuda")


@pytest.mark.parametrize("pick", ["triton", "cuda", "reference", "fft"])
@pytest.mark.parametrize("training", [False, True])
def test_the_auto_table_pick_goes_first_for_its_plane_dtype_and_pass(monkeypatch, pick, training):
    key = dispatch.auto_table_key(torch.bfloat16, 28, 28, training)
    monkeypatch.setattr(dispatch, "auto_table", lambda: {key: pick})
    order = cuda_order(FakeCudaTensor((4, 28, 28, 192), torch.bfloat16), training)
    assert order[0] == pick and sorted(order) == sorted(["triton", "cuda", "reference", "fft"])
    # Another pass, plane or dtype keeps the default order.
    assert cuda_order(FakeCudaTensor((4, 28, 28, 192), torch.bfloat16), not training)[0] == "triton"
    assert cuda_order(FakeCudaTensor((4, 14, 14, 384), torch.bfloat16), training)[0] == "triton"
    assert cuda_order(FakeCudaTensor((4, 28, 28, 192), torch.float16), training)[0] == "triton"


def test_auto_passes_the_training_flag_from_autograd(monkeypatch, mock_gpu):
    mock_gpu((9, 0), {"cuda": True, "cuda_arch_list": "8.0;9.0+PTX"})
    monkeypatch.setattr(dispatch, "auto_table", lambda: {dispatch.auto_table_key(torch.float32, 7, 7, True): "cuda"})
    x = FakeCudaTensor((2, 7, 7, 8), torch.float32)
    assert _auto(x, None) == "triton"
    x.requires_grad = True
    assert _auto(x, None) == "cuda"
    with torch.no_grad():
        assert _auto(x, None) == "triton"


def test_the_shipped_auto_table_names_registered_backends_for_classification_planes():
    table = dispatch.auto_table()
    assert table, f"{dispatch.AUTO_TABLE_FILE} is missing or empty"
    for key, backend in table.items():
        dtype, plane, pass_ = key.split(" ")
        assert dtype in ("float32", "bfloat16", "float16") and pass_ in ("inference", "training"), key
        assert backend in dispatch.backend_names(), (key, backend)
    for side in CLASSIFICATION_SIDES:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for training in (False, True):
                assert dispatch.auto_table_key(dtype, side, side, training) in table


# The mocked builds' longest CUDA axis (build_info()["cuda_max_axis"]; the real one is
# kMaxAxis): other than the real value, so the tests show the reason reads the build's.
MOCK_MAX_AXIS = 4096


@pytest.fixture
def mock_gpu(monkeypatch):
    """mock_gpu(capability, build_info): a CUDA device and an op library as given."""

    def apply(cap, info, triton_importable=True):
        info = {"cuda_max_axis": MOCK_MAX_AXIS, **info}
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"mock sm_{cap[0]}{cap[1]}")
        monkeypatch.setattr(backends, "build_info", lambda: info)
        monkeypatch.setattr(backends, "extension_available", lambda: True)
        monkeypatch.setattr(backends, "_triton_state", [] if triton_importable else [(None, "ImportError: mocked")])

    return apply


def _can_run(name, cap, info, x) -> bool:
    """Ground truth, independent of the predicates: can `name` run x on this device?"""
    H, W = x.shape[1], x.shape[2]
    if name in ("fft", "reference"):
        return True
    if name == "triton":
        # Register-resident planes and the streamed schedule beyond them (issue 15).
        return cap >= (8, 0) and x.dtype != torch.float64 and max(H, W) <= triton_configs.MAX_STREAMED_SIDE
    if name == "cuda":
        listed = info.get("cuda_arch_list")
        caps = {dict(DEVICES)[name] for name in RUNS_ON.get(listed, ())}
        return bool(info.get("cuda")) and cap in caps and max(H, W) <= MOCK_MAX_AXIS
    raise AssertionError(name)


BUILDS = [{"cuda": False, "cuda_arch_list": None}, {"cuda": True, "cuda_arch_list": None}] + [
    {"cuda": True, "cuda_arch_list": a} for a in sorted(RUNS_ON)]
SHAPES = [(4, 7, 7, 768), (4, 56, 56, 96), (1, 200, 334, 96), (1, 1024, 1024, 8), (1, 9000, 2, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("device, cap", DEVICES)
def test_auto_never_selects_a_backend_that_cannot_run_on_the_mocked_device(mock_gpu, device, cap, dtype):
    # With the shipped table: its picks go through the same predicates.
    for info in BUILDS:
        for triton_importable in (True, False):
            mock_gpu(cap, info, triton_importable)
            for shape in SHAPES:
                x = FakeCudaTensor(shape, dtype)
                chosen = _auto(x, None)
                assert _can_run(chosen, cap, info, x) and (chosen != "triton" or triton_importable), (
                    device, info, shape, chosen)
                # ... and it is the first runnable one of the written order.
                runnable = [n for n in cuda_order(x) if _can_run(n, cap, info, x)
                            and (n != "triton" or triton_importable)]
                assert chosen == runnable[0], (device, info, shape, chosen, runnable)


def test_auto_takes_cuda_when_triton_is_missing_and_the_arch_matches(mock_gpu):
    mock_gpu((9, 0), {"cuda": True, "cuda_arch_list": "8.0;9.0+PTX"}, triton_importable=False)
    assert _auto(FakeCudaTensor((2, 56, 56, 96), torch.bfloat16), None) == "cuda"
    # Neither fused backend runs (the build has no sm_100 code, triton is missing): the four
    # cuBLAS matmuls of reference move fewer bytes than the fft path.
    mock_gpu((10, 0), {"cuda": True, "cuda_arch_list": "8.0;9.0"}, triton_importable=False)
    assert _auto(FakeCudaTensor((2, 56, 56, 96), torch.bfloat16), None) == "reference"


def test_requesting_cuda_on_an_uncovered_device_says_what_to_rebuild_with(mock_gpu):
    mock_gpu((7, 5), {"cuda": True, "cuda_arch_list": "8.0;9.0+PTX"})
    x = FakeCudaTensor((2, 14, 14, 8), torch.float32)
    with pytest.raises(BackendUnavailableError, match=r'TORCH_CUDA_ARCH_LIST="7.5"'):
        resolve_backend(x, None, "cuda")
    mock_gpu((9, 0), {"cuda": True, "cuda_arch_list": "8.0;9.0+PTX"})
    with pytest.raises(BackendUnavailableError, match=f"H and W must be <= {MOCK_MAX_AXIS}"):
        resolve_backend(FakeCudaTensor((1, 5000, 2, 1), torch.float32), None, "cuda")


def test_a_damaged_auto_table_is_a_clear_error_and_a_missing_one_the_default_order(monkeypatch, tmp_path):
    bad = tmp_path / "auto_table.json"
    bad.write_text('{"entries": {"bfloat16 7x7 inference": "cuda"')  # cut short
    monkeypatch.setattr(dispatch, "AUTO_TABLE_FILE", bad)
    dispatch.auto_table.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="auto_table.json is unreadable .*bytes_model.py --update"):
            dispatch.auto_table()
        monkeypatch.setattr(dispatch, "AUTO_TABLE_FILE", tmp_path / "missing.json")
        dispatch.auto_table.cache_clear()
        assert dispatch.auto_table() == {}
    finally:
        monkeypatch.undo()
        dispatch.auto_table.cache_clear()


# ---- CPU tensors ---------------------------------------------------------------------


def test_unknown_backend_error():
    with pytest.raises(ValueError, match="unknown backend 'magic'.*accepted: 'auto', 'reference'"):
        heat_conduction(torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2), backend="magic")


def test_named_backend_that_cannot_run_raises_not_falls_back():
    x, E = torch.randn(1, 3, 3, 2), torch.rand(3, 3, 2)
    with pytest.raises(BackendUnavailableError, match="backend 'cuda' cannot run here.*cuda tensors"):
        heat_conduction(x, E, backend="cuda")


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


@pytest.mark.skipif(not vk.extension_available(), reason="vheat_kernels._C not built")
def test_auto_keeps_the_fft_backend_out_of_compiled_graphs():
    # Inside torch.compile auto takes the cpu backend's opaque op, never the fft backend's
    # graph, which Inductor lowers for tens of seconds per shape.
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
