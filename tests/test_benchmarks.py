"""The benchmark suite's harness on tiny sizes: every section runs, JSON/plots/docs are well formed.

Checks the harness (schema, files, target bookkeeping), not timings.
"""
import json
import os

import pytest
import torch

from benchmarks.__main__ import QUICK, main
from benchmarks.machine import machine_class, machine_info, use_own_inductor_cache
from benchmarks.report import TITLES, hco_share, render, targets, targets_table
from benchmarks.suite import deployment
from benchmarks.suite import model as model_section
from benchmarks.suite.official_vheat import OfficialVHeat
from vheat.models import VHeat
from vheat_kernels import extension_available

from reference_data import GOLDEN

TINY = ["--quick", "--threads", "1", "--min-time", "0", "--dtypes", "float32", "--kernel-resolutions", "32", "--kernel-batch", "1",
        "--img-size", "64", "--num-classes", "7", "--batch-sizes", "1", "--vheat-models", "vheat_tiny",
        "--timm-models", "deit_small_patch16_224", "--model-peers", "none", "--resolutions", "32,64",
        "--resolution-models", "vheat_tiny,deit_small_patch16_224", "--memory-img-size", "64", "--memory-batch", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    docs = out / "benchmarks.md"
    payload = main(TINY + ["--out-dir", str(out), "--tag", "t", "--docs", str(docs)])
    return out, docs, payload


def test_json_schema(run):
    out, _, payload = run
    with open(out / f"t_{machine_class(machine_info())}.json") as f:  # one file per machine class
        saved = json.load(f)
    assert saved["command"].startswith("python -m benchmarks --quick") and saved["git"]
    assert {"cpu", "isa", "host_isa", "isa_forced_by", "isa_note", "machine_class", "threads", "torch", "python"} <= set(saved["machine"])
    assert saved["peaks"]["gemm_gflops"] > 0 and saved["peaks"]["copy_gbs"] > 0
    assert set(saved["results"]) == {"kernel", "model", "resolution", "memory", "profile"}
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    k = saved["results"]["kernel"]
    assert "reference" in k["backends"]
    assert len(k["rows"]) == 4 * 2  # four stages of vHeat-T at 32 px, forward and fwd+bwd
    for r in k["rows"]:
        assert set(r["ms"]) == set(k["backends"]) and r["speedup"]["reference"] == pytest.approx(1.0)
        assert all(v > 0 for v in r["gflops"].values()) and all(v > 0 for v in r["gbs"].values())
    assert [r["shape"] for r in k["rows"][::2]] == [[1, 8, 8, 96], [1, 4, 4, 192], [1, 2, 2, 384], [1, 1, 1, 768]]

    m = saved["results"]["model"]
    labels = {(r["model"], r["mode"]) for r in m["rows"]}
    for mode in ("infer", "train"):
        fused = "vHeat-T fused (cpu)" if extension_available() else "vHeat-T fused (fft)"
        assert {l for l, md in labels if md == mode} == {fused, "vHeat-T official", "vHeat-T ours + matmul-DCT", "DeiT-S"}
    assert all(r["ms"] > 0 and r["images_per_s"] > 0 and r["status"] == "ok" for r in m["rows"])
    # every vHeat inference candidate was checked against our eager model on the same input
    checked = [r for r in m["rows"] if r["mode"] == "infer" and r["model"].startswith("vHeat-T")]
    assert len(checked) == 3 and all(0 <= r["max_rel_diff"] <= m["max_rel_diff_allowed"] for r in checked)
    assert all(r["max_rel_diff"] is None for r in m["rows"] if r["mode"] == "train" or r["model"] == "DeiT-S")

    res = saved["results"]["resolution"]
    assert sorted({r["img_size"] for r in res["rows"]}) == [32, 64]
    flops = {(r["model"], r["img_size"]): r["gflops"] for r in res["rows"]}
    assert flops[("DeiT-S", 64)] > flops[("DeiT-S", 32)] > 0
    # FLOPs are a property of the model, not of the HCO backend
    fused = next(l for l, _ in flops if l.startswith("vHeat-T fused"))
    assert flops[(fused, 64)] == pytest.approx(flops[("vHeat-T ours + matmul-DCT", 64)])
    assert flops[(fused, 64)] == pytest.approx(flops[("vHeat-T official", 64)])

    mem = saved["results"]["memory"]
    assert mem["hco_shape"] == [1, 16, 16, 96]
    assert set(mem["train_step"]) == {mem["fused_backend"], "reference", "official"}
    # the official code keeps at least what ours on the matmul-DCT keeps, more than ours fused
    assert mem["official_step_saved_ratio"] >= mem["step_saved_ratio"] > 1
    # the fused op keeps x and E only: exactly their bytes
    assert mem["hco_saved_bytes"][mem["fused_backend"]] == (16 * 16 * 96 + 16 * 16 * 96) * 4
    assert mem["hco_saved_bytes"]["reference"] > mem["hco_saved_bytes"][mem["fused_backend"]]
    assert payload["targets"] == saved["targets"] and saved["targets"]

    prof = saved["results"]["profile"]
    assert {(r["model"], r["mode"]) for r in prof["rows"]} == {(l, md) for l in (fused, "vHeat-T official") for md in ("infer", "train")}
    for r in prof["rows"]:
        assert set(r["family_ms"]) == set(prof["families"]) and all(v >= 0 for v in r["family_ms"].values())
        # the families partition the profiled step: op self times plus what no op accounts for
        assert sum(r["family_ms"].values()) == pytest.approx(r["profiled_ms"], rel=1e-6)
        assert r["unprofiled_ms"] > 0 and r["top_ops_ms"]
    fused_rows = [r for r in prof["rows"] if r["model"] == fused]
    if extension_available():
        assert all(r["family_ms"]["HCO"] > 0 for r in fused_rows)  # the vheat:: ops are found
    assert all(r["family_ms"]["GEMM"] > 0 and r["family_ms"]["conv"] > 0 for r in prof["rows"])
    assert [c["shape"] for c in prof["hco_call"]["rows"]] == [[1, 16, 16, 96], [1, 8, 8, 192], [1, 4, 4, 384], [1, 2, 2, 768]]


def test_plots_and_docs(run):
    out, docs, _ = run
    stem = f"t_{machine_class(machine_info())}"
    for name in (f"{stem}_resolution.png", f"{stem}_kernel_speedup.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = docs.read_text()
    assert "`python -m benchmarks --quick" in text and "## Targets" in text
    assert f"(./{stem}_resolution.png)" in text and f"(./{stem}_kernel_speedup.png)" in text
    cpu = machine_info()["cpu"]
    for title in ("HCO kernels", "Whole models", "Resolution scaling", "Memory", "Where the time goes"):
        assert f"## {title}" in text
    for title in TITLES.values():
        assert f"## {title} ({cpu}, " in text  # every table names the CPU (and ISA) it ran on


def test_docs_show_each_machines_model_run(run):
    from benchmarks.report import write_docs

    out, docs, _ = run
    forced = {"VHEAT_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    machine = {"cpu": "Some CPU", "host_isa": "avx512", "isa": "avx2", "isa_forced": True, "isa_forced_by": forced,
               "threads": 1, "load_avg_before": [3.0], "load_avg_after": [4.0], "isa_note": "forced by ..."}
    rows = [{"model": "vHeat-T fused (cpu)", "mode": "infer", "batch": 1, "img_size": 224, "ms": 50.0, "images_per_s": 20.0,
             "status": "ok", "max_rel_diff": 0.0, "x_official": 2.0, "ours_x": 1.0},
            {"model": "vHeat-T official + torch.compile", "mode": "infer", "batch": 1, "img_size": 224, "ms": None,
             "images_per_s": None, "status": "did not compile: X", "max_rel_diff": None, "x_official": None, "ours_x": None}]
    side = out / "model_some-cpu_avx2-forced-on-avx512.json"
    side.write_text(json.dumps({"command": "ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks --only model", "finished_utc": "now",
                                "machine": machine, "config": {"img_size": 224}, "results": {"model": {"rows": rows}}}))
    try:
        text = (write_docs(str(out / f"t_{machine_class(machine_info())}.json"), str(docs)) and docs.read_text())
    finally:
        side.unlink()
    section = text[text.index("## Whole models at 224: Some CPU, avx2 (forced by VHEAT_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "
                              "on an avx512 host), 1 threads"):]
    assert "`ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks --only model`" in section and "load average 3.0 before" in section
    assert "| infer | 1 | vHeat-T fused (cpu) | 50.0 | 20.00 | 2.00x | 1.00x | 0.0e+00 |" in section
    assert "| infer | 1 | vHeat-T official + torch.compile | did not compile: X |" in section


def test_targets_bookkeeping():
    rows = [{"model": "vHeat-T fused (cpu)", "mode": "infer", "batch": 1, "ms": 10.0, "images_per_s": 100.0},
            {"model": "vHeat-T official", "mode": "infer", "batch": 1, "ms": 12.0, "images_per_s": 83.3},
            {"model": "Swin-T", "mode": "infer", "batch": 1, "ms": 9.0, "images_per_s": 111.1}]
    got = {t["target"]: (round(t["measured"], 3), t["met"]) for t in targets({"model": {"rows": rows}})}
    assert got == {"vHeat-T inference vs official, batch 1": (1.2, False),
                   "vHeat-T inference at least as fast as Swin-T, batch 1": (0.9, False)}
    # bound: official 12 ms / (1 image x 2 x 0.5 GMACs at 250 GFLOP/s = 4 ms) = 3x
    res = {"rows": [{"model": "vHeat-T fused (cpu)", "img_size": 224, "ms": 1.0, "gflops": 0.6, "dense_gflops": 0.5}]}
    rows = [dict(r, img_size=224) for r in rows]
    bounded = targets({"model": {"rows": rows}, "resolution": res}, {"gemm_gflops": 250.0})
    assert bounded[0]["bound"] == pytest.approx(3.0) and bounded[1]["bound"] is None
    assert "| 3.00x |" in targets_table(bounded)
    assert targets({"model": {"rows": rows}, "resolution": res})[0]["bound"] is None  # no GEMM peak measured
    assert "n/a" not in render({"machine": {"cpu": "x", "threads": 1, "torch": "t", "python": "p"}, "command": "c",
                                "finished_utc": "now", "wall_s": 1.0, "peaks": {"gemm_gflops": 1, "copy_gbs": 1},
                                "results": {"model": {"rows": rows}}}, ".")


@pytest.mark.parametrize("argv, message", [(["--only", "kernel,gpu"], "unknown section"),
                                           (["--resolutions", "100"], "multiples of 32")])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


# --- the model section's deployment peers (torch.compile, ONNX Runtime) on a micro vHeat ------------
MICRO_MODEL = dict(QUICK, img_size=64, num_classes=7, batch_sizes=[1, 2], min_time=0, model_reps=1, modes=["infer"],
                   vheat_models=["vheat_tiny"], timm_models=[], model_kwargs={"vheat_tiny": dict(depths=(1, 1, 1, 1), dims=8)})
PEER_ROWS = ("vHeat-T official + torch.compile", "vHeat-T official, ONNX Runtime", "vHeat-T ours, ONNX Runtime")


def _model_section(tmp_path, monkeypatch, **cfg):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the section's .onnx files go
    exported, export = [], deployment.export_onnx
    monkeypatch.setattr(deployment, "export_onnx", lambda model, x, path: (exported.append(path), export(model, x, path)))
    section = model_section.run(dict(MICRO_MODEL, **cfg), {})
    # the exports went to a temporary directory, deleted after the section
    assert all(p.startswith(str(tmp_path)) and not os.path.exists(p) for p in exported)
    assert not list(tmp_path.glob("vheat-bench-onnx-*"))
    return {(r["model"], r["batch"]): r for r in section["rows"]}, section


def _assert_timed_and_checked(row):
    assert row["status"] == "ok" and row["ms"] > 0 and row["x_official"] > 0 and row["ours_x"] > 0
    assert 0 <= row["max_rel_diff"] <= deployment.MAX_REL_DIFF


@pytest.mark.skipif(not extension_available(), reason="our ONNX export of vHeat needs the op library's symbolics")
def test_model_section_onnxruntime_peers_and_a_failed_compile(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    def no_compiler(module, **kwargs):  # torch.compile fails at the first call, as inductor does
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler found\nsecond line of the error")
        return call

    monkeypatch.setattr(torch, "compile", no_compiler)
    rows, section = _model_section(tmp_path, monkeypatch, model_peers=["compile", "onnxruntime"])
    for n in (1, 2):  # one export with a dynamic batch serves every batch size
        for label in ("vHeat-T fused (cpu)", "vHeat-T official", "vHeat-T ours + matmul-DCT", *PEER_ROWS[1:]):
            _assert_timed_and_checked(rows[(label, n)])
        failed = rows[("vHeat-T official + torch.compile", n)]
        assert failed["ms"] is None and failed["status"] == "did not compile: RuntimeError: InductorError: no working C++ compiler found"
    assert section["clock"] == ("thread" if torch.get_num_threads() == 1 else "wall")
    table = model_section.table(section)
    assert "| vHeat-T official + torch.compile | did not compile: RuntimeError: InductorError" in table
    assert "| vHeat-T ours, ONNX Runtime | " in table and "x official | ours fused x | max rel diff |" in table


@pytest.mark.slow
def test_model_section_compiles_the_official_model(tmp_path, monkeypatch):
    rows, _ = _model_section(tmp_path, monkeypatch, model_peers=["compile"])
    for n in (1, 2):  # batch 2 recompiles before timing
        _assert_timed_and_checked(rows[(PEER_ROWS[0], n)])


def test_model_section_reports_failed_exports_and_numeric_mismatches(tmp_path, monkeypatch, capsys):
    def no_export(model, example, path):
        raise RuntimeError("exporting aten::imaginary_op is not supported\ndetails")

    monkeypatch.setattr(deployment, "export_onnx", no_export)  # _model_section's wrapper calls this one
    # A tolerance nothing but our model itself meets: every other candidate fails, loudly, untimed.
    monkeypatch.setattr(deployment, "MAX_REL_DIFF", 1e-12)
    rows, section = _model_section(tmp_path, monkeypatch, batch_sizes=[1], model_peers=["onnxruntime"])
    fused = rows[("vHeat-T fused (cpu)" if extension_available() else "vHeat-T fused (fft)", 1)]
    assert fused["status"] == "ok" and fused["ms"] > 0 and fused["max_rel_diff"] == 0
    assert fused["x_official"] is None and fused["ours_x"] == 1.0  # no official time to compare with
    err = capsys.readouterr().err
    for label in ("vHeat-T official", "vHeat-T ours + matmul-DCT"):
        row = rows[(label, 1)]
        assert row["ms"] is None and row["max_rel_diff"] > 1e-12
        assert row["status"].startswith("numeric check FAILED: max rel diff") and f"ERROR {label}: numeric check FAILED" in err
    for label in PEER_ROWS[1:]:
        assert rows[(label, 1)] == dict(rows[(label, 1)], ms=None, max_rel_diff=None,
                                        status="not exported: RuntimeError: exporting aten::imaginary_op is not supported")
    assert "| vHeat-T official | numeric check FAILED" in model_section.table(section)


def test_forced_isa_is_named():
    from benchmarks.__main__ import isa_note
    from benchmarks.machine import machine_label

    forced = {"VHEAT_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    m = {"cpu": "AMD EPYC", "host_isa": "avx512", "isa": "avx2", "isa_forced": True, "isa_forced_by": forced}
    assert machine_class(m) == "amd-epyc_avx2-forced-on-avx512"
    assert machine_label(m) == ("AMD EPYC, avx2 (forced by VHEAT_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "
                                "MKL_ENABLE_INSTRUCTIONS=AVX2 on an avx512 host)")
    note = isa_note(m)
    assert "ONNX Runtime's MLAS has no such switch" in note and "NOT forced: ATEN_CPU_CAPABILITY" in note
    assert "not forced" in isa_note({"host_isa": "avx512", "isa_forced_by": {}})


def test_amdahl_bound():
    planes = [{"family": "T/S", "input_res": 224, "dtype": "float32", "pass": "forward", "stage": i + 1,
               "shape": [2, 56 >> i, 56 >> i, 96 << i], "ms": {"reference": 2.0, "cpu": 1.0}} for i in range(4)]
    model_rows = [{"model": "vHeat-T official", "mode": "infer", "batch": 4, "ms": 96.0}]
    text = hco_share({"kernel": {"rows": planes}, "model": {"rows": model_rows}})
    # 12 blocks x 2 ms / batch 2 = 12 ms of a 24 ms image: half the time, so at most 2x; the
    # fused HCO (6 ms) predicts 24 / (24 - 12 + 6) = 1.33x
    assert "At 224: the official HCO costs 12.0 ms per image" in text and "50.0 %" in text
    assert "at most 2.00x" in text and "predicts 1.33x" in text
    assert hco_share({"model": {"rows": model_rows}}) is None
    # the top resolution's bound comes from the resolution section (batch 1)
    big = [{**p, "input_res": 1024, "shape": [1, 256 >> i, 256 >> i, 96 << i]} for i, p in enumerate(planes)]
    res_rows = [{"model": "vHeat-T official", "img_size": 1024, "ms": 48.0}]
    text = hco_share({"kernel": {"rows": big}, "resolution": {"rows": res_rows}})
    # 12 blocks x 2 ms = 24 ms of 48 ms: at most 2x; fused 12 ms predicts 48 / 36 = 1.33x
    assert text.count("At ") == 1 and "At 1024: the official HCO costs 24.0 ms per image" in text
    assert "at most 2.00x" in text and "predicts 1.33x" in text


# --- the official-code baseline ------------------------------------------------------------------
@pytest.mark.skipif(not GOLDEN.exists(), reason="official golden reference data not present")
@pytest.mark.parametrize("variant", ["micro_prenorm", "micro_postnorm_ls"])
def test_official_baseline_reproduces_official_logits(variant):
    entry = torch.load(GOLDEN, weights_only=False)[variant]
    model = OfficialVHeat(**entry["config"])
    model.load_state_dict(entry["state_dict"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(entry["input"]), entry["logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.infer_init()(entry["input"]), entry["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("post_norm, layer_scale", [(False, None), (True, 1e-5)])
def test_official_baseline_has_our_weights_and_outputs(post_norm, layer_scale):
    torch.manual_seed(0)
    ours = VHeat(depths=(1, 1, 2, 1), dims=16, img_size=64, num_classes=5, post_norm=post_norm, layer_scale=layer_scale,
                 drop_path_rate=0.0)
    for p in ours.parameters():  # away from the init, so gammas / norms matter
        p.data.add_(0.05 * torch.randn_like(p))
    official = OfficialVHeat.like(ours)
    assert official.state_dict().keys() == ours.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(official.eval()(x), ours.eval()(x), rtol=1e-4, atol=1e-4)
    ours.train()
    loss = ours(x).square().mean()
    loss_official = official.train()(x).square().mean()
    torch.testing.assert_close(loss_official, loss, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="train mode"):
        OfficialVHeat.like(ours.set_infer_mode(True))


def test_forced_isa_runs_keep_their_own_inductor_cache(monkeypatch):
    # Inductor's cache key leaves the ISA switches out: a forced run must not fill the cache a
    # native run reuses (benchmarks/machine.py, use_own_inductor_cache).
    forced = {"cpu": "Some CPU", "host_isa": "avx512", "isa": "avx2", "isa_forced": True,
              "isa_forced_by": {"VHEAT_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2"}}
    native = dict(forced, isa="avx512", isa_forced=False, isa_forced_by={})
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    use_own_inductor_cache(native)
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    use_own_inductor_cache(forced)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith("_some-cpu_avx2-forced-on-avx512")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/chosen/by/the/user")
    use_own_inductor_cache(forced)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/chosen/by/the/user"
