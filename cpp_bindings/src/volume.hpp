// A caller's volume: a C-contiguous CZYX buffer of one dtype, read without copying.
#pragma once

#include <array>
#include <cstdint>

#include "tpem/tpem.h"

namespace tpem::detail {

struct VolumeView {
    const void *data = nullptr;
    tpem_dtype dtype = TPEM_DTYPE_F32;
    std::array<int64_t, 4> shape{};  // (C, Z, Y, X)

    int64_t plane_voxels() const { return shape[2] * shape[3]; }
    // Voxel (c, z, y, x) as float64 (exact for all three dtypes).
    double at(int64_t c, int64_t z, int64_t y, int64_t x) const {
        size_t i = static_cast<size_t>(((c * shape[1] + z) * shape[2] + y) * shape[3] + x);
        switch (dtype) {
            case TPEM_DTYPE_U8: return static_cast<const uint8_t *>(data)[i];
            case TPEM_DTYPE_U16: return static_cast<const uint16_t *>(data)[i];
            default: return static_cast<const float *>(data)[i];
        }
    }
};

size_t dtype_size(tpem_dtype dtype);

// Throws Error(INVALID_ARGUMENT) on a float NaN/Inf anywhere in `count` values.
void check_finite(const void *data, tpem_dtype dtype, size_t count);

}  // namespace tpem::detail
