#!/usr/bin/env bash
# Fetch the build-time headers libtpem needs and nothing else:
#   ONNX Runtime's C/C++ API headers (Debian trixie libonnxruntime-dev, API 21) and nlohmann-json
#   (Debian trixie nlohmann-json3-dev), through a PRIVATE apt configuration under DEST
#   (its own sources list, lists and cache): the system's apt sources are not touched.
# Versions and sha256 are pinned; only the headers are kept. Idempotent: a second run with the
# headers in place does nothing.
#
# usage: fetch_deps.sh [DEST]      (default: cpp_bindings/.deps, git-ignored)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$here/.deps}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

ORT_DEB="libonnxruntime-dev=1.21.0+dfsg-1"
ORT_SHA="14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
JSON_DEB="nlohmann-json3-dev=3.11.3-2.1"
JSON_SHA="741a6a32f61a14eaf9560ba1814b27da8e78fa3b9bed9e8867ab46316ddf3793"
STAMP="$dest/include/.fetched-${ORT_SHA:0:12}-${JSON_SHA:0:12}"

if [[ -f "$STAMP" ]]; then
    exit 0
fi

apt_dir="$dest/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/preferences.d" \
         "$apt_dir/debs"
# trixie is signed by keys the Debian archive keyring already trusts on bookworm and later
echo "deb http://deb.debian.org/debian trixie main" > "$apt_dir/etc/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::State::status=/dev/null"
    -o "APT::Architecture=amd64"
    -o "APT::Sandbox::User=root"
)

fetch() {  # fetch PKG=VERSION SHA256
    local spec="$1" sha="$2" name="${1%%=*}" version="${1#*=}"
    local deb="$apt_dir/debs/${name}_${version//:/%3a}.deb"
    if [[ ! -f "$deb" ]] || ! echo "$sha  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
        if [[ ! -f "$apt_dir/lists/.updated" ]]; then
            apt-get "${apt_opts[@]}" -qq update
            touch "$apt_dir/lists/.updated"
        fi
        (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "$spec")
        mv "$apt_dir/debs/${name}_"*"${version#*:}"*.deb "$deb" 2>/dev/null || true
    fi
    if ! echo "$sha  $deb" | sha256sum -c --quiet -; then
        echo "fetch_deps: $spec does not have the pinned sha256 $sha; refusing it" >&2
        exit 1
    fi
    rm -rf "$apt_dir/x-$name"
    dpkg -x "$deb" "$apt_dir/x-$name"
}

fetch "$ORT_DEB" "$ORT_SHA"
fetch "$JSON_DEB" "$JSON_SHA"

rm -rf "$dest/include"
mkdir -p "$dest/include"
cp -r "$apt_dir/x-libonnxruntime-dev/usr/include/onnxruntime" "$dest/include/onnxruntime"
cp -r "$apt_dir/x-nlohmann-json3-dev/usr/include/nlohmann" "$dest/include/nlohmann"
mkdir -p "$dest/licenses"
cp "$apt_dir/x-libonnxruntime-dev/usr/share/doc/libonnxruntime-dev/copyright" "$dest/licenses/onnxruntime.copyright"
cp "$apt_dir/x-nlohmann-json3-dev/usr/share/doc/nlohmann-json3-dev/copyright" "$dest/licenses/nlohmann-json.copyright"
rm -rf "$apt_dir/x-libonnxruntime-dev" "$apt_dir/x-nlohmann-json3-dev"
touch "$STAMP"
echo "fetch_deps: headers in $dest/include (onnxruntime ${ORT_DEB#*=}, nlohmann-json ${JSON_DEB#*=})"
