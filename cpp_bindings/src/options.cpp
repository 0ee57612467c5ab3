#include "options.hpp"

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace tpem::detail {
namespace {

[[noreturn]] void bad(const std::string &what) { fail(TPEM_ERR_INVALID_ARGUMENT, "options: " + what); }

template <typename T>
T get(const nlohmann::json &v, const std::string &key, const char *type) {
    try {
        return v.get<T>();
    } catch (const nlohmann::json::exception &) {
        bad("'" + key + "' must be " + type + ", got " + v.dump());
    }
}

}  // namespace

ModelOptions parse_model_options(const char *text) {
    ModelOptions o;
    if (!text || !*text) return o;
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error &err) {
        bad(std::string("not valid JSON (") + err.what() + "); pass an object such as {\"threads\": 2}");
    }
    if (!j.is_object()) bad("must be a JSON object such as {\"threads\": 2}, got " + j.dump());
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string &k = it.key();
        const auto &v = it.value();
        if (k == "threads") {
            if (!v.is_number_integer() || v.get<int64_t>() < 0) bad("'threads' must be a non-negative integer (0: all cores)");
            o.threads = v.get<int>();
        } else if (k == "onnxruntime_library") {
            o.onnxruntime_library = get<std::string>(v, k, "a path");
        } else if (k == "providers") {
            o.providers = get<std::vector<std::string>>(v, k, "a list of provider names");
            for (const auto &p : o.providers)
                if (p != "tensorrt" && p != "cuda" && p != "cpu")
                    bad("provider '" + p + "' unknown; use tensorrt, cuda or cpu");
        } else if (k == "strict_providers") {
            o.strict_providers = get<bool>(v, k, "true or false");
        } else if (k == "device_id") {
            if (!v.is_number_integer() || v.get<int64_t>() < 0) bad("'device_id' must be a non-negative integer");
            o.device_id = v.get<int>();
        } else if (k == "precision") {
            o.precision = get<std::string>(v, k, "\"fp32\" or \"fp16\"");
            if (o.precision != "fp32" && o.precision != "fp16") bad("'precision' must be fp32 or fp16");
        } else if (k == "backend") {
            std::string b = get<std::string>(v, k, "a backend name");
            if (b != "onnxruntime")
                fail(TPEM_ERR_BACKEND, "backend '" + b + "' is not in libtpem, which runs onnxruntime; use "
                                       "\"backend\": \"onnxruntime\" (TensorRT through \"providers\": [\"tensorrt\"])");
        } else if (k == "overlap") {
            o.overlap = get<double>(v, k, "a number in [0, 1)");
            if (!(o.overlap >= 0.0 && o.overlap < 1.0)) bad("'overlap' must be in [0, 1), e.g. 0.25");
        } else if (k == "batch_size") {
            if (!v.is_number_integer() || v.get<int64_t>() < 1) bad("'batch_size' must be a positive integer");
            o.batch_size = v.get<int>();
        } else if (k == "sigma_scale") {
            o.sigma_scale = get<double>(v, k, "a positive number");
            if (!(o.sigma_scale > 0)) bad("'sigma_scale' must be positive, e.g. 0.125");
        } else if (k == "resample") {
            o.resample = get<bool>(v, k, "true or false");
        } else if (k == "verify") {
            o.verify = get<bool>(v, k, "true or false");
        } else {
            bad("unknown option '" + k + "'; known: threads, onnxruntime_library, providers, strict_providers, "
                "device_id, precision, backend, overlap, batch_size, sigma_scale, resample, verify");
        }
    }
    if (o.precision == "fp16" && (o.providers.empty() || o.providers.front() != "tensorrt"))
        bad("precision fp16 needs \"providers\": [\"tensorrt\", ...]; on the CPU use fp32");
    return o;
}

}  // namespace tpem::detail
