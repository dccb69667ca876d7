"""benchmarks/report.py: docs/benchmarks.md and the README's headline are what the committed
result files render to, on any machine, and every column of the headline names its machine."""
import json
import os

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def test_committed_docs_are_the_render_of_the_committed_results():
    out = os.path.join(ROOT, "docs", "benchmarks.md")
    full_runs = [os.path.join(RESULTS, n) for n in sorted(os.listdir(RESULTS)) if n.startswith("full_") and n.endswith(".json")]
    with open(out) as f:
        assert f.read() == report.render_all(RESULTS, out, full_runs), "run python -m benchmarks.report"
    with open(os.path.join(ROOT, "README.md")) as f:
        assert report.readme_block(RESULTS) in f.read(), "run python -m benchmarks.report"


def test_every_result_file_is_shown_under_its_machine():
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        sections = f.read().split("\n## ")
    for name in os.listdir(RESULTS):
        if not name.endswith(".json") or name.startswith("op_model_"):
            continue
        with open(os.path.join(RESULTS, name)) as f:
            cpu = json.load(f)["machine"]["cpu"]
        headings = [s.split("\n", 1)[0] for s in sections if f"`benchmarks/results/{name}`" in s]
        # the heading names the CPU and the ISA (or says that the run did not record it)
        assert headings and all(cpu in h and any(isa in h for isa in report.ISAS + ("ISA not recorded",))
                                for h in headings), (name, headings)


def test_readme_headline_names_each_machine_class(tmp_path):
    from benchmarks.report import README_END, README_START, readme_block, update_readme

    def hco_run(machine, speedups):
        rows = [{"shape": [8, 7, 7, n], "forward": {"speedup_vs_best_peer": {"cpu": v}}} for n, v in speedups]
        return {"machine": machine, "runs": [{"threads": 2, "rows": []}, {"threads": 1, "rows": rows}]}

    model_rows = [{"model": f"vHeat-T {who}", "mode": "infer", "batch": n, "ms": ms}
                  for n, fused, official in ((1, 10.0, 25.0), (16, 100.0, 150.0)) for who, ms in (("fused (cpu)", fused), ("official", official))]
    results = tmp_path / "results"
    results.mkdir()
    # a run from before the ISA record: the ISA comes from the file's machine class
    (results / "hco_cpu_test-cpu_avx512.json").write_text(json.dumps(hco_run({"cpu": "TestCPU"}, [(768, 3.0), (1024, 4.5)])))
    (results / "hco_cpu_test-cpu_avx2-forced-on-avx512.json").write_text(json.dumps(hco_run(
        {"cpu": "TestCPU", "isa": "avx2", "host_isa": "avx512", "isa_forced": True}, [(768, 2.25), (1024, 2.0)])))
    (results / "model_test-cpu_avx512.json").write_text(json.dumps({
        "machine": {"cpu": "TestCPU", "isa": "avx512", "threads": 1}, "finished_utc": "2026-01-01 00:00:00",
        "results": {"model": {"rows": model_rows}}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    assert update_readme(str(readme), readme_block(str(results)))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old table" not in text
    assert "| | TestCPU, avx2 (forced on an avx512 host) | TestCPU, avx512 |" in text
    assert "| 2.00x (8x7x7x1024) to 2.25x | 3.00x (8x7x7x768) to 4.50x |" in text
    assert "| not measured | 2.50x / 1.50x |" in text and "`model_test-cpu_avx512.json` (2026-01-01 00:00:00 UTC" in text
    assert update_readme(str(tmp_path / "missing.md"), "block") is False
