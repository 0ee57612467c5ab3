#include "resample.hpp"

#include <cmath>

namespace tpem::detail {

bool needs_resampling(const std::optional<std::array<double, 3>> &spacing,
                      const std::optional<std::array<double, 3>> &target) {
    if (!spacing || !target) return false;
    for (int a = 0; a < 3; ++a)
        if (std::fabs((*spacing)[a] - (*target)[a]) > RESAMPLE_TOLERANCE * (*target)[a]) return true;
    return false;
}

std::array<int64_t, 3> resampled_shape(const std::array<int64_t, 3> &shape, const std::array<double, 3> &spacing,
                                       const std::array<double, 3> &target) {
    std::array<int64_t, 3> out{};
    for (int a = 0; a < 3; ++a) {
        double v = static_cast<double>(shape[a]) * spacing[a] / target[a];
        out[a] = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(v)));
    }
    return out;
}

namespace {

struct Axis {  // per output index: the two input indices and their spline weights
    std::vector<int64_t> i0, i1;
    std::vector<double> w0, w1;
};

Axis axis_weights(int64_t n_in, int64_t n_out) {
    Axis a;
    const double zoom = n_out > 1 ? static_cast<double>(n_in - 1) / static_cast<double>(n_out - 1) : 1.0;
    for (int64_t k = 0; k < n_out; ++k) {
        double cc = static_cast<double>(k) * zoom;
        if (cc > static_cast<double>(n_in - 1)) cc = static_cast<double>(n_in - 1);  // mode "nearest"
        if (cc < 0) cc = 0;
        double fl = std::floor(cc);
        int64_t start = static_cast<int64_t>(fl);
        double t = cc - fl;
        double w0 = 1.0 - t;  // scipy's get_spline_interpolation_weights for order 1
        double w1 = 1.0 - w0;
        a.i0.push_back(std::min(start, n_in - 1));
        a.i1.push_back(std::min(start + 1, n_in - 1));
        a.w0.push_back(w0);
        a.w1.push_back(w1);
    }
    return a;
}

}  // namespace

void zoom_linear(const float *in, const std::array<int64_t, 3> &from, float *out, const std::array<int64_t, 3> &to) {
    Axis az = axis_weights(from[0], to[0]), ay = axis_weights(from[1], to[1]), ax = axis_weights(from[2], to[2]);
    const int64_t sy = from[2], sz = from[1] * from[2];
    size_t o = 0;
    for (int64_t z = 0; z < to[0]; ++z) {
        const int64_t zi[2] = {az.i0[z] * sz, az.i1[z] * sz};
        const double zw[2] = {az.w0[z], az.w1[z]};
        for (int64_t y = 0; y < to[1]; ++y) {
            const int64_t yi[2] = {ay.i0[y] * sy, ay.i1[y] * sy};
            const double yw[2] = {ay.w0[y], ay.w1[y]};
            for (int64_t x = 0; x < to[2]; ++x) {
                const int64_t xi[2] = {ax.i0[x], ax.i1[x]};
                const double xw[2] = {ax.w0[x], ax.w1[x]};
                // scipy's loop: the 8 neighbours in C order, coeff * wz * wy * wx, summed from 0.0
                double t = 0.0;
                for (int a = 0; a < 2; ++a)
                    for (int b = 0; b < 2; ++b)
                        for (int c = 0; c < 2; ++c) {
                            double coeff = static_cast<double>(in[zi[a] + yi[b] + xi[c]]);
                            coeff *= zw[a];
                            coeff *= yw[b];
                            coeff *= xw[c];
                            t += coeff;
                        }
                out[o++] = static_cast<float>(t);
            }
        }
    }
}

}  // namespace tpem::detail
