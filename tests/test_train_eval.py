"""evaluate(): top-1 / top-5 / loss against a numpy oracle, sharded loaders, and the metrics log."""
import math
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vheat.data.samplers import ShardedEvalSampler
from vheat.io import append_jsonl, read_jsonl
from vheat.train.evaluate import evaluate
from vheat.train.metrics import epoch_records, log_epoch, plot_metrics


class _Lookup(torch.nn.Module):
    """'Model' whose logits for input i are row i of a fixed table (inputs carry their index)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x):
        return self.table[x[:, 0].long()]


@pytest.mark.parametrize("n, classes, batch", [(37, 7, 5), (10, 3, 10), (1, 2, 1), (23, 1000, 4)])
def test_topk_and_loss_against_numpy(n, classes, batch):
    logits = torch.randn(n, classes, dtype=torch.float64).float()
    target = torch.randint(0, classes, (n,))
    loader = DataLoader(TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], target), batch_size=batch)
    got = evaluate(_Lookup(logits), loader, torch.device("cpu"))
    L, t = logits.double().numpy(), target.numpy()
    order = np.argsort(-L, axis=1, kind="stable")
    k = min(5, classes)
    top1 = np.mean(order[:, 0] == t) * 100
    top5 = np.mean([t[i] in order[i, :k] for i in range(n)]) * 100
    lse = np.log(np.exp(L - L.max(1, keepdims=True)).sum(1)) + L.max(1)
    loss = np.mean(lse - L[np.arange(n), t])
    assert got["count"] == n
    assert got["acc1"] == pytest.approx(top1) and got["acc5"] == pytest.approx(top5)
    assert got["loss"] == pytest.approx(loss, rel=1e-5)


def test_shards_sum_to_the_whole():
    n, classes, world = 29, 6, 3
    logits, target = torch.randn(n, classes), torch.randint(0, classes, (n,))
    ds = TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], target)
    whole = evaluate(_Lookup(logits), DataLoader(ds, batch_size=4), torch.device("cpu"))
    parts = [evaluate(_Lookup(logits), DataLoader(ds, batch_size=4, sampler=ShardedEvalSampler(ds, world, r)),
                      torch.device("cpu")) for r in range(world)]
    assert sum(p["count"] for p in parts) == n
    correct = sum(p["acc1"] * p["count"] for p in parts) / 100
    assert math.isclose(correct, whole["acc1"] * n / 100, abs_tol=1e-9)


def test_empty_loader_is_an_error():
    ds = TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        evaluate(_Lookup(torch.zeros(1, 2)), DataLoader(ds, batch_size=2), torch.device("cpu"))


def test_metrics_log_tolerates_torn_line_and_redone_epochs(tmp_path):
    out = str(tmp_path)
    log_epoch(out, {"epoch": 0, "train_loss": 2.0, "val_acc1": 10.0, "val_acc5": 50.0, "lr": 1e-3})
    log_epoch(out, {"epoch": 1, "train_loss": 1.5, "val_acc1": 20.0, "val_acc5": 60.0, "lr": 9e-4})
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed mid-write
    append_jsonl(os.path.join(out, "metrics.jsonl"), {"epoch": 1, "train_loss": 1.4, "val_acc1": 21.0})
    assert len(read_jsonl(os.path.join(out, "metrics.jsonl"))) == 3
    recs = epoch_records(out)
    assert [r["epoch"] for r in recs] == [0, 1] and recs[1]["train_loss"] == 1.4  # resumed epoch: last record
    path = plot_metrics(out)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_metrics(str(tmp_path / "none")) is None
