"""Properties of tiling and stitching for any volume shape, tile and overlap (hypothesis).

Through public behaviour only: the tiling functions, ``pipeline.make_plan``, and a ``Segmenter``
driven by small numpy backends whose answer is known (a constant, or the input itself), so the
tests hold whatever the stitch loop looks like inside.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpem_seg.models import Manifest, NormalizationSpec, get_config
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime import Segmenter
from tpem_seg.runtime.backends import Backend
from tpem_seg.runtime.pipeline import make_plan
from tpem_seg.runtime.tiling import count_tiles, gaussian_weights, plan_tiles, scan_starts

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

overlaps = st.floats(min_value=0.0, max_value=0.95, allow_nan=False)
sizes = st.integers(min_value=1, max_value=90)
tile_sides = st.integers(min_value=1, max_value=40)


@FAST
@given(size=sizes, tile=tile_sides, overlap=overlaps)
def test_scan_starts_cover_the_axis_in_order(size, tile, overlap):
    size = max(size, tile)
    starts = scan_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        assert 0 <= s <= size - tile
        covered[s:s + tile] = True
    assert covered.all()
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


@FAST
@given(shape=st.tuples(sizes, sizes, sizes), tile=st.tuples(tile_sides, tile_sides, tile_sides), overlap=overlaps)
def test_plan_covers_every_voxel_once_per_tile_and_in_z_order(shape, tile, overlap):
    plan = make_plan(shape, tile, overlap)
    assert plan.n_tiles == count_tiles(shape, tile, overlap)
    assert all(p >= t for p, t in zip(plan.padded, tile))
    hits = np.zeros(plan.padded, np.int32)
    origins = [(z, y, x) for z in plan.z_starts for (y, x) in plan.yx_origins]
    assert origins == plan_tiles(plan.padded, tile, overlap)  # the plan is the z-major tile grid
    for z, y, x in origins:
        hits[z:z + tile[0], y:y + tile[1], x:x + tile[2]] += 1
    assert (hits >= 1).all()
    assert list(plan.z_starts) == sorted(set(plan.z_starts))
    # The volume sits inside the padded grid, padding split around it.
    for (before, after), s, t in zip(plan.pads, shape, tile):
        assert before + s + after == max(s, t) and 0 <= after - before <= 1


@FAST
@given(tile=st.tuples(tile_sides, tile_sides, tile_sides),
       sigma=st.floats(min_value=0.01, max_value=2.0, allow_nan=False))
def test_blending_weights_are_positive_and_finite(tile, sigma):
    weights = gaussian_weights(tile, sigma)
    assert weights.shape == tile and weights.dtype == np.float32
    assert np.isfinite(weights).all() and (weights > 0).all()
    assert weights.max() <= 1.0
    # Symmetric: a tile's weights do not depend on the direction it is read in.
    np.testing.assert_array_equal(weights, weights[::-1, ::-1, ::-1])


# -- the Segmenter with known answers ------------------------------------------------------------------


class ConstantBackend(Backend):
    """Logits ``values[k]`` for class ``k`` at every voxel of every tile."""

    name = "constant"

    def __init__(self, package: ModelPackage, values: list[float]):
        super().__init__(package)
        self.values = np.asarray(values, np.float32)

    def _load(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        return np.broadcast_to(self.values[None, :, None, None, None], (n, len(self.values), *batch.shape[2:])).copy()


class EchoBackend(Backend):
    """Logits equal to the input tile: blending must give each voxel its own value back."""

    name = "echo"

    def _load(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return batch.copy()


def _package(tile: tuple[int, int, int], channels: int, classes: int) -> ModelPackage:
    config = get_config("unetr-test", in_channels=channels, out_channels=classes, tile=tile)
    manifest = Manifest(name="props", config=config, channels=[f"c{i}" for i in range(channels)],
                        classes=[f"k{i}" for i in range(classes)], normalization=NormalizationSpec(mode="none"))
    return ModelPackage(path=None, manifest=manifest)  # type: ignore[arg-type]  # never read from disk


tiles16 = st.tuples(*[st.sampled_from([16, 32])] * 3)
volume_shapes = st.tuples(st.integers(1, 40), st.integers(1, 48), st.integers(1, 48))


@FAST
@given(shape=volume_shapes, tile=tiles16, overlap=overlaps, batch=st.integers(1, 5),
       values=st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=3))
def test_constant_logits_come_back_everywhere(shape, tile, overlap, batch, values):
    package = _package(tile, 1, len(values))
    segmenter = Segmenter(package, ConstantBackend(package, values), output="logits", overlap=overlap,
                          batch_size=batch, resample=False)
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    logits = segmenter.segment(volume)
    assert logits.shape == (len(values), *shape)
    expected = np.broadcast_to(np.asarray(values, np.float32)[:, None, None, None], logits.shape)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    labels = Segmenter(package, ConstantBackend(package, values), overlap=overlap, batch_size=batch,
                       resample=False).segment(volume)
    assert (labels == int(np.argmax(values))).all()


@FAST
@given(shape=volume_shapes, tile=tiles16, overlap=overlaps, batch=st.integers(1, 4))
def test_every_voxel_gets_its_own_value_back_slab_by_slab_in_z_order(shape, tile, overlap, batch):
    # Echoed logits blend back to the input only if every plane is emitted once, at its place, in z order.
    package = _package(tile, 2, 2)
    volume = np.random.default_rng(1).random((2, *shape), dtype=np.float32)
    segmenter = Segmenter(package, EchoBackend(package), output="logits", overlap=overlap, batch_size=batch,
                          resample=False)
    logits = segmenter.segment(volume, axes="CZYX")
    np.testing.assert_allclose(logits, volume, rtol=1e-5, atol=1e-6)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=volume_shapes, tile=tiles16, overlap=overlaps)
def test_streamed_file_equals_the_input_echoed(tmp_path_factory, shape, tile, overlap):
    # Through segment_file: the writer refuses planes past the end and a short file at commit,
    # so a slab emitted twice or never fails here; argmax of the echo is the brighter channel.
    from tpem_seg.io import read_volume, write_volume

    folder = tmp_path_factory.mktemp("echo")
    volume = np.random.default_rng(2).random((2, *shape), dtype=np.float32)
    src = write_volume(folder / "in.npy", volume, "CZYX")
    package = _package(tile, 2, 2)
    Segmenter(package, EchoBackend(package), overlap=overlap, resample=False).segment_file(src, folder / "out.npy")
    labels = np.asarray(read_volume(folder / "out.npy").data[...])
    ties = np.isclose(volume[0], volume[1], rtol=1e-5)
    np.testing.assert_array_equal(labels[~ties], np.argmax(volume, axis=0)[~ties])


@pytest.mark.parametrize("overlap", [1.0, -0.01, float("nan")])
def test_overlap_out_of_range_is_refused(overlap):
    from tpem_seg.errors import InputError

    package = _package((16, 16, 16), 1, 2)
    with pytest.raises(InputError, match="overlap"):
        Segmenter(package, ConstantBackend(package, [0.0, 1.0]), overlap=overlap)
