#include "ort_session.hpp"

#include <algorithm>
#include <cstdlib>
#include <dirent.h>
#include <dlfcn.h>
#include <mutex>
#include <sched.h>
#include <sys/stat.h>
#include <thread>

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include "error.hpp"
#include "log.hpp"

namespace tpem::detail {
namespace {

bool exists(const std::string &p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}

std::string dirname_of(const std::string &p) {
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

// libonnxruntime.so or libonnxruntime.so.X.Y.Z in `dir`, or "".
std::string library_in(const std::string &dir) {
    std::string plain = dir + "/libonnxruntime.so";
    if (exists(plain)) return plain;
    std::string found;
    if (DIR *d = ::opendir(dir.c_str())) {
        while (dirent *e = ::readdir(d)) {
            std::string name = e->d_name;
            if (name.rfind("libonnxruntime.so.", 0) == 0 && (found.empty() || name > found)) found = name;
        }
        ::closedir(d);
    }
    return found.empty() ? "" : dir + "/" + found;
}

std::string libtpem_dir() {
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void *>(&library_in), &info) && info.dli_fname) {
        char buf[4096];
        if (::realpath(info.dli_fname, buf)) return dirname_of(buf);
    }
    return "";
}

struct Loaded {
    std::string path;
    void *handle = nullptr;
    const OrtApi *api = nullptr;
    std::string version;
    std::unique_ptr<Ort::Env> env;
};

std::mutex loaded_mutex;
Loaded *loaded = nullptr;  // one ONNX Runtime per process, never unloaded (its threads may outlive us)

Loaded &load(const std::string &path) {
    std::lock_guard<std::mutex> lock(loaded_mutex);
    if (loaded) {
        if (loaded->path != path)
            log(LOG_WARNING, "ONNX Runtime " + loaded->path + " is already loaded in this process; using it, not " + path);
        return *loaded;
    }
    void *handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = ::dlerror();
        fail(TPEM_ERR_BACKEND, "cannot load ONNX Runtime from " + path + " (" + (why ? why : "dlopen failed") +
                                   "); set TPEM_ONNXRUNTIME_LIBRARY to a working libonnxruntime.so");
    }
    using GetApiBase = const OrtApiBase *(*)();
    auto get_base = reinterpret_cast<GetApiBase>(::dlsym(handle, "OrtGetApiBase"));
    if (!get_base) {
        ::dlclose(handle);
        fail(TPEM_ERR_BACKEND, path + " has no OrtGetApiBase; it is not an ONNX Runtime library");
    }
    const OrtApiBase *base = get_base();
    const OrtApi *api = base->GetApi(ORT_API_VERSION);
    if (!api) {
        std::string version = base->GetVersionString ? base->GetVersionString() : "?";
        ::dlclose(handle);
        fail(TPEM_ERR_BACKEND, "ONNX Runtime " + version + " at " + path + " is older than libtpem needs (API " +
                                   std::to_string(ORT_API_VERSION) + ", release 1.21); pip install -U onnxruntime");
    }
    Ort::InitApi(api);
    auto *l = new Loaded{path, handle, api, base->GetVersionString(), nullptr};
    l->env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_WARNING, "tpem");
    loaded = l;
    log(LOG_INFO, "loaded ONNX Runtime " + std::string(base->GetVersionString()) + " from " + path);
    return *loaded;
}

std::vector<std::string> available_providers(const OrtApi *api) {
    char **names = nullptr;
    int n = 0;
    std::vector<std::string> out;
    if (OrtStatus *st = api->GetAvailableProviders(&names, &n)) {
        api->ReleaseStatus(st);
        return out;
    }
    for (int i = 0; i < n; ++i) out.emplace_back(names[i]);
    if (OrtStatus *st = api->ReleaseAvailableProviders(names, n)) api->ReleaseStatus(st);
    return out;
}

std::string join(const std::vector<std::string> &v) {
    std::string out;
    for (const auto &s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
}

// Appends the provider, or returns why it cannot be used ("" on success).
std::string try_provider(const OrtApi *api, Ort::SessionOptions &options, const std::string &name,
                         const SessionConfig &config, const std::vector<std::string> &available) {
    const std::string ep = name == "tensorrt" ? "TensorrtExecutionProvider" : "CUDAExecutionProvider";
    if (std::find(available.begin(), available.end(), ep) == available.end())
        return ep + " is not enabled in this build of ONNX Runtime (it has " + join(available) + ")";
    auto check = [&](OrtStatus *st) -> std::string {
        if (!st) return "";
        std::string msg = api->GetErrorMessage(st);
        api->ReleaseStatus(st);
        return msg.empty() ? ep + " failed" : msg;
    };
    std::string device = std::to_string(config.device_id);
    if (name == "cuda") {
        OrtCUDAProviderOptionsV2 *cuda = nullptr;
        if (auto why = check(api->CreateCUDAProviderOptions(&cuda)); !why.empty()) return why;
        const char *keys[] = {"device_id"};
        const char *values[] = {device.c_str()};
        std::string why = check(api->UpdateCUDAProviderOptions(cuda, keys, values, 1));
        if (why.empty()) why = check(api->SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda));
        api->ReleaseCUDAProviderOptions(cuda);
        return why;
    }
    OrtTensorRTProviderOptionsV2 *trt = nullptr;
    if (auto why = check(api->CreateTensorRTProviderOptions(&trt)); !why.empty()) return why;
    std::string fp16 = config.fp16 ? "1" : "0";
    const char *keys[] = {"device_id", "trt_fp16_enable", "trt_engine_cache_enable", "trt_engine_cache_path",
                          "trt_timing_cache_enable", "trt_timing_cache_path", "trt_layer_norm_fp32_fallback"};
    const char *values[] = {device.c_str(), fp16.c_str(), "1", config.engine_cache_dir.c_str(), "1",
                            config.engine_cache_dir.c_str(), fp16.c_str()};
    std::string why = check(api->UpdateTensorRTProviderOptions(trt, keys, values, 7));
    if (why.empty()) why = check(api->SessionOptionsAppendExecutionProvider_TensorRT_V2(options, trt));
    api->ReleaseTensorRTProviderOptions(trt);
    return why;
}

}  // namespace

int default_threads() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

std::string find_onnxruntime(const std::string &explicit_path) {
    std::vector<std::string> tried;
    auto given = [&](const std::string &p, const char *source) -> std::string {
        if (exists(p)) return p;
        fail(TPEM_ERR_BACKEND, std::string("no ONNX Runtime library at ") + p + " (" + source +
                                   "); give the path of libonnxruntime.so, e.g. from pip install onnxruntime");
    };
    if (!explicit_path.empty()) return given(explicit_path, "option onnxruntime_library");
    if (const char *env = std::getenv("TPEM_ONNXRUNTIME_LIBRARY"); env && *env) return given(env, "TPEM_ONNXRUNTIME_LIBRARY");
    std::string here = libtpem_dir();
    if (!here.empty()) {
        // its own copy, then the onnxruntime wheel of the same environment (libtpem in
        // site-packages/tpem_seg_cpp/lib)
        for (const std::string &dir : {here, here + "/../../onnxruntime/capi", here + "/../onnxruntime/capi"}) {
            std::string lib = library_in(dir);
            tried.push_back(dir);
            if (!lib.empty()) return lib;
        }
    }
    for (const char *name : {"libonnxruntime.so", "libonnxruntime.so.1"}) {
        if (void *h = ::dlopen(name, RTLD_NOW | RTLD_LOCAL)) {
            ::dlclose(h);
            return name;
        }
    }
    tried.push_back("the system library path");
    fail(TPEM_ERR_BACKEND, "no ONNX Runtime library found (looked in " + join(tried) +
                               "); pip install onnxruntime into this environment, or set TPEM_ONNXRUNTIME_LIBRARY "
                               "or the option onnxruntime_library to a libonnxruntime.so");
}

struct OrtModel::Impl {
    const OrtApi *api = nullptr;
    std::unique_ptr<Ort::Session> session;
    std::string input_name, output_name;
    std::unique_ptr<Ort::MemoryInfo> memory;  // made once ONNX Runtime is loaded (its release needs the API)
};

OrtModel::OrtModel(const SessionConfig &config) : impl_(std::make_unique<Impl>()) {
    library_ = find_onnxruntime(config.library);
    Loaded &ort = load(library_);
    impl_->api = ort.api;
    version_ = ort.version;
    try {
        Ort::SessionOptions options;
        options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
        options.SetIntraOpNumThreads(config.threads > 0 ? config.threads : default_threads());
        auto available = available_providers(ort.api);
        for (const auto &p : config.providers) {
            if (p == "cpu") break;
            std::string why = try_provider(ort.api, options, p, config, available);
            if (why.empty()) {
                used_.push_back(p);
                continue;
            }
            if (config.strict_providers) fail(TPEM_ERR_BACKEND, "provider " + p + " unavailable: " + why);
            log(LOG_WARNING, "provider " + p + " unavailable, falling back: " + why);
        }
        used_.push_back("cpu");
        impl_->session = std::make_unique<Ort::Session>(*ort.env, config.model_path.c_str(), options);
        Ort::AllocatorWithDefaultOptions alloc;
        impl_->input_name = impl_->session->GetInputNameAllocated(0, alloc).get();
        impl_->output_name = impl_->session->GetOutputNameAllocated(0, alloc).get();
        impl_->memory = std::make_unique<Ort::MemoryInfo>(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault));
    } catch (const Ort::Exception &err) {
        fail(TPEM_ERR_BACKEND, std::string("ONNX Runtime cannot open ") + config.model_path + ": " + err.what());
    }
}

OrtModel::~OrtModel() = default;

void OrtModel::run(const float *tiles, const std::vector<int64_t> &shape, float *logits, size_t logits_count) {
    try {
        size_t n = 1;
        for (int64_t s : shape) n *= static_cast<size_t>(s);
        auto input = Ort::Value::CreateTensor<float>(*impl_->memory, const_cast<float *>(tiles), n, shape.data(), shape.size());
        // the logits land in the caller's buffer: no copy
        std::vector<int64_t> out_shape = shape;
        const size_t per_tile = logits_count / static_cast<size_t>(shape[0]);
        size_t voxels = 1;
        for (size_t a = 2; a < shape.size(); ++a) voxels *= static_cast<size_t>(shape[a]);
        out_shape[1] = static_cast<int64_t>(per_tile / voxels);
        auto output = Ort::Value::CreateTensor<float>(*impl_->memory, logits, logits_count, out_shape.data(), out_shape.size());
        const char *in_names[] = {impl_->input_name.c_str()};
        const char *out_names[] = {impl_->output_name.c_str()};
        impl_->session->Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names, &output, 1);
    } catch (const Ort::Exception &err) {
        fail(TPEM_ERR_BACKEND, std::string("ONNX Runtime failed: ") + err.what());
    }
}

}  // namespace tpem::detail
