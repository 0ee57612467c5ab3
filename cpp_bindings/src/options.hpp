// The model options of tpem_model_open, parsed from their JSON object (unknown keys refused).
#pragma once

#include <string>
#include <vector>

namespace tpem::detail {

struct ModelOptions {
    int threads = 0;                 // 0: the cores this process may use
    std::string onnxruntime_library;
    std::vector<std::string> providers{"cpu"};
    bool strict_providers = false;
    int device_id = 0;
    std::string precision = "fp32";
    double overlap = 0.25;
    int batch_size = 2;              // tiles per network call, as the Python runtime on a CPU
    double sigma_scale = 0.125;
    bool resample = true;
    bool verify = true;
};

// Throws Error(INVALID_ARGUMENT) on malformed JSON, an unknown key or a bad value;
// Error(BACKEND) on a backend other than onnxruntime.
ModelOptions parse_model_options(const char *json);

}  // namespace tpem::detail
