/* `dyno import`: published results in LLM-Inference-Bench's CSV format
 * (All_results.csv) as points, so they can stand beside dyno's own:
 *
 *   Hardware,Num of Hardware,Framework,Model,Input Output Length,Batch Size,Latency,Throughput
 *
 * Latency is seconds for the whole batch, Throughput total tokens per second
 * (batch x (in + out) / latency); `KV Cache Dtype` and `avg_power` (W) are
 * read when present, other columns ignored. A malformed row fails the whole
 * file with FILE:LINE. */
#include <csv.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../backends/status.h"
#include "results.h"

enum column {
    COL_HARDWARE, COL_HARDWARE_COUNT, COL_FRAMEWORK, COL_MODEL, COL_LENGTH, COL_BATCH,
    COL_LATENCY, COL_THROUGHPUT, COL_KV_DTYPE, COL_POWER, COLUMN_COUNT,
};
#define REQUIRED_COLUMNS COL_KV_DTYPE

static const char *const column_names[COLUMN_COUNT] = {
    "Hardware", "Num of Hardware", "Framework", "Model", "Input Output Length", "Batch Size",
    "Latency", "Throughput", "KV Cache Dtype", "avg_power",
};

/* The study's names for models with a dyno preset of the same shape (the
 * HF config.json; Llama-3-8B differs from Llama-3.1-8B only in its rope
 * scaling, which does not change the cost). Other names pass through. */
static const char *const model_names[][2] = {
    { "Llama-3-8B", "llama-3.1-8b" },
    { "Meta-Llama-3-8B", "llama-3.1-8b" },
    { "Llama-3.1-8B", "llama-3.1-8b" },
    { "Llama-2-7B", "llama-2-7b" },
    { "Mistral-7B", "mistral-7b" },
    { "Qwen2.5-7B", "qwen2.5-7b" },
    { "Llama-3.2-1B", "llama-3.2-1b" },
    { "Llama-3.2-3B", "llama-3.2-3b" },
};

/* Accelerator names as the vendors' drivers report them. */
static const char *const hardware_names[][2] = {
    { "A100", "NVIDIA A100" },
    { "H100", "NVIDIA H100" },
    { "GH200", "NVIDIA GH200" },
    { "MI250", "AMD Instinct MI250" },
    { "MI300X", "AMD Instinct MI300X" },
    { "Gaudi2", "Intel Gaudi 2" },
    { "Max1550", "Intel Data Center GPU Max 1550" },
    { "SN40L", "SambaNova SN40L" },
};

static const char *const kv_dtype_names[][2] = {
    { "fp16", "f16" }, { "float16", "f16" }, { "half", "f16" }, { "auto", "f16" },
    { "bf16", "bf16" }, { "bfloat16", "bf16" }, { "fp8", "fp8" }, { "fp8_e4m3", "fp8" },
    { "fp8_e5m2", "fp8" }, { "int8", "int8" }, { "fp32", "f32" }, { "float32", "f32" },
};

struct importer {
    const char *path;
    char *fields[64];            /* the row being read */
    int field_count;
    bool too_many_fields;
    int header_index[COLUMN_COUNT];   /* -1: not in the file */
    int header_fields;
    bool have_header;
    long line;                   /* being fed to the parser */
    long row_line;               /* where the current row started */
    struct dy_point *points;
    int count, capacity;
    int status;                  /* the first error; the rest is still parsed, not kept */
    char *err;
    size_t err_len;
};

/* Case folded: the study's files are not consistent in it. */
static const char *lookup(const char *const table[][2], size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(table[i][0], name))
            return table[i][1];
    return NULL;
}

static void row_error(struct importer *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keeps the first error: "FILE:LINE: why". */
static void row_error(struct importer *im, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (im->status != DY_OK)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(im->err, im->err_len, "%s:%ld: %s", im->path, im->row_line, msg);
    im->status = DY_E_FORMAT;
}

static void on_field(void *data, size_t len, void *arg)
{
    struct importer *im = arg;
    if (im->field_count == (int)(sizeof im->fields / sizeof im->fields[0])) {
        im->too_many_fields = true;
        return;
    }
    /* CSV_APPEND_NULL: data is NUL-terminated */
    char *copy = strndup(data ? data : "", len);
    if (!copy && im->status == DY_OK) {
        snprintf(im->err, im->err_len, "%s: out of memory", im->path);
        im->status = DY_E_NOMEM;
    }
    im->fields[im->field_count++] = copy;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static bool parse_positive_int(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *trim(end) || errno || v < 1)
        return false;
    *out = v;
    return true;
}

static bool parse_positive_real(const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *trim(end) || errno || !isfinite(v) || v <= 0)
        return false;
    *out = v;
    return true;
}

static void read_header(struct importer *im)
{
    im->have_header = true;
    im->header_fields = im->field_count;
    for (int c = 0; c < COLUMN_COUNT; c++) {
        im->header_index[c] = -1;
        for (int f = 0; f < im->field_count; f++)
            if (im->fields[f] && !strcmp(trim(im->fields[f]), column_names[c]))
                im->header_index[c] = f;
        if (c < REQUIRED_COLUMNS && im->header_index[c] < 0)
            row_error(im, "no column \"%s\" (LLM-Inference-Bench's CSV has Hardware,"
                      "Num of Hardware,Framework,Model,Input Output Length,Batch Size,Latency,"
                      "Throughput)", column_names[c]);
    }
}

static const char *field(struct importer *im, enum column c)
{
    int i = im->header_index[c];
    return i < 0 ? NULL : trim(im->fields[i]);
}

/* "1024" (input = output, as the study runs) or "1024/128". */
static bool parse_lengths(const char *text, int64_t *in, int64_t *out)
{
    char first[32];
    const char *slash = strchr(text, '/');
    if (!slash)
        return parse_positive_int(text, in) && parse_positive_int(text, out);
    snprintf(first, sizeof first, "%.*s", (int)(slash - text), text);
    return parse_positive_int(first, in) && parse_positive_int(slash + 1, out);
}

static void read_row(struct importer *im)
{
    struct dy_point p;
    int64_t count;
    double latency, throughput, power = NAN;
    const char *text;

    if (im->field_count != im->header_fields) {
        row_error(im, "%d fields, the header has %d", im->field_count, im->header_fields);
        return;
    }
    dy_point_init(&p);
    snprintf(p.workload, sizeof p.workload, "llm");
    /* the study runs fp16 weights unless it says otherwise */
    snprintf(p.weight_dtype, sizeof p.weight_dtype, "f16");
    snprintf(p.kv_dtype, sizeof p.kv_dtype, "f16");
    snprintf(p.status, sizeof p.status, "ok");

    text = field(im, COL_FRAMEWORK);
    if (!*text) {
        row_error(im, "empty Framework");
        return;
    }
    snprintf(p.source, sizeof p.source, "LLM-Inference-Bench/%s", text);
    for (size_t i = 0; text[i] && i + 1 < sizeof p.backend; i++)
        p.backend[i] = text[i] == ' ' ? '-' : (char)tolower((unsigned char)text[i]);

    if (!parse_positive_int(field(im, COL_HARDWARE_COUNT), &count)) {
        row_error(im, "Num of Hardware \"%s\" is not a positive integer",
                  field(im, COL_HARDWARE_COUNT));
        return;
    }
    text = field(im, COL_HARDWARE);
    if (!*text) {
        row_error(im, "empty Hardware");
        return;
    }
    const char *hw = lookup(hardware_names, sizeof hardware_names / sizeof hardware_names[0], text);
    if (count > 1)
        snprintf(p.device, sizeof p.device, "%lld x %s", (long long)count, hw ? hw : text);
    else
        snprintf(p.device, sizeof p.device, "%s", hw ? hw : text);

    text = field(im, COL_MODEL);
    if (!*text) {
        row_error(im, "empty Model");
        return;
    }
    const char *model = lookup(model_names, sizeof model_names / sizeof model_names[0], text);
    snprintf(p.model, sizeof p.model, "%s", model ? model : text);
    /* the study's own name stays with the point when it was mapped */
    if (model)
        snprintf(p.tag, sizeof p.tag, "%s", text);

    if (!parse_lengths(field(im, COL_LENGTH), &p.input_len, &p.output_len)) {
        row_error(im, "Input Output Length \"%s\" is not N or IN/OUT", field(im, COL_LENGTH));
        return;
    }
    if (!parse_positive_int(field(im, COL_BATCH), &p.batch)) {
        row_error(im, "Batch Size \"%s\" is not a positive integer", field(im, COL_BATCH));
        return;
    }
    if (!parse_positive_real(field(im, COL_LATENCY), &latency)) {
        row_error(im, "Latency \"%s\" is not a positive number (seconds)", field(im, COL_LATENCY));
        return;
    }
    if (!parse_positive_real(field(im, COL_THROUGHPUT), &throughput)) {
        row_error(im, "Throughput \"%s\" is not a positive number (tokens/s)",
                  field(im, COL_THROUGHPUT));
        return;
    }
    text = field(im, COL_POWER);
    if (text && *text && !parse_positive_real(text, &power)) {
        row_error(im, "avg_power \"%s\" is not a positive number (W)", text);
        return;
    }
    text = field(im, COL_KV_DTYPE);
    if (text && *text) {
        const char *kv = lookup(kv_dtype_names, sizeof kv_dtype_names / sizeof kv_dtype_names[0], text);
        if (!kv) {
            row_error(im, "KV Cache Dtype \"%s\" is not one of fp16, bf16, fp8, int8", text);
            return;
        }
        snprintf(p.kv_dtype, sizeof p.kv_dtype, "%s", kv);
    }
    p.e2e_ms = latency * 1e3;
    p.total_tok_s = throughput;
    p.output_tok_s = (double)p.batch * (double)p.output_len / latency;
    p.avg_power_w = power;
    p.energy_j = power * latency;

    if (im->count == im->capacity) {
        int cap = im->capacity ? im->capacity * 2 : 64;
        struct dy_point *grown = realloc(im->points, sizeof *grown * (size_t)cap);
        if (!grown) {
            snprintf(im->err, im->err_len, "%s: out of memory", im->path);
            im->status = DY_E_NOMEM;
            return;
        }
        im->points = grown;
        im->capacity = cap;
    }
    im->points[im->count++] = p;
}

static void on_row(int terminator, void *arg)
{
    struct importer *im = arg;
    if (im->too_many_fields)
        row_error(im, "more than %d fields", (int)(sizeof im->fields / sizeof im->fields[0]));
    else if (!im->have_header)
        read_header(im);
    else if (im->status == DY_OK)
        read_row(im);
    for (int i = 0; i < im->field_count; i++)
        free(im->fields[i]);
    im->field_count = 0;
    im->too_many_fields = false;
    im->row_line = 0;
}

int dy_import_llm_inference_bench(const char *path, struct dy_point **points, int *count,
                                  char *err, size_t err_len)
{
    struct importer im = { .path = path, .status = DY_OK, .err = err, .err_len = err_len };
    struct csv_parser parser;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    *points = NULL;
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        return DY_E_IO;
    }
    if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
        fclose(f);
        snprintf(err, err_len, "%s: out of memory", path);
        return DY_E_NOMEM;
    }
    /* fed a line at a time, so that a row is known by the line it starts on */
    while ((len = getline(&line, &cap, f)) > 0) {
        char *text = line;
        /* a spreadsheet's UTF-8 byte order mark is not part of the first name */
        if (++im.line == 1 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {
            text += 3;
            len -= 3;
        }
        if (im.row_line == 0 && strspn(text, "\r\n") < (size_t)len)
            im.row_line = im.line;
        if (csv_parse(&parser, text, (size_t)len, on_field, on_row, &im) != (size_t)len) {
            if (im.row_line == 0)
                im.row_line = im.line;
            row_error(&im, "%s", csv_strerror(csv_error(&parser)));
            break;
        }
    }
    if (im.status == DY_OK && ferror(f)) {
        snprintf(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        im.status = DY_E_IO;
    }
    if (im.status == DY_OK && csv_fini(&parser, on_field, on_row, &im) != 0)
        row_error(&im, "%s (an unterminated quote?)", csv_strerror(csv_error(&parser)));
    if (im.status == DY_OK && im.count == 0) {
        snprintf(err, err_len, "%s: no rows to import", path);
        im.status = DY_E_FORMAT;
    }
    for (int i = 0; i < im.field_count; i++)
        free(im.fields[i]);
    csv_free(&parser);
    free(line);
    fclose(f);
    if (im.status != DY_OK) {
        free(im.points);
        return im.status;
    }
    *points = im.points;
    *count = im.count;
    return DY_OK;
}
