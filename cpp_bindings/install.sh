#!/usr/bin/env bash
# Build and install everything C++ of tpem-seg on a fresh machine:
#   1. the pinned headers (scripts/fetch_deps.sh: ONNX Runtime API 21, nlohmann-json),
#   2. PYTHON -m pip install ./cpp_bindings (scikit-build-core: libtpem, headers, CMake config,
#      the binding tpem_seg_cpp and the tpem-seg-cpp program, into PYTHON's environment),
#   3. the C tests under AddressSanitizer + UndefinedBehaviorSanitizer in cpp_bindings/build/test
#      (run them with `ctest --test-dir cpp_bindings/build/test`, or through pytest:
#      tests/cpp_bindings/test_ctest.py).
#
# usage: cpp_bindings/install.sh [PYTHON]        (default: python3; needs cmake >= 3.18, a C++17
#                                                 compiler and onnxruntime in PYTHON's environment)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${1:-python3}"
jobs="${TPEM_BUILD_JOBS:-2}"

bash "$here/scripts/fetch_deps.sh"

# build requirements into the target environment, then build without isolation (no second download)
"$python" -m pip install --quiet "scikit-build-core>=0.10" "nanobind>=2.0"
pip_gen=() cmake_gen=()
if command -v ninja >/dev/null 2>&1; then pip_gen=(-Ccmake.args=-GNinja) cmake_gen=(-G Ninja); fi
"$python" -m pip install --quiet --no-build-isolation "${pip_gen[@]}" -Cbuild.tool-args=-j"$jobs" "$here"

cmake -S "$here" -B "$here/build/test" "${cmake_gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DTPEM_SANITIZE=ON -DTPEM_BUILD_TESTS=ON -DTPEM_BUILD_EXAMPLES=OFF -DPython_EXECUTABLE="$("$python" -c 'import sys; print(sys.executable)')" >/dev/null
cmake --build "$here/build/test" -j "$jobs"
echo "install.sh: tpem_seg_cpp installed for $python; C tests built in $here/build/test"
