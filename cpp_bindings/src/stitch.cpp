#include "stitch.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "error.hpp"

namespace tpem::detail {

Stitcher::Stitcher(int classes, const Shape3 &shape, const Shape3 &tile, std::vector<float> weights)
    : k_(classes), shape_(shape), tile_(tile), weights_(std::move(weights)),
      logits_(static_cast<size_t>(classes * tile[0] * shape[1] * shape[2]), 0.0f),
      norm_(static_cast<size_t>(tile[0] * shape[1] * shape[2]), 0.0f) {}

void Stitcher::add(const float *logits, const Shape3 &origin) {
    const int64_t d = tile_[0], h = tile_[1], w = tile_[2], Y = shape_[1], X = shape_[2];
    const int64_t dz = origin[0] - base_;
    if (dz < 0 || dz > tile_[0] - d)
        fail(TPEM_ERR_INTERNAL, "tile at z=" + std::to_string(origin[0]) + " lies outside the stitch window");
    const size_t plane = static_cast<size_t>(tile_[0] * Y * X);
    for (int64_t z = 0; z < d; ++z)
        for (int64_t y = 0; y < h; ++y) {
            const size_t row = static_cast<size_t>(((dz + z) * Y + origin[1] + y) * X + origin[2]);
            const float *wt = &weights_[static_cast<size_t>((z * h + y) * w)];
            for (int k = 0; k < k_; ++k) {
                const float *src = logits + static_cast<size_t>(((k * d + z) * h + y) * w);
                float *dst = &logits_[k * plane + row];
                for (int64_t x = 0; x < w; ++x) {
                    float weighted = src[x] * wt[x];  // numpy: multiply into scratch, then add
                    dst[x] += weighted;
                }
            }
            float *nd = &norm_[row];
            for (int64_t x = 0; x < w; ++x) nd[x] += wt[x];
        }
}

int64_t Stitcher::finishable(int64_t next_z) const {
    const int64_t n = std::min(next_z, shape_[0]) - base_;
    if (n > tile_[0]) fail(TPEM_ERR_INTERNAL, "cannot finish more planes than the stitch window holds");
    return std::max<int64_t>(n, 0);
}

void Stitcher::slide(int64_t n) {
    if (n <= 0) return;
    if (n > tile_[0]) fail(TPEM_ERR_INTERNAL, "cannot slide the stitch window by more than its depth");
    const size_t window = window_stride(), done = static_cast<size_t>(n * shape_[1] * shape_[2]);
    for (int k = 0; k <= k_; ++k) {  // the K logit sums, then the weight sums
        float *w = k < k_ ? &logits_[k * window] : norm_.data();
        std::memmove(w, w + done, (window - done) * sizeof(float));
        std::fill(w + window - done, w + window, 0.0f);
    }
    base_ += n;
}

void labels_from_sums(const float *sums, int k, size_t voxels, size_t class_stride, const std::string &activation,
                      uint8_t *out) {
    const bool sigmoid = activation == "sigmoid";
    for (size_t i = 0; i < voxels; ++i) {
        float best = sums[i];
        int label = 0;
        for (int c = 1; c < k; ++c) {
            float v = sums[c * class_stride + i];
            if (v > best) {
                best = v;
                label = c;
            }
        }
        out[i] = static_cast<uint8_t>(sigmoid ? (best > 0 ? label + 1 : 0) : label);
    }
}

void to_probabilities(float *logits, int k, size_t voxels, const std::string &activation) {
    if (activation == "sigmoid") {
        for (size_t i = 0; i < static_cast<size_t>(k) * voxels; ++i) logits[i] = 1.0f / (1.0f + std::exp(-logits[i]));
        return;
    }
    for (size_t i = 0; i < voxels; ++i) {
        float m = logits[i];
        for (int c = 1; c < k; ++c) m = std::max(m, logits[c * voxels + i]);
        float total = 0.0f;
        for (int c = 0; c < k; ++c) {
            float e = std::exp(logits[c * voxels + i] - m);
            logits[c * voxels + i] = e;
            total += e;
        }
        for (int c = 0; c < k; ++c) logits[c * voxels + i] /= total;
    }
}

void labels_from_probabilities(const float *p, int k, size_t voxels, const std::string &activation, uint8_t *out) {
    const bool sigmoid = activation == "sigmoid";
    for (size_t i = 0; i < voxels; ++i) {
        float best = p[i];
        int label = 0;
        for (int c = 1; c < k; ++c)
            if (p[c * voxels + i] > best) {
                best = p[c * voxels + i];
                label = c;
            }
        out[i] = static_cast<uint8_t>(sigmoid ? (best > 0.5f ? label + 1 : 0) : label);
    }
}

}  // namespace tpem::detail
