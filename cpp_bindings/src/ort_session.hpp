// ONNX Runtime, loaded at run time (dlopen of the library, OrtGetApiBase): the onnxruntime wheel's
// library exports versioned symbols, so linking to one release breaks on the next, while the
// run-time API table works with any release at or above the headers' API version.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace tpem::detail {

struct SessionConfig {
    std::string model_path;
    std::string library;                 // explicit onnxruntime library ("" = search)
    int threads = 0;                     // 0: the cores this process may use
    std::vector<std::string> providers;  // "tensorrt", "cuda", "cpu", best first
    bool strict_providers = false;
    int device_id = 0;
    bool fp16 = false;
    std::string engine_cache_dir;        // TensorRT engines (the package's engines/)
};

// The library found for `explicit_path` (option, then $TPEM_ONNXRUNTIME_LIBRARY, libtpem's own
// folder, the onnxruntime wheel beside it, the system search path). Throws Error(BACKEND).
std::string find_onnxruntime(const std::string &explicit_path);

class OrtModel {
public:
    explicit OrtModel(const SessionConfig &config);
    ~OrtModel();
    OrtModel(const OrtModel &) = delete;
    OrtModel &operator=(const OrtModel &) = delete;

    // Logits (N, K, D, H, W) for tiles (N, C, D, H, W), float32.
    void run(const float *tiles, const std::vector<int64_t> &shape, float *logits, size_t logits_count);

    const std::vector<std::string> &providers() const { return used_; }
    const std::string &library() const { return library_; }
    const std::string &ort_version() const { return version_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::vector<std::string> used_;
    std::string library_, version_;
};

int default_threads();

}  // namespace tpem::detail
