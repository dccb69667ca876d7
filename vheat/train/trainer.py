"""The training loop: distributed data parallel, AMP, accumulation, EMA, checkpoints, resume."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from typing import Optional

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vheat.checkpoint_io import load_state_strict, load_weights, read_checkpoint, strip_prefixes, write_checkpoint
from vheat.data import build_data, resolve_root
from vheat.models import linear as gemm

from . import distributed as du
from ..io import atomic_write_text
from .checkpoint import (BEST_FILE, CheckpointFormatError, best_of_lineage, check_explicit_resume, check_output_folder,
                         claim_metrics, find_resume_point, is_training_state, list_checkpoints,
                         remove_stale_temp_files, rng_state, save_checkpoint, set_aside_run, set_aside_unreadable,
                         set_rng_state)
from .config import ConfigError, dump_config
from .evaluate import evaluate
from .metrics import log_epoch, plot_metrics
from .model_factory import build_model
from .output_lock import output_lock
from .progress import show_bars
from .recipe import amp_dtype, build_mixup, build_optimizer, build_scheduler, build_train_loss, scaled_lrs
from .runtime import check_input_fits, on_main, run_context, seed_all

log = logging.getLogger("vheat.train")


def train(cfg: dict, resume: Optional[str] = None, start_over: bool = False) -> dict:
    """Runs the training described by ``cfg``; returns a summary dict (rank 0's view).

    ``resume``: a training checkpoint to continue from (default: the output folder's newest
    readable one, unless train.auto_resume is off). ``start_over``: move the output folder's
    run files into ``previous-<time>/`` and train from scratch.
    """
    check_output_folder(cfg["output"])
    check_input_fits(cfg["data"]["batch_size"], cfg["data"]["img_size"])
    # rank 0 speaks for the run; taken before anything in the folder is read or written
    lock = output_lock(cfg["output"]) if du.env_rank() == 0 else contextlib.nullcontext()
    with lock, run_context(cfg, bool(cfg["train"]["deterministic"]), cfg["output"]) as device:
        held = {}

        def claim() -> dict:  # the checkpoint stays on rank 0; the others read it from its path
            start = claim_output(cfg, resume, start_over)
            held["checkpoint"] = start.pop("checkpoint")
            return start

        start = on_main(claim)
        if start["path"] is not None:
            start["checkpoint"] = held.get("checkpoint") or read_checkpoint(
                start["path"], allow_pickle=cfg["model"]["trust_checkpoint"])
        return _Trainer(cfg, device).run(start)


def claim_output(cfg: dict, resume: Optional[str], start_over: bool) -> dict:
    """Rank 0, before any work: picks the resume point and makes sure the run can write its files
    without discarding any other run's (or its own newer) work. Returns what the run starts from."""
    out = cfg["output"]
    for path in remove_stale_temp_files(out):
        log.info(f"removed {path}, left by an interrupted write")
    path, ckpt, skipped = None, None, []
    if resume:
        ckpt = read_checkpoint(resume, allow_pickle=cfg["model"]["trust_checkpoint"])
        if not is_training_state(ckpt):
            raise CheckpointFormatError(f"{resume} is not a training checkpoint of this trainer (no optimizer state); "
                                  f"to start from its weights use model.pretrained={resume}")
        path = resume
        if not start_over:
            check_explicit_resume(out, resume)
    elif cfg["train"]["auto_resume"] and not start_over:
        path, ckpt, skipped = find_resume_point(out) or (None, None, [])
    elif list_checkpoints(out) and not start_over:
        raise CheckpointFormatError(f"output folder {out} holds checkpoints of a run and train.auto_resume is off: "
                              f"training from scratch there would replace them. Resume it (drop "
                              f"--no-auto-resume), write to a new --output, or pass --start-over.")
    if start_over:
        moved = set_aside_run(out)
        if moved:
            log.info(f"--start-over: moved the previous run's files into {moved}")
            if path and not os.path.exists(path):  # --resume named a checkpoint of the moved run
                path = os.path.join(moved, os.path.basename(path))
    run_id = ckpt.get("run_id") if ckpt else uuid.uuid4().hex
    best = best_of_lineage(out, run_id)
    dropped = claim_metrics(out, run_id, int(ckpt["epoch"]) if ckpt else 0)
    set_aside_unreadable(skipped, path)  # every check passed: from here on the folder changes
    if dropped:
        log.info(f"dropped {dropped} line(s) of {os.path.join(out, 'metrics.jsonl')} for epochs the resumed run "
                 f"redoes")
    return {"path": path, "checkpoint": ckpt, "run_id": run_id, "best_acc1": best}


class _Trainer:
    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        self.rank, self.world = du.rank(), du.world_size()
        self.out = cfg["output"]
        t = cfg["train"]
        seed_all(t["seed"])  # identical initial weights on every rank

        root = on_main(lambda: resolve_root(cfg))
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
        self.run_id = ""
        self.gemm_library: Optional[str] = None  # CPU runs: the GEMM library pinned for the run
        self.epoch_loss = [0.0, 0.0]  # (sum, count) of this rank's micro-batch losses in the epoch

        self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if du.is_distributed() else model
        # dynamic=False: a new input shape (a short last batch, another compiled run of the same
        # model class in this process) recompiles statically; torch 2.14's automatic dynamic
        # shapes fail in Inductor on this model ("cannot determine truth value of Relational").
        self.forward_model = torch.compile(self.ddp, dynamic=False) if t["compile"] else self.ddp

    # ---------------------------------------------------------------- resume
    def _pin_gemm_library(self, ckpt: Optional[dict]) -> None:
        # One GEMM library for the whole run: the checkpoint's when resuming, else rank 0's
        # measured choice (the linear calibration is per process and could differ).
        library = (ckpt or {}).get("gemm_library") or du.broadcast_object(gemm.training_library())
        gemm.pin_training_library(library)
        self.gemm_library = library

    def _resume(self, start: dict) -> Optional[str]:
        self.run_id, self.best_acc1 = start["run_id"], start["best_acc1"]
        path, ckpt = start["path"], start.get("checkpoint")
        if path is None:
            return None
        load_state_strict(self.model, strip_prefixes(ckpt["model"]), path, self.cfg["model"]["name"])
        if self.ema is not None and ckpt.get("model_ema") is not None:
            load_state_strict(self.ema.module, strip_prefixes(ckpt["model_ema"]), path + " [model_ema]",
                              self.cfg["model"]["name"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        # a fallback to an older checkpoint must not let a worse result replace best.pth
        self.best_acc1 = max(self.best_acc1, float(ckpt["best_acc1"]))
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
            "config": self.cfg, "run_id": self.run_id, "gemm_library": self.gemm_library,
        }

    def _save(self) -> Optional[str]:
        state = self._state()  # collective: every rank takes part
        return on_main(lambda: save_checkpoint(self.out, state, self.cfg["train"]["keep_checkpoints"]))

    # ------------------------------------------------------------------ loop
    def run(self, start: dict) -> dict:
        cfg, t = self.cfg, self.cfg["train"]
        if self.device.type == "cpu":
            self._pin_gemm_library(start.get("checkpoint"))
        resumed = self._resume(start)
        # written once every check has passed: a refused run leaves the old one
        on_main(lambda: atomic_write_text(os.path.join(self.out, "config.yaml"), dump_config(cfg)))
        if resumed is None:
            seed_all(t["seed"] + self.rank)  # per-rank streams for drop path / Mixup
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(f"model {cfg['model']['name']}: {n_params / 1e6:.3f} M params, {self.num_classes} classes; "
                 f"{len(self.data.train)} train / {len(self.data.val)} val images; {self.world} process(es) on "
                 f"{self.device}; global batch {cfg['data']['batch_size'] * self.world * self.accum}; lr "
                 f"{self.lrs.base:.3g}; {self.steps_per_epoch} steps/epoch; amp {self.amp}; "
                 f"HCO backend {cfg['model']['hco_backend']}")
        if self.device.type == "cpu":
            log.info(gemm.describe())
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
        if t["plot"]:
            on_main(lambda: plot_metrics(self.out))
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
        bars = show_bars(self.cfg)
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, dynamic_ncols=True, leave=False,
                   desc=f"epoch {self.epoch + 1}/{t['epochs']}", disable=not bars)
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
                    loss_text, lr_text = f"{loss.item():.4f}", f"{self.optimizer.param_groups[0]['lr']:.3g}"
                    if bars:
                        bar.set_postfix(loss=loss_text, lr=lr_text)
                    else:
                        log.info(f"epoch {self.epoch + 1}/{t['epochs']} step {self.step_in_epoch}/"
                                 f"{self.steps_per_epoch}: loss {loss_text}, lr {lr_text}")
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
        record = {"epoch": self.epoch, "global_step": self.global_step, "run_id": self.run_id, "train_loss": loss_sum / max(loss_n, 1),
                  "lr": self.optimizer.param_groups[0]["lr"], "time": time.time()}
        out = {}
        if (self.epoch + 1) % t["eval_every"] == 0 or self.epoch + 1 == t["epochs"]:
            progress = show_bars(cfg)
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
                on_main(lambda: write_checkpoint(os.path.join(self.out, BEST_FILE), {
                    "model": self.model.state_dict(),
                    "model_ema": self.ema.module.state_dict() if self.ema else None,
                    "epoch": self.epoch, "acc1": val["acc1"], "arch": cfg["model"]["name"],
                    "num_classes": self.num_classes, "classes": self.data.classes, "config": cfg,
                    "run_id": self.run_id}))
        msg = f"epoch {self.epoch + 1}/{t['epochs']}: train loss {record['train_loss']:.4f}, lr {record['lr']:.3g}"
        if "val_acc1" in record:
            msg += (f"; val loss {record['val_loss']:.4f}, top-1 {record['val_acc1']:.2f}%, "
                    f"top-5 {record['val_acc5']:.2f}%")
        if "ema_val_acc1" in record:
            msg += f"; EMA top-1 {record['ema_val_acc1']:.2f}%"
        log.info(msg)
        on_main(lambda: log_epoch(self.out, record))
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss = [0.0, 0.0]
        self._save()
        return out
