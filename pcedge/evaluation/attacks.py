"""Adaptive adversarial-patch attacks, to test the defense like an attacker would (needs torch).

All attacks work on the *model input* (after resize and crop, RGB in [0, 1]), where the certificate
holds, against the PyTorch model the ONNX file came from. The patch content is optimized with signed
gradient steps; the location by random restarts over a grid of positions, all positions of an image
optimized together in one batch. Three objectives:

- ``undefended``: change the plain model's label (what a printed patch does to an unprotected camera);
- ``masked``: make the one-mask predictions wrong (maximize disagreement with the true label, so that
  the majority flips or a wrong disagreer appears);
- ``second-round``: for a mask that does not cover the patch, make all its two-mask images agree on a
  wrong label, i.e. try to make a wrong disagreer survive the second round.

The result is quantized to uint8 so it can be replayed through the real runtime as a camera frame.
Double masking's theorem says no attack can change the label of a certified image; the tests and
``benchmarks/attack_report.py`` check that on every image, objective and location tried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..masks import MaskSet
from ..preprocess import PreprocessSpec
from ..util.optional import require

OBJECTIVES = ("undefended", "masked", "second-round")


@dataclass
class PatchAttack:
    """One attacked image: ``image`` is HxWx3 RGB uint8 (the model input with the patch in it)."""

    image: np.ndarray
    position: tuple[int, int]  # (y, x) of the patch's top-left corner
    objective: str
    undefended_label: int  # the plain model's label on the attacked image (PyTorch)


def _normalizer(spec: PreprocessSpec, torch: Any) -> tuple[Any, Any]:
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def grid_positions(image_size: tuple[int, int], patch: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """Top-left corners on a grid, always including the last row/column flush with the border."""
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    ys = sorted(set(range(0, image_size[0] - patch[0] + 1, stride)) | {image_size[0] - patch[0]})
    xs = sorted(set(range(0, image_size[1] - patch[1] + 1, stride)) | {image_size[1] - patch[1]})
    return [(y, x) for y in ys for x in xs]


def attack_image(model: Any, image: np.ndarray, label: int, spec: PreprocessSpec, patch: tuple[int, int], *,
                 objective: str = "undefended", mask_set: MaskSet | None = None, positions: list[tuple[int, int]] | None = None,
                 steps: int = 40, step_size: float = 0.05, seed: int = 0, top: int = 4) -> PatchAttack:
    """The strongest patch found on ``image`` (HxWx3 RGB uint8 model input) against ``label``.

    All ``positions`` (default: a grid with stride = the patch side) start from random content and get
    ``steps // 4`` steps together; the ``top`` most damaging then get the remaining steps.
    """
    torch = require("torch", "patch attacks")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective != "undefended" and mask_set is None:
        raise ConfigError(f"the {objective!r} objective needs the mask set")
    h, w = image.shape[:2]
    ph, pw = patch
    if ph > h or pw > w:
        raise ConfigError(f"a {ph}x{pw} patch does not fit a {h}x{w} image")
    positions = positions or grid_positions((h, w), patch, max(1, min(ph, pw)))
    mean, std = _normalizer(spec, torch)
    generator = torch.Generator().manual_seed(seed)
    base = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    one_mask_keep = None if mask_set is None else torch.from_numpy(mask_set.keep_masks()[:, None].astype(np.float32))  # (K, 1, H, W)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def losses(content: Any, where: list[tuple[int, int]]) -> Any:
        """Per-position attack loss (higher = better for the attacker)."""
        x = base.repeat(len(where), 1, 1, 1)
        placed = torch.zeros_like(x)
        region = torch.zeros((len(where), 1, h, w))
        for n, (y, xx) in enumerate(where):
            placed[n, :, y : y + ph, xx : xx + pw] = content[n]
            region[n, :, y : y + ph, xx : xx + pw] = 1
        x = x * (1 - region) + placed
        x = (x - mean) / std
        target = torch.full((len(where),), label, dtype=torch.long)
        if objective == "undefended":
            return torch.nn.functional.cross_entropy(model(x), target, reduction="none")
        pairs = torch.from_numpy(_objective_pairs(mask_set, objective, where, patch).reshape(-1, 2))
        keep = (one_mask_keep[pairs[:, 0]] * one_mask_keep[pairs[:, 1]]).view(len(where), -1, 1, h, w)
        masked = (x.unsqueeze(1) * keep).flatten(0, 1)
        ce = torch.nn.functional.cross_entropy(model(masked), target.repeat_interleave(keep.shape[1]), reduction="none")
        return ce.view(len(where), -1).mean(1)

    def optimize(content: Any, where: list[tuple[int, int]], count: int) -> Any:
        for _ in range(count):
            content.requires_grad_(True)
            loss = losses(content, where).sum()
            (grad,) = torch.autograd.grad(loss, content)
            content = (content.detach() + step_size * grad.sign()).clamp(0, 1)
        return content.detach()

    content = torch.rand((len(positions), 3, ph, pw), generator=generator)
    content = optimize(content, positions, max(1, steps // 4))
    with torch.no_grad():
        ranking = torch.argsort(losses(content, positions), descending=True)[:top].tolist()
    best_positions = [positions[i] for i in ranking]
    content = optimize(content[ranking], best_positions, steps - max(1, steps // 4))
    content = (content * 255).round() / 255  # what a uint8 frame can carry
    with torch.no_grad():
        final = losses(content, best_positions)
    winner = int(torch.argmax(final))
    y, x = best_positions[winner]
    attacked = image.copy()
    attacked[y : y + ph, x : x + pw] = (content[winner].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        t = torch.from_numpy(attacked.astype(np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
        plain = int(model((t - mean) / std).argmax(1))
    return PatchAttack(attacked, (y, x), objective, plain)


def _objective_pairs(mask_set: MaskSet, objective: str, where: list[tuple[int, int]], patch: tuple[int, int]) -> np.ndarray:
    """Per position, the (i, j) images an objective attacks, shape (P, K, 2).

    masked: the K one-mask images (i, i). second-round: the two-mask images (i, j), all j, of the first
    mask i that does not cover the patch (the candidate wrong disagreer).
    """
    k = len(mask_set)
    out = []
    for y, x in where:
        if objective == "masked":
            out.append(np.stack([np.arange(k), np.arange(k)], axis=1))
            continue
        covering = set(mask_set.covering_masks([(y, x, patch[0], patch[1])]).tolist())
        i = next((m for m in range(k) if m not in covering), 0)
        out.append(np.stack([np.full(k, i), np.arange(k)], axis=1))
    return np.stack(out)


def frame_patch(model: Any, views: list[tuple[np.ndarray, int, int]], side: int, spec: PreprocessSpec, labels: list[int], *,
                steps: int = 150, step_size: float = 0.02, seed: int = 0, on_step: Any = None) -> np.ndarray:
    """One patch that moves the plain model away from ``labels`` on every camera view: a printed patch.

    ``views`` are (BGR frame, y, x): the patch's top-left corner in each frame. The frames go through
    the model's own preprocessing written in torch (bilinear resize without antialiasing, as the
    runtime's writer does, centre crop, normalization), so the patch is optimized where the camera
    sees it. Loss: log-probability mass of ``labels`` minus that of every other class (untargeted),
    signed-gradient steps, the step halved for the last third. Returns the side x side BGR patch.
    ``on_step()`` is called after every step (progress).
    """
    torch = require("torch", "patch attacks")
    if not views or side < 1:
        raise ConfigError("frame_patch needs at least one view and a positive side")
    fh, fw = views[0][0].shape[:2]
    geo = spec.geometry(fh, fw)
    h, w = spec.input_size
    mean, std = _normalizer(spec, torch)
    frames = torch.stack([torch.from_numpy(f[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1) for f, _, _ in views])
    region = torch.zeros((len(views), 1, fh, fw))
    for n, (_, y, x) in enumerate(views):
        if not (0 <= y <= fh - side and 0 <= x <= fw - side):
            raise ConfigError(f"view {n}: a {side} px patch at ({y}, {x}) does not fit the {fh}x{fw} frame")
        region[n, :, y : y + side, x : x + side] = 1
    avoid = torch.zeros(model(torch.zeros(1, 3, h, w)).shape[1], dtype=torch.bool)
    avoid[labels] = True
    for p in model.parameters():
        p.requires_grad_(False)

    def logits(patch: Any) -> Any:
        placed = torch.zeros_like(frames)
        for n, (_, y, x) in enumerate(views):
            placed[n, :, y : y + side, x : x + side] = patch
        x = frames * (1 - region) + placed
        x = torch.nn.functional.interpolate(x, size=(geo.resized_h, geo.resized_w), mode="bilinear", align_corners=False, antialias=False)
        return model((x[:, :, geo.top : geo.top + h, geo.left : geo.left + w] - mean) / std)

    patch = torch.rand((3, side, side), generator=torch.Generator().manual_seed(seed))
    for step in range(steps):
        patch.requires_grad_(True)
        out = logits(patch)
        loss = (torch.logsumexp(out[:, avoid], 1) - torch.logsumexp(out[:, ~avoid], 1)).mean()
        (grad,) = torch.autograd.grad(loss, patch)
        size = step_size if step < 2 * steps // 3 else step_size / 2
        patch = (patch.detach() - size * grad.sign()).clamp(0, 1)
        if on_step is not None:
            on_step()
    return (patch.permute(1, 2, 0).numpy()[:, :, ::-1] * 255).round().astype(np.uint8)
