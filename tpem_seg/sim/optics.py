"""The point-spread function, applied analytically: each object's blurred profile sampled at voxel centres."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from tpem_seg.sim.geometry import Soma, Tube

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
# Blends the PSF width across the normal into the mean cross-sectional width on the
# centreline, where the normal is undefined (µm).
_NORMAL_BLEND_UM = 0.25


def slab_profile(d: np.ndarray, r: np.ndarray, inv_s: np.ndarray) -> np.ndarray:
    """Gaussian-blurred indicator of ``|d| <= r`` at distance ``d`` from the centre.

    ``inv_s = 1 / (sqrt(2) * sigma)``. Thin objects (r ~ sigma) come out dimmer, as they
    do through a real PSF.
    """
    return 0.5 * (special.erf((r - d) * inv_s) + special.erf((r + d) * inv_s))


class Canvas:
    """One channel's blurred signal, occupancy and label mask on the voxel grid."""

    def __init__(self, shape: tuple[int, int, int], spacing: np.ndarray, top_um: float, sigma_um: np.ndarray):
        self.shape = shape
        self.spacing = spacing
        self.origin = np.array([top_um, 0.0, 0.0])
        sigma = np.maximum(sigma_um, 1e-3)  # a zero PSF is a hard edge, not a division by zero
        self.sig2 = (sigma**2).astype(np.float32)
        self.pad = 3.0 * float(sigma.max())
        self.signal = np.zeros(shape, np.float32)  # brightness-weighted
        self.occupancy = np.zeros(shape, np.float32)  # 0..1, what the object displaces
        self.mask = np.zeros(shape, bool)

    def _box(self, lo: np.ndarray, hi: np.ndarray):
        i0 = np.maximum(np.ceil((lo - self.origin) / self.spacing - 0.5), 0).astype(int)
        i1 = np.minimum(np.floor((hi - self.origin) / self.spacing - 0.5) + 1, self.shape).astype(int)
        if np.any(i1 <= i0):
            return None
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        coords = [(self.origin[a] + (np.arange(i0[a], i1[a]) + 0.5) * self.spacing[a]).astype(np.float32)
                  for a in range(3)]
        return sl, coords

    def _put(self, sl, signal: np.ndarray, occupancy: np.ndarray, inside: np.ndarray) -> None:
        view = self.signal[sl]
        np.maximum(view, signal, out=view)
        view = self.occupancy[sl]
        np.maximum(view, occupancy, out=view)
        self.mask[sl] |= inside

    def add_tube(self, tube: Tube, chunk: int = 4) -> None:
        """Rasterise a tube (capsules with linearly varying radius) ``chunk`` segments at a time."""
        pts, rad = tube.points, tube.radii
        s2z, s2y, s2x = (float(v) for v in self.sig2)
        min_s2 = float(self.sig2.min())
        delta2 = _NORMAL_BLEND_UM**2
        for s0 in range(0, len(pts) - 1, chunk):
            a = pts[s0: s0 + chunk + 1][:-1]
            b = pts[s0 + 1: s0 + chunk + 1]
            ra = rad[s0: s0 + chunk + 1][:-1]
            rb = rad[s0 + 1: s0 + chunk + 1]
            reach = float(max(ra.max(), rb.max())) + self.pad
            box = self._box(np.minimum(a.min(0), b.min(0)) - reach, np.maximum(a.max(0), b.max(0)) + reach)
            if box is None:
                continue
            sl, (z, y, x) = box
            ab = (b - a).astype(np.float32)
            l2 = np.maximum((ab**2).sum(1), 1e-9)
            a32 = a.astype(np.float32)
            pz = z[None, :, None, None] - a32[:, 0, None, None, None]
            py = y[None, None, :, None] - a32[:, 1, None, None, None]
            px = x[None, None, None, :] - a32[:, 2, None, None, None]
            abz, aby, abx = (ab[:, i, None, None, None] for i in range(3))
            t = (pz * abz + py * aby + px * abx) / l2[:, None, None, None]
            np.clip(t, 0.0, 1.0, out=t)
            qz = pz - t * abz
            qy = py - t * aby
            qx = px - t * abx
            qz2, qy2, qx2 = qz * qz, qy * qy, qx * qx
            d2 = qz2 + qy2 + qx2
            # The cross-section disk blurred by the PSF, separably: across the local normal
            # n (slab profile with the PSF width along n) times along the in-plane tangent
            # (the chord of the disk there, blurred with the PSF width along the tangent).
            # Exact for wide tubes; for tubes as thin as the axial PSF (dendrites) it keeps
            # the dimming and the monotone profile a 2D convolution gives. On the axis, where
            # n is undefined, both widths blend into the mean in-plane width.
            along = (ab[:, 0] ** 2 * s2z + ab[:, 1] ** 2 * s2y + ab[:, 2] ** 2 * s2x) / l2
            trace = (s2z + s2y + s2x - along)[:, None, None, None]
            sig_n2 = (qz2 * s2z + qy2 * s2y + qx2 * s2x + 0.5 * trace * delta2) / (d2 + delta2)
            sig_t2 = np.maximum(trace - sig_n2, min_s2)
            r = ra[:, None, None, None].astype(np.float32) + t * (rb - ra)[:, None, None, None].astype(np.float32)
            d = np.sqrt(d2)
            # Outside the disk, the light comes from just inside its edge: take the chord there.
            dc = np.clip(np.minimum(d, r - 0.5 * np.sqrt(sig_n2)), 0.0, None)
            chord = np.sqrt(np.maximum(r * r - dc * dc, 0.0))
            prof = slab_profile(d, r, 1.0 / np.sqrt(2.0 * sig_n2))
            prof *= special.erf(chord / np.sqrt(2.0 * sig_t2))
            prof = prof.max(axis=0)
            inside = (d2 <= r * r).any(axis=0)
            self._put(sl, tube.brightness * prof, prof, inside)

    def add_soma(self, soma: Soma, nucleus_fraction: float, nucleus_brightness: float) -> None:
        """Rasterise an ellipsoidal soma with a dimmer nucleus (same shape, scaled)."""
        semi = soma.semi_axes
        box = self._box(soma.centre - semi - self.pad, soma.centre + semi + self.pad)
        if box is None:
            return
        sl, (z, y, x) = box
        c = soma.centre.astype(np.float32)
        qz = (z - c[0])[:, None, None]
        qy = (y - c[1])[None, :, None]
        qx = (x - c[2])[None, None, :]
        rho = np.sqrt((qz / semi[0]) ** 2 + (qy / semi[1]) ** 2 + (qx / semi[2]) ** 2)
        radius = float(np.exp(np.log(semi).mean()))
        d = rho * radius  # distance from the centre as if the ellipsoid were a sphere
        q2 = qz * qz + qy * qy + qx * qx
        delta2 = _NORMAL_BLEND_UM**2
        s2z, s2y, s2x = (float(v) for v in self.sig2)
        sig2 = (qz * qz * s2z + qy * qy * s2y + qx * qx * s2x + (s2z + s2y + s2x) / 3.0 * delta2) / (q2 + delta2)
        inv_s = 1.0 / np.sqrt(2.0 * sig2)
        body = slab_profile(d, radius, inv_s)
        nucleus = slab_profile(d, radius * nucleus_fraction, inv_s)
        signal = soma.brightness * (body - (1.0 - nucleus_brightness) * nucleus)
        self._put(sl, signal.astype(np.float32), body.astype(np.float32), rho <= 1.0)

