/* classify: load a compact certify model from a byte buffer, classify MNIST digits and print,
 * per digit, the prediction, the margin, ‖J‖_F and the Prop. 3 bound as one JSON line.
 *
 * usage: classify MODEL.cfy IMAGES.idx FIRST COUNT
 *   MODEL.cfy   written by `certify export MODEL.onnx --format compact --out MODEL.cfy`
 *   IMAGES.idx  an uncompressed IDX file of u8 images (e.g. t10k-images-idx3-ubyte);
 *               pixels are scaled by 1/255, as the shipped MNIST models expect
 *
 * Prop. 3 and Cor. 2 are first-order estimates of the distance to the decision boundary, not
 * sound certificates. Exit status: 0 on success, 1 on any error (message on stderr). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "certify.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    /* malloc returns memory aligned for any type, so the model can be borrowed in place. */
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *bigger = realloc(buf, cap *= 2);
        if (!bigger) free(buf);
        buf = bigger;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* One `"name":value` JSON member; infinite estimates (a zero Jacobian) print as null. */
static void member(const char *name, double v, const char *after) {
    if (isfinite(v))
        printf("\"%s\":%.17g%s", name, v, after);
    else
        printf("\"%s\":null%s", name, after);
}

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.cfy IMAGES.idx FIRST COUNT\n", argv[0]);
        return 1;
    }
    size_t model_len = 0, images_len = 0;
    unsigned char *model_bytes = read_file(argv[1], &model_len);
    unsigned char *images = read_file(argv[2], &images_len);
    if (!model_bytes || !images) {
        fprintf(stderr, "classify: cannot read %s\n", model_bytes ? argv[2] : argv[1]);
        return 1;
    }

    CertifyModel *model = NULL;
    if (certify_model_borrow(model_bytes, model_len, &model) != CERTIFY_STATUS_OK) {
        fprintf(stderr, "classify: %s: %s\n", argv[1], certify_last_error());
        return 1;
    }
    size_t d = certify_model_input_len(model);
    if (images_len < 16 || be32(images) != 0x00000803) {
        fprintf(stderr, "classify: %s is not an uncompressed IDX file of u8 images\n", argv[2]);
        return 1;
    }
    size_t count_in_file = be32(images + 4), pixels = (size_t)be32(images + 8) * be32(images + 12);
    if (pixels != d || images_len < 16 + count_in_file * pixels) {
        fprintf(stderr, "classify: %s holds images of %zu pixels; the model takes %zu values\n", argv[2], pixels, d);
        return 1;
    }
    size_t first = strtoul(argv[3], NULL, 10), count = strtoul(argv[4], NULL, 10);
    if (first + count > count_in_file) {
        fprintf(stderr, "classify: %s holds %zu images\n", argv[2], count_in_file);
        return 1;
    }

    /* One scratch buffer and one input buffer, reused for every digit: no allocation below. */
    size_t scratch_len = certify_model_scratch_size(model);
    unsigned char *scratch = malloc(scratch_len);
    float *x = malloc(d * sizeof(float));
    if (!scratch || !x) {
        fprintf(stderr, "classify: out of memory\n");
        return 1;
    }
    for (size_t i = first; i < first + count; i++) {
        const unsigned char *img = images + 16 + i * pixels;
        for (size_t p = 0; p < d; p++) x[p] = (float)img[p] / 255.0f;
        CertifyResult r;
        if (certify_model_certify(model, x, d, scratch, scratch_len, &r) != CERTIFY_STATUS_OK) {
            fprintf(stderr, "classify: image %zu: %s\n", i, certify_last_error());
            return 1;
        }
        printf("{\"index\":%zu,\"predicted\":%u,", i, r.predicted);
        member("margin", r.margin, ",");
        member("jacobian_fro", r.jacobian_fro, ",");
        member("prop3_bound", r.prop3_bound, ",");
        member("cor2_estimate", r.cor2_estimate, "}\n");
    }
    certify_model_free(model);
    free(scratch);
    free(x);
    free(model_bytes);
    free(images);
    return 0;
}
