"""What a CPU user would deploy instead of the eager model: the model section's extra peers.

- ``compile``: ``torch.compile`` of the official model (inductor, default options, as a user
  would call it). Compilation happens at the first call, before timing; where it fails, the
  row says "did not compile: <first line of the error>" and the run goes on.
- ``onnxruntime``: ONNX Runtime on an export of the official model and on an export of ours
  (``torch.onnx.export``'s default exporter, dynamo, batch dimension dynamic; our model lowers
  its HCO to four MatMuls, vheat_kernels/onnx.py). Sessions run on the CPU provider with
  intra_op_num_threads = torch's thread count and every graph optimisation on. The .onnx files
  go to a temporary directory that is deleted after the section. Where export or session
  creation fails, the row says "not exported: <first line>".

Inference only: these are deployment paths (no training step through ONNX Runtime; a compiled
training step is another issue). Export and compile time are never timed.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, Optional, Tuple, Union

import torch

DEPLOYMENT_PEERS = ("compile", "onnxruntime")
# A row whose output differs from our eager model's by more than this (max |y - y_ours| over
# max |y_ours|, fp32 logits) fails. The official code, the compiled graph and the ONNX exports
# compute the same function in another order; measured differences are ~1e-6.
MAX_REL_DIFF = 1e-4

Runner = Callable[[], object]  # one inference call on the section's fixed input; returns the logits
Outcome = Union[Runner, str]  # a runner, or why there is none ("did not compile: ...", "not exported: ...")


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".strip()


def max_rel_diff(out, reference: torch.Tensor) -> float:
    out = torch.as_tensor(out).to(reference.dtype)
    if out.shape != reference.shape:
        return float("inf")
    return ((out - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def labels(short: str) -> Dict[str, str]:
    """Row label of each peer of vHeat size ``short`` (e.g. 'vHeat-T')."""
    return {"compile": f"{short} official + torch.compile", "onnxruntime official": f"{short} official, ONNX Runtime",
            "onnxruntime ours": f"{short} ours, ONNX Runtime"}


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str) -> None:
    """The default (dynamo) exporter with a dynamic batch, as tests/test_models_export.py exports vHeat."""
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                verbose=False)
    program.save(path)


class Peers:
    """The deployment peers of one vHeat model, built once (exports, compiled module) and run at any batch.

    ``ours``: our model in infer mode (E folded) on its default backend; ``official``: the official
    code with the same weights, infer_init() done. ``workdir``: where the .onnx files go.
    """

    def __init__(self, short: str, ours: torch.nn.Module, official: torch.nn.Module, img_size: int, which,
                 workdir: str, threads: int):
        self.short, self.which, self.threads = short, tuple(which), threads
        self.built: Dict[str, Union[object, str]] = {}
        example = torch.randn(2, 3, img_size, img_size)  # batch 2: a batch-1 example would be specialised
        if "compile" in self.which:
            try:  # lazy: inductor errors come at the first call (_compiled_runner); this catches the rest
                self.built["compile"] = torch.compile(official)
            except Exception as e:  # noqa: BLE001
                self.built["compile"] = f"did not compile: {first_line(e)}"
        if "onnxruntime" in self.which:
            for who, model in (("official", official), ("ours", ours)):
                path = os.path.join(workdir, f"{short}_{who}.onnx")
                try:
                    export_onnx(model, example, path)
                    self.built[f"onnxruntime {who}"] = ort_session(path, threads)
                except Exception as e:  # noqa: BLE001 - any failure is reported in the row, the run goes on
                    self.built[f"onnxruntime {who}"] = f"not exported: {first_line(e)}"
                    print(f"  {short} {who}: ONNX {self.built[f'onnxruntime {who}']}", file=sys.stderr)

    def runners(self, x: torch.Tensor) -> Dict[str, Outcome]:
        """Row label -> runner on ``x`` (or why there is none). The compiled module is called once
        here for each new batch size so that compilation is never timed."""
        out: Dict[str, Outcome] = {}
        names = labels(self.short)
        for key, built in self.built.items():
            if isinstance(built, str):
                out[names[key]] = built
            elif key == "compile":
                out[names[key]] = self._compiled_runner(built, x)
            else:
                feed = {built.get_inputs()[0].name: x.numpy()}
                out[names[key]] = lambda s=built, feed=feed: torch.from_numpy(s.run(None, feed)[0])
        return out

    def _compiled_runner(self, compiled, x) -> Outcome:
        def run():
            with torch.no_grad():
                return compiled(x)

        try:
            run()
        except Exception as e:  # noqa: BLE001 - inductor raises many types; the row carries the first line
            self.built["compile"] = f"did not compile: {first_line(e)}"
            print(f"  {self.short} official: torch.compile {self.built['compile']}", file=sys.stderr)
            return self.built["compile"]
        return run


def check(label: str, runner: Runner, reference: torch.Tensor) -> Tuple[Optional[float], Optional[str]]:
    """(max relative difference of ``runner``'s output from ``reference``, failure or None). A failure
    is printed loudly; the row then carries it instead of a time."""
    diff = max_rel_diff(runner(), reference)
    if diff <= MAX_REL_DIFF:
        return diff, None
    failure = f"numeric check FAILED: max rel diff {diff:.2e} > {MAX_REL_DIFF:.0e} from ours eager"
    print(f"  ERROR {label}: {failure}", file=sys.stderr)
    return diff, failure
