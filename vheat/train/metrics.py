"""Per-epoch metrics: one JSON line per epoch (append-safe) and a PNG of the curves."""
from __future__ import annotations

import io
import os

from ..io import append_jsonl, atomic_write_bytes, read_jsonl

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"


def log_epoch(output_dir: str, record: dict) -> None:
    append_jsonl(os.path.join(output_dir, METRICS_FILE), record)


def epoch_records(output_dir: str) -> list[dict]:
    """Records by epoch; a resumed run that redid an epoch keeps the last record of it."""
    by_epoch = {}
    for r in read_jsonl(os.path.join(output_dir, METRICS_FILE)):
        if "epoch" in r:
            by_epoch[r["epoch"]] = r
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_metrics(output_dir: str) -> str | None:
    """Writes metrics.png (loss, accuracy, learning rate per epoch); None without records."""
    records = epoch_records(output_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))

    def series(key):
        pts = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_val_loss", "val (EMA)")):
        s = series(key)
        if s:
            axes[0].plot(*s, marker=".", label=label)
    axes[0].set_title("loss")
    for key, label in (("val_acc1", "top-1"), ("val_acc5", "top-5"), ("ema_val_acc1", "top-1 (EMA)")):
        s = series(key)
        if s:
            axes[1].plot(*s, marker=".", label=label)
    axes[1].set_title("validation accuracy (%)")
    s = series("lr")
    if s:
        axes[2].plot(*s, marker=".")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = os.path.join(output_dir, PLOT_FILE)
    atomic_write_bytes(path, buf.getvalue())
    return path
