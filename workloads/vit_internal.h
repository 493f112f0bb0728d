/* Shared by the ViT's weight files (vit.c, vit_lora.c); not part of the
 * workload's API. */
#ifndef DY_VIT_INTERNAL_H
#define DY_VIT_INTERNAL_H

#include "vit.h"

/* Allocates a tensor of `elements` in the weights' dtype, counted in w->bytes. */
int dy_vit_alloc_tensor(dy_ctx *ctx, struct dy_vit_weights *w, size_t elements, dy_buf *out);
/* Frees one of them and takes it out of w->bytes. */
void dy_vit_free_tensor(dy_ctx *ctx, struct dy_vit_weights *w, dy_buf *buf);
/* fill_random over the whole tensor, values offset + scale * U(-1, 1), from
 * the ViT's own streams. */
int dy_vit_fill(dy_ctx *ctx, const struct dy_vit_weights *w, dy_buf dst, uint64_t seed,
                uint64_t stream, float scale, float offset);

#endif
