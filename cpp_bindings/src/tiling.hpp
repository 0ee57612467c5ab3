// Tile grids and blending weights, as tpem_seg.runtime.tiling and make_plan lay them (MONAI's
// sliding-window convention: interval int(tile * (1 - overlap)), last tile flush with the edge,
// zero padding split diff // 2 before).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tpem::detail {

using Shape3 = std::array<int64_t, 3>;  // (z, y, x)

// Start indices of tiles of length `tile` covering `size` voxels (size >= tile, 0 <= overlap < 1).
std::vector<int64_t> scan_starts(int64_t size, int64_t tile, double overlap);

struct TilePlan {
    Shape3 shape{}, tile{};
    std::array<std::array<int64_t, 2>, 3> pads{};      // (before, after) per axis
    std::vector<int64_t> z_starts;                      // padded coordinates
    std::vector<std::array<int64_t, 2>> yx_origins;     // (y, x), y-major
    Shape3 padded() const {
        return {shape[0] + pads[0][0] + pads[0][1], shape[1] + pads[1][0] + pads[1][1], shape[2] + pads[2][0] + pads[2][1]};
    }
    int64_t n_tiles() const { return static_cast<int64_t>(z_starts.size() * yx_origins.size()); }
    // The z after row i: the next row's start, or the padded depth after the last row.
    int64_t next_z(size_t i) const { return i + 1 < z_starts.size() ? z_starts[i + 1] : padded()[0]; }
};

TilePlan make_plan(const Shape3 &shape, const Shape3 &tile, double overlap);

// Separable Gaussian (D, H, W) float32 peaking at the centre, sigma = sigma_scale * tile per axis:
// the 1-D exponentials in float64, cast to float32 once, outer products in float32, clamped below
// at max(min, 1e-3).
std::vector<float> gaussian_weights(const Shape3 &tile, double sigma_scale);

}  // namespace tpem::detail
