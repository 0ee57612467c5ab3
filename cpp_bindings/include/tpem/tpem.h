/*
 * tpem.h: the C ABI of libtpem, the native runtime of tpem-seg.
 *
 * The stable surface for every language (C, C++, C#, MATLAB, Java, Python ctypes):
 *  - opaque handles; every call that can fail returns a tpem_status;
 *  - on failure a one-line message is kept per thread: tpem_last_error copies it;
 *  - all buffers belong to the caller; sizes are in bytes;
 *  - options travel as a JSON object string, so new options never change the ABI;
 *  - no C++ exception and no abort crosses this boundary.
 *
 * Arrays are C-contiguous. Volumes are CZYX (channel, z, y, x); labels come back as uint8 ZYX,
 * probabilities as float32 KZYX (K = the model's classes). Voxel sizes are (z, y, x) in micrometres.
 */
#ifndef TPEM_TPEM_H
#define TPEM_TPEM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(TPEM_BUILDING)
#    define TPEM_API __declspec(dllexport)
#  else
#    define TPEM_API __declspec(dllimport)
#  endif
#else
#  define TPEM_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a function's signature or meaning changes; adding functions keeps it. */
#define TPEM_ABI_VERSION 1u

typedef struct tpem_model tpem_model;
typedef struct tpem_stream tpem_stream;

typedef enum {
    TPEM_OK = 0,
    TPEM_ERR_INVALID_ARGUMENT,   /* a NULL pointer, bad extents, bad options, NaN/Inf input, ... */
    TPEM_ERR_IO,                 /* a file or folder that cannot be read */
    TPEM_ERR_PACKAGE,            /* a model package that is malformed or fails its checksums */
    TPEM_ERR_BACKEND,            /* ONNX Runtime missing, too old, or failing */
    TPEM_ERR_BUFFER_TOO_SMALL,   /* the message says how many bytes are needed */
    TPEM_ERR_CANCELLED,          /* a callback returned nonzero */
    TPEM_ERR_INTERNAL,
    TPEM_STATUS_MAX_ENUM = 0x7fffffff /* keeps every int a valid value of the type (as Vulkan does) */
} tpem_status;

typedef enum { TPEM_DTYPE_U8 = 0, TPEM_DTYPE_U16 = 1, TPEM_DTYPE_F32 = 2, TPEM_DTYPE_MAX_ENUM = 0x7fffffff } tpem_dtype;
typedef enum {
    TPEM_OUTPUT_LABELS = 0,        /* uint8 ZYX */
    TPEM_OUTPUT_PROBABILITIES = 1, /* float32 KZYX */
    TPEM_OUTPUT_MAX_ENUM = 0x7fffffff
} tpem_output;

/* Progress in [0, 1]; return nonzero to cancel. */
typedef int (*tpem_progress_fn)(double fraction, void *user);

/* Log lines of libtpem (level: 0 debug, 1 info, 2 warning, 3 error). */
typedef void (*tpem_log_fn)(int level, const char *message, void *user);

/*
 * A finished slab of a stream: planes [z0, z0 + depth) of the output, C-contiguous: labels
 * uint8 (depth, Y, X) or probabilities float32 (K, depth, Y, X); `bytes` is its size. The
 * buffer is valid only during the call. Return nonzero to cancel.
 */
typedef int (*tpem_slab_fn)(int64_t z0, int64_t depth, const void *data, size_t bytes, void *user);

TPEM_API uint32_t tpem_abi_version(void);
/* The library's version, e.g. "0.1.0" (a static string). */
TPEM_API const char *tpem_version(void);

/* Copies this thread's last error message (NUL-terminated, truncated to len - 1 chars) into buf
 * (may be NULL when len is 0); returns the message's full length, without the NUL. */
TPEM_API size_t tpem_last_error(char *buf, size_t len);

/* Where log lines go (NULL: warnings and errors to stderr, the default), and from which level. */
TPEM_API void tpem_set_log(tpem_log_fn fn, void *user, int min_level);

/*
 * Opens a model package folder (NAME.tpem) after checking the sha256 of every file it lists.
 * options_json: NULL or a JSON object, keys (all optional):
 *   "threads" (int, ONNX Runtime intra-op threads; default: the cores this process may use),
 *   "onnxruntime_library" (path; else $TPEM_ONNXRUNTIME_LIBRARY, libtpem's own folder, the
 *      onnxruntime Python wheel beside it, then the system's search path),
 *   "providers" (list of "tensorrt", "cuda", "cpu": tried in order, CPU always last),
 *   "strict_providers" (bool: fail instead of falling back to the CPU), "device_id" (int),
 *   "precision" ("fp32" | "fp16", fp16 with TensorRT only),
 *   "backend" ("onnxruntime", the only one in libtpem),
 *   "overlap" (0.25), "batch_size" (2), "sigma_scale" (0.125), "resample" (true),
 *   "verify" (true: check checksums).
 */
TPEM_API tpem_status tpem_model_open(const char *package_dir, const char *options_json, tpem_model **out);
TPEM_API void tpem_model_close(tpem_model *model); /* NULL: no-op */

/* The model as JSON (name, channels, classes, tile, spacing, activation, providers, ...).
 * *needed receives the bytes needed including the NUL; json may be NULL when len is 0. */
TPEM_API tpem_status tpem_model_info(const tpem_model *model, char *json, size_t len, size_t *needed);

/* Bytes of the output of a volume of shape_czyx (labels: Z*Y*X; probabilities: 4*K*Z*Y*X). */
TPEM_API tpem_status tpem_output_bytes(const tpem_model *model, const int64_t shape_czyx[4], tpem_output output,
                                       size_t *bytes);

/*
 * Segments a whole volume `data` (dtype, C-contiguous CZYX of shape_czyx) into `out`.
 * spacing_zyx: the volume's voxel size in µm, or NULL for the model's; when it differs from the
 * model's by more than 5% (and "resample" is on) the volume is resampled (linear, corners
 * aligned) to the model's voxel size and the logits back. progress may be NULL.
 */
TPEM_API tpem_status tpem_segment(tpem_model *model, const void *data, tpem_dtype dtype, const int64_t shape_czyx[4],
                                  const double spacing_zyx[3], tpem_output output, void *out, size_t out_bytes,
                                  tpem_progress_fn progress, void *user);

/*
 * Streaming: push z-planes (C, Y, X) one by one, in order; each finished slab goes to on_slab as
 * soon as no later tile touches it. Memory stays bounded by one tile-deep slab, whatever Z.
 * The stream runs at the model's voxel size (no resampling). options_json: NULL or
 *   {"low": [per channel], "high": [per channel]}: the normalisation's fixed intensities
 *   (e.g. measured on a reference stack, or a first pass); required when the package
 *   normalises by percentiles, optional otherwise (the package's range or none).
 */
TPEM_API tpem_status tpem_stream_open(tpem_model *model, const int64_t shape_czyx[4], tpem_dtype dtype,
                                      tpem_output output, const char *options_json, tpem_slab_fn on_slab, void *user,
                                      tpem_stream **out);
/* plane: C-contiguous (C, Y, X) of the stream's dtype; plane_bytes its size. */
TPEM_API tpem_status tpem_stream_push(tpem_stream *stream, const void *plane, size_t plane_bytes);
/* After the last plane: flushes the remaining slabs. Fails if planes are missing. */
TPEM_API tpem_status tpem_stream_finish(tpem_stream *stream);
TPEM_API void tpem_stream_close(tpem_stream *stream); /* NULL: no-op */

/*
 * The normalisation a whole-array call would use for `data`: per-channel low and high
 * (float32 each, C entries), e.g. to give a stream the statistics of a reference stack.
 */
TPEM_API tpem_status tpem_fit_normalization(const tpem_model *model, const void *data, tpem_dtype dtype,
                                            const int64_t shape_czyx[4], float *low, float *high);

/*
 * The tile grid over a volume of shape_zyx (MONAI's convention, zero padding where thinner
 * than the tile): pads_zyx receives (before, after) per axis (6 entries); origins_zyx 3 entries
 * per tile, z-major, in padded coordinates; *count the number of tiles. origins_zyx may be
 * NULL (capacity 0) to ask for the count only; TPEM_ERR_BUFFER_TOO_SMALL when capacity < count.
 */
TPEM_API tpem_status tpem_tile_grid(const int64_t shape_zyx[3], const int64_t tile_zyx[3], double overlap,
                                    int64_t pads_zyx[6], int64_t *origins_zyx, size_t capacity, size_t *count);

/* The Gaussian blending weights of a tile, float32 (D, H, W): count must be D*H*W. */
TPEM_API tpem_status tpem_gaussian_weights(const int64_t tile_zyx[3], double sigma_scale, float *out, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* TPEM_TPEM_H */
