"""MAT's training loop on torch.distributed.

One step = one global batch. Per step, in order (official phase order):
  Gmain (every step), Greg (every G_reg_interval steps: empty, path length is disabled officially,
  and an Adam step without gradients changes nothing, so it is skipped), Dmain (every step),
  Dreg (every D_reg_interval steps, loss × interval), then the EMA update of G_ema.
Lazy regularisation rescales each optimiser like the official code: lr·r and betas**r with
r = I/(I+1). Gradients get nan_to_num (nan→0, ±inf→±1e5) before each Adam step.

Distribution: G.mapping, G.synthesis and D are wrapped in DDP separately (as officially:
the loss calls mapping and synthesis on their own), ``broadcast_buffers=False``; backward passes
followed by another one in the same phase skip the all-reduce (``no_sync``). Every rank seeds its
torch/numpy/python RNGs with seed·world + rank (official), so G's buffers that the forward pass
updates (the mapping's w_avg) differ per rank; checkpoints therefore keep every rank's buffers
and RNG states, and ``--resume`` restores them, which makes an interrupted run continue bit for
bit like an uninterrupted one (same world size; with another world size rank 0's are used).

No host synchronisation per step: losses are accumulated as device tensors and read (one
all-reduce) at log intervals only. Evaluation and sample grids run on rank 0 inside
``torch.random.fork_rng`` so they never perturb the training RNG streams.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..data.dataset import ImageFolderMaskDataset, StepSampler
from .losses import PerceptualLoss, TwoStageLoss
from . import metrics as M
from .config import ConfigError, TrainConfig
from .export import export_stem, export_weights
from .preflight import has_tensorboard, preflight
from .samples import COLUMNS, labelled_grid
from .state import CKPT_RE, find_latest_checkpoint, load_training_state, save_training_state

__all__ = ["train", "build_networks", "save_training_state", "load_training_state", "find_latest_checkpoint",
           "enable_grad_checkpointing", "parameter_digest"]

# --------------------------------------------------------------------------------------------- setup
def _init_distributed(cfg: TrainConfig):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device: cuda requested but CUDA is not available (torch.cuda.is_available() is False)")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    owns_pg = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns_pg = True
    return rank, world, device, owns_pg


def build_networks(cfg: TrainConfig):
    """(G, D) from cfg.model: 'mat' (mat_kernels.models) or 'package.module:factory' (factory(cfg))."""
    if cfg.model == "mat":
        from ..models import Discriminator, Generator  # written alongside; imported only when used
        G = Generator(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_channels=3,
                      mapping_kwargs={"num_layers": cfg.mapping_layers})
        d_kwargs = dict(c_dim=0, img_resolution=cfg.resolution, img_channels=3)
        if "mbstd_group_size" in inspect.signature(Discriminator).parameters:
            d_kwargs["mbstd_group_size"] = cfg.mbstd_group
        return G, Discriminator(**d_kwargs)
    if ":" not in cfg.model:
        raise ConfigError(f"--model: expected 'mat' or 'package.module:factory', got {cfg.model!r}")
    mod, _, attr = cfg.model.partition(":")
    return getattr(importlib.import_module(mod), attr)(cfg)


def _checkpointed_forward(orig, *args, **kwargs):
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(orig, *args, use_reentrant=False, **kwargs)
    return orig(*args, **kwargs)


def enable_grad_checkpointing(module: torch.nn.Module, class_names) -> int:
    """Recompute the forward of every submodule whose class name is in class_names during backward.

    Uses non-reentrant torch.utils.checkpoint, which replays the RNG state, so dropout / noise
    draws inside a wrapped block are identical in the recomputation. Returns how many were wrapped.
    """
    n = 0
    for m in module.modules():
        if type(m).__name__ in class_names:
            m.forward = functools.partial(_checkpointed_forward, m.forward)
            n += 1
    if n == 0:
        raise ValueError(f"checkpoint_modules: no submodule of class {list(class_names)} in {type(module).__name__}")
    return n


# --------------------------------------------------------------------------------------------- RNG / checkpoints
def _rng_state(device: torch.device) -> dict:
    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        # numpy's state as plain values so the checkpoint loads with weights_only=True
        "numpy": (st[0], torch.from_numpy(st[1].astype(np.int64)), int(st[2]), int(st[3]), float(st[4])),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _buffers(module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.named_buffers()}


def _load_buffers(module, bufs: Dict[str, torch.Tensor]) -> None:
    own = dict(module.named_buffers())
    for k, v in bufs.items():
        if k in own:
            own[k].copy_(v)


def parameter_digest(*modules) -> str:
    """sha256 of every parameter's bytes, in order: equal digests = bit-identical parameters."""
    h = hashlib.sha256()
    for m in modules:
        for name, p in m.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())  # 0-d safe
    return h.hexdigest()


def _load_network(module: torch.nn.Module, state: Dict[str, torch.Tensor], name: str) -> None:
    """load_state_dict, with a one-line error instead of the list of every mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        first = (shapes or missing or unexpected)[0]
        raise ConfigError(f"--resume: the checkpoint's {name} does not fit the network built from the options "
                          f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} other shapes, "
                          f"e.g. {first!r}); resume with the options it was trained with")
    module.load_state_dict(state)


# --------------------------------------------------------------------------------------------- trainer
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _Trainer:
    def __init__(self, cfg: TrainConfig, rank: int, world: int, device: torch.device,
                 resume_path: Optional[str] = None):
        """``cfg`` as resolved by :func:`preflight` (batch set, amp not 'auto'); ``resume_path``:
        the checkpoint to continue from (``cfg.resume`` with 'latest' resolved)."""
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        if cfg.batch is None or cfg.batch % world != 0:
            raise ConfigError(f"--batch: {cfg.batch} is not divisible by the number of ranks ({world})")
        self.per_rank = cfg.batch // world
        self.is_main = rank == 0
        if self.is_main:
            os.makedirs(cfg.out_dir, exist_ok=True)
        torch.backends.cuda.matmul.allow_tf32 = False   # official: TF32 off for matmul and cuDNN
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        ckpt = load_training_state(resume_path) if resume_path else None
        mods = self._build_networks(ckpt)
        # Optimisers with the lazy-regularisation correction.
        self.opt_G = self._adam(self.G, cfg.G_reg_interval, cfg.lrt)
        self.opt_D = self._adam(self.D, cfg.D_reg_interval, None)
        self.phases = [("Gmain", self.G, self.opt_G, 1), ("Greg", self.G, self.opt_G, cfg.G_reg_interval),
                       ("Dmain", self.D, self.opt_D, 1), ("Dreg", self.D, self.opt_D, cfg.D_reg_interval)]
        self._build_loss(mods)
        self.step = 0
        if ckpt is not None:
            self._restore(ckpt, resume_path)
        else:
            s = cfg.seed * world + rank
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
        self._build_data()
        self._open_logs()

    # ----------------------------------------------------------------------------------------- construction
    def _build_networks(self, ckpt) -> Dict[str, torch.nn.Module]:
        """G, D and G_ema (identical init on every rank; DDP broadcasts rank 0's anyway), and the
        modules the loss calls: mapping, synthesis and D, DDP-wrapped and compiled as configured."""
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        G, D = build_networks(cfg)
        self.G = G.to(device).train().requires_grad_(False)
        self.D = D.to(device).train().requires_grad_(False)
        if ckpt is not None:
            _load_network(self.G, ckpt["G"], "G")
            _load_network(self.D, ckpt["D"], "D")
        mods = {"mapping": self.G.mapping, "synthesis": self.G.synthesis, "D": self.D}
        if self.world > 1:
            for k, m in mods.items():
                m.requires_grad_(True)   # DDP registers the parameters that require grad
                mods[k] = DDP(m, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)
                m.requires_grad_(False)
        # R1 differentiates D's gradient (double backward), which compiled graphs do not support.
        mods["D_reg"] = mods["D"]
        if cfg.compile:
            for k in ("mapping", "synthesis", "D"):
                mods[k] = torch.compile(mods[k])
        self.G_ema = copy.deepcopy(self.G).eval()
        if ckpt is not None:
            _load_network(self.G_ema, ckpt["G_ema"], "G_ema")
        if cfg.grad_checkpoint:
            try:
                n = enable_grad_checkpointing(self.G, cfg.checkpoint_modules)
            except ValueError:
                raise ConfigError(f"--checkpoint-modules: no submodule of class {list(cfg.checkpoint_modules)} "
                                  f"in G (--grad-checkpoint wraps them)") from None
            self._print(f"gradient checkpointing on {n} modules ({', '.join(cfg.checkpoint_modules)})")
        return mods

    def _build_loss(self, mods) -> None:
        """The two-stage loss with autocast as configured; fp16 adds a GradScaler per optimiser
        (bf16 has fp32's exponent range and needs none)."""
        cfg, device = self.cfg, self.device
        pcp = None
        if cfg.pcp_ratio != 0:
            try:
                pcp = PerceptualLoss(vgg_path=cfg.vgg_path).to(device)
            except (KeyError, RuntimeError) as exc:  # a file that is not torchvision's VGG19
                msg = exc.args[0] if exc.args else exc
                raise ConfigError(f"--vgg-path: cannot load the VGG19 weights: {msg}") from None
        amp = cfg.amp != "off"
        autocast = functools.partial(torch.autocast, device_type=device.type, dtype=AMP_DTYPES.get(cfg.amp),
                                     enabled=amp)
        self.scalers = None
        if cfg.amp == "fp16":
            self.scalers = {id(opt): torch.amp.GradScaler(device.type) for opt in (self.opt_G, self.opt_D)}
        self.loss = TwoStageLoss(mods["mapping"], mods["synthesis"], mods["D"], pcp=pcp,
                                 style_mixing_prob=cfg.style_mixing_prob, r1_gamma=cfg.r1_gamma,
                                 truncation_psi=cfg.truncation_psi, pcp_ratio=cfg.pcp_ratio, autocast=autocast,
                                 D_reg=mods["D_reg"])

    def _restore(self, ckpt, resume_path) -> None:
        """Optimisers, step, this rank's buffers and RNG state from a training checkpoint."""
        self.opt_G.load_state_dict(ckpt["opt_G"])
        self.opt_D.load_state_dict(ckpt["opt_D"])
        self.step = int(ckpt["step"])
        ranks = ckpt["ranks"]
        mine = ranks[self.rank] if len(ranks) == self.world else ranks[0]
        if len(ranks) != self.world:
            self._print(f"resume: checkpoint has {len(ranks)} ranks, running {self.world}; every rank takes rank 0's "
                        f"buffers and RNG state (the continuation is not bit-exact)")
        _load_buffers(self.G, mine["G_buffers"])
        _load_buffers(self.G_ema, mine["G_ema_buffers"])
        _set_rng_state(mine["rng"], self.device)
        self._print(f"resumed from {resume_path} at step {self.step}")

    def _build_data(self) -> None:
        """Training loader (every item is a function of (seed, epoch, index); the sampler restarts
        at self.step) and the optional held-out set."""
        cfg = self.cfg
        self.dataset = ImageFolderMaskDataset(cfg.data, cfg.resolution, cfg.hole_range, cfg.mask_variant,
                                              mirror=cfg.mirror, seed=cfg.seed, max_images=cfg.max_images)
        sampler = StepSampler(len(self.dataset), cfg.batch, self.rank, self.world, seed=cfg.seed,
                              start_step=self.step)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.per_rank, sampler=sampler, num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda", drop_last=True, persistent_workers=cfg.workers > 0,
            # A private generator: creating the iterator must not draw from the global torch RNG,
            # or a resumed run would shift every later draw.
            generator=torch.Generator().manual_seed(cfg.seed))
        self.val = None
        if cfg.val_data:
            self.val = ImageFolderMaskDataset(cfg.val_data, cfg.resolution, cfg.hole_range, cfg.mask_variant,
                                              mirror=False, seed=cfg.seed + 1, crop="center", mask_folder=cfg.val_masks)
        # Sample grids: the held-out images, else the first training images (centre crops, fixed masks).
        self.sample_set = self.val
        if self.val is None:
            self.sample_set = ImageFolderMaskDataset(cfg.data, cfg.resolution, cfg.hole_range, cfg.mask_variant,
                                                     mirror=False, seed=cfg.seed + 1, crop="center",
                                                     max_images=cfg.sample_images)

    def _open_logs(self) -> None:
        """stats.jsonl always; TensorBoard events too when cfg.tensorboard (resolved by preflight).
        Says which on rank 0, and where the sample grids come from."""
        self.running: Dict[str, torch.Tensor] = {}
        self.counts: Dict[str, int] = {}
        self.jsonl = open(os.path.join(self.cfg.out_dir, "stats.jsonl"), "a") if self.is_main else None
        self.tb = None
        if not self.is_main:
            return
        where = os.path.join(self.cfg.out_dir, "stats.jsonl")
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(self.cfg.out_dir)
            self._print(f"logging to {where} (JSON lines) and TensorBoard events in {self.cfg.out_dir}")
        else:
            why = "off" if has_tensorboard() else "not installed: pip install tensorboard for event files"
            self._print(f"logging to {where} (JSON lines; TensorBoard {why})")
        source = "--val-data" if self.val is not None else f"the first {len(self.sample_set)} training images"
        self._print(f"sample grids ({' | '.join(COLUMNS)}) from {source} in {os.path.join(self.cfg.out_dir, 'samples')}")

    # ----------------------------------------------------------------------------------------- helpers
    def _print(self, msg: str) -> None:
        if self.is_main:
            try:
                from tqdm import tqdm
                tqdm.write(msg)
            except ImportError:
                print(msg, flush=True)

    def _adam(self, module, interval, lrt):
        cfg = self.cfg
        r = interval / (interval + 1)
        kw = dict(lr=cfg.lr * r, betas=tuple(b ** r for b in cfg.betas), eps=cfg.eps)
        if lrt is None:
            return torch.optim.Adam(module.parameters(), **kw)
        tran = [p for n, p in module.named_parameters() if "tran" in n or "Tran" in n]
        base = [p for n, p in module.named_parameters() if not ("tran" in n or "Tran" in n)]
        return torch.optim.Adam([{"params": base}, {"params": tran, "lr": lrt * r}], **kw)

    def _accumulate(self, stats: Dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float().mean()
            self.running[k] = self.running[k] + v if k in self.running else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def _collect(self) -> Dict[str, float]:
        """Means since the last call, averaged over ranks (the only host sync of a log interval)."""
        keys = sorted(self.running)
        if not keys:
            return {}
        vals = torch.stack([self.running[k] / self.counts[k] for k in keys])
        if self.world > 1:
            dist.all_reduce(vals)
            vals = vals / self.world
        out = dict(zip(keys, vals.tolist()))
        self.running.clear()
        self.counts.clear()
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.step * cfg.batch * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def train_step(self, real_u8: torch.Tensor, mask: torch.Tensor) -> None:
        dev = self.device
        real = real_u8.to(dev, non_blocking=True).to(torch.float32) / 127.5 - 1
        mask = mask.to(dev, non_blocking=True).to(torch.float32)
        c = torch.zeros([real.shape[0], 0], device=dev)
        all_z = torch.randn([len(self.phases), real.shape[0], self.cfg.z_dim], device=dev)  # fresh z per phase
        for (name, module, opt, interval), z in zip(self.phases, all_z):
            if self.step % interval != 0 or name == "Greg":
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            scaler = self.scalers[id(opt)] if self.scalers else None
            stats = self.loss.accumulate_gradients(name, real, mask, c, z, c, gain=interval,
                                                   grad_scale=None if scaler is None else scaler.scale)
            module.requires_grad_(False)
            if scaler is not None:
                scaler.unscale_(opt)  # records overflow, so that scaler.step skips this update
            for p in module.parameters():
                if p.grad is not None:
                    torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            self._accumulate(stats)
        self._update_ema()
        self.step += 1

    # ----------------------------------------------------------------------------------------- eval / samples
    def _batches(self, dataset, n: int):
        n = min(n, len(dataset))
        for start in range(0, n, self.per_rank):
            items = [dataset[i] for i in range(start, min(n, start + self.per_rank))]
            yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])

    def _ema_outputs(self, dataset, n_images: int, seed_offset: int, noise_mode: str):
        """(real_u8, real in [-1, 1], mask, G_ema output) per batch of ``dataset``, under a fixed
        seed that leaves the training RNG streams untouched."""
        dev = self.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + seed_offset)
            for real_u8, mask in self._batches(dataset, n_images):
                real = real_u8.to(dev).float() / 127.5 - 1
                mask = mask.to(dev)
                z = torch.randn([real.shape[0], self.cfg.z_dim], device=dev)
                c = torch.zeros([real.shape[0], 0], device=dev)
                yield real_u8, real, mask, self.G_ema(real, mask, z, c, truncation_psi=1, noise_mode=noise_mode)

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """PSNR/SSIM/L1 of G_ema on the held-out set, on 8-bit outputs like the official metrics."""
        psnr, ssim, l1 = [], [], []
        for real_u8, _, _, out in self._ema_outputs(self.val, self.cfg.eval_images, 1, "random"):
            out = M.to_uint8(out).cpu()
            psnr.append(M.psnr(out, real_u8, data_range=255))
            ssim.append(M.ssim(out, real_u8, data_range=255))
            l1.append(M.l1(out.double() / 255, real_u8.double() / 255))
        return {"val/psnr": torch.cat(psnr).mean().item(), "val/ssim": torch.cat(ssim).mean().item(),
                "val/l1": torch.cat(l1).mean().item()}

    @torch.no_grad()
    def save_samples(self) -> str:
        """PNG grid under a header row naming the columns; one row per image of the sample set
        (--val-data, else the first training images): input (holes white) | G_ema output | ground truth."""
        from PIL import Image
        rows = []
        for real_u8, real, mask, out in self._ema_outputs(self.sample_set, self.cfg.sample_images, 2, "const"):
            masked = real * mask + (1 - mask)  # holes shown white
            rows.append(torch.cat([M.to_uint8(masked), M.to_uint8(out), real_u8.to(out.device)], dim=3).cpu())
        grid = labelled_grid(torch.cat(rows).permute(0, 2, 3, 1).numpy(), COLUMNS)
        os.makedirs(os.path.join(self.cfg.out_dir, "samples"), exist_ok=True)
        path = os.path.join(self.cfg.out_dir, "samples", f"step-{self.step:08d}.png")
        Image.fromarray(grid).save(path)
        return path

    # ----------------------------------------------------------------------------------------- checkpoint
    def checkpoint(self) -> Optional[str]:
        mine = {"rng": _rng_state(self.device), "G_buffers": _buffers(self.G), "G_ema_buffers": _buffers(self.G_ema),
                "param_digest": parameter_digest(self.G, self.D, self.G_ema)}
        if self.world > 1:
            ranks = [None] * self.world if self.is_main else None
            dist.gather_object(mine, ranks, dst=0)
        else:
            ranks = [mine]
        path = None
        if self.is_main:
            digests = {r["param_digest"] for r in ranks}
            if len(digests) != 1:
                self._print(f"WARNING: parameters differ between ranks at step {self.step} (digests {sorted(digests)})")
            state = {"step": self.step, "world_size": self.world, "config": dataclasses.asdict(self.cfg),
                     "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                     "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "ranks": ranks}
            path = os.path.join(self.cfg.out_dir, f"checkpoint-{self.step:08d}.pt")
            save_training_state(path, state)
            if self.cfg.export_weights:
                export_weights(state, export_stem(path))
            self._prune_checkpoints()
        if self.world > 1:
            dist.barrier()  # nobody runs ahead (or exits) before the file is in place
        return path

    def _prune_checkpoints(self) -> None:
        """Keep the newest --keep training checkpoints; an export goes with its checkpoint."""
        old = sorted(f for f in os.listdir(self.cfg.out_dir) if CKPT_RE.match(f))
        for f in old[:-self.cfg.keep_ckpts]:
            path = os.path.join(self.cfg.out_dir, f)
            stem = export_stem(path)
            for ext in (".json", ".safetensors"):
                extra = stem.parent / (stem.name + ext)
                if extra.is_file():
                    extra.unlink()
            os.remove(path)

    def _log(self, timer: "_Timer", extra: Dict[str, float]) -> Dict[str, float]:
        stats = self._collect()   # waits for the interval's device work
        stats.update(extra)
        rec = {"step": self.step, "kimg": self.step * self.cfg.batch / 1000, **timer.record(self.step), **stats}
        if self.is_main:
            self.jsonl.write(json.dumps(rec) + "\n")
            self.jsonl.flush()
            if self.tb is not None:
                for k, v in stats.items():
                    self.tb.add_scalar(k, v, global_step=self.step)
                self.tb.flush()
            fields = [f"step {self.step}/{self.cfg.total_steps}", f"kimg {rec['kimg']:.2f}",
                      f"{rec['sec_per_step']:.3f} s/step"]
            fields += [f"{name} {rec[key]:.1f} s" for name, key in (("eval", "eval_sec"), ("ckpt", "ckpt_sec"))
                       if rec[key] > 0]
            fields += [f"{k} {v:.4g}" for k, v in stats.items()
                       if k in ("G/loss", "G/loss_s1", "G/pcp", "D/loss", "D/loss_s1", "D/r1", "val/psnr", "val/ssim", "val/l1")]
            self._print(" | ".join(fields))
        return rec

    def _progress_bar(self):
        """tqdm bar on rank 0 when stderr is a terminal (in a log file, every redraw would be a line)."""
        if not (self.is_main and self.cfg.progress):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=self.cfg.total_steps, initial=self.step, desc="mat-train", dynamic_ncols=True,
                    disable=None)

    def run(self) -> dict:
        cfg = self.cfg
        end = cfg.stop_at_step if cfg.stop_at_step is not None else cfg.total_steps
        bar = self._progress_bar()
        last_ckpt, last_rec = None, {}
        timer = _Timer(self.device, self.step)
        data = iter(self.loader)
        while self.step < end:
            real_u8, mask = next(data)
            self.train_step(real_u8, mask)
            done = self.step == end
            if bar is not None and done:  # drawn once, complete, before the last log lines
                bar.n = self.step
                bar.close()
                bar = None
            elif bar is not None:
                bar.update(1)
            # Decided identically on every rank: logging all-reduces, so all ranks must take part.
            eval_due = self.val is not None and (done or bool(cfg.eval_every and self.step % cfg.eval_every == 0))
            sample_due = done or bool(cfg.sample_every and self.step % cfg.sample_every == 0)
            extra = {}
            if self.is_main and (eval_due or sample_due):
                with timer.section("eval_sec"):
                    extra = self.evaluate() if eval_due else {}
                    if sample_due:
                        self.save_samples()
            if done or self.step % cfg.log_every == 0 or eval_due:
                last_rec = self._log(timer, extra)
            if done or self.step % cfg.ckpt_every == 0:
                with timer.section("ckpt_sec"):
                    last_ckpt = self.checkpoint()
        if bar is not None:
            bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        return {"step": self.step, "checkpoint": last_ckpt, "stats": last_rec}


class _Timer:
    """Wall time of a log interval, split into training, evaluation (held-out metrics and sample
    grids) and checkpoint writing. On CUDA the device is synchronised around each non-training
    section, so that queued training kernels are not counted as evaluation."""

    def __init__(self, device: torch.device, step: int):
        self.device = device
        self._reset(step)

    def _reset(self, step: int) -> None:
        self.t0, self.n0 = time.time(), step
        self.side = {"eval_sec": 0.0, "ckpt_sec": 0.0}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, key: str):
        self._sync()
        t = time.time()
        try:
            yield
        finally:
            self._sync()
            self.side[key] += time.time() - t

    def record(self, step: int) -> Dict[str, float]:
        """{'sec_per_step' (training only), 'eval_sec', 'ckpt_sec'} since the last record; restarts."""
        train = time.time() - self.t0 - sum(self.side.values())
        rec = {"sec_per_step": train / max(step - self.n0, 1), **self.side}
        self._reset(step)
        return rec


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns {'step', 'checkpoint', 'stats'} (rank 0's)."""
    cfg.validate()
    rank, world, device, owns_pg = _init_distributed(cfg)
    try:
        checked = preflight(cfg, device, world)   # before any network is built
        if rank == 0:
            for note in checked.notes:
                print(f"mat-train: {note}", file=sys.stderr, flush=True)
        return _Trainer(checked.cfg, rank, world, device, checked.resume_path).run()
    finally:
        if owns_pg and dist.is_initialized():
            dist.destroy_process_group()
