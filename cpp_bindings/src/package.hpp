// Model packages (NAME.tpem folders): manifest.json read, checked and verified as tpem_seg.models.package does.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tpem::detail {

struct Normalization {
    std::string mode = "percentile";               // percentile | range | none
    std::array<double, 2> percentiles{1.0, 99.8};  // low, high, in percent
    std::array<double, 2> range{0.0, 1.0};         // fixed intensities mapped to 0 and 1
    bool clip = true;
};

struct Manifest {
    std::string name, version;
    int in_channels = 0, out_channels = 0;
    std::array<int64_t, 3> tile{};                  // (z, y, x) voxels
    std::vector<std::string> channels, classes;
    std::optional<std::array<double, 3>> spacing;   // (z, y, x) µm the network was trained at
    Normalization normalization;
    std::string activation = "softmax";            // softmax | sigmoid
    std::string onnx_file = "model.onnx";
    std::map<std::string, std::string> files;      // relative path -> sha256 hex
    nlohmann::json raw;
};

struct Package {
    std::string dir;  // the folder, as given
    Manifest manifest;
    std::string onnx_path() const { return dir + "/" + manifest.onnx_file; }
    std::string engines_dir() const { return dir + "/engines"; }
};

// Reads and checks dir/manifest.json; with verify, refuses a package whose manifest digest or any
// listed file's sha256 differs, and any listed path that leaves the folder. Throws Error.
Package open_package(const std::string &dir, bool verify);

}  // namespace tpem::detail
