import numpy as np
import pytest

from tpem_seg.runtime.stitch import Stitcher
from tpem_seg.runtime.tiling import count_tiles, gaussian_weights, pad_widths, plan_tiles, scan_starts

monai_utils = pytest.importorskip("monai.data.utils", reason="MONAI is the oracle for the tile grid")


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 0.25), (64, 64, 0.25), (65, 64, 0.5), (37, 16, 0.0),
                                               (512, 128, 0.25), (26, 16, 0.75)])
def test_scan_starts_match_monai(size, tile, overlap):
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval((size,), (tile,), 1, (overlap,))
    expected = [s[0].start for s in monai_utils.dense_patch_slices((size,), (tile,), interval)]
    assert scan_starts(size, tile, overlap) == expected


def test_plan_covers_volume_and_is_z_major():
    shape, tile = (40, 70, 50), (16, 32, 32)
    origins = plan_tiles(shape, tile, 0.25)
    covered = np.zeros(shape, bool)
    for z, y, x in origins:
        covered[z:z + 16, y:y + 32, x:x + 32] = True
    assert covered.all()
    assert [o[0] for o in origins] == sorted(o[0] for o in origins)
    assert count_tiles(shape, tile, 0.25) == len(origins)


def test_gaussian_matches_monai_importance_map():
    from monai.data.utils import compute_importance_map

    tile = (16, 32, 24)
    ours = gaussian_weights(tile, 0.125)
    theirs = compute_importance_map(tile, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_pad_widths_split_like_monai():
    assert pad_widths((10, 64, 5), (16, 64, 8)) == [(3, 3), (0, 0), (1, 2)]


def test_stitcher_reassembles_constant_logits_and_bounds_memory():
    shape, tile = (50, 40, 40), (16, 32, 32)
    stitcher = Stitcher(2, shape, tile, gaussian_weights(tile))
    assert stitcher.window_shape == (2, 16, 40, 40)  # a window of tile_z planes, not the whole depth
    z_rows = sorted({o[0] for o in plan_tiles(shape, tile, 0.25)})
    out = []
    for i, z in enumerate(z_rows):
        for origin in [o for o in plan_tiles(shape, tile, 0.25) if o[0] == z]:
            logits = np.stack([np.full(tile, 1.0), np.full(tile, -2.0)])[None].astype(np.float32)
            stitcher.add(logits, [origin])
        finished = stitcher.advance_raw(z_rows[i + 1] if i + 1 < len(z_rows) else shape[0])
        if finished:
            z0, sums, norm = finished
            out.append((z0, sums / norm))
    assert [o[0] for o in out] == sorted(o[0] for o in out)
    full = np.concatenate([o[1] for o in out], axis=1)
    assert full.shape == (2, *shape)
    np.testing.assert_allclose(full[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(full[1], -2.0, rtol=1e-6)
