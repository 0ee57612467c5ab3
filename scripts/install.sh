#!/usr/bin/env bash
# Set up everything tpem-seg needs on a fresh machine, into .venv beside this folder:
#   1. system libraries for the headless napari viewer (Xvfb, Qt's xcb libraries), when run as
#      root on Debian/Ubuntu; elsewhere it says so and the viewer tests skip;
#   2. PyTorch: the CPU build torch==2.13.0 unless a torch is already there (on a GPU machine,
#      install your CUDA build into .venv first);
#   3. tpem-seg itself, editable, with training, export, bioimage.io, napari, OpenVINO, dask
#      (distributed runs) and test extras;
#   4. the native runtime (cpp_bindings/install.sh: libtpem, its C ABI and CMake config, the
#      tpem_seg_cpp binding, and the C tests built under AddressSanitizer + UBSan).
#
# usage: bash scripts/install.sh          (PYTHON=python3.11 bash scripts/install.sh to pick one)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"

sh scripts/install_napari_deps.sh
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install torch==2.13.0
.venv/bin/pip install -e ".[train,export,dev,bioimageio,napari-dev,openvino,distributed]"
bash cpp_bindings/install.sh .venv/bin/python
