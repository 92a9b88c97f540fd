"""Tiny real classifiers for tests: a CNN with BatchNorm, one without, a residual net and a ViT-style attention model.

Each takes [N, 3, 32, 32] and returns [N, 10]. They are randomly initialised but deterministic
(fixed seed) and small enough to export and run on two CPU cores in a second.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class PlainCNN(nn.Module):
    """No BatchNorm, fixed initial weights: under torchrun (CPU, gloo) its training is one process's up to float rounding
    (DDP averages gradients; BatchNorm would normalise each process's share of a batch apart)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1))
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.block(x))
        return self.head(x.mean(dim=(2, 3)))


class TinyViT(nn.Module):
    """Patch embedding + one multi-head self-attention block written out as timm's ViT does.

    (nn.MultiheadAttention's fused eval path has no TorchScript-exporter symbolic; timm's models use
    explicit qkv projections like this one.)
    """

    def __init__(self, patch: int = 8, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (32 // patch) ** 2, dim) * 0.02)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        b, n, d = tokens.shape
        q, k, v = self.qkv(tokens).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        tokens = tokens + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return self.head(self.norm(tokens).mean(1))


class RegionClassifier(nn.Module):
    """Class k = the brightest of the 16 regions of a 4 x 4 grid (8 x 8 pixels each, at 32 x 32).

    Its answer depends on where content is, so masks change it: the tests need models whose one-mask
    predictions really disagree, which randomly initialised CNNs (constant outputs) do not provide.
    """

    def forward(self, x):
        return 8.0 * torch.flatten(nn.functional.avg_pool2d(x.sum(dim=1, keepdim=True), 8), 1)


class FixedBatchNet(nn.Module):
    """Hard-codes its batch size (x.view(2, -1)): export must refuse it with a clear message."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.reshape(2, -1))


class NotAClassifier(nn.Module):
    def forward(self, x):
        return x * 2


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return {"cnn": SmallCNN, "resnet": TinyResNet, "vit": TinyViT, "region": RegionClassifier}[name]().eval()


def export_test_model(arch: str, path, image_size: int = 32, exporter: str = "torchscript"):
    """Export one of these models the way users do (pcedge metadata, class names c0..cN)."""
    from pcedge.export import export_onnx

    model = build(arch)
    classes = model(torch.zeros(1, 3, image_size, image_size)).shape[1]
    export_onnx(model, path, image_size=image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0,
                labels=[f"c{i}" for i in range(classes)], exporter=exporter, source_name=arch)
    return path
