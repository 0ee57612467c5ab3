"""Maximum-intensity-projection previews: the image, and the labels over it."""

from __future__ import annotations

import numpy as np

#: RGB per channel of the image (vessel magenta-ish red, neuron green, then blue...).
CHANNEL_COLOURS = np.array([[1.0, 0.2, 0.6], [0.2, 1.0, 0.3], [0.3, 0.5, 1.0]], np.float32)
#: RGB per class of the labels (background unused).
CLASS_COLOURS = np.array([[0, 0, 0], [1.0, 0.15, 0.15], [0.15, 1.0, 0.15], [0.2, 0.4, 1.0]], np.float32)


def mip_rgb(image: np.ndarray) -> np.ndarray:
    """Composite MIP over z of ``image`` (C, Z, Y, X) as (Y, X, 3) float in [0, 1]."""
    mip = image.max(axis=1).astype(np.float32)
    rgb = np.zeros((*mip.shape[1:], 3), np.float32)
    for c, plane in enumerate(mip):
        lo, hi = np.percentile(plane, [1, 99.8])
        scaled = np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb += scaled[..., None] * CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)]
    return np.clip(rgb, 0, 1)


def label_mip_rgb(labels: np.ndarray, background: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Labels (Z, Y, X) projected over z (highest class wins), tinted over ``background`` (Y, X, 3)."""
    projected = labels.max(axis=0)
    grey = background.mean(axis=2, keepdims=True).repeat(3, axis=2)
    tint = CLASS_COLOURS[np.minimum(projected, len(CLASS_COLOURS) - 1)]
    on = (projected > 0)[..., None]
    return np.where(on, (1 - alpha) * grey + alpha * tint, grey)


def overlay_panels(image: np.ndarray, *label_volumes: np.ndarray) -> np.ndarray:
    """Side by side: the image's MIP, then each label volume's MIP over it; (Y, X * n, 3) uint8."""
    base = mip_rgb(image)
    panels = [base] + [label_mip_rgb(labels, base) for labels in label_volumes]
    gap = np.ones((base.shape[0], 4, 3), np.float32)
    joined = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    return (joined * 255).round().astype(np.uint8)
