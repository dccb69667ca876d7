"""PNG plots from the suite's JSON (matplotlib Agg): time vs resolution, per-backend kernel speedups."""
from __future__ import annotations

from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vheat.io import atomic_write  # noqa: E402


def _save(fig, path: str) -> str:
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def resolution_plot(section: Dict, path: str) -> str:
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(r["model"] for r in section["rows"]):
        rows = sorted((r for r in section["rows"] if r["model"] == label), key=lambda r: r["img_size"])
        sizes = [r["img_size"] for r in rows]
        ax_t.plot(sizes, [r["ms"] for r in rows], marker="o", label=label)
        ax_m.plot(sizes, [r["peak_mb"] for r in rows], marker="o", label=label)
    ax_t.set(xlabel="input size (px)", ylabel="batch-1 inference (ms)", yscale="log", title="time vs resolution")
    ax_m.set(xlabel="input size (px)", ylabel="peak RSS added (MB)", title="peak memory vs resolution")
    for ax in (ax_t, ax_m):
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=8)
    return _save(fig, path)


def kernel_plot(section: Dict, path: str) -> str:
    others = [b for b in section["backends"] if b != "reference"]
    groups: List = list(dict.fromkeys((r["dtype"], r["pass"]) for r in section["rows"]))
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 3.2 * len(groups)), squeeze=False)
    for ax, (dtype, pass_name) in zip(axes[:, 0], groups):
        rows = [r for r in section["rows"] if r["dtype"] == dtype and r["pass"] == pass_name]
        labels = [f"{r['family']} {r['input_res']} s{r['stage']}" for r in rows]
        width = 0.8 / max(len(others), 1)
        for i, b in enumerate(others):
            ax.bar([j + i * width for j in range(len(rows))], [r["speedup"][b] for r in rows], width, label=b)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], labels, rotation=60, fontsize=7)
        ax.set(ylabel="speedup vs official", title=f"HCO {pass_name}, {dtype}", yscale="log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
