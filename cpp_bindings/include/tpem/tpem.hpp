// tpem.hpp: a header-only C++17 layer over the C ABI (as ONNX Runtime's C++ API wraps its C API):
// RAII handles, std::vector buffers, and tpem::Error thrown for every failed status.
#pragma once

#include <array>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tpem/tpem.h"

namespace tpem {

class Error : public std::runtime_error {
public:
    Error(tpem_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    tpem_status status() const noexcept { return status_; }

private:
    tpem_status status_;
};

inline std::string last_error() {
    std::string message(tpem_last_error(nullptr, 0), '\0');
    tpem_last_error(message.data(), message.size() + 1);
    return message;
}

inline void check(tpem_status status) {
    if (status != TPEM_OK) throw Error(status, last_error());
}

using Shape = std::array<int64_t, 4>;  // (C, Z, Y, X)

template <typename T> constexpr tpem_dtype dtype_of();
template <> constexpr tpem_dtype dtype_of<uint8_t>() { return TPEM_DTYPE_U8; }
template <> constexpr tpem_dtype dtype_of<uint16_t>() { return TPEM_DTYPE_U16; }
template <> constexpr tpem_dtype dtype_of<float>() { return TPEM_DTYPE_F32; }

class Model {
public:
    // options_json: see tpem_model_open, e.g. R"({"threads": 2})".
    explicit Model(const std::string &package_dir, const std::string &options_json = "{}") {
        tpem_model *raw = nullptr;
        check(tpem_model_open(package_dir.c_str(), options_json.c_str(), &raw));
        handle_.reset(raw);
    }

    // The model as a JSON string (name, channels, classes, tile, spacing, providers, ...).
    std::string info() const {
        size_t needed = 0;
        tpem_status s = tpem_model_info(handle_.get(), nullptr, 0, &needed);
        if (s != TPEM_ERR_BUFFER_TOO_SMALL) check(s);
        std::string json(needed, '\0');
        check(tpem_model_info(handle_.get(), json.data(), json.size(), &needed));
        json.resize(needed - 1);
        return json;
    }

    // Labels (Z*Y*X uint8) of a CZYX volume; spacing (z, y, x) µm or none for the model's.
    template <typename T>
    std::vector<uint8_t> labels(const T *data, const Shape &shape, std::optional<std::array<double, 3>> spacing = {},
                                tpem_progress_fn progress = nullptr, void *user = nullptr) {
        std::vector<uint8_t> out(bytes(shape, TPEM_OUTPUT_LABELS));
        run(data, shape, spacing, TPEM_OUTPUT_LABELS, out.data(), out.size(), progress, user);
        return out;
    }

    // Probabilities (K*Z*Y*X float32, class axis first).
    template <typename T>
    std::vector<float> probabilities(const T *data, const Shape &shape, std::optional<std::array<double, 3>> spacing = {},
                                     tpem_progress_fn progress = nullptr, void *user = nullptr) {
        std::vector<float> out(bytes(shape, TPEM_OUTPUT_PROBABILITIES) / sizeof(float));
        run(data, shape, spacing, TPEM_OUTPUT_PROBABILITIES, out.data(), out.size() * sizeof(float), progress, user);
        return out;
    }

    size_t bytes(const Shape &shape, tpem_output output) const {
        size_t n = 0;
        check(tpem_output_bytes(handle_.get(), shape.data(), output, &n));
        return n;
    }

    tpem_model *get() const noexcept { return handle_.get(); }

private:
    template <typename T>
    void run(const T *data, const Shape &shape, const std::optional<std::array<double, 3>> &spacing, tpem_output output,
             void *out, size_t out_bytes, tpem_progress_fn progress, void *user) {
        check(tpem_segment(handle_.get(), data, dtype_of<T>(), shape.data(), spacing ? spacing->data() : nullptr, output,
                           out, out_bytes, progress, user));
    }

    struct Close {
        void operator()(tpem_model *m) const noexcept { tpem_model_close(m); }
    };
    std::unique_ptr<tpem_model, Close> handle_;
};

// Push z-planes (C, Y, X) in order; on_slab(z0, depth, data, bytes) gets each finished slab.
// A throwing on_slab cancels the stream; the exception is rethrown from push or finish.
class Stream {
public:
    using SlabFn = std::function<void(int64_t z0, int64_t depth, const void *data, size_t bytes)>;

    Stream(Model &model, const Shape &shape, tpem_dtype dtype, tpem_output output, SlabFn on_slab,
           const std::string &options_json = "{}")
        : on_slab_(std::make_unique<SlabFn>(std::move(on_slab))), error_(std::make_unique<std::exception_ptr>()) {
        tpem_stream *raw = nullptr;
        ctx_ = std::make_unique<Context>(Context{on_slab_.get(), error_.get()});
        check(tpem_stream_open(model.get(), shape.data(), dtype, output, options_json.c_str(), &Stream::trampoline,
                               ctx_.get(), &raw));
        handle_.reset(raw);
    }

    void push(const void *plane, size_t bytes) { rethrow(tpem_stream_push(handle_.get(), plane, bytes)); }
    void finish() { rethrow(tpem_stream_finish(handle_.get())); }

private:
    struct Context {
        SlabFn *fn;
        std::exception_ptr *error;
    };

    static int trampoline(int64_t z0, int64_t depth, const void *data, size_t bytes, void *user) noexcept {
        auto *ctx = static_cast<Context *>(user);
        try {
            (*ctx->fn)(z0, depth, data, bytes);
            return 0;
        } catch (...) {
            *ctx->error = std::current_exception();
            return 1;
        }
    }

    void rethrow(tpem_status status) {
        if (*error_) std::rethrow_exception(std::exchange(*error_, nullptr));
        check(status);
    }

    struct Close {
        void operator()(tpem_stream *s) const noexcept { tpem_stream_close(s); }
    };
    std::unique_ptr<SlabFn> on_slab_;
    std::unique_ptr<std::exception_ptr> error_;
    std::unique_ptr<Context> ctx_;
    std::unique_ptr<tpem_stream, Close> handle_;
};

}  // namespace tpem
