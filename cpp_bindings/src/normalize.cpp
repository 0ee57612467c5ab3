#include "normalize.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "error.hpp"
#include "log.hpp"

namespace tpem::detail {

namespace {
constexpr int64_t SAMPLE_PLANES = 32;
constexpr double SAMPLE_VOXELS = 4'000'000.0;
}  // namespace

const char *const NON_FINITE =
    "the volume contains NaN or Inf values; replace them (e.g. numpy.nan_to_num) before segmenting";

size_t dtype_size(tpem_dtype dtype) {
    switch (dtype) {
        case TPEM_DTYPE_U8: return 1;
        case TPEM_DTYPE_U16: return 2;
        case TPEM_DTYPE_F32: return 4;
        default: break;
    }
    fail(TPEM_ERR_INVALID_ARGUMENT, "dtype " + std::to_string(static_cast<int>(dtype)) +
                                        " unknown; use TPEM_DTYPE_U8, TPEM_DTYPE_U16 or TPEM_DTYPE_F32");
}

void check_finite(const void *data, tpem_dtype dtype, size_t count) {
    if (dtype != TPEM_DTYPE_F32) return;
    const float *f = static_cast<const float *>(data);
    for (size_t i = 0; i < count; ++i)
        if (!std::isfinite(f[i])) fail(TPEM_ERR_INVALID_ARGUMENT, NON_FINITE);
}

std::vector<float> Normalizer::inverse_scale() const {
    std::vector<float> inv(low.size());
    for (size_t c = 0; c < low.size(); ++c) {
        float span = high[c] - low[c];
        inv[c] = 1.0f / (span > 0 ? span : 1.0f);
    }
    return inv;
}

double percentile_linear(std::vector<double> &values, double q) {
    const int64_t n = static_cast<int64_t>(values.size());
    const double quantile = q / 100.0;
    const double virtual_index = static_cast<double>(n - 1) * quantile;
    int64_t prev, next;
    if (virtual_index >= static_cast<double>(n - 1)) {
        prev = next = n - 1;
    } else if (virtual_index < 0) {
        prev = next = 0;
    } else {
        prev = static_cast<int64_t>(std::floor(virtual_index));
        next = prev + 1;
    }
    const double gamma = virtual_index - std::floor(virtual_index);
    std::nth_element(values.begin(), values.begin() + prev, values.end());
    double a = values[prev];
    double b = a;
    if (next != prev) b = *std::min_element(values.begin() + prev + 1, values.end());
    // numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) from t >= 0.5
    double diff = b - a;
    return gamma >= 0.5 ? b - diff * (1.0 - gamma) : a + diff * gamma;
}

std::vector<std::vector<double>> sample_planes(const VolumeView &v) {
    const int64_t z = v.shape[1], y = v.shape[2], x = v.shape[3];
    // np.unique(np.linspace(0, z - 1, num=min(32, z)).round().astype(int))
    const int64_t num = std::min(SAMPLE_PLANES, z);
    std::vector<int64_t> planes;
    const double step = num > 1 ? static_cast<double>(z - 1) / static_cast<double>(num - 1) : 0.0;
    for (int64_t i = 0; i < num; ++i) {
        double value = (num > 1 && i == num - 1) ? static_cast<double>(z - 1) : static_cast<double>(i) * step;
        planes.push_back(static_cast<int64_t>(std::nearbyint(value)));  // round half to even, as numpy
    }
    std::sort(planes.begin(), planes.end());
    planes.erase(std::unique(planes.begin(), planes.end()), planes.end());
    const double ratio = static_cast<double>(planes.size()) * static_cast<double>(y) * static_cast<double>(x) / SAMPLE_VOXELS;
    const int64_t stride = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(ratio))));
    std::vector<std::vector<double>> sample(v.shape[0]);
    for (int64_t c = 0; c < v.shape[0]; ++c)
        for (int64_t p : planes)
            for (int64_t yy = 0; yy < y; yy += stride)
                for (int64_t xx = 0; xx < x; xx += stride) sample[c].push_back(v.at(c, p, yy, xx));
    return sample;
}

Normalizer fixed_normalizer(const Normalization &spec, size_t n) {
    if (spec.mode == "none") return {std::vector<float>(n, 0.0f), std::vector<float>(n, 1.0f), false};
    if (spec.mode == "range")
        return {std::vector<float>(n, static_cast<float>(spec.range[0])),
                std::vector<float>(n, static_cast<float>(spec.range[1])), spec.clip};
    fail(TPEM_ERR_INTERNAL, "percentile normalisation needs the volume");
}

Normalizer fit_normalizer(const VolumeView &volume, const Normalization &spec) {
    const size_t n = static_cast<size_t>(volume.shape[0]);
    if (spec.mode != "percentile") return fixed_normalizer(spec, n);
    Normalizer norm{{}, {}, spec.clip};
    auto sample = sample_planes(volume);
    for (size_t c = 0; c < n; ++c) {
        for (double s : sample[c])
            if (!std::isfinite(s)) fail(TPEM_ERR_INVALID_ARGUMENT, NON_FINITE);
        double lo = percentile_linear(sample[c], spec.percentiles[0]);
        double hi = percentile_linear(sample[c], spec.percentiles[1]);
        if (hi <= lo) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "channel %zu is constant (%.4g) in the sample; it will normalise to 0", c, lo);
            log(LOG_WARNING, buf);
        }
        norm.low.push_back(static_cast<float>(lo));
        norm.high.push_back(static_cast<float>(hi));
    }
    return norm;
}

}  // namespace tpem::detail
