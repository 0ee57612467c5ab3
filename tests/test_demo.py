import numpy as np

from tpem_seg import read_volume
from tpem_seg.demo import run_demo


def test_demo_writes_volume_labels_overlay_and_scores(package_2ch, tmp_path):
    result = run_demo(tmp_path / "demo", model=str(package_2ch.path), shape=(16, 64, 64), backend="onnxruntime")
    for path in (result.volume, result.labels, result.truth, result.overlay):
        assert path.is_file()
    assert result.overlay.read_bytes()[:4] == b"\x89PNG"
    labels, truth = read_volume(result.labels), read_volume(result.truth)
    assert labels.shape_zyx == truth.shape_zyx == (16, 64, 64)
    assert set(result.dice) == {"vessel", "neuron"}
    assert all(0.0 <= v <= 1.0 for v in result.dice.values())
    assert set(np.unique(np.asarray(labels.data))) <= {0, 1, 2}
