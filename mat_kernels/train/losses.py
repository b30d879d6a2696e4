"""MAT's training objective and the classic inpainting losses.

GAN part (non-saturating logistic, both discriminator branches):

- generator:      softplus(-D(fake)) + softplus(-D_stg1(fake_stg1)) + pcp_ratio * PCP(fake, real)
- discriminator:  softplus(D(fake)) + softplus(D_stg1(fake_stg1))
                  + softplus(-D(real)) + softplus(-D_stg1(real))   (stage-1 branch also sees reals)
- lazy R1:        gamma/2 * sum_{C,H,W} (d logit / d real)^2 for each branch, each w.r.t. its own
                  copy of the real image.

The perceptual loss is VGG19 conv4_4 (weight 1/4) and conv5_4 (weight 1/2) features taken
*before* the ReLU, on inputs mapped [-1, 1] -> [0, 1] and ImageNet-normalised, compared with L1.
The VGG19 stack is built here in plain ``torch.nn`` with torchvision's parameter names
(``features.0.weight`` ...), so torchvision's ``vgg19-dcbbb3f4.pth`` loads without torchvision.
Weights are never downloaded: see ``find_vgg19_weights``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .weights import find_weight_file

__all__ = [
    "VGG19_FILENAME", "VGG19_LAYER_INDEX", "find_vgg19_weights", "VGG19Features", "load_vgg19_features",
    "PerceptualLoss", "gram_matrix", "style_loss", "reconstruction_loss",
    "generator_logistic_loss", "discriminator_logistic_loss", "r1_penalty", "style_mix_ws", "TwoStageLoss",
]

VGG19_FILENAME = "vgg19-dcbbb3f4.pth"  # torchvision's ImageNet VGG19 file name
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's vgg19 "E" configuration: channels per conv, "M" = 2x2 max pool.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _vgg19_layer_names():
    names, block, conv = [], 1, 1
    for v in _VGG19_CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


# Layer name -> index in ``features`` (conv4_4 -> 25, conv5_4 -> 34, relu5_4 -> 35, pool5 -> 36).
VGG19_LAYER_INDEX = {name: i for i, name in enumerate(_vgg19_layer_names())}


def find_vgg19_weights(path: Optional[Union[str, os.PathLike]] = None, *, arg: str = "vgg_path") -> str:
    """Locate torchvision's VGG19 ImageNet weights on disk; never downloads.

    Order: ``path`` argument, ``$MAT_KERNELS_VGG19``, then torch hub's checkpoint folder
    (``$TORCH_HOME/hub/checkpoints/vgg19-dcbbb3f4.pth``, by default ``~/.cache/torch/...``).
    Raises FileNotFoundError naming the file, the places it was looked for, and ``arg`` (how the
    caller's users pass ``path``: ``--vgg-path`` for mat-train).
    """
    return find_weight_file(path, arg=arg, env="MAT_KERNELS_VGG19", filename=VGG19_FILENAME,
                            what="VGG19 weights for the perceptual loss",
                            source="torchvision's ImageNet VGG19 file")

class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` truncated after ``last_layer``, same parameter names.

    ``forward(x, names)`` returns {name: activation} for the requested layer names, e.g.
    ``conv4_4`` (the conv output, before its ReLU). x: (B, 3, H, W), already normalised.
    """

    def __init__(self, last_layer: str = "conv5_4"):
        super().__init__()
        if last_layer not in VGG19_LAYER_INDEX:
            raise ValueError(f"last_layer: unknown VGG19 layer {last_layer!r}; known: {list(VGG19_LAYER_INDEX)}")
        layers, in_ch = [], 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = v
        self.features = nn.Sequential(*layers[:VGG19_LAYER_INDEX[last_layer] + 1])

    def forward(self, x: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        wanted = {VGG19_LAYER_INDEX[n]: n for n in names}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if len(out) == len(wanted):
                break
        return out


def load_vgg19_features(path: Optional[Union[str, os.PathLike]] = None, last_layer: str = "conv5_4") -> VGG19Features:
    """VGG19Features with torchvision's weights read from a local file (see find_vgg19_weights).

    The file may be a full torchvision state dict (``classifier.*`` keys are ignored) or a
    features-only one; every ``features.*`` tensor up to ``last_layer`` must be present.
    """
    file = find_vgg19_weights(path)
    state = torch.load(file, map_location="cpu", weights_only=True)
    net = VGG19Features(last_layer)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise KeyError(f"vgg_path: {file!r} is not a torchvision VGG19 state dict; missing {missing[:4]}")
    net.load_state_dict({k: state[k] for k in own}, strict=True)
    return net.eval().requires_grad_(False)


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrix F Fᵀ / (C·H·W)."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def _criterion(kind: str):
    if kind == "l1":
        return F.l1_loss
    if kind in ("l2", "mse"):
        return F.mse_loss
    if kind == "fro":
        return lambda a, b: torch.linalg.vector_norm(a - b)
    raise ValueError(f"criterion: expected 'l1', 'l2' or 'fro', got {kind!r}")


class PerceptualLoss(nn.Module):
    """MAT's perceptual loss (official defaults: conv4_4 x 1/4 + conv5_4 x 1/2, L1, pre-ReLU).

    Args:
        layer_weights: {VGG19 layer name: weight}.
        vgg: a VGG19Features to use (tests pass a random one); if None the weights are loaded
            from ``vgg_path`` / $MAT_KERNELS_VGG19 / torch hub's cache (never downloaded).
        use_input_norm: ImageNet mean/std normalisation of [0, 1] inputs.
        norm_img: inputs are in [-1, 1] and are mapped to [0, 1] first.
        criterion: 'l1' (official), 'l2' or 'fro'.

    forward(x, gt) -> scalar: Σ_l w_l · criterion(φ_l(x), φ_l(gt)); gt is detached.
    ``losses(x, gt)`` -> (perceptual, Gram style) from one pass of the VGG.
    """

    def __init__(self, layer_weights: Optional[Mapping[str, float]] = None, vgg: Optional[VGG19Features] = None,
                 vgg_path: Optional[Union[str, os.PathLike]] = None, use_input_norm: bool = True,
                 norm_img: bool = True, criterion: str = "l1"):
        super().__init__()
        self.layer_weights = dict(layer_weights if layer_weights is not None else {"conv4_4": 0.25, "conv5_4": 0.5})
        for name in self.layer_weights:
            if name not in VGG19_LAYER_INDEX:
                raise ValueError(f"layer_weights: unknown VGG19 layer {name!r}")
        last = max(self.layer_weights, key=VGG19_LAYER_INDEX.__getitem__)
        if vgg is None:
            vgg = load_vgg19_features(vgg_path, last_layer=last)
        self.vgg = vgg.eval().requires_grad_(False)
        self.use_input_norm = use_input_norm
        self.norm_img = norm_img
        self.criterion = criterion
        self._crit = _criterion(criterion)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # frozen feature extractor, whatever the caller's mode
        return self

    def features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.norm_img:
            x = (x + 1.0) * 0.5
        if self.use_input_norm:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.vgg(x, list(self.layer_weights))

    def losses(self, x: torch.Tensor, gt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.shape != gt.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x, gt: expected equal (B, 3, H, W) shapes, got {tuple(x.shape)} and {tuple(gt.shape)}")
        fx, fg = self.features(x), self.features(gt.detach())
        pcp = sum(self._crit(fx[k], fg[k]) * w for k, w in self.layer_weights.items())
        sty = sum(self._crit(gram_matrix(fx[k]), gram_matrix(fg[k])) * w for k, w in self.layer_weights.items())
        return pcp, sty

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if x.shape != gt.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x, gt: expected equal (B, 3, H, W) shapes, got {tuple(x.shape)} and {tuple(gt.shape)}")
        fx, fg = self.features(x), self.features(gt.detach())
        return sum(self._crit(fx[k], fg[k]) * w for k, w in self.layer_weights.items())


def style_loss(feats_x: Mapping[str, torch.Tensor], feats_gt: Mapping[str, torch.Tensor],
               weights: Optional[Mapping[str, float]] = None, criterion: str = "l1") -> torch.Tensor:
    """Gram-matrix style loss Σ_l w_l · criterion(G(φ_l(x)), G(φ_l(gt))) over given feature maps."""
    crit = _criterion(criterion)
    weights = weights or {k: 1.0 for k in feats_x}
    return sum(crit(gram_matrix(feats_x[k]), gram_matrix(feats_gt[k].detach())) * w for k, w in weights.items())


def reconstruction_loss(x: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None, kind: str = "l1",
                        hole_weight: float = 1.0, valid_weight: float = 1.0) -> torch.Tensor:
    """Pixel loss, optionally weighted by hole/known region.

    Args:
        x, gt: (B, C, H, W). mask: (B, 1, H, W), 1 = known, 0 = hole (None: unweighted).
        kind: 'l1' or 'l2'/'mse'.
        hole_weight, valid_weight: per-pixel weights ``hole_weight·(1−m) + valid_weight·m``.
    Returns:
        scalar: mean over all B·C·H·W elements of weight · |x − gt| (or squared), i.e. the
        normalisation of the partial-conv paper's L_hole / L_valid terms (by element count, not
        by hole area).
    """
    if x.shape != gt.shape:
        raise ValueError(f"x, gt: shapes differ: {tuple(x.shape)} vs {tuple(gt.shape)}")
    if kind == "l1":
        err = (x - gt).abs()
    elif kind in ("l2", "mse"):
        err = (x - gt).square()
    else:
        raise ValueError(f"kind: expected 'l1' or 'l2', got {kind!r}")
    if mask is None:
        return err.mean()
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]:
        raise ValueError(f"mask: expected (B, 1, H, W) = {(x.shape[0], 1, *x.shape[2:])}, got {tuple(mask.shape)}")
    weight = hole_weight * (1 - mask) + valid_weight * mask
    return (err * weight).mean()


def generator_logistic_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss per sample: softplus(−D(fake)) = −log σ(D(fake))."""
    return F.softplus(-fake_logits)


def discriminator_logistic_loss(real_logits: Optional[torch.Tensor], fake_logits: Optional[torch.Tensor]):
    """Per-sample D loss softplus(D(fake)) + softplus(−D(real)); either term may be None."""
    out = 0
    if fake_logits is not None:
        out = out + F.softplus(fake_logits)
    if real_logits is not None:
        out = out + F.softplus(-real_logits)
    return out


def r1_penalty(logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-sample Σ_{C,H,W} (∂ Σ logits / ∂ real)², differentiable (create_graph) for the D step.

    real must require grad and be an input of the graph of logits. Returns (B,) float32.
    """
    (grad,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True, only_inputs=True)
    return grad.float().square().sum(dim=[1, 2, 3])


def style_mix_ws(mapping, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor, prob: float,
                 truncation_psi: float = 1.0) -> torch.Tensor:
    """MAT's style mixing: draws cutoff, coin, second z in the official order.

    Draw order on the torch RNG: cutoff = int64 ``random_(1, num_ws)``, coin = ``rand([])``,
    z2 = ``randn_like(z)``; the second mapping pass (skip_w_avg_update=True) always runs.
    ws[:, cutoff:] is replaced by the second pass when coin < prob. A mask select is used instead
    of the official ``ws[:, cutoff:] = ...`` so the tensor-valued cutoff causes no host sync; the
    values and gradients are the same.
    """
    if prob <= 0:
        return ws
    num_ws = ws.shape[1]
    cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
    cutoff = torch.where(torch.rand([], device=ws.device) < prob, cutoff, torch.full_like(cutoff, num_ws))
    ws2 = mapping(torch.randn_like(z), c, truncation_psi=truncation_psi, skip_w_avg_update=True)
    keep = (torch.arange(num_ws, device=ws.device) < cutoff).view(1, num_ws, 1)
    return torch.where(keep, ws, ws2)


class TwoStageLoss:
    """MAT's TwoStageLoss: phases 'Gmain', 'Greg' (empty: path length is disabled), 'Dmain', 'Dreg'.

    Args:
        G_mapping, G_synthesis, D: callables with the MAT interfaces (DDP wrappers allowed).
        pcp: PerceptualLoss or None (then pcp_ratio must be 0).
        style_mixing_prob, r1_gamma, truncation_psi, pcp_ratio: as in the official loss.
        autocast: a context-manager factory for the forward passes (e.g. bf16 autocast).
        D_reg: the discriminator for the R1 phase (default D): R1 differentiates D's gradient,
            which a ``torch.compile``d D cannot, so a compiled D comes with its eager module here.

    ``accumulate_gradients(phase, real_img, mask, real_c, gen_z, gen_c, gain, sync=True,
    grad_scale=None)`` runs the phase's forward/backward (gradients accumulate into the parameters
    that require grad; ``grad_scale``, e.g. a GradScaler's ``scale``, is applied to each loss
    before its backward) and returns a dict of detached per-sample statistics (no host sync).
    """

    PHASES = ("Gmain", "Greg", "Dmain", "Dreg")

    def __init__(self, G_mapping, G_synthesis, D, pcp: Optional[PerceptualLoss] = None, style_mixing_prob: float = 0.9,
                 r1_gamma: float = 10.0, truncation_psi: float = 1.0, pcp_ratio: float = 1.0, autocast=None,
                 D_reg=None):
        if pcp is None and pcp_ratio != 0:
            raise ValueError("pcp: a PerceptualLoss is required when pcp_ratio != 0")
        self.G_mapping, self.G_synthesis, self.D = G_mapping, G_synthesis, D
        self.pcp = pcp
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.truncation_psi = truncation_psi
        self.pcp_ratio = pcp_ratio
        self.autocast = autocast or contextlib.nullcontext
        self.D_reg = D if D_reg is None else D_reg

    @staticmethod
    def _sync(module, sync: bool):
        # DDP: skip the gradient all-reduce on backward passes that are followed by another one.
        if not sync and hasattr(module, "no_sync"):
            return module.no_sync()
        return contextlib.nullcontext()

    def run_G(self, img, mask, z, c, sync: bool = True):
        with self._sync(self.G_mapping, sync):
            ws = self.G_mapping(z, c, truncation_psi=self.truncation_psi)
            ws = style_mix_ws(self.G_mapping, ws, z, c, self.style_mixing_prob, self.truncation_psi)
        with self._sync(self.G_synthesis, sync):
            out, out_stg1 = self.G_synthesis(img, mask, ws, return_stg1=True)
        return out, out_stg1

    def run_D(self, img, mask, img_stg1, c, sync: bool = True):
        with self._sync(self.D, sync):
            return self.D(img, mask, img_stg1, c)

    def accumulate_gradients(self, phase, real_img, mask, real_c, gen_z, gen_c, gain: float = 1.0, sync: bool = True,
                             grad_scale=None):
        if phase not in self.PHASES:
            raise ValueError(f"phase: expected one of {self.PHASES}, got {phase!r}")
        scaled = grad_scale or (lambda loss: loss)
        stats = {}
        if phase == "Gmain":
            with self.autocast():
                fake, fake_stg1 = self.run_G(real_img, mask, gen_z, gen_c, sync=sync)
                logits, logits_stg1 = self.run_D(fake, mask, fake_stg1, gen_c, sync=False)
                loss_adv = generator_logistic_loss(logits.float())
                loss_adv_stg1 = generator_logistic_loss(logits_stg1.float())
                total = loss_adv + loss_adv_stg1
                if self.pcp_ratio != 0:
                    pcp = self.pcp(fake, real_img).float()
                    total = total + pcp * self.pcp_ratio
                    stats["G/pcp"] = pcp.detach()
            scaled(total.mean().mul(gain)).backward()
            stats.update({"G/loss": loss_adv.detach(), "G/loss_s1": loss_adv_stg1.detach(),
                          "G/l1": (fake.detach().float() - real_img).abs().mean(),
                          "scores/fake": logits.detach().float(), "scores/fake_s1": logits_stg1.detach().float()})
        elif phase == "Greg":
            pass  # path-length regularisation is commented out in the official loss
        elif phase == "Dmain":
            with self.autocast():
                with torch.no_grad():  # G is not trained in this phase (its params do not need grad)
                    fake, fake_stg1 = self.run_G(real_img, mask, gen_z, gen_c, sync=False)
                logits, logits_stg1 = self.run_D(fake.detach(), mask, fake_stg1.detach(), gen_c, sync=False)
                loss_gen = discriminator_logistic_loss(None, logits.float()) + \
                    discriminator_logistic_loss(None, logits_stg1.float())
            with self._sync(self.D, False):
                scaled(loss_gen.mean().mul(gain)).backward()
            with self.autocast():
                real_logits, real_logits_stg1 = self.run_D(real_img.detach(), mask.detach(), real_img.detach(),
                                                           real_c, sync=sync)
                loss_real = discriminator_logistic_loss(real_logits.float(), None) + \
                    discriminator_logistic_loss(real_logits_stg1.float(), None)
            scaled(loss_real.mean().mul(gain)).backward()
            stats.update({"D/loss": (F.softplus(logits.detach().float()) + F.softplus(-real_logits.detach().float())),
                          "D/loss_s1": (F.softplus(logits_stg1.detach().float())
                                        + F.softplus(-real_logits_stg1.detach().float())),
                          "scores/real": real_logits.detach().float(),
                          "scores/real_s1": real_logits_stg1.detach().float()})
        elif phase == "Dreg":
            if self.r1_gamma == 0:
                return stats
            real = real_img.detach().requires_grad_(True)
            real_stg1 = real_img.detach().requires_grad_(True)  # the stage-1 branch's own copy
            with self.autocast():
                with self._sync(self.D_reg, sync):
                    real_logits, real_logits_stg1 = self.D_reg(real, mask.detach(), real_stg1, real_c)
            r1 = r1_penalty(real_logits, real)
            r1_stg1 = r1_penalty(real_logits_stg1, real_stg1)
            reg = (r1 + r1_stg1) * (self.r1_gamma / 2)
            # The zero term keeps every D output in the graph (all parameters get a gradient).
            scaled(((real_logits.float() + real_logits_stg1.float()).flatten() * 0 + reg).mean().mul(gain)).backward()
            stats.update({"D/r1": r1.detach(), "D/r1_s1": r1_stg1.detach()})
        return stats
