"""Build the fused-HCO Triton kernels vHeat's shapes run, for sm_80 / sm_90, and print resources.

No GPU needed. The builds come from the launch plans of vheat_kernels.triton.hco on the
vHeat-T/S/B stage shapes at 224 / 512 / 1024 input and the Mask R-CNN 800 x 1333 shapes
(triton_aot.SHAPES), every candidate configuration of each launch, with the specialisation a real
launch gets. Prints registers, spills, shared memory and resident blocks / warps per SM;
exits non-zero if any build spills, exceeds the architecture's shared memory, or leaves a
vHeat-T stage at 224 with fewer than 8 resident warps per SM. Compiled kernels are cached by
Triton (~/.triton/cache), so re-runs are faster.

    python tools/triton_resources.py              # every build (make triton-aot)
    python tools/triton_resources.py --quick      # vHeat-T@224 + 200x334, fp32/bf16, first config
    python tools/triton_resources.py --arch 90 --dtype bf16 --shapes det\ T/S --json out.json
    python tools/triton_resources.py --sweep --jobs 2 --update-configs
        # measure register-resident candidates and regenerate spill_tables.SPILL_FREE
    python tools/triton_resources.py --plane-table --update-docs
        # the per-plane schedule table of docs/triton.md (vHeat-T/S/B at 224, sm_90)
    python tools/triton_resources.py --sweep-plane --jobs 2 --update-configs
        # measure the plane kernels' candidates and regenerate spill_tables.PLANE_SPILLED
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.pop("TRITON_INTERPRET", None)

from tools import triton_aot as aot  # noqa: E402
from vheat.io import atomic_write_json, atomic_write_text  # noqa: E402
from vheat_kernels.triton import spill_tables  # noqa: E402


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
    parser.add_argument("--first-only", action="store_true",
                        help="only the configuration each launch runs (Launch.chosen), not every candidate")
    parser.add_argument("--json", help="also write the table as JSON to this path")
    parser.add_argument("--sweep", action="store_true", help="measure candidates for spill_tables.SPILL_FREE")
    parser.add_argument("--planes", action="append", metavar="HPxWP",
                        help="with --sweep-plane: only these padded planes (repeatable; the table keeps the others)")
    parser.add_argument("--plane-table", action="store_true",
                        help="print the per-plane schedule table (vHeat-T/S/B at 224, sm_90) as markdown")
    parser.add_argument("--update-docs", action="store_true", help="with --plane-table: rewrite it in docs/triton.md")
    parser.add_argument("--sweep-plane", action="store_true",
                        help="measure plane-kernel candidates for spill_tables.PLANE_SPILLED")
    parser.add_argument("--update-configs", action="store_true",
                        help="with --sweep / --sweep-plane: rewrite SPILL_FREE / PLANE_SPILLED in spill_tables.py")
    parser.add_argument("--drop-failures", metavar="JSON",
                        help="remove from SPILL_FREE every (kernel, dtype size, plane, config) that failed in the "
                             "--json output of a run, then exit")
    args = parser.parse_args()

    if args.drop_failures:
        return _drop_failures(args.drop_failures)
    if args.plane_table:
        return _plane_table(args.update_docs)
    archs, dtypes = args.arch or aot.ARCHS, args.dtype or aot.DTYPES
    if args.sweep:
        items = [(b, []) for b in aot.sweep_builds(archs)]
    elif args.sweep_plane:
        planes = [tuple(int(v) for v in p.split("x")) for p in args.planes] if args.planes else None
        items = [(b, []) for b in aot.plane_sweep_builds(archs, planes)]
    elif args.quick:
        items = list(aot.quick_builds(archs).items())
    else:
        items = list(aot.every_build(archs, dtypes, args.shapes or tuple(aot.SHAPES), args.first_only).items())
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
    if args.sweep_plane:
        table = aot.plane_spilled_table(rows)
        if args.planes:  # a partial sweep: the other planes keep their entries
            swept = {(eb, HP, WP) for eb in (2, 4) for HP, WP in planes}
            table = dict(sorted({**{k: v for k, v in spill_tables.PLANE_SPILLED.items() if k not in swept},
                                 **table}.items()))
        print("\n" + aot.table_literal("PLANE_SPILLED", table))
        if args.update_configs:
            write_spill_tables(spill_tables.SPILL_FREE, table)
        return 0
    if args.sweep:
        table = aot.spill_free_table(rows)
        print("\n" + aot.table_literal("SPILL_FREE", table))
        if args.update_configs:
            write_spill_tables(table, spill_tables.PLANE_SPILLED)
        return 0
    if args.json:
        payload = [dict(name=r.build.name, kernel=r.build.kernel, dtype=r.build.dtype, arch=r.build.arch,
                        constexprs={k: str(v) for k, v in r.build.constexprs}, num_warps=r.build.num_warps,
                        num_stages=r.build.num_stages, registers=r.registers, spill_bytes=r.spill_bytes,
                        shared_bytes=r.shared_bytes, blocks_per_sm=r.blocks_per_sm, resident_warps=r.resident_warps,
                        shapes=r.shapes, problems=r.problems) for r in rows]
        atomic_write_json(args.json, payload, indent=1)
    return 1 if bad else 0


DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "triton.md")
TABLE_BEGIN = "<!-- plane table: tools/triton_resources.py --plane-table --update-docs -->"
TABLE_END = "<!-- end plane table -->"


def _plane_table(update_docs: bool) -> int:
    """Markdown: per vHeat-T/S/B classification plane, dtype and pass, the launches with the
    configuration each runs on sm_90 and its ptxas resources. The "measured H100" column is
    left for `make gpu-check`."""
    hco = aot._hco()
    head = ("| plane (B x H x W x C) | dtype | pass | launches | kernel: config | regs | smem KiB | warps/SM "
            "| measured H100 (make gpu-check) |")
    lines = [head, "|" + "---|" * 9]
    for label in ("T/S@224", "B@224"):
        for shape in aot.SHAPES[label]:
            B, H, W, C = shape
            for dtype in aot.DTYPES:
                x, E = aot._meta(shape, dtype)
                plans = {"forward": hco.forward_plan(x, E, x), "backward": hco.backward_plan(x, x, E, x, True, True)[0]}
                for name, plan in plans.items():
                    cells = []
                    for launch in plan:
                        chosen = launch.chosen(90)
                        b = aot._builds_of(launch, dtype, 90, [chosen] if chosen is not None else None)[0]
                        r = aot.build(b)
                        config = "" if chosen is None else " " + ",".join(f"{k}={v}" for k, v in
                                                                           launch.config_kwargs(chosen)[0].items())
                        cells.append((f"{launch.kernel[4:]}{config} w{b.num_warps}", r))
                    row = (f"| {label} {B}x{H}x{W}x{C} | {dtype} | {name} | {len(plan)} | "
                           + " / ".join(c for c, _ in cells) + " | "
                           + " / ".join(str(r.registers) for _, r in cells) + " | "
                           + " / ".join(f"{r.shared_bytes / 1024:.0f}" for _, r in cells) + " | "
                           + " / ".join(str(r.resident_warps) for _, r in cells) + " |  |")
                    if any(r.spill_bytes for _, r in cells):
                        row = row.replace("|  |", "| (spills!) |")
                    lines.append(row)
    table = "\n".join(lines)
    print(table)
    if update_docs:
        with open(DOCS) as f:
            text = f.read()
        begin, end = text.index(TABLE_BEGIN), text.index(TABLE_END)
        atomic_write_text(DOCS, text[:begin] + TABLE_BEGIN + "\n" + table + "\n" + text[end:])
        print(f"rewrote the plane table in {DOCS}")
    return 0


def _drop_failures(path: str) -> int:
    """Remove the configurations that failed (in any backward variant or dtype) in a full run."""
    with open(path) as f:
        rows = json.load(f)
    table = {k: list(v) for k, v in spill_tables.SPILL_FREE.items()}
    for r in rows:
        if not r["problems"] or r["kernel"] not in ("hco_fwd", "hco_bwd"):
            continue
        c = r["constexprs"]
        key = ("fwd" if r["kernel"] == "hco_fwd" else "bwd", aot.ELEM_BYTES[r["dtype"]], int(c["HP"]), int(c["WP"]))
        entry = (int(c["BC"]), r["num_warps"])
        if entry in table.get(key, []):
            table[key].remove(entry)
            print(f"dropped {key} {entry}: {r['name']}: {'; '.join(r['problems'])}")
    write_spill_tables({k: tuple(v) for k, v in table.items()}, spill_tables.PLANE_SPILLED)
    return 0


def write_spill_tables(spill_free: dict, plane_spilled: dict) -> None:
    atomic_write_text(spill_tables.__file__, aot.spill_tables_source(spill_free, plane_spilled))
    print(f"rewrote {spill_tables.__file__}")


if __name__ == "__main__":
    sys.exit(main())
