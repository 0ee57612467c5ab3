"""How much memory one read may allocate, and the refusal of files that declare more.

A hostile or damaged header can declare a plane of 10^12 voxels in a file of a
few kilobytes (a "decompression bomb"). Readers compare what a file declares with
two bounds before they allocate anything: the memory one decoded unit (a TIFF
page, a zarr chunk) may take, and, for codecs with a proven worst case, the
file's own size times that codec's largest compression ratio.
"""

from __future__ import annotations

import math
import os
import resource

from tpem_seg.errors import InputError

#: Environment variable that caps the bytes one decoded unit may take (an integer, bytes).
MEMORY_ENV = "TPEM_SEG_MAX_READ_BYTES"

#: Share of the usable memory (physical memory, or the address-space limit when lower) that
#: one decoded page or chunk may take: the run also holds tiles, logits and the next page.
UNIT_SHARE = 0.25

#: Largest decoded/encoded size ratio each codec can reach. Deflate's is proven (1032:1:
#: 258-byte matches coded in 2 bits); TIFF LZW codes (at most 12 bits) stand for at most
#: 4094 bytes; PackBits repeats a byte at most 128 times per 2 bytes. Codecs without a
#: small proven bound (zstd, lzma, JPEG...) are bounded by memory alone.
MAX_RATIO = {1: 1.0, 5: 4094 * 8 / 9, 8: 1032.0, 32946: 1032.0, 32773: 64.0}


#: Most chunks one z-plane may span: each costs a lookup and a decode, so a plane of millions of
#: tiny chunks reads for hours (an 8192 x 8192 plane in 32 x 32 chunks is 65536).
MAX_CHUNKS_PER_PLANE = 100_000


def usable_memory() -> int:
    """Bytes this process may use: physical memory, or ``RLIMIT_AS`` when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        total = min(total, soft)
    return int(total)


def unit_limit() -> int:
    """Bytes one decoded unit (page, chunk) may take: ``$TPEM_SEG_MAX_READ_BYTES``, else a quarter of
    :func:`usable_memory`."""
    text = os.environ.get(MEMORY_ENV)
    if text:
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{MEMORY_ENV}={text!r} must be a whole number of bytes, e.g. 4000000000") from None
        if value < 1:
            raise InputError(f"{MEMORY_ENV}={text!r} must be positive")
        return value
    return int(usable_memory() * UNIT_SHARE)


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_unit(source: str, what: str, nbytes: int) -> None:
    """Refuse a decoded unit (``what``: "a page", "a chunk") of ``nbytes`` beyond :func:`unit_limit`."""
    limit = unit_limit()
    if nbytes > limit:
        raise InputError(
            f"{source} declares {what} of {_gb(nbytes)}, more than one read may use ({_gb(limit)}); the "
            f"header is damaged or the file needs re-saving in smaller pieces (set {MEMORY_ENV} to allow more)"
        )


def check_plane(source: str, shape: tuple[int, ...], z_axis: int, itemsize: int,
                chunks: tuple[int, ...] | None) -> None:
    """Refuse a z-plane (all dimensions but ``z_axis`` of ``shape``; all of them for ``z_axis=-1``, a 2D
    image read whole) too large to read at once, or one spread over more than
    :data:`MAX_CHUNKS_PER_PLANE` chunks of a chunked store."""
    others = [int(n) for i, n in enumerate(shape) if i != z_axis]
    check_unit(source, "a z-plane", math.prod(others) * itemsize)
    if chunks is None or len(chunks) != len(shape):
        return
    spans = math.prod(-(-int(n) // max(int(c), 1)) for i, (n, c) in enumerate(zip(shape, chunks)) if i != z_axis)
    if spans > MAX_CHUNKS_PER_PLANE:
        raise InputError(f"{source}: one z-plane spans {spans} chunks (chunks {tuple(chunks)}, shape {tuple(shape)}), "
                         f"more than {MAX_CHUNKS_PER_PLANE}; rechunk it with larger chunks in y and x (e.g. 256 x 256)")


def check_ratio(source: str, codec: int, declared: int, stored: int) -> None:
    """Refuse ``declared`` decoded bytes that ``stored`` bytes of TIFF ``codec`` cannot hold."""
    ratio = MAX_RATIO.get(int(codec))
    if ratio is None:
        return
    if declared > stored * ratio + 4096:  # slack for headers and rounding on tiny strips
        raise InputError(
            f"{source} declares {_gb(declared)} of image data in {stored} stored bytes, more than its "
            f"compression can hold (at most {ratio:.0f}:1); the header is damaged: copy or export it again"
        )
