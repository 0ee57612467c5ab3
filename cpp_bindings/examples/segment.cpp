// segment.cpp: the C++ layer (tpem.hpp) streaming a raw volume plane by plane.
//
//   ./segment-cpp PACKAGE.tpem IN.raw C Z Y X OUT.raw       (IN.raw: uint16 CZYX, OUT.raw: uint8 ZYX)
//
// The planes are read twice: a first pass gives the normalisation (the percentiles of the whole
// volume), the second pushes plane by plane; each finished slab is written as soon as it is out.
#include <algorithm>
#include <cstdio>
#include <string>
#include <fstream>
#include <iostream>
#include <vector>

#include "tpem/tpem.hpp"

int main(int argc, char **argv) {
    if (argc != 8) {
        std::cerr << "usage: " << argv[0] << " PACKAGE IN.raw C Z Y X OUT.raw  (uint16 in, uint8 labels out)\n";
        return 2;
    }
    try {
        tpem::Model model(argv[1], R"({"threads": 0})");
        const tpem::Shape shape{std::stoll(argv[3]), std::stoll(argv[4]), std::stoll(argv[5]), std::stoll(argv[6])};
        const size_t plane = static_cast<size_t>(shape[2] * shape[3]);
        std::vector<uint16_t> volume(static_cast<size_t>(shape[0] * shape[1]) * plane);
        std::ifstream in(argv[2], std::ios::binary);
        if (!in.read(reinterpret_cast<char *>(volume.data()), static_cast<std::streamsize>(volume.size() * 2))) {
            std::cerr << "segment-cpp: cannot read " << volume.size() << " uint16 voxels from " << argv[2] << "\n";
            return 2;
        }
        // first pass: the normalisation a whole-array call would use
        std::vector<float> low(shape[0]), high(shape[0]);
        tpem::check(tpem_fit_normalization(model.get(), volume.data(), TPEM_DTYPE_U16, shape.data(), low.data(), high.data()));
        auto list = [](const std::vector<float> &v) {  // %.9g: a float32 round-trips exactly
            std::string s;
            char buf[32];
            for (size_t c = 0; c < v.size(); ++c) {
                std::snprintf(buf, sizeof buf, "%s%.9g", c ? ", " : "", v[c]);
                s += buf;
            }
            return s;
        };
        const std::string options = "{\"low\": [" + list(low) + "], \"high\": [" + list(high) + "]}";

        std::ofstream out(argv[7], std::ios::binary);
        tpem::Stream stream(model, shape, TPEM_DTYPE_U16, TPEM_OUTPUT_LABELS,
                            [&](int64_t z0, int64_t depth, const void *data, size_t bytes) {
                                std::cerr << "planes " << z0 << ".." << z0 + depth - 1 << " done\n";
                                out.write(static_cast<const char *>(data), static_cast<std::streamsize>(bytes));
                            },
                            options);
        // second pass: plane z of every channel, as a microscope would deliver it
        std::vector<uint16_t> czyx_plane(static_cast<size_t>(shape[0]) * plane);
        for (int64_t z = 0; z < shape[1]; ++z) {
            for (int64_t c = 0; c < shape[0]; ++c)
                std::copy_n(&volume[(static_cast<size_t>(c * shape[1] + z)) * plane], plane, &czyx_plane[c * plane]);
            stream.push(czyx_plane.data(), czyx_plane.size() * sizeof(uint16_t));
        }
        stream.finish();
        return out ? 0 : 2;
    } catch (const tpem::Error &err) {
        std::cerr << "segment-cpp: " << err.what() << "\n";
        return 2;
    }
}
