"""The installed distribution's version, in its own module so every layer can record it in provenance
without importing the public API (``tpem_seg/__init__``, which imports the runtime)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tpem-seg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
