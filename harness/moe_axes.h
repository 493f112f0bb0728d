/* The MoE axes of a point (moe_axes.c). */
#ifndef DY_MOE_AXES_H
#define DY_MOE_AXES_H

#include <stdbool.h>
#include <stddef.h>

#include "../workloads/llm.h"
#include "sweep.h"

/* Applies --experts and --moe-ffn-dim to a freshly loaded config. False,
 * with the reason in why, when the point cannot run: an MoE axis on a dense
 * model, or reshaped experts with a checkpoint's weights. */
bool dy_moe_axes_shape(const char *v[DY_AX_COUNT], struct dy_model_config *cfg, char *why,
                       size_t why_len);

/* Fills opt's MoE fields from --top-k and --routing; *lexi_total is N of
 * --top-k lexi:N (0 without), whose per-layer map the caller computes
 * (dy_moe_lexi). False, with the reason in why, when the point cannot run. */
bool dy_moe_axes_options(const char *v[DY_AX_COUNT], const struct dy_model_config *cfg,
                         struct dy_llm_options *opt, int *lexi_total, char *why, size_t why_len);

#endif
