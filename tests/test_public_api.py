"""The public API in ``tpem_seg/__init__``: every listed name resolves; importing it loads nothing heavy."""

import subprocess
import sys
from pathlib import Path

import tpem_seg


def test_every_public_name_resolves_to_its_definition():
    from tpem_seg.io import read_volume
    from tpem_seg.runtime import Segmenter

    assert all(getattr(tpem_seg, name) is not None for name in tpem_seg.__all__)
    assert tpem_seg.Segmenter is Segmenter and tpem_seg.read_volume is read_volume
    assert set(tpem_seg.__all__) <= set(dir(tpem_seg))


def test_import_loads_the_api_only_on_use():
    code = "import sys, tpem_seg; print(any(m.startswith('tpem_seg.runtime') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]
