#include "inference.h"

#include <math.h>
#include <string.h>

#pragma clang fp contract(off)

/* 1.5 * 2^23: adding it to a float of magnitude below 2^22 leaves the value rounded to the
   nearest integer (ties to even) in the low mantissa bits. */
#define ROUNDING_BIAS 12582912.0f
#define ROUNDING_BIAS_BITS 0x4B400000

#define NORMALIZE_BODY                                                                          \
    for (long r = 0; r < rows; r++) {                                                           \
        const float *row = x + r * count;                                                       \
        float *out = y + r * count;                                                             \
        uint32_t bad = 0;                                                                       \
        for (long j = 0; j < count; j++) {                                                      \
            float v = (row[j] - offset[j]) * scale[j];                                          \
            uint32_t bits;                                                                      \
            memcpy(&bits, &v, sizeof bits);                                                     \
            out[j] = v;                                                                         \
            bad |= (bits & 0x7F800000u) == 0x7F800000u; /* an all-ones exponent: inf or NaN */  \
        }                                                                                       \
        if (bad) {                                                                              \
            for (long j = 0; j < count; j++) if (!isfinite(out[j])) return r * count + j;       \
        }                                                                                       \
    }                                                                                           \
    return -1;

#define QUANTIZE_ROW(TYPE)                                                                      \
    {                                                                                           \
        TYPE *out = (TYPE *)q + r * stride;                                                     \
        for (long j = 0; j < count; j++) {                                                      \
            float v = row[j] * inverse + ROUNDING_BIAS;                                         \
            int32_t bits;                                                                       \
            memcpy(&bits, &v, sizeof bits);                                                     \
            out[j] = (TYPE)(bits - ROUNDING_BIAS_BITS);                                         \
        }                                                                                       \
        for (long j = count; j < stride; j++) out[j] = 0;                                       \
    }

#define QUANTIZE_BODY                                                                           \
    for (long r = 0; r < rows; r++) {                                                           \
        const float *row = x + r * count;                                                       \
        /* The largest magnitude as the largest of the bits without their sign: for finite  \
           floats they order as the magnitudes do (a NaN makes the scale NaN, and the         \
           outputs with it), and an integer maximum vectorises. */                            \
        uint32_t largestBits = 0;                                                               \
        for (long j = 0; j < count; j++) {                                                      \
            uint32_t bits;                                                                      \
            memcpy(&bits, &row[j], sizeof bits);                                                \
            bits &= 0x7FFFFFFFu;                                                                \
            largestBits = bits > largestBits ? bits : largestBits;                              \
        }                                                                                       \
        float largest;                                                                          \
        memcpy(&largest, &largestBits, sizeof largest);                                         \
        scales[r] = largest / 127.0f;                                                           \
        float inverse = largest > 0 ? 127.0f / largest : 0.0f;                                  \
        if (bytes_per_value == 1) QUANTIZE_ROW(int8_t) else QUANTIZE_ROW(int16_t)               \
    }

static long normalize_baseline(const float *x, const float *offset, const float *scale, long rows, long count, float *y) {
    NORMALIZE_BODY
}

static void quantize_baseline(const float *x, long rows, long count, void *q, long stride, int bytes_per_value, float *scales) {
    QUANTIZE_BODY
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static long normalize_avx2(const float *x, const float *offset, const float *scale, long rows, long count, float *y) {
    NORMALIZE_BODY
}

__attribute__((target("avx2")))
static void quantize_avx2(const float *x, long rows, long count, void *q, long stride, int bytes_per_value, float *scales) {
    QUANTIZE_BODY
}

static int baseline_only = 0;

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return known && !__atomic_load_n(&baseline_only, __ATOMIC_RELAXED);
}

void murmur_inference_use_baseline(int yes) { __atomic_store_n(&baseline_only, yes ? 1 : 0, __ATOMIC_RELAXED); }
#else
static int has_avx2(void) { return 0; }

void murmur_inference_use_baseline(int yes) { (void)yes; }
#endif

long murmur_normalize(const float *x, const float *offset, const float *scale, long rows, long count, float *y) {
#if defined(__x86_64__)
    if (has_avx2()) return normalize_avx2(x, offset, scale, rows, count, y);
#endif
    return normalize_baseline(x, offset, scale, rows, count, y);
}

void murmur_quantize(const float *x, long rows, long count, void *q, long stride, int bytes_per_value, float *scales) {
#if defined(__x86_64__)
    if (has_avx2()) { quantize_avx2(x, rows, count, q, stride, bytes_per_value, scales); return; }
#endif
    quantize_baseline(x, rows, count, q, stride, bytes_per_value, scales);
}

const char *murmur_inference_build(void) { return has_avx2() ? "avx2" : "baseline"; }
