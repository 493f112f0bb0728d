/* List-valued CLI axes: comma lists and llama-bench style integer ranges. */
#ifndef DY_AXES_H
#define DY_AXES_H

#include <stddef.h>
#include <stdint.h>

struct dy_list {
    char **items;
    int count;
};

/* Expands "1,2,4", "1-8" (step 1), "1-8+2" (add 2), "1-64*2" (times 2), or a
 * mix ("1,8-32*2"). Writes a message into err and returns DY_E_INVALID on
 * malformed text, on values below `min`, or on more than 4096 values. */
int dy_expand_ints(const char *text, int64_t min, struct dy_list *out, char *err, size_t err_len);
/* Splits "a,b,c"; empty items are an error. */
int dy_split_list(const char *text, struct dy_list *out, char *err, size_t err_len);
void dy_list_free(struct dy_list *l);
/* Parses one integer value; false when `text` is not a whole integer. */
int dy_parse_int(const char *text, int64_t *out);

#endif
