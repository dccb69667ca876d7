"""The 'triton' backend: launchers, the ``vheat::hco_triton`` op and its autograd.

``vheat_kernels.backends`` imports this module lazily and calls exactly two functions:
``unavailable_reason(x, E)`` and ``heat_conduction_triton(x, E)``.

Each call is planned as a list of ``Launch`` (kernel, grid, arguments, candidate
configurations) and then run; tools/triton_aot.py compiles the same plans, so the compile check
builds exactly the kernels that run. Each pass picks one of three schedules (``schedule``):
register-resident (``kernels.py``) where that pass has a spill-free configuration wide
enough to coalesce (``configs.resident``), else the single-launch plane kernels
(``plane.py``) for padded sides up to 64, else the streamed schedule (``streamed.py``:
one 1-D transform per pass through a global scratch). Forward: one launch up to 64 per
side; backward (dx and dE): two, the second summing the dE chunk partials.

The forward and backward are ``torch.library.triton_op`` ops launched through
``wrap_triton``, so ``torch.compile`` sees the kernels instead of graph-breaking. Nothing
is autotuned at run time: each launch runs ``configs.choose``'s pick (a table measured per
GPU architecture, else the planner's first candidate), the same configuration under
``TRITON_INTERPRET=1`` (CPU tensors, how the tests run) as on a GPU.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

from ..autograd import register_hco_autograd
from ..map_cache import TensorLRU
from . import configs as cfg
from .chunks import backward_chunks
from .chunks import wave_chunks
from . import kernels as _kernels_module
from . import plane as _plane_module
from . import streamed as _streamed_module

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The interpreter runs fp64 too (exact enough for gradcheck); GPU builds are not checked for it.
INTERPRETER_DTYPES = SUPPORTED_DTYPES + (torch.float64,)

_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float64: tl.float64}


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernels():
    """The kernels module, re-imported if TRITON_INTERPRET changed since it was imported.

    ``@triton.jit`` picks interpreter or compiler when it decorates, so a process that
    imported this package before setting TRITON_INTERPRET=1 would otherwise keep GPU-only
    kernels (and the other way round). ``streamed`` and ``plane`` build on ``kernels``'
    helpers and are reloaded with it.
    """
    global _kernels_module, _streamed_module, _plane_module
    if _kernels_module.INTERPRETED != interpreting():
        _kernels_module = importlib.reload(_kernels_module)
        _streamed_module = importlib.reload(_streamed_module)
        _plane_module = importlib.reload(_plane_module)
    return _kernels_module


def streamed():
    """The streamed kernels module, current with TRITON_INTERPRET (see ``kernels``)."""
    kernels()
    return _streamed_module


def plane():
    """The plane kernels module, current with TRITON_INTERPRET (see ``kernels``)."""
    kernels()
    return _plane_module


def dtype_constants(dtype: torch.dtype, interpreted: bool) -> dict:
    """ROUND / DOT / ACC dtypes and dot precision for an input dtype (see kernels.py)."""
    round_dt = _TL[dtype]
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    # The interpreter's dot multiplies bf16 bit patterns as integers: feed it fp32 values
    # already rounded to bf16 instead.
    dot = tl.float32 if (interpreted and dtype == torch.bfloat16) else round_dt
    # The interpreter's fp32 dot is exact: emulate the GPU's tf32x3 splitting instead.
    precision = ("tf32x3_emulated" if interpreted else "tf32x3") if dtype == torch.float32 else "ieee"
    return dict(ROUND_DTYPE=round_dt, DOT_DTYPE=dot, ACC_DTYPE=acc, PRECISION=precision)


def unavailable_reason(x: torch.Tensor, E: torch.Tensor) -> Optional[str]:
    """None when the fused Triton kernels can run on (x, E), else why not."""
    interp = interpreting()
    if x.device.type != "cuda" and not (interp and x.device.type == "cpu"):
        return f"it needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got x on {x.device}"
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device) < (8, 0):
        return f"it needs a GPU of compute capability 8.0 or newer, got {torch.cuda.get_device_name(x.device)}"
    accepted = INTERPRETER_DTYPES if (interp and x.device.type == "cpu") else SUPPORTED_DTYPES
    if x.dtype not in accepted:
        names = ", ".join(str(d).replace("torch.", "") for d in accepted)
        return f"x has dtype {x.dtype}; the Triton kernels accept {names}"
    _, H, W, _ = x.shape
    if max(H, W) > cfg.MAX_STREAMED_SIDE:
        return (
            f"H x W = {H} x {W}: the Triton kernels take sides up to {cfg.MAX_STREAMED_SIDE}; "
            "use the 'fft' backend ('auto' picks it)"
        )
    return None


def heat_conduction_triton(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """Fused HCO, differentiable in x and E. Inputs are validated by the caller."""
    reason = unavailable_reason(x, E)
    if reason is not None:
        raise ValueError(f"heat_conduction_triton: {reason}")
    return torch.ops.vheat.hco_triton(x, E)


# --- plans and launchers -----------------------------------------------------------------


_COS_CACHE = TensorLRU()  # bounded as dct.MAPS (map_cache.DEFAULT_BUDGET_BYTES)

# Programs the register-resident backward aims for (two per SM of a 132-SM H100). A
# constant, not the device's SM count, so the chunking, and with it dE's bits, is the
# same on every GPU. Under the interpreter a handful, so tests see uneven chunks.
PROGRAMS_WANTED = 264
INTERPRETER_PROGRAMS_WANTED = 4
# Batch-loop software pipelining of the register-resident backward (tl.range num_stages).
BWD_STAGES = 2
DE_BLOCK = 1024  # elements of dE per program of the streamed dE reduction
DE_STAGES = 3
# Persistent programs of the plane forward: two per SM of a 132-SM H100, each with one
# scratch slot of H * W * BC elements (56 x 56 x 16 bf16 or x 8 fp32: 98 KiB, 26 MB for
# all, inside the 50 MB L2). The plane backward holds two slots per program and fills one
# wave (132 programs). Constants, never read from the device: the chunking, hence dE's
# bits, is the same on every GPU. Under the interpreter a handful, so the tests see
# programs with several work items and uneven chunks.
PLANE_PROGRAMS = 264
PLANE_BWD_WAVE = 132
INTERPRETER_PLANE_PROGRAMS = 3
DE_SUM_BLOCK = 1024  # elements of dE per program of the chunk-partial sum


def _cos(n: int, like: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II matrix (n, n) in fp32 (fp64 for fp64 inputs), cached per device.

    Traced calls (torch.compile, opcheck under FakeTensorMode) and meta tensors (the
    compile check's plans) build it uncached, so neither reaches later eager calls;
    ``dct.dct_matrix`` follows the same rule.
    """
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    tracing = is_fake(like) or torch.compiler.is_compiling() or like.device.type == "meta"
    def build() -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64, device=like.device)
        mat = torch.cos(math.pi * (i[None, :] + 0.5) * i[:, None] / n) * math.sqrt(2.0 / n)
        mat[0] = mat[0] / math.sqrt(2.0)
        return mat.to(dtype)

    return build() if tracing else _COS_CACHE.get((n, like.device, dtype), build)


STRIDE_ARGS = ("X_SB", "X_SH", "X_SW", "G_SB", "G_SH", "G_SW")  # (batch, row, pixel) strides of x, dy


@dataclass
class Launch:
    """One kernel launch of a plan.

    ``kernel`` names the @triton.jit function (``<kernel>_kernel`` in kernels.py or
    streamed.py). ``configs`` lists the candidate configurations (BlockConfig /
    AxisConfig / LineConfig), best guess first; ``chosen`` picks the one that runs.
    ``grid`` maps a config to the grid.
    """

    kernel: str
    args: dict
    consts: dict
    grid: Callable[[object], tuple]
    configs: list = field(default_factory=list)
    num_warps: int = 4  # for launches without configs

    def tuned_key(self, arch: Optional[int]) -> Optional[str]:
        """This launch's key in ``configs.TUNED_FILE`` (None off a GPU): the integer
        arguments and flags that shape the problem, and the dot operands' size."""
        if arch is None:
            return None
        # Strides left out: gpu-check tunes on contiguous tensors and the model passes the
        # chunk view of a linear's output; both are the same problem for the tile choice.
        shape = [v for k, v in self.args.items()
                 if isinstance(v, int) and not isinstance(v, bool) and k not in STRIDE_ARGS]
        shape += [int(v) for k, v in self.consts.items() if isinstance(v, bool)]
        return cfg.tuned_key(self.kernel, tuple(shape), self.consts["ROUND_DTYPE"].primitive_bitwidth // 8, arch)

    def chosen(self, arch: Optional[int]):
        """The configuration this launch runs on a GPU of ``arch`` (None: the first)."""
        return cfg.choose(self.configs, self.tuned_key(arch)) if self.configs else None

    def config_kwargs(self, c) -> tuple[dict, int, int]:
        """(constexprs, num_warps, num_stages) of configuration ``c``."""
        if isinstance(c, cfg.BlockConfig):
            return dict(BC=c.BC), c.num_warps, 1
        if isinstance(c, cfg.PlaneConfig):
            return dict(BC=c.BC, TW=c.TW, TH=c.TH, BK=c.BK), c.num_warps, 1
        if isinstance(c, cfg.LineConfig):
            return dict(TZ=c.TZ, BN=c.BN), c.num_warps, 1
        return dict(BM=c.BM, BK=c.BK, TZ=c.TZ, BN=c.BN), c.num_warps, c.num_stages


def _module_of(kernel: str):
    if kernel in ("hco_plane", "hco_plane_bwd", "hco_de_sum"):
        return plane()
    return streamed() if kernel in ("hco_axis", "hco_de", "hco_line", "hco_line_bwd") else kernels()


def _device_guard(t: torch.Tensor):
    """Launch on t's GPU, whatever the current device (Triton launches on the current one).
    Skipped while tracing: compiled graphs guard their own launches."""
    if t.device.type != "cuda" or is_fake(t) or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)


def _arch(t: torch.Tensor) -> Optional[int]:
    """sm number of t's GPU (90 for an H100), None off a GPU (the interpreter)."""
    if t.device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


def _launcher(fn):
    """``wrap_triton(fn)`` (torch.compile traces through it), or ``fn`` itself for the
    interpreter outside a compiled graph: torch 2.11's wrap_triton refuses the
    interpreter's kernel objects, and eager launches do not need it."""
    if kernels().INTERPRETED and not torch.compiler.is_compiling():
        return fn
    return wrap_triton(fn)


def run(plan: list[Launch], config=None) -> None:
    """Launch a plan, each launch with its chosen configuration, or ``config`` on the
    launches that list it among their candidates (tests)."""
    arch = None
    for launch in plan:
        module = _module_of(launch.kernel)
        extra, warps, stages = {}, launch.num_warps, 1
        chosen = None
        if launch.configs:
            if arch is None:
                arch = _arch(next(v for v in launch.args.values() if isinstance(v, torch.Tensor)))
            chosen = config if config in launch.configs else launch.chosen(arch)
            extra, warps, stages = launch.config_kwargs(chosen)
        fn = getattr(module, launch.kernel + "_kernel")
        _launcher(fn)[launch.grid(chosen)](**launch.args, **launch.consts, **extra, num_warps=warps,
                                           num_stages=stages)


def _consts(x: torch.Tensor) -> dict:
    return dtype_constants(x.dtype, kernels().INTERPRETED)


SCHEDULES = ("resident", "plane", "streamed")


def schedule(x: torch.Tensor, backward: bool = False) -> str:
    """The schedule of one pass over x's plane and dtype (the backward: the pass computing
    dE; dx alone is the forward on dy): "resident" (kernels.py), "plane" (plane.py) or
    "streamed" (streamed.py)."""
    _, H, W, _ = x.shape
    eb = x.element_size()
    if cfg.resident(H, W, eb, backward):
        return "resident"
    if cfg.plane_usable(H, W, eb):
        return "plane"
    # No spill-free plane tile (fp32 at 32 x 32): a narrow register-resident block still
    # beats the streamed schedule's passes.
    return "resident" if cfg.resident_fits(H, W, eb, backward) else "streamed"


def register_resident(x: torch.Tensor) -> bool:
    """Whether (x's plane, dtype) runs its forward on the register-resident kernel."""
    return schedule(x) == "resident"


def _schedule_of(x, backward: bool, resident: Optional[bool], which: Optional[str]) -> str:
    """``which`` if given; ``resident`` True / False forces "resident" / "streamed" (the
    compile check's sweep); else ``schedule``."""
    if which is not None:
        if which not in SCHEDULES:
            raise ValueError(f"schedule {which!r}: expected one of {SCHEDULES}")
        return which
    if resident is not None:
        return "resident" if resident else "streamed"
    return schedule(x, backward)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, row, pixel) strides of a channels-last tensor with channel stride 1."""
    assert t.stride(3) == 1 or t.shape[3] == 1 or t.numel() == 0
    return t.stride(0), t.stride(1), t.stride(2)


def _axis(src, mat, e, dst, Z, N, R, e_period, transpose, consts) -> Launch:
    """One streamed 1-D transform: dst (Z, N, R) = M or M^T along N of src (times E)."""
    has_e = e is not None
    args = dict(src_ptr=src, mat_ptr=mat, e_ptr=e if has_e else mat, dst_ptr=dst, Z=Z, N=N, R=R, E_PERIOD=e_period)
    grid = lambda c: (triton.cdiv(Z, c.TZ) * triton.cdiv(N, c.BM) * triton.cdiv(R, c.BN),)
    round_out = dst.element_size() < 4
    return Launch("hco_axis", args, dict(TRANSPOSE=transpose, HAS_E=has_e, ROUND_OUT=round_out, **consts), grid,
                  cfg.axis_configs(N, R, consts["ROUND_DTYPE"].primitive_bitwidth // 8))


def _dct2(src, dst, tmp, ch, cw, e, B, H, W, C, consts, inverse=False) -> list[Launch]:
    """2-D (I)DCT of src into dst through tmp, in two streamed passes; E multiplies the
    forward's output (after the W pass) or the inverse's input (before it, by the caller)."""
    h_pass = lambda a, b: _axis(a, ch, None, b, B, H, W * C, 1, inverse, consts)
    w_pass = lambda a, b, ee: _axis(a, cw, ee, b, B * H, W, C, H, inverse, consts)
    if inverse:
        return [w_pass(src, tmp, None), h_pass(tmp, dst)]
    return [h_pass(src, tmp), w_pass(tmp, dst, e)]


def _line_views(B, H, W, C, ch, cw):
    """(outer pass, line view) of the streamed schedule when one side is short: the line
    axis's (matrix, Z, N, R, E period) and a function making the outer axis's pass."""
    side = cfg.line_side(H, W)
    if side is None:
        return None
    if side == "W":
        outer = lambda a, b, inverse, consts: _axis(a, ch, None, b, B, H, W * C, 1, inverse, consts)
        return outer, (cw, B * H, W, C, H)
    outer = lambda a, b, inverse, consts: _axis(a, cw, None, b, B * H, W, C, H, inverse, consts)
    return outer, (ch, B, H, W * C, 1)


def _streamed_forward(x, E, y, ch, cw, consts) -> list[Launch]:
    B, H, W, C = x.shape
    # Spectrum and scratch in the input dtype: every dot rounds its operand to it anyway.
    s1 = torch.empty_like(x)
    views = _line_views(B, H, W, C, ch, cw)
    if views is None:
        s2 = torch.empty_like(x)
        return (_dct2(x, s2, s1, ch, cw, E, B, H, W, C, consts)
                + _dct2(s2, y, s1, ch, cw, None, B, H, W, C, consts, inverse=True))
    outer, (mat, Z, N, R, period) = views
    # y holds the outer transform until the line pass has read it (out of place: see _line).
    return [outer(x, y, False, consts), _line(y, s1, mat, E, Z, N, R, period, consts), outer(s1, y, True, consts)]


def _line(src, dst, mat, E, Z, N, R, period, consts) -> Launch:
    """The line pass src -> dst: DCT, times E, inverse, along N of (Z, N, R). Never in place:
    a launch that reads what it writes is not safe to repeat (timing candidates does)."""
    assert src.data_ptr() != dst.data_ptr() or src.device.type == "meta"
    args = dict(src_ptr=src, mat_ptr=mat, e_ptr=E, dst_ptr=dst, Z=Z, N=N, R=R, E_PERIOD=period)
    configs = cfg.line_configs(N, R, False, consts["ROUND_DTYPE"].primitive_bitwidth // 8)
    return Launch("hco_line", args, dict(NP=cfg.padded(N), **consts),
                  lambda c: (triton.cdiv(Z, c.TZ) * triton.cdiv(R, c.BN),), configs)


def forward_plan(x: torch.Tensor, E: torch.Tensor, y: torch.Tensor, resident: Optional[bool] = None,
                 schedule: Optional[str] = None) -> list[Launch]:
    """Launches computing y = HCO(x, E) into contiguous y. x has channel stride 1 (any batch,
    row and pixel strides; the streamed schedule needs it contiguous), E is contiguous.
    ``resident`` / ``schedule`` force the schedule (tests, the compile check's sweep)."""
    B, H, W, C = x.shape
    consts = _consts(x)
    ch, cw = _cos(H, x), _cos(W, x)
    which = _schedule_of(x, False, resident, schedule)
    if which == "resident":
        args = dict(x_ptr=x, e_ptr=E, ch_ptr=ch, cw_ptr=cw, y_ptr=y, H=H, W=W, C=C)
        args.update(zip(("X_SB", "X_SH", "X_SW"), _strides(x)))
        grid = lambda c: (triton.cdiv(C, c.BC) * B,)
        return [Launch("hco_fwd", args, dict(HP=cfg.padded(H), WP=cfg.padded(W), **consts), grid,
                       cfg.prune(H, W, C, x.element_size(), backward=False))]
    if which == "plane":
        return [_plane_forward(x, E, y, ch, cw, consts)]
    assert x.is_contiguous() or x.device.type == "meta", "the streamed schedule views x as (Z, N, R)"
    return _streamed_forward(x, E, y, ch, cw, consts)


def _plane_forward(x, E, y, ch, cw, consts) -> Launch:
    """The single-launch plane forward: persistent programs, one scratch slot each."""
    B, H, W, C = x.shape
    configs = cfg.plane_configs(H, W, C, x.element_size())
    programs = INTERPRETER_PLANE_PROGRAMS if x.device.type == "cpu" else PLANE_PROGRAMS
    # Sized for the widest candidate, so every configuration fits the buffer.
    scratch = x.new_empty(programs * H * W * max(c.BC for c in configs))
    args = dict(x_ptr=x, e_ptr=E, ch_ptr=ch, cw_ptr=cw, y_ptr=y, s_ptr=scratch, B=B, H=H, W=W, C=C)
    args.update(zip(("X_SB", "X_SH", "X_SW"), _strides(x)))
    args["PROGRAMS"] = programs
    grid = lambda c: (min(B * triton.cdiv(C, c.BC), programs),)
    return Launch("hco_plane", args, dict(HP=cfg.padded(H), WP=cfg.padded(W), **consts), grid, configs)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _de_sum(part: torch.Tensor, E: torch.Tensor) -> tuple[list[Launch], torch.Tensor]:
    """Launch 2 of the fused backward: dE (in E's dtype) = the chunk partials part
    (chunks, H, W, C) summed in order. None when there is one fp32 partial of an fp32 E:
    it is dE already."""
    if part.shape[0] == 1 and part.dtype == E.dtype:
        return [], part[0]
    de = torch.empty(E.shape, device=E.device, dtype=E.dtype)
    P = E.numel()
    round_dt = _TL[E.dtype]
    # The interpreter's fp32 -> bf16 cast truncates: round on the bits (kernels._round).
    round_to = tl.float32 if (kernels().INTERPRETED and E.dtype == torch.bfloat16) else round_dt
    launch = Launch("hco_de_sum", dict(part_ptr=part, de_ptr=de, CHUNKS=part.shape[0], P=P),
                    dict(BLOCK=DE_SUM_BLOCK, ROUND_DTYPE=round_dt, ROUND_TO=round_to),
                    lambda c: (triton.cdiv(P, DE_SUM_BLOCK),), num_warps=4)
    return [launch], de


def _plane_backward(grad_y, x, E, dx, need_dx, ch, cw, consts) -> tuple[list[Launch], torch.Tensor]:
    """The plane backward: launch 1 per (channel block, batch chunk), then the partial sum."""
    B, H, W, C = x.shape
    configs = cfg.plane_configs(H, W, C, x.element_size())
    widest = max(c.BC for c in configs)
    wave = INTERPRETER_PROGRAMS_WANTED if x.device.type == "cpu" else PLANE_BWD_WAVE
    chunks = wave_chunks(B, triton.cdiv(C, widest), wave)  # the shape's, not the config's: dE's bits
    per_prog = math.ceil(B / chunks)
    part = torch.empty((chunks, H, W, C), device=x.device, dtype=_acc_dtype(x))
    # Two slots (dy's and x's H transforms) per program, for the candidate with most programs' worth.
    scratch = x.new_empty(max(triton.cdiv(C, c.BC) * c.BC for c in configs) * chunks * 2 * H * W)
    # An unused pointer still needs a valid tensor of the right dtype: pass grad_y.
    args = dict(x_ptr=x, dy_ptr=grad_y, e_ptr=E, ch_ptr=ch, cw_ptr=cw, dx_ptr=dx if need_dx else grad_y,
                de_ptr=part, s_ptr=scratch, B=B, H=H, W=W, C=C)
    args.update(zip(("X_SB", "X_SH", "X_SW"), _strides(x)))
    args.update(zip(("G_SB", "G_SH", "G_SW"), _strides(grad_y)))
    args["B_PER_PROG"] = per_prog
    launch = Launch("hco_plane_bwd", args, dict(HP=cfg.padded(H), WP=cfg.padded(W), NEED_DX=need_dx, **consts),
                    lambda c: (triton.cdiv(C, c.BC), chunks), configs)
    sum_plan, de = _de_sum(part, E)
    return [launch] + sum_plan, de


def backward_plan(grad_y, x, E, dx, need_dx: bool, need_dE: bool, resident: Optional[bool] = None,
                  schedule: Optional[str] = None) -> tuple[list[Launch], torch.Tensor]:
    """Launches computing dx (into contiguous ``dx``) and dE (the returned buffer: (H, W, C)
    in E's dtype, or in fp32 / fp64 for the streamed schedule; empty without need_dE).
    x and grad_y as in ``forward_plan``."""
    acc = _acc_dtype(x)
    if not need_dE:
        # dx = IDCT2(DCT2(dy) * E): the operator is self-adjoint in x, so dx is the forward's
        # plan on dy (one kernel fewer to build and size; the backward kernel's dx-only
        # variant spilled on Triton 3.6 at 32 x 32 fp32).
        return forward_plan(grad_y, E, dx, resident, schedule), x.new_empty(0, dtype=acc)
    B, H, W, C = x.shape
    consts = _consts(x)
    ch, cw = _cos(H, x), _cos(W, x)
    which = _schedule_of(x, True, resident, schedule)
    if which == "resident":
        widest = (cfg.prune(H, W, C, x.element_size(), backward=True) or [cfg.BlockConfig(max(cfg.BLOCKS), 0)])[0].BC
        wanted = INTERPRETER_PROGRAMS_WANTED if x.device.type == "cpu" else PROGRAMS_WANTED
        chunks = backward_chunks(B, C, wanted, widest)
        per_prog = math.ceil(B / chunks)
        chunks = math.ceil(B / per_prog)
        part = torch.empty((chunks, H, W, C), device=x.device, dtype=acc)
        # An unused pointer still needs a valid tensor of the right dtype: pass grad_y.
        args = dict(x_ptr=x, dy_ptr=grad_y, e_ptr=E, ch_ptr=ch, cw_ptr=cw,
                    dx_ptr=dx if need_dx else grad_y, de_ptr=part, B=B, H=H, W=W, C=C)
        args.update(zip(("X_SB", "X_SH", "X_SW"), _strides(x)))
        args.update(zip(("G_SB", "G_SH", "G_SW"), _strides(grad_y)))
        args["B_PER_PROG"] = per_prog
        grid = lambda c: (triton.cdiv(C, c.BC), chunks)
        consts = dict(HP=cfg.padded(H), WP=cfg.padded(W), NEED_DX=need_dx, NEED_DE=need_dE, NUM_STAGES=BWD_STAGES,
                      **consts)
        sum_plan, de = _de_sum(part, E)
        return [Launch("hco_bwd", args, consts, grid, cfg.prune(H, W, C, x.element_size(), backward=True))] + sum_plan, de
    if which == "plane":
        return _plane_backward(grad_y, x, E, dx, need_dx, ch, cw, consts)
    assert (x.is_contiguous() and grad_y.is_contiguous()) or x.device.type == "meta", "streamed: (Z, N, R) views"
    de = torch.empty((H, W, C), device=x.device, dtype=acc)
    views = _line_views(B, H, W, C, ch, cw)
    if views is not None:
        # Outer transforms of dy and x streamed; the line pass does the rest on-chip.
        outer, (mat, Z, N, R, period) = views
        t1, t2 = torch.empty_like(x), torch.empty_like(x)
        eb = consts["ROUND_DTYPE"].primitive_bitwidth // 8
        args = dict(g_ptr=t1, x_ptr=t2, mat_ptr=mat, de_ptr=de, B=B, N=N, R=R, E_PERIOD=period)
        line = Launch("hco_line_bwd", args, dict(NP=cfg.padded(N), NUM_STAGES=BWD_STAGES, **consts),
                      lambda c: (triton.cdiv(period, c.TZ) * triton.cdiv(R, c.BN),), cfg.line_configs(N, R, True, eb))
        plan = [outer(grad_y, t1, False, consts), outer(x, t2, False, consts), line]
        if need_dx:  # t2 is free once the dE line pass has read it
            plan += [_line(t1, t2, mat, E, Z, N, R, period, consts), outer(t2, dx, True, consts)]
        return plan, de
    tmp = torch.empty_like(x)
    # Both spectra kept in fp32 (fp64) for fp32 (fp64) inputs, so dE multiplies them
    # unrounded; for bf16 / fp16 in the input dtype, as the official formulation keeps
    # them: half the bytes of the two largest scratch tensors.
    g, xf = torch.empty_like(x), torch.empty_like(x)
    P = H * W * C
    reduce = Launch("hco_de", dict(g_ptr=g, xf_ptr=xf, e_ptr=E, de_ptr=de, B=B, P=P),
                    dict(SCALE_G=need_dx, BLOCK=DE_BLOCK, NUM_STAGES=DE_STAGES, ROUND_TO=consts["DOT_DTYPE"]),
                    lambda c: (triton.cdiv(P, DE_BLOCK),),
                    num_warps=4)
    plan = _dct2(grad_y, g, tmp, ch, cw, None, B, H, W, C, consts) + _dct2(x, xf, tmp, ch, cw, None, B, H, W, C, consts)
    plan.append(reduce)
    if need_dx:
        plan += _dct2(g, dx, tmp, ch, cw, None, B, H, W, C, consts, inverse=True)
    return plan, de


def _channels_last_view(t: torch.Tensor, streamed: bool) -> torch.Tensor:
    """t itself when the kernels can read it through its strides (channel stride 1, any
    batch / row / pixel strides: the chunk view vHeat's Heat2D passes), else one contiguous
    copy. The streamed schedule (sides over 64) views its input as (Z, N, R) and needs it
    contiguous."""
    if streamed or (t.stride(3) != 1 and t.shape[3] != 1):
        return t.contiguous()
    return t


def forward(x: torch.Tensor, E: torch.Tensor, config=None, schedule: Optional[str] = None) -> torch.Tensor:
    """Fused forward; ``config`` forces a block / tile configuration, ``schedule`` one of
    SCHEDULES (tests). y is contiguous whatever x's strides."""
    which = _schedule_of(x, False, None, schedule)
    x, E = _channels_last_view(x, which == "streamed"), E.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    with _device_guard(x):
        run(forward_plan(x, E, y, schedule=which), config)
    return y


def backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    E: torch.Tensor,
    need_dx: bool,
    need_dE: bool,
    config=None,
    schedule: Optional[str] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dx = HCO(grad_y, E) and dE = sum_b DCT2(x) * DCT2(grad_y); unneeded ones are empty.
    dx is contiguous; ``config`` / ``schedule`` as in ``forward``."""
    which = _schedule_of(x, need_dE, None, schedule)
    streamed = which == "streamed"
    grad_y, x, E = _channels_last_view(grad_y, streamed), _channels_last_view(x, streamed), E.contiguous()
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_dx else x.new_empty(0)
    if not (need_dx or need_dE) or x.numel() == 0:
        dE = torch.zeros_like(E) if need_dE else E.new_empty(0)
        return dx, dE
    with _device_guard(x):
        plan, de = backward_plan(grad_y, x, E, dx, need_dx, need_dE, schedule=which)
        run(plan, config)
    if not need_dE:
        return dx, E.new_empty(0)
    # Resident and plane schedules: dE summed from its chunk partials in a fixed order, in
    # E's dtype, by the plan's last launch. The streamed schedule's fp32 dE is cast here.
    return dx, de if de.dtype == E.dtype else de.to(E.dtype)


# --- ops and autograd ------------------------------------------------------------------


@triton_op("vheat::hco_triton", mutates_args=())
def _hco_triton(x: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    return forward(x, E)


@triton_op("vheat::hco_triton_backward", mutates_args=())
def _hco_triton_backward(
    grad_y: torch.Tensor, x: torch.Tensor, E: torch.Tensor, need_dx: bool, need_dE: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return backward(grad_y, x, E, need_dx, need_dE)


# Autograd to any order (double backward through the same two ops): vheat_kernels/autograd.py.
register_hco_autograd(torch.ops.vheat.hco_triton, torch.ops.vheat.hco_triton_backward)
