#include "engine.hpp"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "log.hpp"
#include "resample.hpp"
#include "stitch.hpp"

namespace tpem::detail {

// ---------------------------------------------------------------------------------------------
// Model

Model::Model(const std::string &dir, const ModelOptions &opts) : package(open_package(dir, opts.verify)), options(opts) {
    const Manifest &m = package.manifest;
    weights = gaussian_weights(m.tile, options.sigma_scale);
    SessionConfig config;
    config.model_path = package.onnx_path();
    config.library = options.onnxruntime_library;
    config.threads = options.threads;
    config.providers = options.providers;
    config.strict_providers = options.strict_providers;
    config.device_id = options.device_id;
    config.fp16 = options.precision == "fp16";
    config.engine_cache_dir = package.engines_dir() + "/onnxruntime-tensorrt";
    ort = std::make_unique<OrtModel>(config);
}

std::string Model::info_json() const {
    const Manifest &m = manifest();
    nlohmann::json j;
    j["name"] = m.name;
    j["version"] = m.version;
    j["package"] = package.dir;
    j["channels"] = m.channels;
    j["classes"] = m.classes;
    j["tile"] = m.tile;
    j["spacing"] = m.spacing ? nlohmann::json(*m.spacing) : nlohmann::json(nullptr);
    j["activation"] = m.activation;
    j["normalization"] = {{"mode", m.normalization.mode}, {"percentiles", m.normalization.percentiles},
                          {"range", m.normalization.range}, {"clip", m.normalization.clip}};
    j["providers"] = ort->providers();
    j["onnxruntime"] = {{"library", ort->library()}, {"version", ort->ort_version()}};
    j["options"] = {{"overlap", options.overlap}, {"batch_size", options.batch_size},
                    {"sigma_scale", options.sigma_scale}, {"resample", options.resample},
                    {"threads", options.threads > 0 ? options.threads : default_threads()}};
    return j.dump();
}

void Model::check_shape(const std::array<int64_t, 4> &s) const {
    for (int a = 0; a < 4; ++a)
        if (s[a] < 1)
            fail(TPEM_ERR_INVALID_ARGUMENT, "shape (" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " +
                                                std::to_string(s[2]) + ", " + std::to_string(s[3]) +
                                                ") must be positive in every axis (C, Z, Y, X)");
    const Manifest &m = manifest();
    if (s[0] != m.in_channels) {
        std::string names;
        for (const auto &c : m.channels) names += (names.empty() ? "" : ", ") + c;
        fail(TPEM_ERR_INVALID_ARGUMENT, "the volume has " + std::to_string(s[0]) + " channel(s) but model " + m.name +
                                            " takes " + std::to_string(m.in_channels) + " (" + names +
                                            "); pass the channels in that order, CZYX");
    }
}

size_t output_bytes(const Model &model, const std::array<int64_t, 4> &s, OutputKind kind) {
    size_t voxels = static_cast<size_t>(s[1]) * static_cast<size_t>(s[2]) * static_cast<size_t>(s[3]);
    if (kind == OutputKind::Labels) return voxels;
    return voxels * static_cast<size_t>(model.manifest().out_channels) * sizeof(float);
}

// ---------------------------------------------------------------------------------------------
// One z-row of tiles: cut batches from a normalised slab, infer, stitch, emit finished planes.

namespace {

class RowRunner {
public:
    RowRunner(Model &model, const TilePlan &plan, OutputKind kind, SlabSink sink, Progress progress)
        : model_(model), plan_(plan), kind_(kind), sink_(std::move(sink)), progress_(std::move(progress)),
          stitcher_(model.manifest().out_channels, plan.padded(), plan.tile, model.weights) {}

    // slab: normalised (C, tile_z, Yp, Xp) for padded planes [z_starts[row], + tile_z).
    void run(size_t row, const std::vector<float> &slab) {
        const Manifest &m = model_.manifest();
        const int64_t C = m.in_channels, K = m.out_channels, d = plan_.tile[0], h = plan_.tile[1], w = plan_.tile[2];
        const Shape3 padded = plan_.padded();
        const int64_t Yp = padded[1], Xp = padded[2];
        const size_t tile_voxels = static_cast<size_t>(d * h * w);
        const int64_t z = plan_.z_starts[row];
        const size_t n_yx = plan_.yx_origins.size();
        const size_t batch = static_cast<size_t>(model_.options.batch_size);
        for (size_t start = 0; start < n_yx; start += batch) {
            const size_t n = std::min(batch, n_yx - start);
            tiles_.resize(n * C * tile_voxels);
            logits_.resize(n * K * tile_voxels);
            for (size_t t = 0; t < n; ++t) {
                auto [y0, x0] = plan_.yx_origins[start + t];
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t zz = 0; zz < d; ++zz)
                        for (int64_t yy = 0; yy < h; ++yy)
                            std::memcpy(&tiles_[((t * C + c) * d + zz) * h * w + yy * w],
                                        &slab[static_cast<size_t>(((c * d + zz) * Yp + y0 + yy) * Xp + x0)],
                                        static_cast<size_t>(w) * sizeof(float));
            }
            model_.ort->run(tiles_.data(), {static_cast<int64_t>(n), C, d, h, w}, logits_.data(), logits_.size());
            for (size_t t = 0; t < n; ++t) {
                auto [y0, x0] = plan_.yx_origins[start + t];
                stitcher_.add(&logits_[t * K * tile_voxels], {z, y0, x0});
            }
            done_ += static_cast<int64_t>(n);
            if (progress_ && !progress_(done_, plan_.n_tiles())) fail(TPEM_ERR_CANCELLED, "cancelled by the progress callback");
        }
        const int64_t depth = stitcher_.finishable(plan_.next_z(row));
        if (depth > 0) {
            emit(stitcher_.base(), depth);
            stitcher_.slide(depth);
        }
    }

private:
    // The part of finished padded planes [z0, z0 + depth) inside the volume, as the output kind, read
    // from the stitch window in place (z0: the window's first plane).
    void emit(int64_t z0, int64_t depth) {
        const Manifest &m = model_.manifest();
        const int64_t K = m.out_channels;
        const auto &pads = plan_.pads;
        const int64_t pz = pads[0][0], py = pads[1][0], px = pads[2][0];
        const int64_t lo = std::max(z0, pz), hi = std::min(z0 + depth, pz + plan_.shape[0]);
        if (hi <= lo) return;
        const Shape3 padded = plan_.padded();
        const int64_t Y = plan_.shape[1], X = plan_.shape[2], Yp = padded[1], Xp = padded[2], n = hi - lo;
        const size_t voxels = static_cast<size_t>(n * Y * X), stride = stitcher_.window_stride();
        const float *sums = stitcher_.window(), *norm = stitcher_.window_weights();
        auto window_row = [&](int64_t zz, int64_t yy) {  // volume row (zz, yy) of the slab in the window
            return static_cast<size_t>(((lo - z0 + zz) * Yp + py + yy) * Xp + px);
        };
        bool go;
        if (kind_ == OutputKind::Labels) {
            labels_.resize(voxels);
            for (int64_t zz = 0; zz < n; ++zz)
                for (int64_t yy = 0; yy < Y; ++yy)
                    labels_from_sums(sums + window_row(zz, yy), static_cast<int>(K), static_cast<size_t>(X), stride,
                                     m.activation, &labels_[static_cast<size_t>(zz * Y + yy) * X]);
            go = sink_(lo - pz, n, labels_.data(), voxels);
        } else {
            crop_.resize(static_cast<size_t>(K) * voxels);
            for (int64_t k = 0; k < K; ++k)
                for (int64_t zz = 0; zz < n; ++zz)
                    for (int64_t yy = 0; yy < Y; ++yy) {
                        const float *src = sums + k * stride + window_row(zz, yy), *w = norm + window_row(zz, yy);
                        float *dst = &crop_[static_cast<size_t>((k * n + zz) * Y + yy) * X];
                        for (int64_t x = 0; x < X; ++x) dst[x] = src[x] / w[x];
                    }
            if (kind_ == OutputKind::Probabilities) to_probabilities(crop_.data(), static_cast<int>(K), voxels, m.activation);
            go = sink_(lo - pz, n, crop_.data(), crop_.size() * sizeof(float));
        }
        if (!go) fail(TPEM_ERR_CANCELLED, "cancelled by the slab callback");
    }

    Model &model_;
    const TilePlan &plan_;
    OutputKind kind_;
    SlabSink sink_;
    Progress progress_;
    Stitcher stitcher_;
    int64_t done_ = 0;
    std::vector<float> tiles_, logits_, crop_;
    std::vector<uint8_t> labels_;
};

// The padded slab's row (c, dz, y) start, where volume row y of plane dz lands.
inline float *slab_row(std::vector<float> &slab, const TilePlan &plan, int64_t c, int64_t dz, int64_t y) {
    const Shape3 p = plan.padded();
    return &slab[static_cast<size_t>(((c * plan.tile[0] + dz) * p[1] + plan.pads[1][0] + y) * p[2] + plan.pads[2][0])];
}

template <typename T>
void normalize_plane(const T *plane, size_t voxels, int64_t C, const Normalizer &norm, const std::vector<float> &inv,
                     float *out) {
    for (int64_t c = 0; c < C; ++c) normalize_run(plane + c * voxels, voxels, norm.low[c], inv[c], norm.clip, out + c * voxels);
}

void normalize_any(const void *data, tpem_dtype dtype, size_t offset, size_t n, float low, float inv, bool clip, float *out) {
    switch (dtype) {
        case TPEM_DTYPE_U8: normalize_run(static_cast<const uint8_t *>(data) + offset, n, low, inv, clip, out); break;
        case TPEM_DTYPE_U16: normalize_run(static_cast<const uint16_t *>(data) + offset, n, low, inv, clip, out); break;
        case TPEM_DTYPE_F32: normalize_run(static_cast<const float *>(data) + offset, n, low, inv, clip, out); break;
        default: fail(TPEM_ERR_INVALID_ARGUMENT, "dtype unknown");
    }
}

// Normalised padded slab of row `row` straight from a whole volume (padding stays 0).
void slab_from_volume(const VolumeView &v, const TilePlan &plan, size_t row, const Normalizer &norm,
                      const std::vector<float> &inv, std::vector<float> &slab) {
    const Shape3 p = plan.padded();
    slab.assign(static_cast<size_t>(v.shape[0] * plan.tile[0] * p[1] * p[2]), 0.0f);
    const int64_t pz = plan.pads[0][0], Z = v.shape[1], Y = v.shape[2], X = v.shape[3];
    for (int64_t c = 0; c < v.shape[0]; ++c)
        for (int64_t dz = 0; dz < plan.tile[0]; ++dz) {
            int64_t vz = plan.z_starts[row] - pz + dz;
            if (vz < 0 || vz >= Z) continue;
            for (int64_t y = 0; y < Y; ++y)
                normalize_any(v.data, v.dtype, static_cast<size_t>(((c * Z + vz) * Y + y) * X), static_cast<size_t>(X),
                              norm.low[c], inv[c], norm.clip, slab_row(slab, plan, c, dz, y));
        }
}

// Runs every row, the next slab normalised by a worker thread while the network runs.
void stitch_volume(Model &model, const VolumeView &v, const Normalizer &norm, OutputKind kind, SlabSink sink,
                   const Progress &progress) {
    const Manifest &m = model.manifest();
    TilePlan plan = make_plan({v.shape[1], v.shape[2], v.shape[3]}, m.tile, model.options.overlap);
    RowRunner runner(model, plan, kind, std::move(sink), progress);
    const std::vector<float> inv = norm.inverse_scale();
    const size_t rows = plan.z_starts.size();

    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::vector<float>> ready;  // at most 2 slabs ahead
    bool stop = false;
    std::exception_ptr worker_error;
    std::thread worker([&] {
        try {
            for (size_t r = 0; r < rows; ++r) {
                std::vector<float> slab;
                slab_from_volume(v, plan, r, norm, inv, slab);
                std::unique_lock<std::mutex> lock(mu);
                cv.wait(lock, [&] { return stop || ready.size() < 2; });
                if (stop) return;
                ready.push_back(std::move(slab));
                cv.notify_all();
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu);
            worker_error = std::current_exception();
            cv.notify_all();
        }
    });
    auto finish_worker = [&] {
        {
            std::lock_guard<std::mutex> lock(mu);
            stop = true;
            cv.notify_all();
        }
        worker.join();
    };
    try {
        for (size_t r = 0; r < rows; ++r) {
            std::vector<float> slab;
            {
                std::unique_lock<std::mutex> lock(mu);
                cv.wait(lock, [&] { return !ready.empty() || worker_error; });
                if (ready.empty()) std::rethrow_exception(worker_error);
                slab = std::move(ready.front());
                ready.pop_front();
                cv.notify_all();
            }
            runner.run(r, slab);
        }
    } catch (...) {
        finish_worker();
        throw;
    }
    finish_worker();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The whole-array call

void segment_volume(Model &model, const VolumeView &v, const std::optional<std::array<double, 3>> &spacing,
                    OutputKind kind, void *out, const Progress &progress) {
    const Manifest &m = model.manifest();
    model.check_shape(v.shape);
    const size_t total = static_cast<size_t>(v.shape[0]) * static_cast<size_t>(v.shape[1] * v.shape[2] * v.shape[3]);
    check_finite(v.data, v.dtype, total);
    const int64_t K = m.out_channels, Z = v.shape[1], Y = v.shape[2], X = v.shape[3];
    const size_t plane = static_cast<size_t>(Y * X);

    if (!(model.options.resample && needs_resampling(spacing, m.spacing))) {
        if (model.options.resample && !spacing && m.spacing)
            log(LOG_INFO, "input voxel size unknown; assuming the model's (give the spacing to resample)");
        Normalizer norm = fit_normalizer(v, m.normalization);
        const size_t voxels = static_cast<size_t>(Z) * plane;
        SlabSink sink = [&](int64_t z0, int64_t depth, const void *data, size_t) {
            const size_t n = static_cast<size_t>(depth) * plane;
            if (kind == OutputKind::Labels) {
                std::memcpy(static_cast<uint8_t *>(out) + z0 * plane, data, n);
            } else {
                const float *src = static_cast<const float *>(data);
                for (int64_t k = 0; k < K; ++k)
                    std::memcpy(static_cast<float *>(out) + k * voxels + z0 * plane, src + k * n, n * sizeof(float));
            }
            return true;
        };
        stitch_volume(model, v, norm, kind, sink, progress);
        return;
    }

    // Resampling holds the whole volume in memory, as the Python runtime's does.
    log(LOG_INFO, "resampling to the model's voxel size (whole volume in memory)");
    const auto to = resampled_shape({Z, Y, X}, *spacing, *m.spacing);
    const size_t rvox = static_cast<size_t>(to[0] * to[1] * to[2]);
    std::vector<float> resampled(static_cast<size_t>(v.shape[0]) * rvox);
    {
        std::vector<float> channel(static_cast<size_t>(Z) * plane);
        for (int64_t c = 0; c < v.shape[0]; ++c) {
            // Python: volume.read_czyx().astype(np.float32)
            size_t i = 0;
            for (int64_t z = 0; z < Z; ++z)
                for (int64_t y = 0; y < Y; ++y)
                    for (int64_t x = 0; x < X; ++x) channel[i++] = static_cast<float>(v.at(c, z, y, x));
            zoom_linear(channel.data(), {Z, Y, X}, &resampled[c * rvox], to);
        }
    }
    VolumeView rv{resampled.data(), TPEM_DTYPE_F32, {v.shape[0], to[0], to[1], to[2]}};
    Normalizer norm = fit_normalizer(rv, m.normalization);
    std::vector<float> logits(static_cast<size_t>(K) * rvox);
    const size_t rplane = static_cast<size_t>(to[1] * to[2]);
    SlabSink sink = [&](int64_t z0, int64_t depth, const void *data, size_t) {
        const float *src = static_cast<const float *>(data);
        const size_t n = static_cast<size_t>(depth) * rplane;
        for (int64_t k = 0; k < K; ++k) std::memcpy(&logits[k * rvox + z0 * rplane], src + k * n, n * sizeof(float));
        return true;
    };
    stitch_volume(model, rv, norm, OutputKind::Logits, sink, progress);
    resampled = {};
    const size_t voxels = static_cast<size_t>(Z) * plane;
    std::vector<float> back;
    float *probs = kind == OutputKind::Probabilities ? static_cast<float *>(out) : nullptr;
    if (!probs) {
        back.resize(static_cast<size_t>(K) * voxels);
        probs = back.data();
    }
    for (int64_t k = 0; k < K; ++k) zoom_linear(&logits[k * rvox], to, probs + k * voxels, {Z, Y, X});
    to_probabilities(probs, static_cast<int>(K), voxels, m.activation);
    if (kind == OutputKind::Labels)
        labels_from_probabilities(probs, static_cast<int>(K), voxels, m.activation, static_cast<uint8_t *>(out));
}

// ---------------------------------------------------------------------------------------------
// The plane stream

struct Stream::Impl {
    Model &model;
    std::array<int64_t, 4> shape;
    tpem_dtype dtype;
    Normalizer norm;
    std::vector<float> inv;
    TilePlan plan;
    RowRunner runner;
    std::deque<std::vector<float>> planes;  // normalised (C, Y, X), volume planes [first, pushed)
    int64_t first = 0, pushed = 0;
    size_t row = 0;
    bool failed = false;

    Impl(Model &m, const std::array<int64_t, 4> &s, tpem_dtype d, OutputKind kind, const Normalizer &n, SlabSink sink)
        : model(m), shape(s), dtype(d), norm(n), inv(n.inverse_scale()),
          plan(make_plan({s[1], s[2], s[3]}, m.manifest().tile, m.options.overlap)),
          runner(m, plan, kind, std::move(sink), Progress{}) {}

    // Runs every row whose planes are all in, then forgets planes no later row reads.
    void run_ready() {
        const int64_t pz = plan.pads[0][0], Z = shape[1], Y = shape[2], X = shape[3], C = shape[0];
        while (row < plan.z_starts.size()) {
            const int64_t z = plan.z_starts[row];
            const int64_t need = std::min(z - pz + plan.tile[0], Z);
            if (pushed < need) return;
            const Shape3 p = plan.padded();
            std::vector<float> slab(static_cast<size_t>(C * plan.tile[0] * p[1] * p[2]), 0.0f);
            for (int64_t dz = 0; dz < plan.tile[0]; ++dz) {
                const int64_t vz = z - pz + dz;
                if (vz < 0 || vz >= Z) continue;
                const std::vector<float> &pl = planes[static_cast<size_t>(vz - first)];
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t y = 0; y < Y; ++y)
                        std::memcpy(slab_row(slab, plan, c, dz, y), &pl[static_cast<size_t>((c * Y + y) * X)],
                                    static_cast<size_t>(X) * sizeof(float));
            }
            runner.run(row, slab);
            ++row;
            const int64_t keep_from = row < plan.z_starts.size() ? plan.z_starts[row] - pz : Z;
            while (first < keep_from && !planes.empty()) {
                planes.pop_front();
                ++first;
            }
        }
    }
};

Stream::Stream(Model &model, const std::array<int64_t, 4> &shape, tpem_dtype dtype, OutputKind kind,
               const Normalizer &normalizer, SlabSink sink) {
    model.check_shape(shape);
    dtype_size(dtype);
    if (normalizer.low.size() != static_cast<size_t>(shape[0]) || normalizer.high.size() != static_cast<size_t>(shape[0]))
        fail(TPEM_ERR_INVALID_ARGUMENT, "the stream's low and high need one value per channel (" +
                                            std::to_string(shape[0]) + ")");
    impl_ = std::make_unique<Impl>(model, shape, dtype, kind, normalizer, std::move(sink));
}

Stream::~Stream() = default;

void Stream::push(const void *plane, size_t bytes) {
    Impl &s = *impl_;
    if (s.failed) fail(TPEM_ERR_INVALID_ARGUMENT, "the stream failed earlier; close it and open a new one");
    const int64_t C = s.shape[0], Y = s.shape[2], X = s.shape[3];
    const size_t voxels = static_cast<size_t>(Y * X), expected = static_cast<size_t>(C) * voxels * dtype_size(s.dtype);
    if (bytes != expected)
        fail(TPEM_ERR_INVALID_ARGUMENT, "a plane is " + std::to_string(expected) + " bytes (C x Y x X of the dtype), got " +
                                            std::to_string(bytes));
    if (s.pushed >= s.shape[1])
        fail(TPEM_ERR_INVALID_ARGUMENT, "all " + std::to_string(s.shape[1]) + " planes were pushed already; call finish");
    check_finite(plane, s.dtype, static_cast<size_t>(C) * voxels);
    std::vector<float> normalised(static_cast<size_t>(C) * voxels);
    for (int64_t c = 0; c < C; ++c)
        normalize_any(plane, s.dtype, c * voxels, voxels, s.norm.low[c], s.inv[c], s.norm.clip, &normalised[c * voxels]);
    s.planes.push_back(std::move(normalised));
    ++s.pushed;
    try {
        s.run_ready();
    } catch (...) {
        s.failed = true;
        throw;
    }
}

void Stream::finish() {
    Impl &s = *impl_;
    if (s.pushed != s.shape[1])
        fail(TPEM_ERR_INVALID_ARGUMENT, "the stream got " + std::to_string(s.pushed) + " of " +
                                            std::to_string(s.shape[1]) + " planes; push them all before finish");
    if (s.row != s.plan.z_starts.size()) fail(TPEM_ERR_INTERNAL, "stream rows left after the last plane");
}

}  // namespace tpem::detail
