#ifndef MURMURATION_INFERENCE_H
#define MURMURATION_INFERENCE_H

#include <stdint.h>

/* The element-wise passes of inference, compiled twice on x86-64 (baseline SSE2 and AVX2) and
   chosen once at run time by the CPU's features; other architectures get the one build. Both
   builds round exactly alike: no fused multiply-adds, the same operations in the same order. */

/* y = (x - offset) * scale for `rows` rows of `count` features. Returns the position
   (row * count + feature) of the first result that is not finite, or -1. */
long murmur_normalize(const float *x, const float *offset, const float *scale, long rows, long count, float *y);

/* Quantizes `rows` rows of `count` finite floats to int8 values, symmetric per row: scale =
   the row's largest magnitude / 127, value = x * (127 / largest) rounded to nearest, ties to
   even. Writes each row's values at q + row * stride, as int8 (bytes_per_value 1) or in
   16-bit lanes (2), zeroing the padding up to `stride`, and each row's scale to `scales`. */
void murmur_quantize(const float *x, long rows, long count, void *q, long stride, int bytes_per_value, float *scales);

/* The name of the build in use: "avx2" or "baseline". */
const char *murmur_inference_build(void);

/* With a non-zero argument, the baseline build serves every call from now on, whatever the CPU
   has; with zero, the CPU's best again. For comparing the builds. */
void murmur_inference_use_baseline(int yes);

#endif
