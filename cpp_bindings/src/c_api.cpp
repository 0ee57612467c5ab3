// The C ABI: every entry point catches everything, keeps a one-line message per thread and
// returns a status. Nothing throws or aborts across it.
#include <cmath>
#include <cstring>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include "engine.hpp"
#include "error.hpp"
#include "log.hpp"
#include "tpem/tpem.h"

#ifndef TPEM_VERSION_STRING
#define TPEM_VERSION_STRING "0.0.0"
#endif

using namespace tpem::detail;

struct tpem_model {
    Model model;
    tpem_model(const std::string &dir, const ModelOptions &o) : model(dir, o) {}
};

struct tpem_stream {
    Stream stream;
    template <typename... A>
    explicit tpem_stream(A &&...a) : stream(std::forward<A>(a)...) {}
};

namespace {

thread_local std::string last_error;

tpem_status set_error(tpem_status status, const std::string &message) {
    last_error = message;
    return status;
}

template <typename F>
tpem_status guarded(F &&body) {
    try {
        body();
        last_error.clear();
        return TPEM_OK;
    } catch (const Error &err) {
        return set_error(err.status, err.what());
    } catch (const std::bad_alloc &) {
        return set_error(TPEM_ERR_INTERNAL, "out of memory; segment a smaller volume or use the stream");
    } catch (const std::exception &err) {
        return set_error(TPEM_ERR_INTERNAL, std::string("internal error: ") + err.what());
    } catch (...) {
        return set_error(TPEM_ERR_INTERNAL, "internal error of unknown kind");
    }
}

void need(const void *p, const char *name) {
    if (!p) fail(TPEM_ERR_INVALID_ARGUMENT, std::string(name) + " is NULL");
}

std::array<int64_t, 4> shape4(const int64_t s[4]) { return {s[0], s[1], s[2], s[3]}; }

OutputKind kind_of(tpem_output output) {
    if (output == TPEM_OUTPUT_LABELS) return OutputKind::Labels;
    if (output == TPEM_OUTPUT_PROBABILITIES) return OutputKind::Probabilities;
    fail(TPEM_ERR_INVALID_ARGUMENT, "output " + std::to_string(static_cast<int>(output)) +
                                        " unknown; use TPEM_OUTPUT_LABELS or TPEM_OUTPUT_PROBABILITIES");
}

void check_dtype(tpem_dtype dtype) { dtype_size(dtype); }

std::vector<float> floats(const nlohmann::json &v, const char *key) {
    try {
        return v.get<std::vector<float>>();
    } catch (const nlohmann::json::exception &) {
        fail(TPEM_ERR_INVALID_ARGUMENT, std::string("stream options: '") + key + "' must be a list of numbers");
    }
}

Normalizer stream_normalizer(const Model &model, const char *text, int64_t channels) {
    const Normalization &spec = model.manifest().normalization;
    nlohmann::json j = nlohmann::json::object();
    if (text && *text) {
        try {
            j = nlohmann::json::parse(text);
        } catch (const nlohmann::json::parse_error &err) {
            fail(TPEM_ERR_INVALID_ARGUMENT, std::string("stream options: not valid JSON (") + err.what() + ")");
        }
        if (!j.is_object()) fail(TPEM_ERR_INVALID_ARGUMENT, "stream options must be a JSON object such as {\"low\": [0], \"high\": [255]}");
        for (auto it = j.begin(); it != j.end(); ++it)
            if (it.key() != "low" && it.key() != "high")
                fail(TPEM_ERR_INVALID_ARGUMENT, "stream options: unknown option '" + it.key() + "'; known: low, high");
    }
    if (j.contains("low") != j.contains("high"))
        fail(TPEM_ERR_INVALID_ARGUMENT, "stream options: give both low and high");
    if (j.contains("low")) {
        Normalizer n{floats(j["low"], "low"), floats(j["high"], "high"), spec.mode == "none" ? false : spec.clip};
        return n;
    }
    if (spec.mode == "percentile")
        fail(TPEM_ERR_INVALID_ARGUMENT, "package " + model.manifest().name +
                                            " normalises by percentiles of the whole volume, which a stream cannot see; "
                                            "give {\"low\": [...], \"high\": [...]} (e.g. from tpem_fit_normalization "
                                            "on a reference stack)");
    return fixed_normalizer(spec, static_cast<size_t>(channels));
}

}  // namespace

extern "C" {

uint32_t tpem_abi_version(void) { return TPEM_ABI_VERSION; }

const char *tpem_version(void) { return TPEM_VERSION_STRING; }

size_t tpem_last_error(char *buf, size_t len) {
    if (buf && len > 0) {
        size_t n = std::min(len - 1, last_error.size());
        std::memcpy(buf, last_error.data(), n);
        buf[n] = '\0';
    }
    return last_error.size();
}

void tpem_set_log(tpem_log_fn fn, void *user, int min_level) { set_log(fn, user, min_level); }

tpem_status tpem_model_open(const char *package_dir, const char *options_json, tpem_model **out) {
    return guarded([&] {
        need(out, "out");
        *out = nullptr;
        need(package_dir, "package_dir");
        ModelOptions options = parse_model_options(options_json);
        *out = new tpem_model(package_dir, options);
    });
}

void tpem_model_close(tpem_model *model) { delete model; }

tpem_status tpem_model_info(const tpem_model *model, char *json, size_t len, size_t *needed) {
    return guarded([&] {
        need(model, "model");
        need(needed, "needed");
        std::string text = model->model.info_json();
        *needed = text.size() + 1;
        if (len < text.size() + 1) {
            if (json && len > 0) json[0] = '\0';
            fail(TPEM_ERR_BUFFER_TOO_SMALL, "the info buffer holds " + std::to_string(len) + " bytes but " +
                                                std::to_string(text.size() + 1) + " are needed");
        }
        need(json, "json");
        std::memcpy(json, text.c_str(), text.size() + 1);
    });
}

tpem_status tpem_output_bytes(const tpem_model *model, const int64_t shape_czyx[4], tpem_output output, size_t *bytes) {
    return guarded([&] {
        need(model, "model");
        need(shape_czyx, "shape_czyx");
        need(bytes, "bytes");
        auto shape = shape4(shape_czyx);
        model->model.check_shape(shape);
        *bytes = output_bytes(model->model, shape, kind_of(output));
    });
}

tpem_status tpem_segment(tpem_model *model, const void *data, tpem_dtype dtype, const int64_t shape_czyx[4],
                         const double spacing_zyx[3], tpem_output output, void *out, size_t out_bytes,
                         tpem_progress_fn progress, void *user) {
    return guarded([&] {
        need(model, "model");
        need(data, "data");
        need(shape_czyx, "shape_czyx");
        need(out, "out");
        check_dtype(dtype);
        auto shape = shape4(shape_czyx);
        OutputKind kind = kind_of(output);
        model->model.check_shape(shape);
        size_t bytes = output_bytes(model->model, shape, kind);
        if (out_bytes < bytes)
            fail(TPEM_ERR_BUFFER_TOO_SMALL, "the output buffer holds " + std::to_string(out_bytes) + " bytes but " +
                                                std::to_string(bytes) + " are needed");
        std::optional<std::array<double, 3>> spacing;
        if (spacing_zyx) {
            for (int a = 0; a < 3; ++a)
                if (!(spacing_zyx[a] > 0) || !std::isfinite(spacing_zyx[a]))
                    fail(TPEM_ERR_INVALID_ARGUMENT, "spacing_zyx must be 3 positive voxel sizes in µm, or NULL");
            spacing = std::array<double, 3>{spacing_zyx[0], spacing_zyx[1], spacing_zyx[2]};
        }
        Progress report;
        if (progress)
            report = [&](int64_t done, int64_t total) { return progress(static_cast<double>(done) / total, user) == 0; };
        segment_volume(model->model, VolumeView{data, dtype, shape}, spacing, kind, out, report);
    });
}

tpem_status tpem_stream_open(tpem_model *model, const int64_t shape_czyx[4], tpem_dtype dtype, tpem_output output,
                             const char *options_json, tpem_slab_fn on_slab, void *user, tpem_stream **out) {
    return guarded([&] {
        need(out, "out");
        *out = nullptr;
        need(model, "model");
        need(shape_czyx, "shape_czyx");
        need(reinterpret_cast<const void *>(on_slab), "on_slab");
        check_dtype(dtype);
        auto shape = shape4(shape_czyx);
        model->model.check_shape(shape);
        OutputKind kind = kind_of(output);
        Normalizer norm = stream_normalizer(model->model, options_json, shape[0]);
        SlabSink sink = [on_slab, user](int64_t z0, int64_t depth, const void *data, size_t bytes) {
            return on_slab(z0, depth, data, bytes, user) == 0;
        };
        *out = new tpem_stream(model->model, shape, dtype, kind, norm, sink);
    });
}

tpem_status tpem_stream_push(tpem_stream *stream, const void *plane, size_t plane_bytes) {
    return guarded([&] {
        need(stream, "stream");
        need(plane, "plane");
        stream->stream.push(plane, plane_bytes);
    });
}

tpem_status tpem_stream_finish(tpem_stream *stream) {
    return guarded([&] {
        need(stream, "stream");
        stream->stream.finish();
    });
}

void tpem_stream_close(tpem_stream *stream) { delete stream; }

tpem_status tpem_fit_normalization(const tpem_model *model, const void *data, tpem_dtype dtype,
                                   const int64_t shape_czyx[4], float *low, float *high) {
    return guarded([&] {
        need(model, "model");
        need(data, "data");
        need(shape_czyx, "shape_czyx");
        need(low, "low");
        need(high, "high");
        check_dtype(dtype);
        auto shape = shape4(shape_czyx);
        model->model.check_shape(shape);
        check_finite(data, dtype, static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]));
        Normalizer n = fit_normalizer(VolumeView{data, dtype, shape}, model->model.manifest().normalization);
        std::copy(n.low.begin(), n.low.end(), low);
        std::copy(n.high.begin(), n.high.end(), high);
    });
}

tpem_status tpem_tile_grid(const int64_t shape_zyx[3], const int64_t tile_zyx[3], double overlap, int64_t pads_zyx[6],
                           int64_t *origins_zyx, size_t capacity, size_t *count) {
    return guarded([&] {
        need(shape_zyx, "shape_zyx");
        need(tile_zyx, "tile_zyx");
        need(pads_zyx, "pads_zyx");
        need(count, "count");
        for (int a = 0; a < 3; ++a)
            if (shape_zyx[a] < 1 || tile_zyx[a] < 1)
                fail(TPEM_ERR_INVALID_ARGUMENT, "shape and tile must be positive in every axis");
        TilePlan plan = make_plan({shape_zyx[0], shape_zyx[1], shape_zyx[2]}, {tile_zyx[0], tile_zyx[1], tile_zyx[2]}, overlap);
        for (int a = 0; a < 3; ++a) {
            pads_zyx[2 * a] = plan.pads[a][0];
            pads_zyx[2 * a + 1] = plan.pads[a][1];
        }
        *count = static_cast<size_t>(plan.n_tiles());
        if (capacity < *count)
            fail(TPEM_ERR_BUFFER_TOO_SMALL, "origins_zyx holds " + std::to_string(capacity) + " tiles but " +
                                                std::to_string(*count) + " are needed (" + std::to_string(*count * 24) + " bytes)");
        need(origins_zyx, "origins_zyx");
        size_t i = 0;
        for (int64_t z : plan.z_starts)
            for (const auto &yx : plan.yx_origins) {
                origins_zyx[i++] = z;
                origins_zyx[i++] = yx[0];
                origins_zyx[i++] = yx[1];
            }
    });
}

tpem_status tpem_gaussian_weights(const int64_t tile_zyx[3], double sigma_scale, float *out, size_t count) {
    return guarded([&] {
        need(tile_zyx, "tile_zyx");
        need(out, "out");
        for (int a = 0; a < 3; ++a)
            if (tile_zyx[a] < 1) fail(TPEM_ERR_INVALID_ARGUMENT, "tile must be positive in every axis");
        if (!(sigma_scale > 0)) fail(TPEM_ERR_INVALID_ARGUMENT, "sigma_scale must be positive, e.g. 0.125");
        size_t n = static_cast<size_t>(tile_zyx[0] * tile_zyx[1] * tile_zyx[2]);
        if (count < n)
            fail(TPEM_ERR_BUFFER_TOO_SMALL, "out holds " + std::to_string(count) + " floats but " + std::to_string(n) +
                                                " are needed (" + std::to_string(n * 4) + " bytes)");
        auto w = gaussian_weights({tile_zyx[0], tile_zyx[1], tile_zyx[2]}, sigma_scale);
        std::copy(w.begin(), w.end(), out);
    });
}

}  // extern "C"
