#include "tiling.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.hpp"

namespace tpem::detail {

std::vector<int64_t> scan_starts(int64_t size, int64_t tile, double overlap) {
    if (tile < 1) fail(TPEM_ERR_INVALID_ARGUMENT, "tile size " + std::to_string(tile) + " must be positive");
    if (size < tile)
        fail(TPEM_ERR_INVALID_ARGUMENT, "size " + std::to_string(size) + " is smaller than the tile " + std::to_string(tile));
    if (!(overlap >= 0.0 && overlap < 1.0))
        fail(TPEM_ERR_INVALID_ARGUMENT, "overlap " + std::to_string(overlap) + " must be in [0, 1), e.g. 0.25");
    // Python: int(tile * (1 - overlap)), truncation of a float64 product
    int64_t interval = size == tile ? tile : std::max<int64_t>(static_cast<int64_t>(static_cast<double>(tile) * (1.0 - overlap)), 1);
    int64_t count = 1;
    while ((count - 1) * interval + tile < size) ++count;
    std::vector<int64_t> starts(count);
    for (int64_t i = 0; i < count; ++i) starts[i] = std::min(i * interval, size - tile);
    return starts;
}

TilePlan make_plan(const Shape3 &shape, const Shape3 &tile, double overlap) {
    TilePlan plan;
    plan.shape = shape;
    plan.tile = tile;
    for (int a = 0; a < 3; ++a) {
        int64_t diff = std::max<int64_t>(tile[a] - shape[a], 0);
        plan.pads[a] = {diff / 2, diff - diff / 2};
    }
    Shape3 padded = plan.padded();
    plan.z_starts = scan_starts(padded[0], tile[0], overlap);
    auto ys = scan_starts(padded[1], tile[1], overlap);
    auto xs = scan_starts(padded[2], tile[2], overlap);
    for (int64_t y : ys)
        for (int64_t x : xs) plan.yx_origins.push_back({y, x});
    return plan;
}

std::vector<float> gaussian_weights(const Shape3 &tile, double sigma_scale) {
    std::array<std::vector<float>, 3> g;
    for (int a = 0; a < 3; ++a) {
        int64_t t = tile[a];
        double sigma = sigma_scale * static_cast<double>(t);
        g[a].resize(t);
        for (int64_t i = 0; i < t; ++i) {
            double x = static_cast<double>(i) - static_cast<double>(t - 1) / 2.0;
            g[a][i] = static_cast<float>(std::exp(x * x / (-2.0 * (sigma * sigma))));
        }
    }
    std::vector<float> w(static_cast<size_t>(tile[0] * tile[1] * tile[2]));
    size_t k = 0;
    for (int64_t z = 0; z < tile[0]; ++z)
        for (int64_t y = 0; y < tile[1]; ++y) {
            float zy = (1.0f * g[0][z]) * g[1][y];  // numpy's outer products, in this order
            for (int64_t x = 0; x < tile[2]; ++x) w[k++] = zy * g[2][x];
        }
    // Python: np.maximum(w, max(float(w.min()), 1e-3)), the float64 floor taken as float32
    float floor = static_cast<float>(std::max(static_cast<double>(*std::min_element(w.begin(), w.end())), 1e-3));
    for (float &v : w) v = std::max(v, floor);
    return w;
}

}  // namespace tpem::detail
