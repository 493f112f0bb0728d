#include <string.h>

#include "backend.h"

static const struct {
    const char *name;
} dtypes[DY_DTYPE_COUNT] = {
    [DY_F32] = { "f32" },
    [DY_F16] = { "f16" },
    [DY_BF16] = { "bf16" },
    [DY_I32] = { "i32" },
    [DY_FP8] = { "fp8" },
    [DY_I8] = { "int8" },
    [DY_I4] = { "int4" },
};

const char *dy_dtype_name(enum dy_dtype t)
{
    return (unsigned)t < DY_DTYPE_COUNT ? dtypes[t].name : "?";
}

bool dy_dtype_parse(const char *name, enum dy_dtype *out)
{
    for (int t = 0; t < DY_DTYPE_COUNT; t++) {
        if (strcmp(name, dtypes[t].name) == 0) {
            *out = (enum dy_dtype)t;
            return true;
        }
    }
    return false;
}
