"""Build the fused-HCO Triton kernels vHeat's shapes run, for sm_80 / sm_90, and print resources.

No GPU needed. The builds come from the launch plans of vheat_kernels.triton.hco on the
vHeat-T/S/B stage shapes at 224 / 512 / 1024 input and the Mask R-CNN 800 x 1333 shapes
(aot.SHAPES), every candidate configuration of each launch, with the specialisation a real
launch gets. Prints registers, spills, shared memory and resident blocks / warps per SM;
exits non-zero if any build spills, exceeds the architecture's shared memory, or leaves a
vHeat-T stage at 224 with fewer than 8 resident warps per SM. Compiled kernels are cached by
Triton (~/.triton/cache), so re-runs are faster.

    python benchmarks/triton_resources.py              # every build (make triton-aot)
    python benchmarks/triton_resources.py --quick      # vHeat-T@224 + 200x334, fp32/bf16, first config
    python benchmarks/triton_resources.py --arch 90 --dtype bf16 --shapes det\ T/S --json out.json
    python benchmarks/triton_resources.py --sweep --jobs 2 --update-configs
        # measure register-resident candidates and regenerate configs.SPILL_FREE
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pprint
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.pop("TRITON_INTERPRET", None)

from vheat.train.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from vheat_kernels.triton import aot  # noqa: E402


def _build(item) -> aot.Resources:
    b, shapes = item
    return aot.build(b, shapes=shapes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="vHeat-T@224 and the 200x334 detection plane, fp32/bf16, first config")
    parser.add_argument("--arch", type=int, action="append", choices=aot.ARCHS, help="repeatable; default all")
    parser.add_argument("--dtype", action="append", choices=aot.DTYPES, help="repeatable; default all")
    parser.add_argument("--shapes", action="append", choices=list(aot.SHAPES), help="repeatable; default all")
    parser.add_argument("--jobs", type=int, default=1, help="parallel compiles (default 1)")
    parser.add_argument("--json", help="also write the table as JSON to this path")
    parser.add_argument("--sweep", action="store_true", help="measure candidates for configs.SPILL_FREE")
    parser.add_argument("--update-configs", action="store_true", help="with --sweep: rewrite SPILL_FREE in configs.py")
    parser.add_argument("--drop-failures", metavar="JSON",
                        help="remove from SPILL_FREE every (kernel, dtype size, plane, config) that failed in the "
                             "--json output of a run, then exit")
    args = parser.parse_args()

    if args.drop_failures:
        return _drop_failures(args.drop_failures)
    archs, dtypes = args.arch or aot.ARCHS, args.dtype or aot.DTYPES
    if args.sweep:
        items = [(b, []) for b in aot.sweep_builds(archs)]
    elif args.quick:
        items = list(aot.quick_builds(archs).items())
    else:
        items = list(aot.every_build(archs, dtypes, args.shapes or tuple(aot.SHAPES)).items())
    print(f"ptxas: {aot.find_ptxas()}; {len(items)} builds", flush=True)
    # spawn, not fork: a forked child of a process that already ran Triton's MLIR can crash.
    pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) if args.jobs > 1 else None
    rows = []
    for i, row in enumerate(pool.map(_build, items) if pool else map(_build, items)):
        rows.append(row)
        if row.problems or (i + 1) % 100 == 0:
            print(f"[{i + 1}/{len(items)}] {row.build.name}: {'; '.join(row.problems) or 'ok'}", flush=True)
    if pool:
        pool.shutdown()
    print(aot.table(rows))
    print("\n" + aot.summary(rows))
    bad = [r for r in rows if r.problems]
    worst_regs = max(r.registers for r in rows)
    worst_smem = max(r.shared_bytes for r in rows) / 1024
    fewest = min(r.resident_warps for r in rows)
    print(f"\n{len(rows)} builds, {len(bad)} with problems; max registers {worst_regs}, max shared {worst_smem:.1f} KiB, "
          f"fewest resident warps per SM {fewest}")
    if args.sweep:
        table = aot.spill_free_table(rows)
        literal = "SPILL_FREE: dict[tuple, tuple] = " + pprint.pformat(table, width=110, compact=True) + "\n"
        print("\n" + literal)
        if args.update_configs:
            _rewrite_spill_free(literal)
        return 0
    if args.json:
        payload = [dict(name=r.build.name, kernel=r.build.kernel, dtype=r.build.dtype, arch=r.build.arch,
                        constexprs={k: str(v) for k, v in r.build.constexprs}, num_warps=r.build.num_warps,
                        num_stages=r.build.num_stages, registers=r.registers, spill_bytes=r.spill_bytes,
                        shared_bytes=r.shared_bytes, blocks_per_sm=r.blocks_per_sm, resident_warps=r.resident_warps,
                        shapes=r.shapes, problems=r.problems) for r in rows]
        atomic_write_json(args.json, payload, indent=1)
    return 1 if bad else 0


def _drop_failures(path: str) -> int:
    """Remove the configurations that failed (in any backward variant or dtype) in a full run."""
    from vheat_kernels.triton import configs

    with open(path) as f:
        rows = json.load(f)
    table = {k: list(v) for k, v in configs.SPILL_FREE.items()}
    for r in rows:
        if not r["problems"] or r["kernel"] not in ("hco_fwd", "hco_bwd"):
            continue
        c = r["constexprs"]
        key = ("fwd" if r["kernel"] == "hco_fwd" else "bwd", aot.ELEM_BYTES[r["dtype"]], int(c["HP"]), int(c["WP"]))
        entry = (int(c["BC"]), r["num_warps"])
        if entry in table.get(key, []):
            table[key].remove(entry)
            print(f"dropped {key} {entry}: {r['name']}: {'; '.join(r['problems'])}")
    table = {k: tuple(v) for k, v in table.items()}
    _rewrite_spill_free("SPILL_FREE: dict[tuple, tuple] = " + pprint.pformat(table, width=110, compact=True) + "\n")
    return 0


def _rewrite_spill_free(literal: str) -> None:
    from vheat_kernels.triton import configs

    path = configs.__file__
    with open(path) as f:
        text = f.read()
    new = re.sub(r"^SPILL_FREE: dict\[tuple, tuple\] = .*\Z", literal, text, flags=re.S | re.M)
    atomic_write_text(path, new)
    print(f"rewrote SPILL_FREE in {path}")


if __name__ == "__main__":
    sys.exit(main())
