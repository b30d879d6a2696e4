"""Stand-in for the official ``networks.basic_module`` (mat-spec.md §2, §3): the two layers MAT's
transformer stage uses, with the official constructor signatures, attribute names, buffers and
forward signatures, computed with plain torch ops (the reference path of bias_act/upfirdn2d)."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_utils import persistence

_DEF_GAIN = {"linear": 1.0, "lrelu": float(np.sqrt(2))}


def bias_act(x, b=None, dim=1, act="linear", gain=None):
    gain = _DEF_GAIN[act] if gain is None else gain
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    return x


def _blur(x, f, pad, gain=1.0):
    C = x.shape[1]
    x = F.pad(x, [pad] * 4)
    return F.conv2d(x, (f * gain)[None, None].repeat(C, 1, 1, 1).to(x.dtype), groups=C)


@persistence.persistent_class
class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.activation = activation
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        y = x.matmul(w.t())
        if self.activation == "linear" and b is not None:
            return y + b
        return bias_act(y, b, dim=x.ndim - 1, act=self.activation)


@persistence.persistent_class
class Conv2dLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=[1, 3, 3, 1], conv_clamp=None, trainable=True):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)
        self.register_buffer("resample_filter", f / f.sum())
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = _DEF_GAIN[activation]
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias is not None:
                self.register_buffer("bias", bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        k = w.shape[-1]
        if self.up == 1 and self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        elif self.up == 1 and self.down == 2 and k == 3:
            x = F.conv2d(_blur(x, self.resample_filter, 2), w, stride=2)
        elif self.up == 2 and self.down == 1 and k == 3:
            x = F.conv_transpose2d(x, w.transpose(0, 1).flip([2, 3]), stride=2)
            x = _blur(x, self.resample_filter, 1, gain=4.0)
        else:
            raise NotImplementedError("the stand-in covers k3 with up/down 2 and stride-1 convs")
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain)
