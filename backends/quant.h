/* Weight quantization on the host: one implementation, so a quantized model
 * is the same bits on every backend. The formats are backend.h's struct
 * dy_quant; REFERENCE.md gives the rules. */
#ifndef DY_QUANT_H
#define DY_QUANT_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DY_QUANT_GROUP 128

/* A weight format: dtype fp8, int8 or int4; int4 with `bits` 2, 3 or 4
 * (2 and 3 bits use fewer of the nibble's levels: MoPEQ's low-bit experts)
 * and symmetric (scale = max|w| / (2^(bits-1) - 1), zero 8) or asymmetric
 * (scale = (max - min) / (2^bits - 1), zero = rint(-min / scale)). */
struct dy_qformat {
    enum dy_dtype dtype;
    int bits;
    int group;
    bool asym;
};

/* The format `name` names: "fp8", "int8", "int4", "int4-asym"; false for
 * anything else (f32, f16, bf16 are not quantized). */
bool dy_qformat_parse(const char *name, struct dy_qformat *out);

/* Bytes of q, scales and zero points of one [rows, cols] matrix (zero
 * points: 0 unless asymmetric int4). cols % group == 0 for int4. */
size_t dy_quant_q_bytes(const struct dy_qformat *f, size_t rows, size_t cols);
size_t dy_quant_scale_count(const struct dy_qformat *f, size_t rows, size_t cols);
size_t dy_quant_zero_bytes(const struct dy_qformat *f, size_t rows, size_t cols);

/* Quantizes w [rows, cols] (f32, host) into q, scale and zero (NULL unless
 * asymmetric int4), each sized as above. Uses every core for large
 * matrices; the result does not depend on how many. */
void dy_quantize(const struct dy_qformat *f, const float *w, size_t rows, size_t cols, void *q,
                 float *scale, uint8_t *zero);

/* Squared Frobenius norm of (w - dequantize(quantize(w))), for sensitivity
 * estimates (MoPEQ). */
double dy_quant_error(const struct dy_qformat *f, const float *w, size_t rows, size_t cols);

#ifdef __cplusplus
}
#endif

#endif
