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

    // Finishes padded planes [base, min(next_z, Z)): copies the weighted logit sums (K, n, Y, X) and
    // weight sums (n, Y, X) out and slides the window. Returns n (0: nothing finished).
    int64_t advance(int64_t next_z, std::vector<float> &sums, std::vector<float> &norm, int64_t &z0);

private:
    int k_;
    Shape3 shape_, tile_;
    std::vector<float> weights_, logits_, norm_;
    int64_t base_ = 0;
};

// Output of a finished part of a slab. sums: (K, n, Y, X) weighted logit sums; norm: (n, Y, X).
// Labels (n, Y, X) uint8 straight from the sums (argmax, first on ties; sigmoid: 1 + argmax
// where that logit > 0, else 0), as finish_sums does.
void labels_from_sums(const float *sums, int k, size_t voxels, const std::string &activation, uint8_t *out);

// Probabilities in place over logits (K, voxels): softmax over K or sigmoid, float32.
void to_probabilities(float *logits, int k, size_t voxels, const std::string &activation);

// Labels from probabilities (K, voxels), as outputs.to_labels (sigmoid: on where > 0.5).
void labels_from_probabilities(const float *probabilities, int k, size_t voxels, const std::string &activation,
                               uint8_t *out);

}  // namespace tpem::detail
