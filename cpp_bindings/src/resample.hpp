// Linear resampling with aligned corners, as tpem_seg.runtime.resample does through
// scipy.ndimage.zoom(order=1, mode="nearest", grid_mode=False): output index i maps to input
// coordinate i * (n_in - 1) / (n_out - 1); arithmetic in float64, result cast to float32.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace tpem::detail {

constexpr double RESAMPLE_TOLERANCE = 0.05;  // relative voxel-size difference ignored

bool needs_resampling(const std::optional<std::array<double, 3>> &spacing,
                      const std::optional<std::array<double, 3>> &target);

// max(1, round(n * s / t)) per axis, Python's round (half to even).
std::array<int64_t, 3> resampled_shape(const std::array<int64_t, 3> &shape, const std::array<double, 3> &spacing,
                                       const std::array<double, 3> &target);

// Zooms one 3-D float32 array `in` of shape `from` to shape `to`, into `out` (to voxels).
void zoom_linear(const float *in, const std::array<int64_t, 3> &from, float *out, const std::array<int64_t, 3> &to);

}  // namespace tpem::detail
