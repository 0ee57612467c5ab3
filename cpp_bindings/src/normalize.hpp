// Per-channel intensity normalisation over the whole volume, as tpem_seg.runtime.normalize does:
// percentiles of a strided sample of up to 32 evenly spaced planes (<= 4e6 voxels per channel),
// numpy's linear percentile, x -> (x - low) * (1 / (high - low)) in float32, clipped to [0, 1].
#pragma once

#include <vector>

#include "package.hpp"
#include "volume.hpp"

namespace tpem::detail {

struct Normalizer {
    std::vector<float> low, high;
    bool clip = true;

    // 1 / scale per channel, scale = high - low where positive, else 1 (float32, as numpy).
    std::vector<float> inverse_scale() const;
};

// numpy.percentile(values, q) with the default 'linear' method (values are reordered).
double percentile_linear(std::vector<double> &values, double q);

// The sample (C, N) of voxels the percentiles come from, one vector per channel.
std::vector<std::vector<double>> sample_planes(const VolumeView &volume);

Normalizer fit_normalizer(const VolumeView &volume, const Normalization &spec);

// The normaliser of a "range" or "none" spec, which needs no data (percentile: Error).
Normalizer fixed_normalizer(const Normalization &spec, size_t channels);

// Normalises `n` voxels of one channel into out (float32).
template <typename T>
inline void normalize_run(const T *in, size_t n, float low, float inv, bool clip, float *out) {
    for (size_t i = 0; i < n; ++i) {
        float v = static_cast<float>(in[i]);
        v -= low;
        v *= inv;
        if (clip) v = std::min(std::max(v, 0.0f), 1.0f);
        out[i] = v;
    }
}

}  // namespace tpem::detail
