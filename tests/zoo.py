"""The architectures people ship to the edge, as small definitions for the zoo test (tests/test_zoo.py): real
architecture code from geffnet (MobileNetV3, MNASNet, EfficientNet: depthwise convolutions, squeeze-and-excite,
hard-swish / SiLU) and our own small nets for what no package here provides: a ResNet-18-style net, a
ShuffleNet-style grouped net with channel shuffle, a ConvNeXt-style net (depthwise 7x7, LayerNorm) and a small
vision transformer. Every factory has the pipeline's signature: factory(input_shape, num_classes) -> nn.Module."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# -- geffnet (pure PyTorch; installed with --no-deps) -----------------------------------------------------------
def _geffnet(name: str, input_shape, num_classes: int) -> nn.Module:
    import geffnet

    return geffnet.create_model(name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0])


def mobilenetv3(input_shape, num_classes):
    return _geffnet("mobilenetv3_large_100", input_shape, num_classes)


def mnasnet(input_shape, num_classes):
    return _geffnet("mnasnet_100", input_shape, num_classes)


def efficientnet_b0(input_shape, num_classes):
    return _geffnet("efficientnet_b0", input_shape, num_classes)


# -- ResNet-18-style: basic blocks, strided downsampling with 1x1 projections -----------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


def resnet18_style(input_shape, num_classes, widths=(16, 32, 64, 128)):
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                               nn.ReLU()]
    cin = widths[0]
    for i, w in enumerate(widths):
        layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
        cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


# -- ShuffleNet-style: grouped 1x1 convolutions, channel shuffle, depthwise 3x3 ---------------------------------
class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=groups, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU())
        self.shuffle = ChannelShuffle(groups)
        self.depthwise = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                       nn.BatchNorm2d(channels))
        self.expand = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=groups, bias=False),
                                    nn.BatchNorm2d(channels))

    def forward(self, x):
        return F.relu(x + self.expand(self.depthwise(self.shuffle(self.reduce(x)))))


def shufflenet_style(input_shape, num_classes, width=32, groups=4):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        ShuffleUnit(width, groups), nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
        nn.ReLU(), ShuffleUnit(2 * width, groups), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, num_classes))


# -- ConvNeXt-style: depthwise 7x7, LayerNorm over channels, inverted bottleneck MLP ----------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's, timm's)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pw1 = nn.Conv2d(dim, 4 * dim, 1)
        self.pw2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return x + self.pw2(F.gelu(self.pw1(self.norm(self.dwconv(x)))))


def convnext_style(input_shape, num_classes, dims=(24, 48)):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], dims[0], 4, 4), LayerNorm2d(dims[0]), ConvNeXtBlock(dims[0]),
        LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2), ConvNeXtBlock(dims[1]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dims[1]), nn.Linear(dims[1], num_classes))


# -- a small vision transformer: patch embedding, pre-norm attention blocks, class token ------------------------
class Attention(nn.Module):
    """timm's layout: one qkv Linear, `num_heads` and `head_dim` attributes (torch-pruning prunes whole heads)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class ViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    def __init__(self, input_shape, num_classes: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 patch: int = 8) -> None:
        super().__init__()
        c, h, w = input_shape
        self.patch_embed = nn.Conv2d(c, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (h // patch) * (w // patch), dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def small_vit(input_shape, num_classes):
    return SmallViT(input_shape, num_classes)


ZOO = {
    "mobilenetv3": mobilenetv3, "mnasnet": mnasnet, "efficientnet_b0": efficientnet_b0,
    "resnet18_style": resnet18_style, "shufflenet_style": shufflenet_style, "convnext_style": convnext_style,
    "small_vit": small_vit,
}
