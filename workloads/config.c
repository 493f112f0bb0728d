/* Hugging Face config.json parsing, rotary inverse frequencies, parameter
 * counts. Every error names the file and the field so that a user with a
 * hand-edited config can fix it without reading this code. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model.h"
#include "vit.h"

struct parse {
    const char *path;
    char *err;
    size_t err_len;
};

static int fail(const struct parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(const struct parse *p, const char *fmt, ...)
{
    if (p->err && p->err_len) {
        int n = snprintf(p->err, p->err_len, "%s: ", p->path);
        if (n >= 0 && (size_t)n < p->err_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->err_len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return DY_E_FORMAT;
}

/* HF configs write null for "not set" (head_dim, rope_scaling,
 * sliding_window...), so null and absent mean the same here. */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* `prefix` names the enclosing object ("rope_scaling.") in messages. */
static int get_int(const struct parse *p, json_t *obj, const char *prefix, const char *key,
                   bool required, int *out)
{
    json_t *v = field(obj, key);
    if (!v) {
        if (required)
            return fail(p, "field \"%s%s\": missing (expected a positive integer)", prefix, key);
        return DY_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > INT_MAX)
        return fail(p, "field \"%s%s\": expected a positive integer", prefix, key);
    *out = (int)json_integer_value(v);
    return DY_OK;
}

static int get_positive_number(const struct parse *p, json_t *obj, const char *prefix,
                               const char *key, bool required, double *out)
{
    json_t *v = field(obj, key);
    if (!v) {
        if (required)
            return fail(p, "field \"%s%s\": missing (expected a positive number)", prefix, key);
        return DY_OK;
    }
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
        return fail(p, "field \"%s%s\": expected a positive number", prefix, key);
    *out = json_number_value(v);
    return DY_OK;
}

static int get_bool(const struct parse *p, json_t *obj, const char *key, bool *out)
{
    json_t *v = field(obj, key);
    if (!v)
        return DY_OK;
    if (!json_is_boolean(v))
        return fail(p, "field \"%s\": expected true or false", key);
    *out = json_is_true(v);
    return DY_OK;
}

static const struct {
    const char *name;
    enum dy_arch arch;
} archs[] = {
    { "LlamaForCausalLM", DY_ARCH_LLAMA },
    { "MistralForCausalLM", DY_ARCH_LLAMA },
    { "Qwen2ForCausalLM", DY_ARCH_QWEN2 },
    { "MixtralForCausalLM", DY_ARCH_MIXTRAL },
    { "Qwen2MoeForCausalLM", DY_ARCH_QWEN2_MOE },
    { "OlmoeForCausalLM", DY_ARCH_OLMOE },
    { "Qwen3MoeForCausalLM", DY_ARCH_QWEN3_MOE },
};

static int parse_arch(const struct parse *p, json_t *root, struct dy_model_config *cfg)
{
    json_t *list = field(root, "architectures");
    json_t *first = json_array_get(list, 0);
    if (!json_is_string(first))
        return fail(p, "field \"architectures\": expected a non-empty array of strings");
    const char *name = json_string_value(first);
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        if (strcmp(name, archs[i].name) == 0) {
            cfg->arch = archs[i].arch;
            snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", name);
            return DY_OK;
        }
    }
    return fail(p, "field \"architectures\": unsupported architecture \"%s\" (supported: "
                "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM, "
                "Qwen2MoeForCausalLM, OlmoeForCausalLM, Qwen3MoeForCausalLM)", name);
}

/* transformers 5 writes "dtype"; earlier versions "torch_dtype". */
static int parse_dtype(const struct parse *p, json_t *root, struct dy_model_config *cfg)
{
    static const struct {
        const char *name;
        enum dy_dtype dtype;
    } names[] = { { "float32", DY_F32 }, { "float16", DY_F16 }, { "bfloat16", DY_BF16 } };
    const char *key = field(root, "dtype") ? "dtype" : "torch_dtype";
    json_t *v = field(root, key);
    cfg->torch_dtype = DY_BF16;
    if (!v)
        return DY_OK;
    if (!json_is_string(v))
        return fail(p, "field \"%s\": expected a string (\"float32\", \"float16\" or \"bfloat16\")", key);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(json_string_value(v), names[i].name) == 0) {
            cfg->torch_dtype = names[i].dtype;
            return DY_OK;
        }
    }
    return fail(p, "field \"%s\": unsupported dtype \"%s\" (supported: float32, float16, bfloat16)",
                key, json_string_value(v));
}

/* Two layouts: transformers <= 4.x has top-level rope_theta plus an optional
 * rope_scaling object (rope type under "rope_type" or the legacy "type");
 * transformers 5 puts everything in rope_parameters. */
static int parse_rope(const struct parse *p, json_t *root, struct dy_model_config *cfg)
{
    json_t *params = field(root, "rope_parameters");
    const char *obj_name = params ? "rope_parameters" : "rope_scaling";
    json_t *scaling = params ? params : field(root, "rope_scaling");
    char prefix[32];
    int rc;

    snprintf(prefix, sizeof prefix, "%s.", obj_name);
    cfg->rope_theta = 10000.0;
    cfg->rope_type = DY_ROPE_DEFAULT;
    cfg->rope_factor = 1.0;
    cfg->rope_low_freq_factor = 0.0;
    cfg->rope_high_freq_factor = 0.0;
    cfg->rope_original_max_positions = 0;

    if ((rc = get_positive_number(p, root, "", "rope_theta", false, &cfg->rope_theta)))
        return rc;
    if (!scaling)
        return DY_OK;
    if (!json_is_object(scaling))
        return fail(p, "field \"%s\": expected an object or null", obj_name);
    if (params && (rc = get_positive_number(p, params, prefix, "rope_theta", false, &cfg->rope_theta)))
        return rc;

    const char *type_key = field(scaling, "rope_type") ? "rope_type" : "type";
    json_t *type = field(scaling, type_key);
    const char *type_name = "default";
    if (type) {
        if (!json_is_string(type))
            return fail(p, "field \"%s%s\": expected a string", prefix, type_key);
        type_name = json_string_value(type);
    }
    if (strcmp(type_name, "default") == 0) {
        cfg->rope_type = DY_ROPE_DEFAULT;
    } else if (strcmp(type_name, "linear") == 0) {
        cfg->rope_type = DY_ROPE_LINEAR;
    } else if (strcmp(type_name, "llama3") == 0) {
        cfg->rope_type = DY_ROPE_LLAMA3;
    } else {
        return fail(p, "field \"%s%s\": unsupported rope_type \"%s\" (supported: default, linear, llama3)",
                    prefix, type_key, type_name);
    }
    if (cfg->rope_type == DY_ROPE_DEFAULT)
        return DY_OK;

    bool llama3 = cfg->rope_type == DY_ROPE_LLAMA3;
    if ((rc = get_positive_number(p, scaling, prefix, "factor", true, &cfg->rope_factor)))
        return rc;
    if (!llama3)
        return DY_OK;
    if ((rc = get_positive_number(p, scaling, prefix, "low_freq_factor", true, &cfg->rope_low_freq_factor)) ||
        (rc = get_positive_number(p, scaling, prefix, "high_freq_factor", true, &cfg->rope_high_freq_factor)) ||
        (rc = get_int(p, scaling, prefix, "original_max_position_embeddings", true,
                      &cfg->rope_original_max_positions)))
        return rc;
    /* the smooth region divides by high - low */
    if (!(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor))
        return fail(p, "field \"%shigh_freq_factor\": must be greater than low_freq_factor", prefix);
    return DY_OK;
}

static int parse_shapes(const struct parse *p, json_t *root, struct dy_model_config *cfg)
{
    int rc;
    if ((rc = get_int(p, root, "", "hidden_size", true, &cfg->hidden)) ||
        (rc = get_int(p, root, "", "intermediate_size", true, &cfg->intermediate)) ||
        (rc = get_int(p, root, "", "num_hidden_layers", true, &cfg->layers)) ||
        (rc = get_int(p, root, "", "num_attention_heads", true, &cfg->heads)) ||
        (rc = get_int(p, root, "", "vocab_size", true, &cfg->vocab)))
        return rc;

    cfg->kv_heads = cfg->heads;
    cfg->head_dim = cfg->hidden / cfg->heads; /* integer division, as HF */
    cfg->max_positions = 2048;
    if ((rc = get_int(p, root, "", "num_key_value_heads", false, &cfg->kv_heads)) ||
        (rc = get_int(p, root, "", "head_dim", false, &cfg->head_dim)) ||
        (rc = get_int(p, root, "", "max_position_embeddings", false, &cfg->max_positions)))
        return rc;
    if (cfg->heads % cfg->kv_heads != 0)
        return fail(p, "field \"num_key_value_heads\": %d does not divide num_attention_heads %d",
                    cfg->kv_heads, cfg->heads);
    if (cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
        return fail(p, "field \"head_dim\": %d must be a positive even number (rotary pairs)",
                    cfg->head_dim);

    double eps = 1e-6;
    if ((rc = get_positive_number(p, root, "", "rms_norm_eps", false, &eps)))
        return rc;
    cfg->norm_eps = (float)eps;
    return DY_OK;
}

/* Options that change the forward pass in ways the workloads do not
 * implement: refuse them rather than compute something else. */
static int parse_unsupported(const struct parse *p, json_t *root)
{
    json_t *act = field(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return fail(p, "field \"hidden_act\": only \"silu\" is supported");
    bool mlp_bias = false;
    int rc = get_bool(p, root, "mlp_bias", &mlp_bias);
    if (rc)
        return rc;
    if (mlp_bias)
        return fail(p, "field \"mlp_bias\": MLP biases are not supported");
    return DY_OK;
}

/* The MoE block of Mixtral, Qwen2-MoE, OLMoE and Qwen3-MoE, with the field
 * names and defaults of each transformers config class. */
static int parse_moe(const struct parse *p, json_t *root, struct dy_model_config *cfg)
{
    int rc;
    bool mixtral = cfg->arch == DY_ARCH_MIXTRAL;
    /* Mixtral's name; the others' before transformers 5, which may write
     * Mixtral's for them too */
    const char *experts_key = field(root, "num_local_experts") ? "num_local_experts" : "num_experts";
    cfg->top_k = 2;
    cfg->moe_ffn = cfg->intermediate; /* Mixtral and OLMoE: intermediate_size per expert */
    if ((rc = get_int(p, root, "", experts_key, true, &cfg->experts)) ||
        (rc = get_int(p, root, "", "num_experts_per_tok", false, &cfg->top_k)))
        return rc;
    if (cfg->arch == DY_ARCH_QWEN2_MOE || cfg->arch == DY_ARCH_QWEN3_MOE) {
        if ((rc = get_int(p, root, "", "moe_intermediate_size", true, &cfg->moe_ffn)))
            return rc;
        int sparse_step = 1;
        if ((rc = get_int(p, root, "", "decoder_sparse_step", false, &sparse_step)))
            return rc;
        json_t *dense = field(root, "mlp_only_layers");
        if (sparse_step != 1 || (json_is_array(dense) && json_array_size(dense) > 0))
            return fail(p, "field \"%s\": dense MLP layers between MoE layers are not supported",
                        sparse_step != 1 ? "decoder_sparse_step" : "mlp_only_layers");
    }
    if (cfg->arch == DY_ARCH_QWEN2_MOE &&
        (rc = get_int(p, root, "", "shared_expert_intermediate_size", false, &cfg->shared_ffn)))
        return rc;
    cfg->norm_topk_prob = mixtral;
    if (!mixtral && (rc = get_bool(p, root, "norm_topk_prob", &cfg->norm_topk_prob)))
        return rc;
    if (cfg->top_k > cfg->experts)
        return fail(p, "field \"num_experts_per_tok\": %d exceeds the %d experts", cfg->top_k,
                    cfg->experts);
    if (field(root, "clip_qkv"))
        return fail(p, "field \"clip_qkv\": clipping q/k/v is not supported");
    cfg->qk_norm = cfg->arch == DY_ARCH_OLMOE ? DY_QK_NORM_WHOLE
                   : cfg->arch == DY_ARCH_QWEN3_MOE ? DY_QK_NORM_HEAD : DY_QK_NORM_NONE;
    return DY_OK;
}

bool dy_config_is_moe(const struct dy_model_config *cfg)
{
    return cfg->experts > 0;
}

/* "models/llama-3.1-8b.json" -> "llama-3.1-8b"; "ckpt/tiny/config.json" ->
 * "tiny", resolved through realpath so that "./config.json" names the
 * directory too. */
static void name_from_path(const char *path, char *name, size_t name_len)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (strcmp(base, "config.json") == 0) {
        char *abs = realpath(path, NULL);
        char *parent_end = abs ? strrchr(abs, '/') : NULL;
        if (parent_end && parent_end != abs) {
            *parent_end = '\0';
            snprintf(name, name_len, "%s", strrchr(abs, '/') + 1);
        } else {
            snprintf(name, name_len, "config");
        }
        free(abs);
        return;
    }
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".json") == 0)
        len -= 5;
    snprintf(name, name_len, "%.*s", (int)len, base);
}

int dy_config_load(const char *path, struct dy_model_config *cfg, char *err, size_t err_len)
{
    struct parse p = { path, err, err_len };
    json_error_t jerr;
    int rc;

    memset(cfg, 0, sizeof *cfg);
    if (err && err_len)
        err[0] = '\0';

    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && err_len)
            snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return DY_E_IO;
    }
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    if (!root)
        return fail(&p, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        rc = fail(&p, "expected a JSON object at the top level");
        goto out_root;
    }

    if ((rc = parse_arch(&p, root, cfg)) ||
        (rc = parse_shapes(&p, root, cfg)) ||
        (rc = parse_unsupported(&p, root)) ||
        (rc = parse_dtype(&p, root, cfg)) ||
        (rc = parse_rope(&p, root, cfg)))
        goto out_root;
    if (cfg->arch >= DY_ARCH_MIXTRAL && (rc = parse_moe(&p, root, cfg)))
        goto out_root;

    bool attention_bias = false;
    if ((rc = get_bool(&p, root, "tie_word_embeddings", &cfg->tie_embeddings)) ||
        (rc = get_bool(&p, root, "attention_bias", &attention_bias)))
        goto out_root;
    /* Qwen2 (and Qwen2-MoE) always has q/k/v biases and never an o_proj
     * bias; elsewhere attention_bias covers all four projections */
    cfg->qkv_bias = cfg->arch == DY_ARCH_QWEN2 || cfg->arch == DY_ARCH_QWEN2_MOE || attention_bias;
    cfg->o_bias = cfg->arch != DY_ARCH_QWEN2 && cfg->arch != DY_ARCH_QWEN2_MOE && attention_bias;

    name_from_path(path, cfg->name, sizeof cfg->name);
    rc = DY_OK;
out_root:
    json_decref(root);
    return rc;
}

/* Float32 throughout, in the order transformers evaluates it, so that the
 * table matches theirs bit for bit: `1.0 / base ** (arange(0, d, 2).float() / d)`
 * and `_compute_llama3_parameters`. A Python scalar divided by a tensor is
 * `tensor.reciprocal() * scalar` in torch, hence the reciprocals. */
void dy_rope_inv_freq(const struct dy_model_config *cfg, float *inv_freq)
{
    int half = cfg->head_dim / 2;
    float base = (float)cfg->rope_theta;
    float factor = (float)cfg->rope_factor;

    for (int i = 0; i < half; i++) {
        float exponent = (float)(2 * i) / (float)cfg->head_dim;
        inv_freq[i] = 1.0f / powf(base, exponent);
    }
    if (cfg->rope_type == DY_ROPE_LINEAR) {
        for (int i = 0; i < half; i++)
            inv_freq[i] /= factor;
        return;
    }
    if (cfg->rope_type != DY_ROPE_LLAMA3)
        return;

    double old_context = cfg->rope_original_max_positions;
    float low_freq_wavelen = (float)(old_context / cfg->rope_low_freq_factor);
    float high_freq_wavelen = (float)(old_context / cfg->rope_high_freq_factor);
    float smooth_den = (float)(cfg->rope_high_freq_factor - cfg->rope_low_freq_factor);
    for (int i = 0; i < half; i++) {
        float wavelen = (1.0f / inv_freq[i]) * (float)(2.0 * M_PI);
        if (wavelen > low_freq_wavelen) {
            inv_freq[i] /= factor;
        } else if (!(wavelen < high_freq_wavelen)) {
            float smooth = ((1.0f / wavelen) * (float)old_context - (float)cfg->rope_low_freq_factor)
                           / smooth_den;
            inv_freq[i] = (1.0f - smooth) * inv_freq[i] / factor + smooth * inv_freq[i];
        }
    }
}

uint64_t dy_model_param_count(const struct dy_model_config *cfg)
{
    uint64_t hidden = (uint64_t)cfg->hidden;
    uint64_t q_dim = (uint64_t)cfg->heads * (uint64_t)cfg->head_dim;
    uint64_t kv_dim = (uint64_t)cfg->kv_heads * (uint64_t)cfg->head_dim;
    uint64_t embed = (uint64_t)cfg->vocab * hidden;

    uint64_t attn = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden;
    if (cfg->qkv_bias)
        attn += q_dim + 2 * kv_dim;
    if (cfg->o_bias)
        attn += hidden;
    uint64_t mlp = 3 * hidden * (uint64_t)cfg->intermediate;
    if (cfg->experts) {
        mlp = (uint64_t)cfg->experts * (3 * hidden * (uint64_t)cfg->moe_ffn + hidden);
        if (cfg->shared_ffn)
            mlp += 3 * hidden * (uint64_t)cfg->shared_ffn + hidden;
    }
    if (cfg->qk_norm == DY_QK_NORM_WHOLE)
        attn += q_dim + kv_dim;
    else if (cfg->qk_norm == DY_QK_NORM_HEAD)
        attn += 2 * (uint64_t)cfg->head_dim;
    uint64_t layer = attn + mlp + 2 * hidden;

    return embed + (uint64_t)cfg->layers * layer + hidden + (cfg->tie_embeddings ? 0 : embed);
}

/* ---- ViT (ViTModel, ViTForImageClassification) ---- */

static bool names_vit(json_t *root)
{
    json_t *list = field(root, "architectures");
    json_t *first = json_is_array(list) ? json_array_get(list, 0) : NULL;
    const char *arch = json_is_string(first) ? json_string_value(first) : "";
    return !strcmp(arch, "ViTModel") || !strcmp(arch, "ViTForImageClassification");
}

bool dy_config_is_vit(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    bool vit = root && json_is_object(root) && names_vit(root);
    json_decref(root);
    return vit;
}

int dy_vit_config_load(const char *path, struct dy_vit_config *cfg, char *err, size_t err_len)
{
    struct parse p = { path, err, err_len };
    json_error_t jerr;
    memset(cfg, 0, sizeof *cfg);
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return fail(&p, "cannot read JSON (line %d column %d): %s", jerr.line, jerr.column, jerr.text);
    int rc;
    if (!json_is_object(root) || !names_vit(root)) {
        rc = fail(&p, "field \"architectures\": expected ViTModel or ViTForImageClassification");
        goto out;
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s",
             json_string_value(json_array_get(field(root, "architectures"), 0)));
    cfg->image_size = 224;
    cfg->patch = 16;
    cfg->channels = 3;
    cfg->qkv_bias = true;
    double eps = 1e-12;
    if ((rc = get_int(&p, root, "", "hidden_size", true, &cfg->hidden)) ||
        (rc = get_int(&p, root, "", "intermediate_size", true, &cfg->intermediate)) ||
        (rc = get_int(&p, root, "", "num_hidden_layers", true, &cfg->layers)) ||
        (rc = get_int(&p, root, "", "num_attention_heads", true, &cfg->heads)) ||
        (rc = get_int(&p, root, "", "image_size", false, &cfg->image_size)) ||
        (rc = get_int(&p, root, "", "patch_size", false, &cfg->patch)) ||
        (rc = get_int(&p, root, "", "num_channels", false, &cfg->channels)) ||
        (rc = get_positive_number(&p, root, "", "layer_norm_eps", false, &eps)) ||
        (rc = get_bool(&p, root, "qkv_bias", &cfg->qkv_bias)))
        goto out;
    cfg->norm_eps = (float)eps;
    if (cfg->hidden % cfg->heads) {
        rc = fail(&p, "field \"num_attention_heads\": %d does not divide hidden_size %d", cfg->heads,
                  cfg->hidden);
        goto out;
    }
    if (cfg->image_size % cfg->patch) {
        rc = fail(&p, "field \"patch_size\": %d does not divide image_size %d", cfg->patch,
                  cfg->image_size);
        goto out;
    }
    json_t *act = field(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "gelu"))) {
        rc = fail(&p, "field \"hidden_act\": only \"gelu\" is supported");
        goto out;
    }
    json_t *labels = field(root, "id2label");
    if (!strcmp(cfg->arch_name, "ViTForImageClassification"))
        cfg->labels = json_is_object(labels) ? (int)json_object_size(labels) : 2;
    name_from_path(path, cfg->name, sizeof cfg->name);
    rc = DY_OK;
out:
    json_decref(root);
    return rc;
}
