"""Stand-in for the official ``networks.mat`` (mat-spec.md §1.3-§1.8): the transformer-stage
classes with the official names, constructor signatures, attribute names, buffers, children and
forward signatures, computed step by step as the spec describes. ``TinyStage`` is not an official
class: a small first stage (partial conv, two BasicLayers, the second behind a PatchMerging) for
the tests, decorated like every class of the official module."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.basic_module import Conv2dLayer, FullyConnectedLayer
from torch_utils import persistence


@persistence.persistent_class
class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = FullyConnectedLayer(in_features=in_features, out_features=hidden_features, activation="lrelu")
        self.fc2 = FullyConnectedLayer(in_features=hidden_features, out_features=out_features)

    def forward(self, x):
        return self.fc2(self.fc1(x))


def window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, C)


def window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, -1)


def token2feature(x, x_size):
    B, N, C = x.shape
    h, w = x_size
    return x.permute(0, 2, 1).reshape(B, C, h, w)


def feature2token(x):
    B, C, H, W = x.shape
    return x.view(B, C, -1).transpose(1, 2)


@persistence.persistent_class
class Conv2dLayerPartial(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=[1, 3, 3, 1], conv_clamp=None, trainable=True):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, bias, activation, up, down,
                                resample_filter, conv_clamp, trainable)
        self.weight_maskUpdater = torch.ones(1, 1, kernel_size, kernel_size)
        self.slide_winsize = kernel_size ** 2
        self.stride = down
        self.padding = kernel_size // 2 if kernel_size % 2 == 1 else 0

    def forward(self, x, mask=None):
        if mask is None:
            return self.conv(x), None
        with torch.no_grad():
            count = F.conv2d(mask, self.weight_maskUpdater.to(mask), stride=self.stride, padding=self.padding)
            new_mask = torch.clamp(count, 0, 1)
            ratio = self.slide_winsize / (count + 1e-8) * new_mask
        return self.conv(x) * ratio, new_mask


@persistence.persistent_class
class WindowAttention(nn.Module):
    def __init__(self, dim, window_size, num_heads, down_ratio=1, qkv_bias=True, qk_scale=None, attn_drop=0.,
                 proj_drop=0.):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.k = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.v = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.proj = FullyConnectedLayer(in_features=dim, out_features=dim)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask_windows=None, mask=None):
        B_, N, C = x.shape
        h = self.num_heads
        xn = F.normalize(x, p=2.0, dim=-1)
        q = self.q(xn).reshape(B_, N, h, C // h).permute(0, 2, 1, 3)
        k = self.k(xn).reshape(B_, N, h, C // h).permute(0, 2, 3, 1)
        v = self.v(x).reshape(B_, N, h, C // h).permute(0, 2, 1, 3)
        attn = (q @ k) * self.scale
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, h, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, h, N, N)
        if mask_windows is not None:
            m = mask_windows.squeeze(-1).unsqueeze(1).unsqueeze(1)
            attn = attn + m.masked_fill(m == 0, -100.0).masked_fill(m == 1, 0.0)
            with torch.no_grad():
                mask_windows = torch.clamp(mask_windows.sum(dim=1, keepdim=True), 0, 1).repeat(1, N, 1)
        attn = self.softmax(attn)
        out = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(out), mask_windows


@persistence.persistent_class
class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, down_ratio=1, window_size=7, shift_size=0, mlp_ratio=4.,
                 qkv_bias=True, qk_scale=None, drop=0., attn_drop=0., drop_path=0., act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        assert 0 <= self.shift_size < self.window_size
        self.attn = WindowAttention(dim, window_size=(self.window_size, self.window_size), num_heads=num_heads,
                                    down_ratio=down_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.fuse = FullyConnectedLayer(in_features=dim * 2, out_features=dim, activation="lrelu")
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        attn_mask = self.calculate_mask(self.input_resolution) if self.shift_size > 0 else None
        self.register_buffer("attn_mask", attn_mask)

    def calculate_mask(self, x_size):
        H, W = x_size
        ws, s = self.window_size, self.shift_size
        ids = torch.zeros((1, H, W, 1))
        bounds = ((0, H - ws, H - s, H), (0, W - ws, W - s, W))
        for r in range(3):
            for c in range(3):
                ids[:, bounds[0][r]:bounds[0][r + 1], bounds[1][c]:bounds[1][c + 1], :] = 3 * r + c
        ids = window_partition(ids, ws).view(-1, ws * ws)
        diff = ids.unsqueeze(1) - ids.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x, x_size, mask=None):
        H, W = x_size
        B, L, C = x.shape
        assert L == H * W
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = x.view(B, H, W, C)
        if mask is not None:
            mask = mask.view(B, H, W, 1)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(-s, -s), dims=(1, 2))
        x_windows = window_partition(x, ws).view(-1, ws * ws, C)
        mask_windows = None if mask is None else window_partition(mask, ws).view(-1, ws * ws, 1)
        # The official code recomputes the shift mask from x_size on every call; all zeros for s = 0.
        attn_windows, mask_windows = self.attn(x_windows, mask_windows, mask=self.calculate_mask(x_size).to(x.device))
        x = window_reverse(attn_windows.view(-1, ws, ws, C), ws, H, W)
        if mask is not None:
            mask = window_reverse(mask_windows.view(-1, ws, ws, 1), ws, H, W)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
            if mask is not None:
                mask = torch.roll(mask, shifts=(s, s), dims=(1, 2))
        x = x.reshape(B, H * W, C)
        if mask is not None:
            mask = mask.reshape(B, H * W, 1)
        x = self.fuse(torch.cat([shortcut, x], dim=-1))
        return self.mlp(x), mask


@persistence.persistent_class
class PatchMerging(nn.Module):
    def __init__(self, in_channels, out_channels, down=2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                                       activation="lrelu", down=down)
        self.down = down

    def forward(self, x, x_size, mask=None):
        x = token2feature(x, x_size)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(x, mask)
        if self.down != 1:
            x_size = (int(x_size[0] / self.down), int(x_size[1] / self.down))
        x = feature2token(x)
        if mask is not None:
            mask = feature2token(mask)
        return x, x_size, mask


@persistence.persistent_class
class BasicLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, down_ratio=1, mlp_ratio=2.,
                 qkv_bias=True, qk_scale=None, drop=0., attn_drop=0., drop_path=0., norm_layer=nn.LayerNorm,
                 downsample=None, use_checkpoint=False):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.downsample = downsample
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim=dim, input_resolution=input_resolution, num_heads=num_heads,
                                 down_ratio=down_ratio, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                 norm_layer=norm_layer)
            for i in range(depth)])
        self.conv = Conv2dLayerPartial(in_channels=dim, out_channels=dim, kernel_size=3, activation="lrelu")

    def forward(self, x, x_size, mask=None):
        if self.downsample is not None:
            x, x_size, mask = self.downsample(x, x_size, mask)
        identity = x
        for blk in self.blocks:
            x, mask = blk(x, x_size, mask)
        if mask is not None:
            mask = token2feature(mask, x_size)
        x, mask = self.conv(token2feature(x, x_size), mask)
        x = feature2token(x) + identity
        if mask is not None:
            mask = feature2token(mask)
        return x, x_size, mask


@persistence.persistent_class
class TinyStage(nn.Module):
    def __init__(self, img_channels=3, dim=16, res=8, num_heads=2, window_size=4):
        super().__init__()
        self.conv_first = Conv2dLayerPartial(img_channels + 1, dim, 3, activation="lrelu")
        self.tran = nn.ModuleList([
            BasicLayer(dim, [res, res], depth=2, num_heads=num_heads, window_size=window_size),
            BasicLayer(dim, [res // 2, res // 2], depth=2, num_heads=num_heads, window_size=window_size,
                       downsample=PatchMerging(dim, dim, down=2)),
        ])
        self.to_rgb = FullyConnectedLayer(dim, img_channels)

    def forward(self, images_in, masks_in):
        x = torch.cat([masks_in - 0.5, images_in * masks_in], dim=1)
        x, mask = self.conv_first(x, masks_in)
        x_size = x.shape[-2:]  # a torch.Size, as the official FirstStage passes it
        x, mask = feature2token(x), feature2token(mask)
        for layer in self.tran:
            x, x_size, mask = layer(x, x_size, mask)
        return self.to_rgb(x), mask
