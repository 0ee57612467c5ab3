// The run: normalise, tile, infer, stitch, finish; the whole-array call and the plane stream.
// Data flows one way: raw planes -> normalised padded slab -> tile batches -> ONNX Runtime ->
// stitcher -> finished slabs -> the caller's buffer or callback.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "normalize.hpp"
#include "options.hpp"
#include "ort_session.hpp"
#include "package.hpp"
#include "tiling.hpp"
#include "volume.hpp"

namespace tpem::detail {

enum class OutputKind { Labels, Probabilities, Logits };

struct Model {
    Package package;
    ModelOptions options;
    std::unique_ptr<OrtModel> ort;
    std::vector<float> weights;  // Gaussian blending weights of a tile

    Model(const std::string &dir, const ModelOptions &options);
    const Manifest &manifest() const { return package.manifest; }
    std::string info_json() const;
    // Throws Error(INVALID_ARGUMENT) unless shape_czyx is positive with the model's channel count.
    void check_shape(const std::array<int64_t, 4> &shape) const;
};

// finished output block: volume planes [z0, z0 + depth); data labels uint8 (depth, Y, X) or
// float32 (K, depth, Y, X). Returns false to cancel.
using SlabSink = std::function<bool(int64_t z0, int64_t depth, const void *data, size_t bytes)>;
// tiles done so far; returns false to cancel
using Progress = std::function<bool(int64_t done, int64_t total)>;

size_t output_bytes(const Model &model, const std::array<int64_t, 4> &shape, OutputKind kind);

// The whole-array call: resamples when spacing differs from the model's, else streams slab by
// slab with the next slab normalised in a worker thread while the network runs.
void segment_volume(Model &model, const VolumeView &volume, const std::optional<std::array<double, 3>> &spacing,
                    OutputKind kind, void *out, const Progress &progress);

class Stream {
public:
    Stream(Model &model, const std::array<int64_t, 4> &shape, tpem_dtype dtype, OutputKind kind,
           const Normalizer &normalizer, SlabSink sink);
    ~Stream();
    void push(const void *plane, size_t bytes);
    void finish();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tpem::detail
