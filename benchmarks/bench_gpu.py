"""GPU benchmark of the HCO backends: forward and backward time and achieved bandwidth.

Every backend is called through the public API, ``vheat_kernels.heat_conduction(x, E,
backend=name)``: 'triton' (fused), 'reference' (official matmul-DCT), 'fft' and 'cuda'
when it is built. Bandwidth is "effective": the bytes a fused kernel must move (read x and
E, write y; backward: read x, dy and E, write dx and dE; benchmarks/bytes_model.py) divided
by the measured time, and compared with the device's measured copy bandwidth
(``torch.Tensor.copy_`` of a large buffer). Times are medians of triton.testing.do_bench,
which flushes L2 between runs.

    python benchmarks/bench_gpu.py                      # vHeat-T stages at 224, batch 8
    python benchmarks/bench_gpu.py --dtype bf16 --shape 8,56,56,96 --json out.json
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from vheat.train.atomic import atomic_write_json  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VHEAT_T_224_B8 = [(8, 56, 56, 96), (8, 28, 28, 192), (8, 14, 14, 384), (8, 7, 7, 768)]
BACKENDS = ("triton", "reference", "fft", "cuda")


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth (read + write), GB/s."""
    from triton.testing import do_bench

    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def fused_bytes(B: int, H: int, W: int, C: int, s: int, e: int, backward: bool) -> int:
    n, plane = B * H * W * C * s, H * W * C * e
    return (3 * n + 2 * plane) if backward else (2 * n + plane)


def bench_one(name: str, x: torch.Tensor, E: torch.Tensor, ref: torch.Tensor) -> dict:
    from triton.testing import do_bench

    from vheat_kernels import heat_conduction

    xg, Eg = x.clone().requires_grad_(True), E.clone().requires_grad_(True)
    y = heat_conduction(xg, Eg, backend=name)
    err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
    dy = torch.randn_like(y)
    fwd_ms = do_bench(lambda: heat_conduction(x, E, backend=name), warmup=25, rep=100)
    bwd_ms = do_bench(lambda: torch.autograd.grad(y, (xg, Eg), dy, retain_graph=True), warmup=25, rep=100)
    return dict(backend=name, fwd_ms=fwd_ms, bwd_ms=bwd_ms, rel_err=err)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", help="B,H,W,C (repeatable); default vHeat-T stages at 224, B=8")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="repeatable; default fp32 and bf16")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable; default all available")
    parser.add_argument("--json", default="bench_gpu.json", help="results file (written atomically)")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device visible (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU.", file=sys.stderr)
        return 2

    from vheat_kernels.dispatch import available_backends

    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape] if args.shape else VHEAT_T_224_B8
    dtypes = args.dtype or ["fp32", "bf16"]
    copy_gbs = copy_bandwidth_gbs()
    device = torch.cuda.get_device_name()
    print(f"{device}: measured copy bandwidth {copy_gbs:.0f} GB/s")
    header = (f"{'shape':<20} {'dtype':<5} {'backend':<10} {'fwd ms':>8} {'fwd GB/s':>9} {'%copy':>6} "
              f"{'bwd ms':>8} {'bwd GB/s':>9} {'%copy':>6} {'rel err':>8}")
    print(header)
    print("-" * len(header))
    results = []
    for shape in shapes:
        B, H, W, C = shape
        for dname in dtypes:
            dtype = DTYPES[dname]
            gen = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(shape, device="cuda", generator=gen).to(dtype)
            E = torch.rand((H, W, C), device="cuda", generator=gen)
            ref = heat_conduction_fp64(x, E)
            names = [n for n in (args.backend or BACKENDS) if n in available_backends(x, E)]
            skipped = [n for n in (args.backend or BACKENDS) if n not in names]
            for name in names:
                r = bench_one(name, x, E, ref)
                fb = fused_bytes(B, H, W, C, x.element_size(), E.element_size(), backward=False)
                bb = fused_bytes(B, H, W, C, x.element_size(), E.element_size(), backward=True)
                r.update(shape=list(shape), dtype=dname, fwd_gbs=fb / (r["fwd_ms"] * 1e-3) / 1e9,
                         bwd_gbs=bb / (r["bwd_ms"] * 1e-3) / 1e9)
                results.append(r)
                print(f"{str(shape):<20} {dname:<5} {name:<10} {r['fwd_ms']:>8.3f} {r['fwd_gbs']:>9.0f} "
                      f"{100 * r['fwd_gbs'] / copy_gbs:>5.0f}% {r['bwd_ms']:>8.3f} {r['bwd_gbs']:>9.0f} "
                      f"{100 * r['bwd_gbs'] / copy_gbs:>5.0f}% {r['rel_err']:>8.1e}", flush=True)
            if skipped:
                print(f"{str(shape):<20} {dname:<5} not available here: {', '.join(skipped)}")
    payload = dict(device=device, copy_gbs=copy_gbs, torch=torch.__version__, results=results)
    out = os.path.abspath(args.json)
    atomic_write_json(out, payload, indent=1)
    print(f"wrote {out}")
    return 0


def heat_conduction_fp64(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Float64 HCO through the fft backend: the accuracy yardstick of every row."""
    from vheat_kernels import heat_conduction

    return heat_conduction(x.double(), E.double(), backend="fft").float()


if __name__ == "__main__":
    sys.exit(main())
