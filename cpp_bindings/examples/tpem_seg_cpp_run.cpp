// tpem-seg-cpp: the native command line, `tpem-seg-cpp run IN OUT --model PACKAGE`.
//
// IN and OUT are .npy (always; IN uint8, uint16 or float32, ZYX or CZYX, C order) or .tif/.tiff
// (when built with libtiff: IN a multi-page grayscale stack, OUT uint8 labels). Labels are
// uint8 ZYX; --probabilities writes float32 KZYX (.npy). Exit code 2 with one line on any error.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#ifdef TPEM_WITH_TIFF
#include <tiffio.h>
#endif

#include "tpem/tpem.hpp"

namespace {

struct Array {
    std::vector<char> bytes;
    tpem_dtype dtype = TPEM_DTYPE_U8;
    tpem::Shape shape{};  // CZYX
};

[[noreturn]] void die(const std::string &message) { throw std::runtime_error(message); }

std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

bool ends_with(const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Array read_npy(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) die("cannot open " + path);
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) die(path + " is not a .npy file");
    uint32_t header_len = 0;
    if (magic[6] == 1) {
        unsigned char b[2];
        in.read(reinterpret_cast<char *>(b), 2);
        header_len = b[0] | (b[1] << 8);
    } else {
        unsigned char b[4];
        in.read(reinterpret_cast<char *>(b), 4);
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
    }
    std::string header(header_len, '\0');
    in.read(header.data(), header_len);
    auto value = [&](const std::string &key) {
        auto at = header.find("'" + key + "'");
        if (at == std::string::npos) die(path + ": .npy header lacks " + key);
        return header.substr(header.find(':', at) + 1);
    };
    Array a;
    std::string descr = value("descr");
    if (descr.find("u1'") != std::string::npos) a.dtype = TPEM_DTYPE_U8;
    else if (descr.find("<u2") != std::string::npos) a.dtype = TPEM_DTYPE_U16;
    else if (descr.find("<f4") != std::string::npos) a.dtype = TPEM_DTYPE_F32;
    else die(path + ": dtype " + descr.substr(0, descr.find(',')) + " unsupported; save uint8, uint16 or float32");
    if (value("fortran_order").find("True") < value("fortran_order").find(',')) die(path + " is Fortran-ordered; save it C-ordered");
    std::string shape = value("shape");
    shape = shape.substr(shape.find('(') + 1, shape.find(')') - shape.find('(') - 1);
    std::vector<int64_t> dims;
    std::stringstream ss(shape);
    std::string part;
    while (std::getline(ss, part, ','))
        if (part.find_first_not_of(' ') != std::string::npos) dims.push_back(std::stoll(part));
    if (dims.size() == 3) a.shape = {1, dims[0], dims[1], dims[2]};
    else if (dims.size() == 4) a.shape = {dims[0], dims[1], dims[2], dims[3]};
    else die(path + " has " + std::to_string(dims.size()) + " dimensions; give ZYX or CZYX");
    size_t item = a.dtype == TPEM_DTYPE_U8 ? 1 : a.dtype == TPEM_DTYPE_U16 ? 2 : 4;
    size_t n = item;
    for (int64_t d : a.shape) n *= static_cast<size_t>(d);
    a.bytes.resize(n);
    if (!in.read(a.bytes.data(), static_cast<std::streamsize>(n))) die(path + " is truncated");
    return a;
}

void write_npy(const std::string &path, const void *data, size_t bytes, const char *descr, const std::vector<int64_t> &shape) {
    std::string dims;
    for (int64_t d : shape) dims += std::to_string(d) + ", ";
    if (shape.size() > 1) dims.erase(dims.size() - 2);
    else dims.pop_back();
    std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string tmp = path + ".partial";
    {
        std::ofstream out(tmp, std::ios::binary);
        out.write("\x93NUMPY\x01\x00", 8);
        char len[2] = {static_cast<char>(header.size() & 0xff), static_cast<char>(header.size() >> 8)};
        out.write(len, 2);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        out.write(static_cast<const char *>(data), static_cast<std::streamsize>(bytes));
        if (!out) die("cannot write " + path);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) die("cannot write " + path);
}

#ifdef TPEM_WITH_TIFF
Array read_tiff(const std::string &path) {
    TIFF *tif = TIFFOpen(path.c_str(), "r");
    if (!tif) die("cannot open " + path + " as TIFF");
    Array a;
    uint32_t w = 0, h = 0;
    uint16_t bits = 0, spp = 1, format = SAMPLEFORMAT_UINT;
    int64_t pages = 0;
    do {
        TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
        TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
        TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
        TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
        TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
        if (spp != 1) die(path + ": only single-sample (grayscale) pages are read; save channels as pages or .npy");
        a.dtype = bits == 8 ? TPEM_DTYPE_U8 : bits == 16 ? TPEM_DTYPE_U16 : TPEM_DTYPE_F32;
        if (bits == 32 && format != SAMPLEFORMAT_IEEEFP) die(path + ": 32-bit integer TIFF unsupported");
        size_t item = bits / 8, row = static_cast<size_t>(w) * item, offset = a.bytes.size();
        a.bytes.resize(offset + row * h);
        for (uint32_t y = 0; y < h; ++y)
            if (TIFFReadScanline(tif, a.bytes.data() + offset + y * row, y) < 0) die(path + ": cannot read page " + std::to_string(pages));
        ++pages;
    } while (TIFFReadDirectory(tif));
    TIFFClose(tif);
    a.shape = {1, pages, h, w};
    return a;
}

void write_tiff(const std::string &path, const uint8_t *labels, const tpem::Shape &s) {
    std::string tmp = path + ".partial";
    TIFF *tif = TIFFOpen(tmp.c_str(), "w");
    if (!tif) die("cannot write " + path);
    for (int64_t z = 0; z < s[1]; ++z) {
        TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, static_cast<uint32_t>(s[3]));
        TIFFSetField(tif, TIFFTAG_IMAGELENGTH, static_cast<uint32_t>(s[2]));
        TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8);
        TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 1);
        TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
        TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
        TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
        for (int64_t y = 0; y < s[2]; ++y)
            TIFFWriteScanline(tif, const_cast<uint8_t *>(labels + (z * s[2] + y) * s[3]), static_cast<uint32_t>(y));
        TIFFWriteDirectory(tif);
    }
    TIFFClose(tif);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) die("cannot write " + path);
}
#endif

Array read_any(const std::string &path) {
    if (ends_with(path, ".npy")) return read_npy(path);
#ifdef TPEM_WITH_TIFF
    if (ends_with(path, ".tif") || ends_with(path, ".tiff")) return read_tiff(path);
    die(path + ": give a .npy or .tif input");
#else
    die(path + ": this tpem-seg-cpp reads .npy only (built without libtiff); convert it, e.g. with tifffile");
#endif
}

const char *USAGE =
    "usage: tpem-seg-cpp run IN OUT --model PACKAGE [--spacing Z,Y,X] [--probabilities] [--threads N]\n"
    "                        [--overlap F] [--batch-size N] [--onnxruntime-library PATH]\n"
    "IN/OUT: .npy (ZYX or CZYX; uint8, uint16, float32)"
#ifdef TPEM_WITH_TIFF
    " or .tif"
#endif
    "\n";

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() < 3 || args[0] != "run") {
        std::cerr << USAGE;
        return 2;
    }
    try {
        std::string in = args[1], out = args[2], package, options = "{";
        std::vector<double> spacing;
        bool probabilities = false;
        auto add = [&](const std::string &kv) { options += (options.size() > 1 ? ", " : "") + kv; };
        for (size_t i = 3; i < args.size(); ++i) {
            const std::string &a = args[i];
            auto next = [&]() -> std::string {
                if (i + 1 >= args.size()) die(a + " needs a value");
                return args[++i];
            };
            if (a == "--model" || a == "-m") package = next();
            else if (a == "--probabilities") probabilities = true;
            else if (a == "--threads") add("\"threads\": " + std::to_string(std::stoi(next())));
            else if (a == "--overlap") add("\"overlap\": " + std::to_string(std::stod(next())));
            else if (a == "--batch-size") add("\"batch_size\": " + std::to_string(std::stoi(next())));
            else if (a == "--onnxruntime-library") add("\"onnxruntime_library\": " + json_string(next()));
            else if (a == "--spacing") {
                std::stringstream ss(next());
                std::string part;
                while (std::getline(ss, part, ',')) spacing.push_back(std::stod(part));
                if (spacing.size() != 3) die("--spacing needs three voxel sizes z,y,x in µm, e.g. 5,0.99,0.99");
            } else die("unknown option " + a + "\n" + USAGE);
        }
        options += "}";
        if (package.empty()) die("give the model package with --model PACKAGE.tpem");
        tpem::Model model(package, options);
        Array volume = read_any(in);
        std::optional<std::array<double, 3>> sp;
        if (!spacing.empty()) sp = std::array<double, 3>{spacing[0], spacing[1], spacing[2]};
        const auto &s = volume.shape;
        if (probabilities) {
            if (!ends_with(out, ".npy")) die("probabilities are written as .npy; name OUT *.npy");
            std::vector<float> p(model.bytes(s, TPEM_OUTPUT_PROBABILITIES) / sizeof(float));
            tpem::check(tpem_segment(model.get(), volume.bytes.data(), volume.dtype, s.data(), sp ? sp->data() : nullptr,
                                     TPEM_OUTPUT_PROBABILITIES, p.data(), p.size() * sizeof(float), nullptr, nullptr));
            int64_t k = static_cast<int64_t>(p.size() / static_cast<size_t>(s[1] * s[2] * s[3]));
            write_npy(out, p.data(), p.size() * sizeof(float), "<f4", {k, s[1], s[2], s[3]});
            return 0;
        }
        std::vector<uint8_t> labels(model.bytes(s, TPEM_OUTPUT_LABELS));
        tpem::check(tpem_segment(model.get(), volume.bytes.data(), volume.dtype, s.data(), sp ? sp->data() : nullptr,
                                 TPEM_OUTPUT_LABELS, labels.data(), labels.size(), nullptr, nullptr));
        if (ends_with(out, ".npy")) {
            write_npy(out, labels.data(), labels.size(), "|u1", {s[1], s[2], s[3]});
        } else {
#ifdef TPEM_WITH_TIFF
            write_tiff(out, labels.data(), s);
#else
            die(out + ": this tpem-seg-cpp writes .npy only (built without libtiff)");
#endif
        }
        return 0;
    } catch (const std::exception &err) {
        std::cerr << "tpem-seg-cpp: " << err.what() << "\n";
        return 2;
    }
}
