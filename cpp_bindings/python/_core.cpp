// tpem_seg_cpp._core: the binding over libtpem's C ABI (nanobind). Arrays are passed without a
// copy (C-contiguous, checked by the Python layer), and the GIL is released while libtpem runs.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "tpem/tpem.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using InArray = nb::ndarray<nb::c_contig, nb::device::cpu, nb::ro>;
using OutArray = nb::ndarray<nb::c_contig, nb::device::cpu>;

std::string last_error() {
    std::string message(tpem_last_error(nullptr, 0), '\0');
    tpem_last_error(message.data(), message.size() + 1);
    return message;
}

// Raises the tpem_seg_cpp exception for `status` (the GIL must be held).
[[noreturn]] void raise(tpem_status status, const std::string &message) {
    nb::object err = nb::module_::import_("tpem_seg_cpp._errors").attr("error_for")(static_cast<int>(status), message);
    PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(err.ptr())), err.ptr());
    throw nb::python_error();
}

void check(tpem_status status) {
    if (status != TPEM_OK) raise(status, last_error());
}

struct ModelHandle {
    tpem_model *model = nullptr;
    ~ModelHandle() { tpem_model_close(model); }
};

struct StreamHandle {
    tpem_stream *stream = nullptr;
    nb::object callback;
    int classes = 1;
    int64_t y = 0, x = 0;
    bool labels = true;
    nb::object error;  // a Python exception raised in the callback, re-raised by push
    ~StreamHandle() { tpem_stream_close(stream); }
};

int slab_trampoline(int64_t z0, int64_t depth, const void *data, size_t bytes, void *user) {
    auto *h = static_cast<StreamHandle *>(user);
    nb::gil_scoped_acquire gil;
    try {
        nb::object np = nb::module_::import_("numpy");
        nb::bytes copy(static_cast<const char *>(data), bytes);
        nb::object arr = np.attr("frombuffer")(copy, h->labels ? "uint8" : "float32");
        if (h->labels) arr = arr.attr("reshape")(nb::make_tuple(depth, h->y, h->x));
        else arr = arr.attr("reshape")(nb::make_tuple(h->classes, depth, h->y, h->x));
        h->callback(z0, arr);
        return 0;
    } catch (nb::python_error &err) {
        h->error = nb::borrow(err.value());
        return 1;
    }
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "Binding over libtpem's C ABI; use tpem_seg_cpp.Model.";
    m.def("abi_version", &tpem_abi_version);
    m.def("version", [] { return std::string(tpem_version()); });

    nb::class_<ModelHandle>(m, "ModelHandle")
        .def("info", [](const ModelHandle &h) {
            size_t needed = 0;
            tpem_status s = tpem_model_info(h.model, nullptr, 0, &needed);
            if (s != TPEM_ERR_BUFFER_TOO_SMALL) check(s);
            std::string json(needed, '\0');
            check(tpem_model_info(h.model, json.data(), json.size(), &needed));
            json.resize(needed - 1);
            return json;
        });

    m.def("open_model", [](const std::string &package, const std::string &options) {
        auto *h = new ModelHandle();
        tpem_status s;
        {
            nb::gil_scoped_release nogil;
            s = tpem_model_open(package.c_str(), options.c_str(), &h->model);
        }
        if (s != TPEM_OK) {
            std::string message = last_error();
            delete h;
            raise(s, message);
        }
        return h;
    }, "package"_a, "options"_a, nb::rv_policy::take_ownership);

    m.def("segment", [](ModelHandle &h, InArray data, int dtype, std::vector<int64_t> shape,
                        std::optional<std::vector<double>> spacing, int output, OutArray out) {
        if (shape.size() != 4) raise(TPEM_ERR_INVALID_ARGUMENT, "shape must be (C, Z, Y, X)");
        if (spacing && spacing->size() != 3) raise(TPEM_ERR_INVALID_ARGUMENT, "spacing must be (z, y, x) in µm");
        const size_t out_bytes = out.nbytes();
        tpem_status s;
        {
            nb::gil_scoped_release nogil;
            s = tpem_segment(h.model, data.data(), static_cast<tpem_dtype>(dtype), shape.data(),
                             spacing ? spacing->data() : nullptr, static_cast<tpem_output>(output), out.data(), out_bytes,
                             nullptr, nullptr);
        }
        check(s);
    }, "model"_a, "data"_a.noconvert(), "dtype"_a, "shape"_a, "spacing"_a.none(), "output"_a, "out"_a.noconvert());

    m.def("fit_normalization", [](ModelHandle &h, InArray data, int dtype, std::vector<int64_t> shape) {
        if (shape.size() != 4) raise(TPEM_ERR_INVALID_ARGUMENT, "shape must be (C, Z, Y, X)");
        std::vector<float> low(static_cast<size_t>(std::max<int64_t>(shape[0], 0))), high(low.size());
        tpem_status s;
        {
            nb::gil_scoped_release nogil;
            s = tpem_fit_normalization(h.model, data.data(), static_cast<tpem_dtype>(dtype), shape.data(), low.data(), high.data());
        }
        check(s);
        return nb::make_tuple(low, high);
    }, "model"_a, "data"_a.noconvert(), "dtype"_a, "shape"_a);

    nb::class_<StreamHandle>(m, "StreamHandle")
        .def("push", [](StreamHandle &h, InArray plane) {
            tpem_status s;
            {
                nb::gil_scoped_release nogil;
                s = tpem_stream_push(h.stream, plane.data(), plane.nbytes());
            }
            if (h.error.is_valid()) {
                nb::object err = h.error;
                h.error = nb::object();
                PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(err.ptr())), err.ptr());
                throw nb::python_error();
            }
            check(s);
        }, "plane"_a.noconvert())
        .def("finish", [](StreamHandle &h) { check(tpem_stream_finish(h.stream)); });

    m.def("open_stream", [](ModelHandle &h, std::vector<int64_t> shape, int dtype, int output, const std::string &options,
                            nb::object callback, int classes) {
        if (shape.size() != 4) raise(TPEM_ERR_INVALID_ARGUMENT, "shape must be (C, Z, Y, X)");
        auto *s = new StreamHandle();
        s->callback = callback;
        s->labels = output == TPEM_OUTPUT_LABELS;
        s->classes = classes;
        s->y = shape[2];
        s->x = shape[3];
        tpem_status st = tpem_stream_open(h.model, shape.data(), static_cast<tpem_dtype>(dtype),
                                          static_cast<tpem_output>(output), options.c_str(), &slab_trampoline, s, &s->stream);
        if (st != TPEM_OK) {
            std::string message = last_error();
            delete s;
            raise(st, message);
        }
        return s;
    }, "model"_a, "shape"_a, "dtype"_a, "output"_a, "options"_a, "callback"_a, "classes"_a,
       nb::rv_policy::take_ownership, nb::keep_alive<0, 1>());

    m.def("tile_grid", [](std::vector<int64_t> shape, std::vector<int64_t> tile, double overlap) {
        if (shape.size() != 3 || tile.size() != 3) raise(TPEM_ERR_INVALID_ARGUMENT, "shape and tile must be (z, y, x)");
        int64_t pads[6];
        size_t count = 0;
        tpem_status s = tpem_tile_grid(shape.data(), tile.data(), overlap, pads, nullptr, 0, &count);
        if (s != TPEM_ERR_BUFFER_TOO_SMALL && s != TPEM_OK) check(s);
        std::vector<int64_t> origins(3 * count);
        check(tpem_tile_grid(shape.data(), tile.data(), overlap, pads, origins.data(), count, &count));
        return nb::make_tuple(std::vector<int64_t>(pads, pads + 6), origins);
    }, "shape"_a, "tile"_a, "overlap"_a);

    m.def("gaussian_weights", [](std::vector<int64_t> tile, double sigma_scale) {
        if (tile.size() != 3) raise(TPEM_ERR_INVALID_ARGUMENT, "tile must be (z, y, x)");
        size_t n = 1;
        for (int64_t t : tile) n *= static_cast<size_t>(t > 0 ? t : 0);
        std::vector<float> out(n);
        check(tpem_gaussian_weights(tile.data(), sigma_scale, out.data(), out.size()));
        return out;
    }, "tile"_a, "sigma_scale"_a);
}
