"""A read-only array-like over an open file: reads only what is sliced.

:class:`LazyArray` is what :func:`~tpem_seg.io.read_volume` puts in ``Volume.data``.
It owns the file handles behind the array (a ``TiffFile`` for TIFF, nothing for
memory maps and zarr folders) and keeps them open as long as it lives; ``close()``
(or ``with volume.data:``) releases them early, garbage collection releases them
otherwise. It can hide singleton dimensions of the file (e.g. ``T`` of size 1 in a
``TCZYX`` OME-Zarr) and turns read failures into one-line :class:`InputError`.
"""

from __future__ import annotations

import mmap
from typing import Any, Callable, Iterable

import numpy as np

from tpem_seg.errors import InputError


class LazyArray:
    """Numpy-style slicing over ``base`` with some singleton dimensions dropped.

    Args:
        base: array-like with numpy basic slicing (numpy memmap, zarr array...).
        source: the file, named in error messages.
        drop: indices of singleton dimensions of ``base`` that this view hides.
        closers: called once by :meth:`close` to release the file.
    """

    def __init__(self, base: Any, source: str, drop: Iterable[int] = (),
                 closers: Iterable[Callable[[], None]] = ()) -> None:
        self._base = base
        self._after_read = page_releaser(base)
        self._source = source
        self._drop = tuple(sorted(drop))
        if any(int(base.shape[i]) != 1 for i in self._drop):
            raise ValueError(f"can only drop singleton dimensions, not {self._drop} of {tuple(base.shape)}")
        self._closers = list(closers)
        self.shape: tuple[int, ...] = tuple(int(n) for i, n in enumerate(base.shape) if i not in self._drop)
        self.dtype = np.dtype(base.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, source={self._source!r})"

    def _base_key(self, key: Any) -> tuple[Any, ...]:
        """``key`` over this view as a key over ``base`` (index 0 on dropped dimensions)."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:at] + fill + key[at + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices ({len(key)}) for a {self.ndim}D array")
        key = key + (slice(None),) * (self.ndim - len(key))
        full: list[Any] = list(key)
        for i in self._drop:
            full.insert(i, 0)
        return tuple(full)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Read ``key`` from the file into a new, writable numpy array."""
        try:
            data = np.asarray(self._base[self._base_key(key)])
            if not data.flags.writeable:
                # A read-only memmap view: copy, so the disk is read here (in the caller's
                # reader thread, not later during compute) and callers may work in place.
                data = data.copy()
            if self._after_read is not None:
                self._after_read()
            return data
        except (OSError, EOFError, RuntimeError, ValueError) as err:
            # Decoder and I/O failures of a damaged file; index mistakes are IndexError/TypeError.
            raise InputError(
                f"cannot read {self._source} ({type(err).__name__}: {err}); the file is damaged or "
                "was changed while open: copy or export it again"
            ) from err

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole array in memory (only for small volumes)."""
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def close(self) -> None:
        """Release the file behind this array; it cannot be read afterwards."""
        while self._closers:
            self._closers.pop(0)()

    def __enter__(self) -> "LazyArray":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def page_releaser(base: Any) -> Callable[[], None] | None:
    """For a numpy memory map, a call that drops its pages from this process's resident set.

    Pages of a read-only file mapping stay resident (and count in RSS) after they
    are read, so streaming a memory-mapped volume would grow to the file's size.
    The data were copied out already; the page cache keeps them for the kernel.
    """
    mapping = getattr(base, "_mmap", None)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    return lambda: mapping.madvise(mmap.MADV_DONTNEED)
