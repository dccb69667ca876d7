"""The training loop: distributed data parallel, AMP, accumulation, EMA, checkpoints, resume."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import time
from typing import Iterator, Optional

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vheat.data import DatasetError, build_data, resolve_root

from . import distributed as du
from .atomic import atomic_torch_save, atomic_write_text
from .checkpoint import (CheckpointError, load_state_strict, newest_complete_checkpoint, read_checkpoint,
                         remove_stale_temp_files, rng_state, save_checkpoint, set_rng_state, strip_prefixes)
from .config import ConfigError, dump_config
from .evaluate import evaluate
from .metrics import log_epoch, plot_metrics
from .model_factory import build_model, hco_backend, load_weights
from .recipe import amp_dtype, build_mixup, build_optimizer, build_scheduler, build_train_loss, scaled_lrs

log = logging.getLogger("vheat.train")


def resolve_device(cfg: dict) -> torch.device:
    want = cfg["train"]["device"]
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu (or auto)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def setup_logging(output_dir: Optional[str]) -> None:
    """Rank 0 logs INFO to stdout (and output/log.txt); other ranks only warnings."""
    root = logging.getLogger("vheat")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate = False
    root.setLevel(logging.INFO if du.is_main() else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if output_dir and du.is_main():
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(fmt)
        root.addHandler(fh)


def resolve_root_once(cfg: dict) -> str:
    """Rank 0 resolves (and for digits exports) the dataset; the others get its answer or its error."""
    answer = None
    if du.is_main():
        try:
            answer = ("ok", resolve_root(cfg))
        except DatasetError as exc:
            answer = ("error", str(exc))
    answer = du.broadcast_object(answer)
    if answer[0] == "error":
        raise DatasetError(answer[1])
    return answer[1]


@contextlib.contextmanager
def run_settings(cfg: dict, deterministic: bool = False) -> Iterator[None]:
    """Applies train.threads (and deterministic algorithms) for a run, restoring them afterwards,
    so library callers (and tests sharing one process) get their own settings back."""
    threads, det, bench = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.backends.cudnn.benchmark
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        torch.backends.cudnn.benchmark = bench


def train(cfg: dict, resume: Optional[str] = None) -> dict:
    """Runs the training described by ``cfg``; returns a summary dict (rank 0's view)."""
    device = resolve_device(cfg)
    already = du.is_distributed()  # a caller (e.g. a test harness) may own the process group
    joined = du.init_distributed(device.type) and not already
    try:
        with hco_backend(cfg["model"]["hco_backend"]), run_settings(cfg, bool(cfg["train"]["deterministic"])):
            return _Trainer(cfg, device).run(resume)
    finally:
        if joined:
            du.cleanup()


class _Trainer:
    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        self.rank, self.world = du.rank(), du.world_size()
        self.out = cfg["output"]
        t = cfg["train"]
        setup_logging(self.out)
        seed_all(t["seed"])  # identical initial weights on every rank

        root = resolve_root_once(cfg)
        self.data = build_data(cfg, root, self.rank, self.world)
        self.num_classes = cfg["model"]["num_classes"] or len(self.data.classes)
        if self.num_classes < len(self.data.classes):
            raise ConfigError(f"model.num_classes={self.num_classes} but the dataset has "
                              f"{len(self.data.classes)} classes")

        model = build_model(cfg, self.num_classes)
        if cfg["model"]["pretrained"]:
            used = load_weights(model, cfg["model"]["pretrained"], cfg["model"]["pretrained_key"],
                                drop_head_if_mismatch=True, arch=cfg["model"]["name"],
                                allow_pickle=cfg["model"]["trust_checkpoint"])
            log.info(f"fine-tuning from {cfg['model']['pretrained']} [{used}]")
        model.to(device)
        if t["channels_last"]:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = ModelEmaV3(model, decay=t["ema_decay"]) if t["ema"] else None

        self.accum = t["accumulation_steps"]
        self.steps_per_epoch = len(self.data.train_loader) // self.accum
        if self.steps_per_epoch < 1:
            raise ConfigError(f"an epoch has {len(self.data.train_loader)} batches per process, fewer than "
                             f"train.accumulation_steps={self.accum}")
        self.lrs = scaled_lrs(cfg, self.world)
        self.optimizer = build_optimizer(cfg, model, self.lrs.base)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.lrs, self.steps_per_epoch)
        self.amp = amp_dtype(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        self.mixup = build_mixup(cfg, self.num_classes)
        if self.mixup is not None and cfg["data"]["batch_size"] % 2:
            raise ConfigError("Mixup / CutMix need an even data.batch_size (or set aug.mixup=0 aug.cutmix=0)")
        self.criterion = build_train_loss(cfg, self.mixup)

        self.epoch = self.step_in_epoch = self.global_step = 0
        self.best_acc1 = -1.0
        self.epoch_loss = [0.0, 0.0]  # (sum, count) of this rank's micro-batch losses in the epoch

        self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if du.is_distributed() else model
        # dynamic=False: a new input shape (a short last batch, another compiled run of the same
        # model class in this process) recompiles statically; torch 2.14's automatic dynamic
        # shapes fail in Inductor on this model ("cannot determine truth value of Relational").
        self.forward_model = torch.compile(self.ddp, dynamic=False) if t["compile"] else self.ddp

    # ---------------------------------------------------------------- resume
    def _resume(self, explicit: Optional[str]) -> Optional[str]:
        path = explicit
        if path is None and self.cfg["train"]["auto_resume"]:
            path = newest_complete_checkpoint(self.out)
        if path is None:
            return None
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "model" not in ckpt:
            raise CheckpointError(f"{path} is not a training checkpoint of this trainer (no optimizer state); "
                                  f"to start from its weights use model.pretrained={path}")
        load_state_strict(self.model, strip_prefixes(ckpt["model"]), path, self.cfg["model"]["name"])
        if self.ema is not None and ckpt.get("model_ema") is not None:
            load_state_strict(self.ema.module, strip_prefixes(ckpt["model_ema"]), path + " [model_ema]",
                              self.cfg["model"]["name"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step, self.best_acc1 = int(ckpt["global_step"]), float(ckpt["best_acc1"])
        self.epoch_loss = list(ckpt.get("epoch_loss", [0.0, 0.0]))[self.rank] if self.step_in_epoch else [0.0, 0.0]
        self.scheduler.step_update(self.global_step)
        states = ckpt.get("rng") or []
        if len(states) == self.world:
            set_rng_state(states[self.rank])
        else:
            log.warning(f"checkpoint was written by {len(states)} process(es), this run has {self.world}: "
                        f"RNG streams are reseeded, so the run is not bitwise identical to an uninterrupted one")
            seed_all(self.cfg["train"]["seed"] + self.rank + 1000 * self.global_step)
        return path

    # ------------------------------------------------------------ checkpoint
    def _state(self) -> dict:
        rng = du.gather_objects(rng_state())
        losses = du.gather_objects(list(self.epoch_loss))
        return {
            "model": self.model.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best_acc1": self.best_acc1, "epoch_loss": losses, "rng": rng, "world_size": self.world,
            "arch": self.cfg["model"]["name"], "num_classes": self.num_classes, "classes": self.data.classes,
            "config": self.cfg,
        }

    def _save(self) -> Optional[str]:
        state = self._state()  # collective: every rank takes part
        path = None
        if du.is_main():
            path = save_checkpoint(self.out, state, self.cfg["train"]["keep_checkpoints"])
        du.barrier()
        return path

    # ------------------------------------------------------------------ loop
    def run(self, resume: Optional[str]) -> dict:
        cfg, t = self.cfg, self.cfg["train"]
        if du.is_main():
            os.makedirs(self.out, exist_ok=True)
            atomic_write_text(os.path.join(self.out, "config.yaml"), dump_config(cfg))
            for path in remove_stale_temp_files(self.out):
                log.info(f"removed {path}, left by an interrupted checkpoint write")
        resumed = self._resume(resume)
        if resumed is None:
            seed_all(t["seed"] + self.rank)  # per-rank streams for drop path / Mixup
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(f"model {cfg['model']['name']}: {n_params / 1e6:.3f} M params, {self.num_classes} classes; "
                 f"{len(self.data.train)} train / {len(self.data.val)} val images; {self.world} process(es) on "
                 f"{self.device}; global batch {cfg['data']['batch_size'] * self.world * self.accum}; lr "
                 f"{self.lrs.base:.3g}; {self.steps_per_epoch} steps/epoch; amp {self.amp}; "
                 f"HCO backend {cfg['model']['hco_backend']}")
        if resumed:
            log.info(f"resumed from {resumed}: epoch {self.epoch}, step {self.step_in_epoch}, "
                     f"global step {self.global_step}")
        last_eval: dict = {}
        while self.epoch < t["epochs"]:
            stopped = self._train_epoch()
            if stopped:
                path = self._save()
                log.info(f"stopping after global step {self.global_step} (train.stop_after_steps); "
                         f"checkpoint {path}")
                return {"status": "stopped", "global_step": self.global_step, "checkpoint": path,
                        "output": self.out}
            last_eval = self._end_epoch()
        if du.is_main() and t["plot"]:
            plot_metrics(self.out)
        return {"status": "finished", "global_step": self.global_step, "best_acc1": self.best_acc1,
                "output": self.out, **last_eval}

    def _train_epoch(self) -> bool:
        """Trains the rest of ``self.epoch``; True when train.stop_after_steps fired."""
        t, bs = self.cfg["train"], self.cfg["data"]["batch_size"]
        sampler = self.data.train_sampler
        sampler.set_epoch(self.epoch)
        sampler.set_start(self.step_in_epoch * bs * self.accum)
        if self.step_in_epoch == 0:
            self.epoch_loss = [0.0, 0.0]
        self.ddp.train()
        it = iter(self.data.train_loader)
        autocast = (lambda: torch.autocast(self.device.type, dtype=self.amp)) if self.amp else contextlib.nullcontext
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, dynamic_ncols=True, leave=False,
                   desc=f"epoch {self.epoch + 1}/{t['epochs']}", disable=not (t["progress"] and du.is_main()))
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            while self.step_in_epoch < self.steps_per_epoch:
                for micro in range(self.accum):
                    images, target = next(it)
                    images = images.to(self.device, non_blocking=True)
                    target = target.to(self.device, non_blocking=True)
                    if t["channels_last"]:
                        images = images.contiguous(memory_format=torch.channels_last)
                    if self.mixup is not None:
                        images, target = self.mixup(images, target)
                    sync = micro == self.accum - 1 or not du.is_distributed()
                    with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                        with autocast():
                            loss = self.criterion(self.forward_model(images), target)
                        if not math.isfinite(loss.item()):
                            raise FloatingPointError(f"loss is {loss.item()} at global step {self.global_step}; "
                                                     f"lower train.base_lr or check the data")
                        self.scaler.scale(loss / self.accum).backward()
                    self.epoch_loss[0] += loss.item()
                    self.epoch_loss[1] += 1
                if t["clip_grad"]:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(params, float(t["clip_grad"]))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                self.step_in_epoch += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=self.global_step)
                self.scheduler.step_update(self.global_step)
                bar.update(1)
                if self.global_step % t["log_every"] == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
                if t["stop_after_steps"] and self.global_step == t["stop_after_steps"]:
                    return True
                if t["save_every_steps"] and self.global_step % t["save_every_steps"] == 0 \
                        and self.step_in_epoch < self.steps_per_epoch:
                    self._save()
        finally:
            bar.close()
            del it
        return False

    def _end_epoch(self) -> dict:
        cfg, t = self.cfg, self.cfg["train"]
        loss_sum, loss_n = du.all_reduce_sum(self.epoch_loss, self.device)
        record = {"epoch": self.epoch, "global_step": self.global_step, "train_loss": loss_sum / max(loss_n, 1),
                  "lr": self.optimizer.param_groups[0]["lr"], "time": time.time()}
        out = {}
        if (self.epoch + 1) % t["eval_every"] == 0 or self.epoch + 1 == t["epochs"]:
            progress = t["progress"]
            val = evaluate(self.model, self.data.val_loader, self.device, self.amp, t["channels_last"], progress)
            record.update(val_loss=val["loss"], val_acc1=val["acc1"], val_acc5=val["acc5"])
            out.update(val=val)
            if self.ema is not None:
                ev = evaluate(self.ema.module, self.data.val_loader, self.device, self.amp, t["channels_last"],
                              progress, desc="eval EMA")
                record.update(ema_val_loss=ev["loss"], ema_val_acc1=ev["acc1"], ema_val_acc5=ev["acc5"])
                out.update(ema_val=ev)
            if val["acc1"] > self.best_acc1:
                self.best_acc1 = val["acc1"]
                if du.is_main():
                    atomic_torch_save({"model": self.model.state_dict(),
                                       "model_ema": self.ema.module.state_dict() if self.ema else None,
                                       "epoch": self.epoch, "acc1": val["acc1"], "arch": cfg["model"]["name"],
                                       "num_classes": self.num_classes, "classes": self.data.classes,
                                       "config": cfg}, os.path.join(self.out, "best.pth"))
        msg = f"epoch {self.epoch + 1}/{t['epochs']}: train loss {record['train_loss']:.4f}, lr {record['lr']:.3g}"
        if "val_acc1" in record:
            msg += (f"; val loss {record['val_loss']:.4f}, top-1 {record['val_acc1']:.2f}%, "
                    f"top-5 {record['val_acc5']:.2f}%")
        if "ema_val_acc1" in record:
            msg += f"; EMA top-1 {record['ema_val_acc1']:.2f}%"
        log.info(msg)
        if du.is_main():
            log_epoch(self.out, record)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss = [0.0, 0.0]
        self._save()
        return out
