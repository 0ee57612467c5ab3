/*
 * segment.c: segment a raw volume through the C ABI alone.
 *
 *   cc segment.c -I$(python -m tpem_seg_cpp --include-dir) -L$(python -m tpem_seg_cpp --lib-dir) \
 *      -ltpem -Wl,-rpath,$(python -m tpem_seg_cpp --lib-dir) -o segment
 *   ./segment PACKAGE.tpem IN.raw u8|u16|f32 C Z Y X OUT.raw
 *
 * IN.raw: C-contiguous CZYX voxels of the dtype (e.g. numpy's array.tofile); OUT.raw: uint8
 * labels ZYX, at the model's voxel size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tpem/tpem.h"

static int fail(const char *what) {
    char message[1024];
    tpem_last_error(message, sizeof message);
    fprintf(stderr, "segment: %s: %s\n", what, message);
    return 2;
}

static int progress(double fraction, void *user) {
    (void)user;
    fprintf(stderr, "\r%3.0f%%", 100.0 * fraction);
    return 0; /* nonzero would cancel */
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s PACKAGE IN.raw u8|u16|f32 C Z Y X OUT.raw\n", argv[0]);
        return 2;
    }
    tpem_dtype dtype;
    size_t item;
    if (strcmp(argv[3], "u8") == 0) { dtype = TPEM_DTYPE_U8; item = 1; }
    else if (strcmp(argv[3], "u16") == 0) { dtype = TPEM_DTYPE_U16; item = 2; }
    else if (strcmp(argv[3], "f32") == 0) { dtype = TPEM_DTYPE_F32; item = 4; }
    else { fprintf(stderr, "segment: dtype %s unknown; use u8, u16 or f32\n", argv[3]); return 2; }
    int64_t shape[4];
    size_t voxels = 1;
    for (int a = 0; a < 4; ++a) {
        shape[a] = atoll(argv[4 + a]);
        voxels *= (size_t)(shape[a] > 0 ? shape[a] : 0);
    }

    if (tpem_abi_version() != TPEM_ABI_VERSION) {
        fprintf(stderr, "segment: libtpem ABI %u, this program was built for %u\n", tpem_abi_version(), TPEM_ABI_VERSION);
        return 2;
    }
    tpem_model *model = NULL;
    if (tpem_model_open(argv[1], "{\"threads\": 0}", &model) != TPEM_OK) return fail("open");

    void *data = malloc(voxels * item);
    FILE *in = fopen(argv[2], "rb");
    if (!data || !in || fread(data, item, voxels, in) != voxels) {
        fprintf(stderr, "segment: cannot read %zu voxels from %s\n", voxels, argv[2]);
        return 2;
    }
    fclose(in);

    size_t out_bytes = 0;
    if (tpem_output_bytes(model, shape, TPEM_OUTPUT_LABELS, &out_bytes) != TPEM_OK) return fail("shape");
    unsigned char *labels = malloc(out_bytes);
    if (tpem_segment(model, data, dtype, shape, NULL, TPEM_OUTPUT_LABELS, labels, out_bytes, progress, NULL) != TPEM_OK)
        return fail("segment");
    fprintf(stderr, "\n");

    FILE *out = fopen(argv[8], "wb");
    if (!out || fwrite(labels, 1, out_bytes, out) != out_bytes) {
        fprintf(stderr, "segment: cannot write %s\n", argv[8]);
        return 2;
    }
    fclose(out);
    free(labels);
    free(data);
    tpem_model_close(model);
    return 0;
}
