/*
 * C tests of libtpem's ABI: every bad input returns its status and a one-line message, nothing
 * crashes; a stack segments; a stream gives the whole-array labels.
 *
 *   test_c_api CASE ZOO_DIR      (ctest runs one process per case)
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tpem/tpem.h"

static int failures = 0;
static char zoo[4096];

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
            ++failures;                                                                 \
        }                                                                               \
    } while (0)

static const char *last(void) {
    static char buf[2048];
    tpem_last_error(buf, sizeof buf);
    return buf;
}

/* status as expected, with a non-empty one-line message containing `needle` (NULL: any) */
static void expect(tpem_status got, tpem_status want, const char *needle, int line) {
    const char *msg = last();
    if (got != want) {
        fprintf(stderr, "line %d: status %d, expected %d (%s)\n", line, got, want, msg);
        ++failures;
        return;
    }
    if (want == TPEM_OK) return;
    if (!*msg || strchr(msg, '\n')) {
        fprintf(stderr, "line %d: message is empty or not one line: '%s'\n", line, msg);
        ++failures;
    }
    if (needle && !strstr(msg, needle)) {
        fprintf(stderr, "line %d: message lacks '%s': %s\n", line, needle, msg);
        ++failures;
    }
}
#define EXPECT(call, want, needle) expect((call), (want), (needle), __LINE__)

static void package_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s.tpem", zoo, name); }

static int copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    if (!in || !out) return -1;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    return 0;
}

/* A private copy of the vessels-2p package in a fresh temporary folder. */
static void copy_package(char *dir, size_t n) {
    char src[4096], a[8192], b[8192];
    snprintf(dir, n, "/tmp/tpem-test-XXXXXX");
    if (!mkdtemp(dir)) abort();
    package_path(src, sizeof src, "vessels-2p");
    const char *files[] = {"manifest.json", "model.onnx", "model.pt"};
    for (int i = 0; i < 3; ++i) {
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        if (copy_file(a, b) != 0) abort();
    }
}

static void remove_package(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
}

static tpem_model *open_vessels(const char *options) {
    char p[4096];
    package_path(p, sizeof p, "vessels-2p");
    tpem_model *m = NULL;
    EXPECT(tpem_model_open(p, options ? options : "{\"threads\": 1}", &m), TPEM_OK, NULL);
    if (!m) {
        fprintf(stderr, "cannot open %s: %s\n", p, last());
        exit(1);
    }
    return m;
}

/* a small uint8 stack with bright tubes, Z x Y x X */
static unsigned char *stack(int64_t z, int64_t y, int64_t x) {
    unsigned char *v = malloc((size_t)(z * y * x));
    for (int64_t k = 0; k < z; ++k)
        for (int64_t j = 0; j < y; ++j)
            for (int64_t i = 0; i < x; ++i) {
                double d = fabs((double)(j - y / 2) + 0.3 * (double)(i - x / 2));
                v[(k * y + j) * x + i] = (unsigned char)(d < 4 ? 200 : 20 + (i * 7 + j * 3 + k * 5) % 17);
            }
    return v;
}

static void test_abi(void) {
    CHECK(tpem_abi_version() == TPEM_ABI_VERSION);
    CHECK(strlen(tpem_version()) > 0);
}

static void test_null_pointers(void) {
    tpem_model *m = NULL;
    int64_t shape[4] = {1, 4, 8, 8};
    unsigned char buf[256];
    size_t needed = 0;
    EXPECT(tpem_model_open(NULL, NULL, &m), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_model_open("x", NULL, NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_model_info(NULL, (char *)buf, sizeof buf, &needed), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_output_bytes(NULL, shape, TPEM_OUTPUT_LABELS, &needed), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_segment(NULL, buf, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "NULL");
    m = open_vessels(NULL);
    EXPECT(tpem_model_info(m, NULL, 0, NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_output_bytes(m, NULL, TPEM_OUTPUT_LABELS, &needed), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_output_bytes(m, shape, TPEM_OUTPUT_LABELS, NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_segment(m, NULL, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "data is NULL");
    EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, NULL, NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, NULL, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "out is NULL");
    tpem_stream *s = NULL;
    EXPECT(tpem_stream_open(m, shape, TPEM_DTYPE_U8, TPEM_OUTPUT_LABELS, NULL, NULL, NULL, &s),
           TPEM_ERR_INVALID_ARGUMENT, "on_slab is NULL");
    EXPECT(tpem_stream_push(NULL, buf, 64), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_stream_finish(NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    float lo, hi;
    EXPECT(tpem_fit_normalization(m, buf, TPEM_DTYPE_U8, shape, NULL, &hi), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_fit_normalization(m, buf, TPEM_DTYPE_U8, shape, &lo, NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_tile_grid(NULL, NULL, 0.25, NULL, NULL, 0, NULL), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT(tpem_gaussian_weights(NULL, 0.125, NULL, 0), TPEM_ERR_INVALID_ARGUMENT, "NULL");
    CHECK(tpem_last_error(NULL, 0) > 0);
    tpem_model_close(m);
    tpem_model_close(NULL);
    tpem_stream_close(NULL);
}

static void test_missing_package(void) {
    tpem_model *m = (tpem_model *)1;
    EXPECT(tpem_model_open("/nonexistent/none.tpem", NULL, &m), TPEM_ERR_IO, "no model package folder");
    CHECK(m == NULL);
}

static void test_bad_manifest(void) {
    char dir[256];
    tpem_model *m = NULL;
    copy_package(dir, sizeof dir);
    write_text(dir, "manifest.json", "{ this is not json");
    EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "not valid JSON");
    write_text(dir, "manifest.json", "[1, 2]");
    EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "not a JSON object");
    write_text(dir, "manifest.json", "{\"name\": \"x\", \"config\": {}}");
    EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "malformed");
    char p[512];
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    unlink(p);
    EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "no manifest.json");
    CHECK(m == NULL);
    remove_package(dir);
}

static void test_checksum(void) {
    char dir[256], p[512];
    tpem_model *m = NULL;
    copy_package(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    FILE *f = fopen(p, "ab");
    fputc(0, f);
    fclose(f);
    EXPECT(tpem_model_open(dir, "{\"threads\": 1}", &m), TPEM_ERR_PACKAGE, "model.onnx fails its checksum");
    remove_package(dir);

    /* an edited manifest: one character of the description changed */
    copy_package(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    f = fopen(p, "r+b");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    CHECK(fread(text, 1, (size_t)n, f) == (size_t)n);
    text[n] = 0;
    char *at = strstr(text, "In vivo");
    CHECK(at != NULL);
    if (at) at[0] = 'i';
    fseek(f, 0, SEEK_SET);
    fwrite(text, 1, (size_t)n, f);
    fclose(f);
    free(text);
    EXPECT(tpem_model_open(dir, "{\"threads\": 1}", &m), TPEM_ERR_PACKAGE, "edited after export");
    /* verify off: the edited package opens */
    EXPECT(tpem_model_open(dir, "{\"threads\": 1, \"verify\": false}", &m), TPEM_OK, NULL);
    tpem_model_close(m);
    remove_package(dir);
}

static void test_path_escape(void) {
    char dir[256];
    tpem_model *m = NULL;
    copy_package(dir, sizeof dir);
    const char *manifest =
        "{\"name\": \"x\", \"config\": {\"in_channels\": 1, \"out_channels\": 2, \"tile\": [16, 64, 64]},"
        " \"input\": {\"channels\": [\"vessel\"]}, \"output\": {\"classes\": [\"bg\", \"vessel\"]},"
        " \"files\": {\"model.onnx\": \"00\", \"%s\": \"00\"}}";
    const char *escapes[] = {"../../etc/passwd", "/etc/passwd", "sub/../../x"};
    for (int i = 0; i < 3; ++i) {
        char text[1024];
        snprintf(text, sizeof text, manifest, escapes[i]);
        write_text(dir, "manifest.json", text);
        EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "outside the package");
    }
    /* a symbolic link leading out of the folder */
    char link[512];
    snprintf(link, sizeof link, "%s/linked.onnx", dir);
    CHECK(symlink("/etc/hostname", link) == 0);
    char text[1024];
    snprintf(text, sizeof text, manifest, "linked.onnx");
    write_text(dir, "manifest.json", text);
    EXPECT(tpem_model_open(dir, NULL, &m), TPEM_ERR_PACKAGE, "outside the package");
    remove_package(dir);
}

static void test_bad_extents(void) {
    tpem_model *m = open_vessels(NULL);
    unsigned char buf[64];
    int64_t shapes[][4] = {{1, 0, 8, 8}, {1, 4, -1, 8}, {0, 4, 8, 8}, {1, 4, 8, 0}};
    size_t n = 0;
    for (int i = 0; i < 4; ++i) {
        EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, shapes[i], NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
               TPEM_ERR_INVALID_ARGUMENT, "must be positive");
        EXPECT(tpem_output_bytes(m, shapes[i], TPEM_OUTPUT_LABELS, &n), TPEM_ERR_INVALID_ARGUMENT, "must be positive");
    }
    int64_t ok[4] = {1, 1, 8, 8};
    EXPECT(tpem_segment(m, buf, (tpem_dtype)7, ok, NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "dtype");
    EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, ok, NULL, (tpem_output)9, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "output");
    double bad_spacing[3] = {5.0, 0.0, 1.0};
    EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, ok, bad_spacing, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "spacing");
    tpem_model_close(m);
}

static void test_wrong_channels(void) {
    tpem_model *m = open_vessels(NULL);
    unsigned char buf[2 * 4 * 8 * 8];
    int64_t shape[4] = {2, 4, 8, 8};
    EXPECT(tpem_segment(m, buf, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, buf, sizeof buf, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "has 2 channel(s) but model vessels-2p takes 1");
    tpem_model_close(m);
}

static void test_buffer_too_small(void) {
    tpem_model *m = open_vessels(NULL);
    int64_t shape[4] = {1, 4, 20, 24};
    unsigned char *v = stack(4, 20, 24);
    float probs[2 * 4 * 20 * 24];
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, probs, 4 * 20 * 24 - 1, NULL, NULL),
           TPEM_ERR_BUFFER_TOO_SMALL, "1920 are needed");
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_PROBABILITIES, probs, 4 * 20 * 24 * 4, NULL, NULL),
           TPEM_ERR_BUFFER_TOO_SMALL, "15360 are needed");
    free(v);
    tpem_model_close(m);
}

static void test_non_finite(void) {
    tpem_model *m = open_vessels(NULL);
    int64_t shape[4] = {1, 2, 8, 8};
    float v[128];
    unsigned char out[128];
    for (int i = 0; i < 128; ++i) v[i] = (float)i;
    v[77] = NAN;
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_F32, shape, NULL, TPEM_OUTPUT_LABELS, out, sizeof out, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "NaN or Inf");
    v[77] = INFINITY;
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_F32, shape, NULL, TPEM_OUTPUT_LABELS, out, sizeof out, NULL, NULL),
           TPEM_ERR_INVALID_ARGUMENT, "NaN or Inf");
    float lo, hi;
    EXPECT(tpem_fit_normalization(m, v, TPEM_DTYPE_F32, shape, &lo, &hi), TPEM_ERR_INVALID_ARGUMENT, "NaN or Inf");
    tpem_model_close(m);
}

static void test_bad_options(void) {
    char p[4096];
    package_path(p, sizeof p, "vessels-2p");
    tpem_model *m = NULL;
    EXPECT(tpem_model_open(p, "{\"threads\": ", &m), TPEM_ERR_INVALID_ARGUMENT, "not valid JSON");
    EXPECT(tpem_model_open(p, "[1]", &m), TPEM_ERR_INVALID_ARGUMENT, "JSON object");
    EXPECT(tpem_model_open(p, "{\"thread\": 2}", &m), TPEM_ERR_INVALID_ARGUMENT, "unknown option 'thread'");
    EXPECT(tpem_model_open(p, "{\"threads\": -1}", &m), TPEM_ERR_INVALID_ARGUMENT, "threads");
    EXPECT(tpem_model_open(p, "{\"overlap\": 1.0}", &m), TPEM_ERR_INVALID_ARGUMENT, "overlap");
    EXPECT(tpem_model_open(p, "{\"batch_size\": 0}", &m), TPEM_ERR_INVALID_ARGUMENT, "batch_size");
    EXPECT(tpem_model_open(p, "{\"providers\": [\"openvino\"]}", &m), TPEM_ERR_INVALID_ARGUMENT, "openvino");
    EXPECT(tpem_model_open(p, "{\"precision\": \"fp16\"}", &m), TPEM_ERR_INVALID_ARGUMENT, "tensorrt");
    CHECK(m == NULL);
}

static void test_absent_backend(void) {
    char p[4096];
    package_path(p, sizeof p, "vessels-2p");
    tpem_model *m = NULL;
    EXPECT(tpem_model_open(p, "{\"backend\": \"torch\"}", &m), TPEM_ERR_BACKEND, "backend 'torch'");
    EXPECT(tpem_model_open(p, "{\"providers\": [\"tensorrt\"], \"strict_providers\": true}", &m), TPEM_ERR_BACKEND,
           "not enabled in this build");
    CHECK(m == NULL);
}

static char logged[4096];
static void capture(int level, const char *message, void *user) {
    (void)user;
    if (level >= 2) snprintf(logged + strlen(logged), sizeof logged - strlen(logged), "%s\n", message);
}

static void test_provider_fallback(void) {
    logged[0] = 0;
    tpem_set_log(capture, NULL, 2);
    tpem_model *m = open_vessels("{\"threads\": 1, \"providers\": [\"tensorrt\", \"cuda\"]}");
    tpem_set_log(NULL, NULL, 2);
    CHECK(strstr(logged, "provider tensorrt unavailable, falling back") != NULL);
    CHECK(strstr(logged, "CUDAExecutionProvider is not enabled in this build") != NULL);
    char info[4096];
    size_t needed = 0;
    EXPECT(tpem_model_info(m, info, sizeof info, &needed), TPEM_OK, NULL);
    CHECK(strstr(info, "\"providers\":[\"cpu\"]") != NULL);
    tpem_model_close(m);
}

static void test_no_onnxruntime(void) {
    char p[4096];
    package_path(p, sizeof p, "vessels-2p");
    tpem_model *m = NULL;
    EXPECT(tpem_model_open(p, "{\"onnxruntime_library\": \"/nonexistent/libonnxruntime.so\"}", &m), TPEM_ERR_BACKEND,
           "no ONNX Runtime library at /nonexistent");
    EXPECT(tpem_model_open(p, "{\"onnxruntime_library\": \"/etc/hostname\"}", &m), TPEM_ERR_BACKEND, "cannot load");
    setenv("TPEM_ONNXRUNTIME_LIBRARY", "/nonexistent/lib.so", 1);
    EXPECT(tpem_model_open(p, NULL, &m), TPEM_ERR_BACKEND, "TPEM_ONNXRUNTIME_LIBRARY");
    CHECK(m == NULL);
}

static void test_segment(void) {
    tpem_model *m = open_vessels(NULL);
    int64_t shape[4] = {1, 10, 70, 90};
    size_t voxels = 10 * 70 * 90;
    unsigned char *v = stack(10, 70, 90);
    unsigned char *labels = malloc(voxels);
    float *probs = malloc(2 * voxels * sizeof(float));
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, labels, voxels, NULL, NULL), TPEM_OK, NULL);
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_PROBABILITIES, probs, 2 * voxels * 4, NULL, NULL),
           TPEM_OK, NULL);
    size_t agree = 0, fg = 0;
    double worst = 0;
    for (size_t i = 0; i < voxels; ++i) {
        double s = probs[i] + probs[voxels + i];
        if (fabs(s - 1.0) > worst) worst = fabs(s - 1.0);
        agree += (probs[voxels + i] > probs[i]) == (labels[i] == 1);
        fg += labels[i] == 1;
    }
    CHECK(worst < 1e-5);
    CHECK(agree == voxels);
    CHECK(fg > 0 && fg < voxels);
    /* a resampled run: half the model's z voxel size */
    double spacing[3] = {2.5, 0.994, 0.994};
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, spacing, TPEM_OUTPUT_LABELS, labels, voxels, NULL, NULL), TPEM_OK,
           NULL);
    free(v);
    free(labels);
    free(probs);
    tpem_model_close(m);
}

static int cancel_at_half(double fraction, void *user) {
    *(int *)user += 1;
    return fraction >= 0.5;
}

static void test_cancel(void) {
    tpem_model *m = open_vessels(NULL);
    int64_t shape[4] = {1, 20, 100, 100};
    unsigned char *v = stack(20, 100, 100);
    unsigned char *labels = malloc(20 * 100 * 100);
    int calls = 0;
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, labels, 20 * 100 * 100, cancel_at_half,
                        &calls),
           TPEM_ERR_CANCELLED, "cancelled");
    CHECK(calls >= 1);
    free(v);
    free(labels);
    tpem_model_close(m);
}

struct collect {
    unsigned char *labels;
    int64_t plane, next_z;
    int slabs;
};

static int on_slab(int64_t z0, int64_t depth, const void *data, size_t bytes, void *user) {
    struct collect *c = user;
    if (z0 != c->next_z || bytes != (size_t)(depth * c->plane)) return 1;
    memcpy(c->labels + z0 * c->plane, data, bytes);
    c->next_z += depth;
    c->slabs += 1;
    return 0;
}

static void test_stream(void) {
    tpem_model *m = open_vessels(NULL);
    const int64_t Z = 37, Y = 50, X = 70;
    int64_t shape[4] = {1, Z, Y, X};
    unsigned char *v = stack(Z, Y, X);
    unsigned char *whole = malloc((size_t)(Z * Y * X));
    struct collect c = {calloc((size_t)(Z * Y * X), 1), Y * X, 0, 0};
    EXPECT(tpem_segment(m, v, TPEM_DTYPE_U8, shape, NULL, TPEM_OUTPUT_LABELS, whole, (size_t)(Z * Y * X), NULL, NULL),
           TPEM_OK, NULL);
    float lo, hi;
    EXPECT(tpem_fit_normalization(m, v, TPEM_DTYPE_U8, shape, &lo, &hi), TPEM_OK, NULL);
    tpem_stream *s = NULL;
    /* percentile packages need the statistics up front */
    EXPECT(tpem_stream_open(m, shape, TPEM_DTYPE_U8, TPEM_OUTPUT_LABELS, NULL, on_slab, &c, &s),
           TPEM_ERR_INVALID_ARGUMENT, "percentiles");
    EXPECT(tpem_stream_open(m, shape, TPEM_DTYPE_U8, TPEM_OUTPUT_LABELS, "{\"low\": [1], \"hi\": [2]}", on_slab, &c, &s),
           TPEM_ERR_INVALID_ARGUMENT, "unknown option 'hi'");
    char options[128];
    snprintf(options, sizeof options, "{\"low\": [%.9g], \"high\": [%.9g]}", lo, hi);
    EXPECT(tpem_stream_open(m, shape, TPEM_DTYPE_U8, TPEM_OUTPUT_LABELS, options, on_slab, &c, &s), TPEM_OK, NULL);
    EXPECT(tpem_stream_push(s, v, (size_t)(Y * X) - 1), TPEM_ERR_INVALID_ARGUMENT, "bytes");
    for (int64_t z = 0; z < Z; ++z) {
        EXPECT(tpem_stream_push(s, v + z * Y * X, (size_t)(Y * X)), TPEM_OK, NULL);
        if (z == 5) EXPECT(tpem_stream_finish(s), TPEM_ERR_INVALID_ARGUMENT, "planes");
    }
    EXPECT(tpem_stream_push(s, v, (size_t)(Y * X)), TPEM_ERR_INVALID_ARGUMENT, "already");
    EXPECT(tpem_stream_finish(s), TPEM_OK, NULL);
    CHECK(c.next_z == Z);
    CHECK(c.slabs > 1); /* emitted slab by slab, not at the end */
    CHECK(memcmp(c.labels, whole, (size_t)(Z * Y * X)) == 0);
    tpem_stream_close(s);
    free(c.labels);
    free(whole);
    free(v);
    tpem_model_close(m);
}

static void test_info(void) {
    tpem_model *m = open_vessels(NULL);
    size_t needed = 0;
    char small[8];
    EXPECT(tpem_model_info(m, small, sizeof small, &needed), TPEM_ERR_BUFFER_TOO_SMALL, "are needed");
    CHECK(needed > sizeof small);
    char *json = malloc(needed);
    EXPECT(tpem_model_info(m, json, needed, &needed), TPEM_OK, NULL);
    CHECK(strlen(json) + 1 == needed);
    CHECK(strstr(json, "\"name\":\"vessels-2p\"") != NULL);
    free(json);
    tpem_model_close(m);
}

static void test_tile_grid(void) {
    int64_t shape[3] = {10, 100, 64}, tile[3] = {16, 32, 32}, pads[6];
    size_t count = 0;
    EXPECT(tpem_tile_grid(shape, tile, 0.25, pads, NULL, 0, &count), TPEM_ERR_BUFFER_TOO_SMALL, "are needed");
    CHECK(count == 1 * 4 * 3); /* z padded 10 -> 16; y starts 0 24 48 68; x 0 24 32 */
    CHECK(pads[0] == 3 && pads[1] == 3 && pads[2] == 0 && pads[5] == 0);
    int64_t origins[36];
    EXPECT(tpem_tile_grid(shape, tile, 0.25, pads, origins, 12, &count), TPEM_OK, NULL);
    CHECK(origins[3 * 3 + 1] == 24 && origins[3 * 11 + 1] == 68 && origins[3 * 11 + 2] == 32);
    EXPECT(tpem_tile_grid(shape, tile, 1.5, pads, origins, 12, &count), TPEM_ERR_INVALID_ARGUMENT, "overlap");
    float w[8];
    int64_t t[3] = {2, 2, 2};
    EXPECT(tpem_gaussian_weights(t, 0.125, w, 7), TPEM_ERR_BUFFER_TOO_SMALL, "8 are needed");
    EXPECT(tpem_gaussian_weights(t, 0.0, w, 8), TPEM_ERR_INVALID_ARGUMENT, "sigma_scale");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CASE ZOO_DIR\n", argv[0]);
        return 2;
    }
    snprintf(zoo, sizeof zoo, "%s", argv[2]);
    struct { const char *name; void (*fn)(void); } cases[] = {
        {"abi", test_abi}, {"null_pointers", test_null_pointers}, {"missing_package", test_missing_package},
        {"bad_manifest", test_bad_manifest}, {"checksum", test_checksum}, {"path_escape", test_path_escape},
        {"bad_extents", test_bad_extents}, {"wrong_channels", test_wrong_channels},
        {"buffer_too_small", test_buffer_too_small}, {"non_finite", test_non_finite}, {"bad_options", test_bad_options},
        {"absent_backend", test_absent_backend}, {"provider_fallback", test_provider_fallback},
        {"no_onnxruntime", test_no_onnxruntime}, {"segment", test_segment}, {"cancel", test_cancel},
        {"stream", test_stream}, {"info", test_info}, {"tile_grid", test_tile_grid},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        if (strcmp(argv[1], cases[i].name) == 0) {
            cases[i].fn();
            if (failures) fprintf(stderr, "%s: %d check(s) failed\n", argv[1], failures);
            return failures ? 1 : 0;
        }
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
