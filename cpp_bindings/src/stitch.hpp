// Weighted accumulation of tile logits over a moving window of tile_z planes, finished z-slab by
// z-slab (tpem_seg.runtime.stitch.Stitcher), and the outputs made from finished slabs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tiling.hpp"

namespace tpem::detail {

class Stitcher {
public:
    // shape: the padded grid (Z, Y, X); weights: tile voxels.
    Stitcher(int classes, const Shape3 &shape, const Shape3 &tile, std::vector<float> weights);

    // Adds one tile's logits (K, D, H, W) at padded origin (z, y, x).
    void add(const float *logits, const Shape3 &origin);

    // Planes [base(), base() + n) are finished once no tile at next_z or later touches them:
    // n = min(next_z, Z) - base(), 0 when none. Read them from window() before slide(n).
    int64_t finishable(int64_t next_z) const;
    int64_t base() const { return base_; }
    // The window: weighted logit sums (K, tile_z, Y, X) of padded planes from base(), class
    // stride window_stride(); weight sums (tile_z, Y, X). Read in place: no copy of a finished slab.
    const float *window() const { return logits_.data(); }
    const float *window_weights() const { return norm_.data(); }
    size_t window_stride() const { return static_cast<size_t>(tile_[0] * shape_[1] * shape_[2]); }
    // Drops the first n planes of the window (finished, read) and opens n empty ones behind.
    void slide(int64_t n);

private:
    int k_;
    Shape3 shape_, tile_;
    std::vector<float> weights_, logits_, norm_;
    int64_t base_ = 0;
};

// Labels of `voxels` voxels uint8 straight from weighted logit sums, class c of voxel i at
// sums[c * class_stride + i] (argmax, first on ties; sigmoid: 1 + argmax where that logit > 0,
// else 0), as finish_sums does.
void labels_from_sums(const float *sums, int k, size_t voxels, size_t class_stride, const std::string &activation,
                      uint8_t *out);

// Probabilities in place over logits (K, voxels): softmax over K or sigmoid, float32.
void to_probabilities(float *logits, int k, size_t voxels, const std::string &activation);

// Labels from probabilities (K, voxels), as outputs.to_labels (sigmoid: on where > 0.5).
void labels_from_probabilities(const float *probabilities, int k, size_t voxels, const std::string &activation,
                               uint8_t *out);

}  // namespace tpem::detail
