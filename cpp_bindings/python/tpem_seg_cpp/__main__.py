"""``python -m tpem_seg_cpp --include-dir | --lib-dir | --cmake-dir``: where the installed parts are."""

from __future__ import annotations

import argparse
import sys

from tpem_seg_cpp import cmake_dir, include_dir, lib_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpem_seg_cpp", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--include-dir", action="store_true", help="folder with tpem/tpem.h and tpem/tpem.hpp")
    group.add_argument("--lib-dir", action="store_true", help="folder with libtpem.so")
    group.add_argument("--cmake-dir", action="store_true", help="folder with tpemConfig.cmake (tpem_DIR)")
    args = parser.parse_args(argv)
    where = include_dir() if args.include_dir else lib_dir() if args.lib_dir else cmake_dir()
    sys.stdout.write(where + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
