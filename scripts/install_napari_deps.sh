#!/bin/sh
# System libraries for napari's Qt viewer on a headless Debian/Ubuntu machine: Xvfb (a virtual
# X display with OpenGL through Mesa) and the xcb/GL libraries the PyQt5 wheels load.
#
#   sudo scripts/install_napari_deps.sh      # or as root, e.g. in CI
#   xvfb-run -a python -m pytest -q          # the napari tests then run instead of skipping
#
# Idempotent: installs only what is missing. Where apt-get is unavailable (macOS, Windows,
# other distributions, no root) it says so and exits 0: the napari tests then skip with a reason.
# QT_QPA_PLATFORM=offscreen is no substitute: it has no OpenGL context, so napari cannot draw.
set -u

PACKAGES="xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0
libxcb-shape0 libxcb-cursor0"

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install_napari_deps: no apt-get here; install Xvfb and Qt's xcb libraries with your package" \
         "manager, or the napari tests will skip" >&2
    exit 0
fi

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
if [ -z "$missing" ]; then
    echo "install_napari_deps: all present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    run=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run="sudo"
else
    echo "install_napari_deps: missing$missing; rerun as root (sudo $0), or the napari tests will skip" >&2
    exit 0
fi

echo "install_napari_deps: installing$missing"
if ! $run apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive $run apt-get install -y -qq --no-install-recommends $missing; then
    echo "install_napari_deps: apt-get failed (offline? other package names?); the napari tests will skip" >&2
    exit 0
fi
