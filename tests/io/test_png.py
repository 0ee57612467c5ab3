import struct
import zlib

import numpy as np

from tpem_seg.io.png import write_png


def test_png_round_trip_by_hand(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    data = write_png(tmp_path / "a.png", rgb).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (5, 7)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = np.frombuffer(zlib.decompress(data[41:41 + idat_len]), np.uint8).reshape(7, 1 + 5 * 3)
    assert (raw[:, 0] == 0).all()
    np.testing.assert_array_equal(raw[:, 1:].reshape(7, 5, 3), rgb)
