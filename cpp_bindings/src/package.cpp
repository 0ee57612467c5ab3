#include "package.hpp"

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "error.hpp"
#include "log.hpp"
#include "py_json.hpp"
#include "sha256.hpp"

namespace tpem::detail {
namespace {

constexpr int FORMAT_VERSION = 1;
const char *DIGEST_KEY = "manifest_sha256";

bool is_dir(const std::string &p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string &p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string real_path(const std::string &p) {
    char buf[PATH_MAX];
    if (!::realpath(p.c_str(), buf)) return {};
    return buf;
}

[[noreturn]] void malformed(const std::string &dir, const std::string &what) {
    fail(TPEM_ERR_PACKAGE, dir + ": manifest is malformed (" + what + "); re-export the package with `tpem-seg export`");
}

const nlohmann::json &field(const nlohmann::json &obj, const char *key, const std::string &dir) {
    if (!obj.is_object() || !obj.contains(key)) malformed(dir, std::string("missing '") + key + "'");
    return obj.at(key);
}

template <typename T>
T as(const nlohmann::json &v, const char *what, const std::string &dir) {
    try {
        return v.get<T>();
    } catch (const nlohmann::json::exception &) {
        malformed(dir, std::string("'") + what + "' has the wrong type");
    }
}

// A listed file must stay inside the package: no absolute path, no '..', no link leading out.
std::string inside(const std::string &dir, const std::string &rel) {
    std::string refused = dir + ": manifest lists '" + rel + "', a path outside the package; re-export the package";
    if (rel.empty() || rel[0] == '/' || rel.find('\\') != std::string::npos) fail(TPEM_ERR_PACKAGE, refused);
    std::stringstream parts(rel);
    std::string part;
    while (std::getline(parts, part, '/'))
        if (part == "..") fail(TPEM_ERR_PACKAGE, refused);
    std::string path = dir + "/" + rel;
    std::string root = real_path(dir), target = real_path(path);
    if (!target.empty() && target.compare(0, root.size() + 1, root + "/") != 0) fail(TPEM_ERR_PACKAGE, refused);
    return path;
}

Manifest parse(const nlohmann::json &d, const std::string &dir) {
    Manifest m;
    m.raw = d;
    if (d.contains("format_version") && d["format_version"].is_number() &&
        d["format_version"].get<double>() > FORMAT_VERSION)
        fail(TPEM_ERR_PACKAGE, dir + ": package format " + d["format_version"].dump() +
                                   " is newer than this libtpem reads (1); upgrade tpem-seg-cpp");
    m.name = as<std::string>(field(d, "name", dir), "name", dir);
    m.version = d.contains("version") ? as<std::string>(d["version"], "version", dir) : "0.1.0";
    const auto &config = field(d, "config", dir);
    m.in_channels = as<int>(field(config, "in_channels", dir), "config.in_channels", dir);
    m.out_channels = as<int>(field(config, "out_channels", dir), "config.out_channels", dir);
    auto tile = as<std::vector<int64_t>>(field(config, "tile", dir), "config.tile", dir);
    if (tile.size() != 3 || tile[0] < 1 || tile[1] < 1 || tile[2] < 1) malformed(dir, "config.tile must be 3 positive ints");
    m.tile = {tile[0], tile[1], tile[2]};
    if (m.in_channels < 1 || m.out_channels < 1) malformed(dir, "channel counts must be positive");

    const auto &input = field(d, "input", dir);
    m.channels = as<std::vector<std::string>>(field(input, "channels", dir), "input.channels", dir);
    if (input.contains("spacing") && !input["spacing"].is_null()) {
        auto s = as<std::vector<double>>(input["spacing"], "input.spacing", dir);
        if (s.size() != 3 || !(s[0] > 0 && s[1] > 0 && s[2] > 0)) malformed(dir, "input.spacing must be 3 positive numbers");
        m.spacing = std::array<double, 3>{s[0], s[1], s[2]};
    }
    if (input.contains("normalization")) {
        const auto &n = input["normalization"];
        if (!n.is_object()) malformed(dir, "input.normalization must be an object");
        for (auto it = n.begin(); it != n.end(); ++it)
            if (it.key() != "mode" && it.key() != "percentiles" && it.key() != "range" && it.key() != "clip")
                malformed(dir, "input.normalization has an unknown key '" + it.key() + "'");
        if (n.contains("mode")) m.normalization.mode = as<std::string>(n["mode"], "normalization.mode", dir);
        if (n.contains("percentiles")) {
            auto p = as<std::vector<double>>(n["percentiles"], "normalization.percentiles", dir);
            if (p.size() != 2) malformed(dir, "normalization.percentiles must have 2 entries");
            m.normalization.percentiles = {p[0], p[1]};
        }
        if (n.contains("range")) {
            auto r = as<std::vector<double>>(n["range"], "normalization.range", dir);
            if (r.size() != 2) malformed(dir, "normalization.range must have 2 entries");
            m.normalization.range = {r[0], r[1]};
        }
        if (n.contains("clip")) m.normalization.clip = as<bool>(n["clip"], "normalization.clip", dir);
    }
    const auto &mode = m.normalization.mode;
    if (mode != "percentile" && mode != "range" && mode != "none")
        fail(TPEM_ERR_PACKAGE, dir + ": normalization mode '" + mode + "' unknown; use percentile, range or none");
    auto [lo, hi] = m.normalization.percentiles;
    if (!(0.0 <= lo && lo < hi && hi <= 100.0))
        fail(TPEM_ERR_PACKAGE, dir + ": percentiles must satisfy 0 <= low < high <= 100");
    if (!(m.normalization.range[0] < m.normalization.range[1]))
        fail(TPEM_ERR_PACKAGE, dir + ": intensity range must have low < high");

    const auto &output = field(d, "output", dir);
    m.classes = as<std::vector<std::string>>(field(output, "classes", dir), "output.classes", dir);
    if (output.contains("activation")) m.activation = as<std::string>(output["activation"], "output.activation", dir);
    if (m.activation != "softmax" && m.activation != "sigmoid")
        fail(TPEM_ERR_PACKAGE, dir + ": output activation '" + m.activation + "' unknown; use softmax or sigmoid");
    if (static_cast<int>(m.channels.size()) != m.in_channels)
        fail(TPEM_ERR_PACKAGE, dir + ": manifest names " + std::to_string(m.channels.size()) +
                                   " channels but the network takes " + std::to_string(m.in_channels));
    if (static_cast<int>(m.classes.size()) != m.out_channels)
        fail(TPEM_ERR_PACKAGE, dir + ": manifest names " + std::to_string(m.classes.size()) +
                                   " classes but the network gives " + std::to_string(m.out_channels));
    if (d.contains("onnx") && d["onnx"].is_object() && d["onnx"].contains("file"))
        m.onnx_file = as<std::string>(d["onnx"]["file"], "onnx.file", dir);
    if (d.contains("files"))
        m.files = as<std::map<std::string, std::string>>(d["files"], "files", dir);
    return m;
}

}  // namespace

Package open_package(const std::string &dir_in, bool verify) {
    std::string dir = dir_in;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (!is_dir(dir))
        fail(TPEM_ERR_IO, "no model package folder " + dir + "; give the path of a NAME.tpem folder");
    std::string manifest_path = dir + "/manifest.json";
    if (!is_file(manifest_path))
        fail(TPEM_ERR_PACKAGE, dir + " has no manifest.json; it is not a model package (re-export it)");
    std::ifstream in(manifest_path, std::ios::binary);
    if (!in) fail(TPEM_ERR_IO, "cannot read " + manifest_path);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json d;
    try {
        d = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error &err) {
        fail(TPEM_ERR_PACKAGE, manifest_path + " is not valid JSON (" + err.what() + "); re-export the package");
    }
    if (!d.is_object()) fail(TPEM_ERR_PACKAGE, manifest_path + " is not a JSON object; re-export the package");

    if (verify && d.contains(DIGEST_KEY)) {
        nlohmann::json body = d;
        body.erase(DIGEST_KEY);
        std::string actual = sha256_hex(python_canonical_json(body));
        std::string expected = d[DIGEST_KEY].is_string() ? d[DIGEST_KEY].get<std::string>() : d[DIGEST_KEY].dump();
        if (actual != expected)
            fail(TPEM_ERR_PACKAGE, dir + ": manifest.json was edited after export (sha256 " + actual.substr(0, 12) +
                                       "... != " + expected.substr(0, 12) +
                                       "...); re-export the package instead of editing it");
    } else if (verify) {
        log(LOG_DEBUG, dir + ": manifest carries no manifest_sha256 (older package); not checked");
    }
    Package pkg{dir, parse(d, dir)};
    // Every file the runtime opens must be listed, and every listed one must stay in the folder.
    for (const auto &entry : pkg.manifest.files) inside(dir, entry.first);
    inside(dir, pkg.manifest.onnx_file);
    if (verify) {
        if (!pkg.manifest.files.count(pkg.manifest.onnx_file))
            fail(TPEM_ERR_PACKAGE, dir + ": manifest lists no checksum for " + pkg.manifest.onnx_file + "; re-export it");
        for (const auto &[rel, expected] : pkg.manifest.files) {
            std::string path = dir + "/" + rel;
            if (!is_file(path))
                fail(TPEM_ERR_PACKAGE, dir + ": " + rel + " is missing; re-export or re-download the package");
            std::string actual = sha256_file_hex(path);
            if (actual != expected)
                fail(TPEM_ERR_PACKAGE, dir + ": " + rel + " fails its checksum (sha256 " + actual.substr(0, 12) +
                                           "... != " + expected.substr(0, 12) +
                                           "...); the file was changed or damaged, re-export the package");
        }
    }
    if (!is_file(pkg.onnx_path()))
        fail(TPEM_ERR_PACKAGE, dir + ": " + pkg.manifest.onnx_file + " is missing; re-export the package");
    return pkg;
}

}  // namespace tpem::detail
