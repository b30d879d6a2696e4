"""The ahead-of-time compile table: every configuration the launchers use, per kernel module,
for the compile gate in ``aot.py`` (kept out of the kernel files, which hold kernels and
launchers only).

Each ``*_configs()`` returns a list of dicts::

    {"name": str, "fn": <@triton.jit function>,
     "signature": {arg: "*fp32" | "*fp16" | "*bf16" | "*u8" | "i32" | "fp32" | ...},
     "constexprs": {arg: value}, "mat_shape": bool,
     # optional: "dtype": label for the table, "num_warps": int, "num_stages": int}

``TABLES`` maps each kernel module's name to its function; a kernel module missing from it fails
the gate.
"""
from __future__ import annotations

from typing import List

import torch
import triton

from . import bias_act as ba
from . import mask_update as mu
from . import window_attention as wa


# ----------------------------------------------------------------------------------------------
# window_attention
# ----------------------------------------------------------------------------------------------
_TT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_MAT_SHAPES = ((8, 4), (16, 8))  # (window, shift) of MAT's shifted blocks; shift 0 also used
_OTHER_SHAPES = ((7, 3, 64), (4, 2, 128), (16, 3, 64), (8, 4, 128))  # (window, shift, head_dim), not MAT


def _strides(prefix: str):
    return {f"{prefix}{c}": "i32" for c in "bhwc"}


def window_attention_configs():
    """Every kernel at every configuration the launchers use for MAT's shapes (window 8 and 16,
    head_dim 30 -> BLOCK_D 32, with and without shift and mask, float and bool masks) in
    fp32/fp16/bf16, plus a few non-MAT shapes (``mat_shape=False``).

    Each entry: {"name", "fn", "signature" (arg -> triton type), "constexprs", "mat_shape",
    "num_warps", "num_stages", "dtype"} (launch options as the launchers pass them).
    Strides are typed ``i32`` (what the launcher passes for tensors of < 2**31 elements).
    """
    out = []
    shapes = []
    for ws, s in _MAT_SHAPES:
        for shift in (0, s):
            shapes.append((ws, shift, 30, True))
    for ws, s, hd in _OTHER_SHAPES:
        shapes.append((ws, s, hd, False))
    for dtype, tt in _TT.items():
        for ws, shift, hd, mat in shapes:
            cfg = wa.device_config(ws, hd, dtype)
            launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], dtype=tt)
            geo = {"H": "i32", "W": "i32", "n_wx": "i32", "n_win": "i32", "num_heads": "i32", "shift": "i32"}
            base_c = dict(WS=ws, HEAD_DIM=hd, BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"], OFFS_64=False)
            tag = f"{tt}_ws{ws}_s{shift}_d{hd}"
            # preprocess: no mask / shift dependence (shift is a runtime index offset)
            if shift == 0:
                sig = {"O": f"*{tt}", "DO": f"*{tt}", "DELTA": "*fp32", **_strides("so"), **_strides("sd"), **geo}
                out.append(dict(name=f"bwd_preprocess_{tag}", fn=wa._window_attention_bwd_preprocess_kernel, signature=sig,
                                constexprs=dict(base_c), mat_shape=mat, **launch))
            for mask_tt in (None, "fp32", "u8"):
                mtt = mask_tt or tt
                cst = dict(base_c, BLOCK_N=cfg["BLOCK_N"], HAS_MASK=mask_tt is not None,
                           HAS_SHIFT=shift > 0, DOT_PREC=wa.DOT_PREC, UPCAST=False)
                mtag = f"{tag}_mask{mask_tt or 'none'}"
                strides_qkv = {**_strides("sq"), **_strides("sk"), **_strides("sv")}
                sm = {"smb": "i32", "smh": "i32", "smw": "i32"}
                sig = {"Q": f"*{tt}", "K": f"*{tt}", "V": f"*{tt}", "M": f"*{mtt}", "O": f"*{tt}",
                       "LSE": "*fp32", "NM": f"*{mtt}", **strides_qkv, **sm, **_strides("so"),
                       "snb": "i32", "snh": "i32", "snw": "i32", **geo, "scale": "fp32"}
                out.append(dict(name=f"fwd_{mtag}", fn=wa._window_attention_fwd_kernel, signature=sig, constexprs=cst,
                                mat_shape=mat, **launch))
                bsig = {"Q": f"*{tt}", "K": f"*{tt}", "V": f"*{tt}", "M": f"*{mtt}", "DO": f"*{tt}",
                        "LSE": "*fp32", "DELTA": "*fp32"}
                dkdv = dict(bsig, DK=f"*{tt}", DV=f"*{tt}", **strides_qkv, **sm, **_strides("sd"),
                            **_strides("sg"), **geo, scale="fp32")
                t = wa.kernel_tiles(cfg, "dkdv")
                out.append(dict(name=f"bwd_dkdv_{mtag}", fn=wa._window_attention_bwd_dkdv_kernel, signature=dkdv,
                                constexprs=dict(cst, BLOCK_M=t["BLOCK_M"], BLOCK_N=t["BLOCK_N"]),
                                mat_shape=mat, num_warps=t["num_warps"], num_stages=t["num_stages"], dtype=tt))
                dqs = dict(bsig, DQ=f"*{tt}", **strides_qkv, **sm, **_strides("sd"), **_strides("sg"),
                           **geo, scale="fp32")
                t = wa.kernel_tiles(cfg, "dq")
                out.append(dict(name=f"bwd_dq_{mtag}", fn=wa._window_attention_bwd_dq_kernel, signature=dqs,
                                constexprs=dict(cst, BLOCK_M=t["BLOCK_M"], BLOCK_N=t["BLOCK_N"]),
                                mat_shape=mat, num_warps=t["num_warps"], num_stages=t["num_stages"], dtype=tt))
    return out + _offs64_variants(out, ("fp32_ws8_s4_d30_maskfp32", "bf16_ws16_s8_d30_masku8", "preprocess_fp16_ws8_s0"))


def _offs64_variants(configs: List[dict], tags) -> List[dict]:
    """The 64-bit offset path (images spanning >= 2**31 elements) of the configs whose name
    contains one of ``tags``: it must compile; it is not a MAT shape (no spill requirement)."""
    return [dict(c, name=c["name"] + "_offs64", constexprs=dict(c["constexprs"], OFFS_64=True), mat_shape=False)
            for c in configs if any(t in c["name"] for t in tags)]


# ----------------------------------------------------------------------------------------------
# mask_update
# ----------------------------------------------------------------------------------------------
_AOT_DTYPES = {"bool": "*u8", "fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}


def mask_update_configs() -> List[dict]:
    """Kernel configurations for the compile gate: MAT's windows (8 on the 64 grid, 16 on the
    32/16 grids) and its partial convs (k3, stride 1 and 2), plus the other sizes the tests use."""
    configs = []
    for dname, ptr in _AOT_DTYPES.items():
        for ws in (8, 16, 32):
            configs.append(dict(
                name=f"window_mask_update ws={ws}", fn=mu._window_mask_update_kernel, dtype=dname,
                signature={"m_ptr": ptr, "out_ptr": ptr, "H": "i32", "W": "i32", "n_win_h": "i32",
                           "n_win_w": "i32", "stride_b": "i32", "stride_h": "i32", "stride_w": "i32",
                           "shift": "i32"},
                constexprs={"WS": ws, "BLOCK": triton.next_power_of_2(ws),
                            "WIN_BLOCK": mu.window_block(ws, 64 // ws), "IS_BOOL": dname == "bool",
                            "IS_FP64": False, "OFFS_64": False},
                num_warps=4, mat_shape=ws in (8, 16)))
        out = "*fp32" if dname == "bool" else ptr
        for k, stride in ((3, 1), (3, 2), (5, 1), (7, 1)):
            configs.append(dict(
                name=f"partial_conv_mask_update k={k} s={stride}", fn=mu._partial_conv_mask_update_kernel,
                dtype=dname,
                signature={"m_ptr": ptr, "new_ptr": out, "ratio_ptr": out, "H": "i32", "W": "i32",
                           "H_out": "i32", "W_out": "i32", "stride_b": "i32", "stride_h": "i32",
                           "stride_w": "i32"},
                constexprs={"K": k, "STRIDE": stride, "BLOCK_H": mu.PCONV_BLOCK[0], "BLOCK_W": mu.PCONV_BLOCK[1],
                            "IS_FP64": False, "OFFS_64": False},
                num_warps=mu.PCONV_WARPS, mat_shape=k == 3))
    return configs + _offs64_variants(configs, ("ws=16", "k=3 s=1"))


# ----------------------------------------------------------------------------------------------
# bias_act
# ----------------------------------------------------------------------------------------------
def bias_act_configs() -> List[dict]:
    """MAT's uses: lrelu with gain sqrt(2) with and without a bias and with conv_clamp 256, linear
    with a bias; forward and gradient kernels; fp32/fp16/bf16."""
    configs = []
    cases = [("lrelu", True, -1.0), ("lrelu", True, 256.0), ("lrelu", False, -1.0), ("linear", True, -1.0),
             ("relu", True, -1.0)]
    for dname, ptr in (("fp32", "*fp32"), ("fp16", "*fp16"), ("bf16", "*bf16")):
        for act, has_bias, clamp in cases:
            code, alpha, gain = ba.SUPPORTED_ACTS[act]
            const = dict(HAS_BIAS=has_bias, ACT=code, ALPHA=alpha, GAIN=gain, CLAMP=clamp, IS_FP64=False,
                         OFFS_64=False, BLOCK=ba.BLOCK_SIZE)
            label = f"{act}{' +b' if has_bias else ''}{f' clamp={clamp:g}' if clamp >= 0 else ''}"
            sizes = {"x_ptr": ptr, "b_ptr": ptr, "n": "i32", "C": "i32", "inner": "i32"}
            configs.append(dict(name=f"bias_act fwd {label}", fn=ba._bias_act_fwd_kernel, dtype=dname,
                                signature={**sizes, "y_ptr": ptr}, constexprs=const, num_warps=4,
                                mat_shape=True))
            configs.append(dict(name=f"bias_act grad {label}", fn=ba._bias_act_grad_kernel, dtype=dname,
                                signature={"dy_ptr": ptr, **sizes, "dx_ptr": ptr}, constexprs=const,
                                num_warps=4, mat_shape=True))
    return configs


TABLES = {
    "window_attention": window_attention_configs,
    "mask_update": mask_update_configs,
    "bias_act": bias_act_configs,
}
