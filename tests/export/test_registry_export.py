"""Every named config in the registry exports to a package that passes parity (small tiles, real widths)."""

from __future__ import annotations

import pytest

from tpem_seg.models import create_model, get_config, list_models

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

#: Tiles small enough for 2 CPU cores; the widths (ViT-B for unetr-b16) are the registry's own, which is
#: what matters for export (graph structure, weight sizes), not the spatial extent.
SMALL_TILES = {"unetr-b16": (16, 16, 16)}


@pytest.mark.parametrize("name", list_models())
def test_registry_config_exports_with_parity(name, tmp_path, request):
    from tpem_seg.export.checkpoints import ExportSource
    from tpem_seg.export.exporter import ExportOptions, ParityOptions, export_package
    from tpem_seg.export.onnx import simplifier_available
    from tpem_seg.models import open_package

    if name == "unetr-test":  # exported through the CLI once for the whole session: check that package
        manifest = open_package(request.getfixturevalue("exported")[0]).manifest
        assert manifest.config == get_config(name) and manifest.parity["onnxruntime_vs_torch"]["passed"]
        return
    torch.manual_seed(0)
    config = get_config(name, tile=SMALL_TILES.get(name, (16, 32, 32)))
    source = ExportSource(config, create_model(config).state_dict(), "state dict", tmp_path / f"{name}.pt", "0" * 64)
    simplify = name == "unetr-t16" and simplifier_available()  # onnxslim, where installed (extra "simplify")
    instance_norm = "native" if name == "unetr-s16" else "decomposed"  # both forms pass at small tiles
    options = ExportOptions(output=tmp_path / f"{name}.tpem", parity=ParityOptions(random=1, real=1),
                            include_weights=False, simplify=simplify, instance_norm=instance_norm)
    package, report = export_package(source, options)
    assert report.passed and report.max_abs_prob_diff < 1e-4 and report.n_tiles == 2
    assert package.manifest.config == config and package.manifest.onnx_opset >= 17
    assert package.manifest.parity["onnxruntime_vs_torch"]["passed"]
    ops = {n.op_type for n in onnx.load(str(package.onnx_path)).graph.node}
    assert ("InstanceNormalization" in ops) == (instance_norm == "native")
