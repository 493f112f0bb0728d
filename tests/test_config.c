/* config.json parsing, presets, rotary frequencies and parameter counts. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "dy_test.h"
#include "workloads/model.h"

static char tmp_dir[] = "/tmp/dyno-test-config-XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static void remove_scratch(void)
{
    nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *scratch_dir(void)
{
    static bool made;
    if (!made) {
        DY_REQUIRE(mkdtemp(tmp_dir) != NULL);
        atexit(remove_scratch);
        made = true;
    }
    return tmp_dir;
}

/* Writes `root` (stolen) as scratch/NAME and returns the path in `path`. */
static void write_json(json_t *root, const char *name, char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/%s", scratch_dir(), name);
    DY_REQUIRE(root && json_dump_file(root, path, JSON_INDENT(2)) == 0);
    json_decref(root);
}

static void write_text(const char *text, const char *name, char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/%s", scratch_dir(), name);
    FILE *f = fopen(path, "w");
    DY_REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* A small valid Llama config to derive variants from. */
static json_t *base_config(void)
{
    return json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s}",
                     "architectures", "LlamaForCausalLM",
                     "hidden_size", 256, "intermediate_size", 768, "num_hidden_layers", 2,
                     "num_attention_heads", 8, "num_key_value_heads", 4, "vocab_size", 1000,
                     "rms_norm_eps", 1e-5, "rope_theta", 500000.0,
                     "tie_word_embeddings", 0, "torch_dtype", "float32");
}

static json_t *llama3_scaling(double factor)
{
    return json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", factor, "low_freq_factor", 1.0,
                     "high_freq_factor", 4.0, "original_max_position_embeddings", 8192,
                     "rope_type", "llama3");
}

static const struct preset_facts {
    const char *name;
    enum dy_arch arch;
    int hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
    float eps;
    double theta;
    enum dy_rope_type rope;
    double rope_factor;
    bool tied, qkv_bias;
    uint64_t params;
} presets[] = {
    { "llama-3.1-8b", DY_ARCH_LLAMA, 4096, 14336, 32, 32, 8, 128, 128256, 1e-5f, 5e5,
      DY_ROPE_LLAMA3, 8.0, false, false, 8030261248ull },
    { "llama-3.2-1b", DY_ARCH_LLAMA, 2048, 8192, 16, 32, 8, 64, 128256, 1e-5f, 5e5,
      DY_ROPE_LLAMA3, 32.0, true, false, 1235814400ull },
    { "llama-3.2-3b", DY_ARCH_LLAMA, 3072, 8192, 28, 24, 8, 128, 128256, 1e-5f, 5e5,
      DY_ROPE_LLAMA3, 32.0, true, false, 3212749824ull },
    { "llama-2-7b", DY_ARCH_LLAMA, 4096, 11008, 32, 32, 32, 128, 32000, 1e-5f, 1e4,
      DY_ROPE_DEFAULT, 1.0, false, false, 6738415616ull },
    { "mistral-7b", DY_ARCH_LLAMA, 4096, 14336, 32, 32, 8, 128, 32768, 1e-5f, 1e6,
      DY_ROPE_DEFAULT, 1.0, false, false, 7248023552ull },
    { "qwen2.5-7b", DY_ARCH_QWEN2, 3584, 18944, 28, 28, 4, 128, 152064, 1e-6f, 1e6,
      DY_ROPE_DEFAULT, 1.0, false, true, 7615616512ull },
    { "tiny-llama", DY_ARCH_LLAMA, 256, 768, 4, 8, 4, 32, 4096, 1e-5f, 1e4,
      DY_ROPE_LLAMA3, 4.0, false, false, 5245184ull },
};

static void test_presets_load(void)
{
    char path[4096], err[512];
    struct dy_model_config cfg;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const struct preset_facts *p = &presets[i];
        printf("# preset %s\n", p->name);
        DY_REQUIRE(dy_preset_path(p->name, path, sizeof path) == DY_OK);
        int rc = dy_config_load(path, &cfg, err, sizeof err);
        if (rc != DY_OK)
            printf("# %s\n", err);
        DY_REQUIRE(rc == DY_OK);
        DY_CHECK(strcmp(cfg.name, p->name) == 0);
        DY_CHECK(cfg.arch == p->arch);
        DY_CHECK(cfg.hidden == p->hidden);
        DY_CHECK(cfg.intermediate == p->intermediate);
        DY_CHECK(cfg.layers == p->layers);
        DY_CHECK(cfg.heads == p->heads);
        DY_CHECK(cfg.kv_heads == p->kv_heads);
        DY_CHECK(cfg.head_dim == p->head_dim);
        DY_CHECK(cfg.vocab == p->vocab);
        DY_CHECK(cfg.norm_eps == p->eps);
        DY_CHECK(cfg.rope_theta == p->theta);
        DY_CHECK(cfg.rope_type == p->rope);
        DY_CHECK(cfg.rope_factor == p->rope_factor);
        DY_CHECK(cfg.tie_embeddings == p->tied);
        DY_CHECK(cfg.qkv_bias == p->qkv_bias);
        DY_CHECK(!cfg.o_bias);
        DY_CHECK(dy_model_param_count(&cfg) == p->params);
    }
}

static void test_preset_list_sorted(void)
{
    char **names;
    int count;
    DY_REQUIRE(dy_preset_list(&names, &count) == DY_OK);
    size_t found = 0;
    for (int i = 0; i < count; i++) {
        if (i > 0)
            DY_CHECK(strcmp(names[i - 1], names[i]) < 0);
        for (size_t p = 0; p < sizeof presets / sizeof presets[0]; p++)
            found += strcmp(names[i], presets[p].name) == 0;
    }
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
    DY_CHECK(found == sizeof presets / sizeof presets[0]);

    char path[4096];
    DY_CHECK(dy_preset_path("no-such-model", path, sizeof path) == DY_E_INVALID);
    DY_CHECK(dy_preset_path("../models/tiny-llama", path, sizeof path) == DY_E_INVALID);
}

static void test_defaults(void)
{
    char path[4096], err[512];
    struct dy_model_config cfg;
    json_t *root = json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:n}",
                             "architectures", "MistralForCausalLM", "hidden_size", 512,
                             "intermediate_size", 1024, "num_hidden_layers", 3,
                             "num_attention_heads", 8, "vocab_size", 320, "head_dim");
    write_json(root, "minimal.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &cfg, err, sizeof err) == DY_OK);
    DY_CHECK(strcmp(cfg.name, "minimal") == 0);
    DY_CHECK(strcmp(cfg.arch_name, "MistralForCausalLM") == 0);
    DY_CHECK(cfg.arch == DY_ARCH_LLAMA);
    DY_CHECK(cfg.kv_heads == 8);
    DY_CHECK(cfg.head_dim == 64);
    DY_CHECK(cfg.norm_eps == 1e-6f);
    DY_CHECK(cfg.max_positions == 2048);
    DY_CHECK(cfg.torch_dtype == DY_BF16);
    DY_CHECK(!cfg.tie_embeddings && !cfg.qkv_bias && !cfg.o_bias);
    DY_CHECK(cfg.rope_theta == 10000.0 && cfg.rope_type == DY_ROPE_DEFAULT);

    /* transformers 5 spells torch_dtype "dtype"; attention_bias adds biases */
    root = base_config();
    json_object_set_new(root, "dtype", json_string("float16"));
    json_object_set_new(root, "attention_bias", json_true());
    write_json(root, "biased.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &cfg, err, sizeof err) == DY_OK);
    DY_CHECK(cfg.torch_dtype == DY_F16);
    DY_CHECK(cfg.qkv_bias && cfg.o_bias);

    root = base_config();
    json_object_set_new(root, "architectures", json_pack("[s]", "Qwen2ForCausalLM"));
    json_object_set_new(root, "rope_scaling", json_null());
    write_json(root, "qwen.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &cfg, err, sizeof err) == DY_OK);
    DY_CHECK(cfg.arch == DY_ARCH_QWEN2 && cfg.qkv_bias && !cfg.o_bias);
    DY_CHECK(cfg.rope_type == DY_ROPE_DEFAULT && cfg.rope_theta == 500000.0);
}

static void test_name_from_directory(void)
{
    char dir[4096], path[4096], err[512];
    struct dy_model_config cfg;
    snprintf(dir, sizeof dir, "%s/my-checkpoint", scratch_dir());
    DY_REQUIRE(mkdir(dir, 0700) == 0);
    write_json(base_config(), "my-checkpoint/config.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &cfg, err, sizeof err) == DY_OK);
    DY_CHECK(strcmp(cfg.name, "my-checkpoint") == 0);
}

/* The same rope written in the transformers 4 and 5 layouts. */
static void test_rope_layouts_identical(void)
{
    char path_a[4096], path_b[4096], err[512];
    struct dy_model_config a, b;
    float inv_a[64], inv_b[64];

    for (int llama3 = 0; llama3 <= 1; llama3++) {
        json_t *top = base_config();
        json_object_set_new(top, "rope_scaling", llama3 ? llama3_scaling(8.0) : json_null());
        write_json(top, "top.json", path_a, sizeof path_a);

        json_t *nested = base_config();
        json_object_del(nested, "rope_theta");
        json_t *params = llama3 ? llama3_scaling(8.0) : json_pack("{s:s}", "rope_type", "default");
        json_object_set_new(params, "rope_theta", json_real(500000.0));
        json_object_set_new(nested, "rope_parameters", params);
        write_json(nested, "nested.json", path_b, sizeof path_b);

        DY_REQUIRE(dy_config_load(path_a, &a, err, sizeof err) == DY_OK);
        DY_REQUIRE(dy_config_load(path_b, &b, err, sizeof err) == DY_OK);
        DY_CHECK(a.rope_type == (llama3 ? DY_ROPE_LLAMA3 : DY_ROPE_DEFAULT));
        DY_CHECK(a.rope_type == b.rope_type);
        DY_CHECK(a.rope_theta == b.rope_theta);
        DY_CHECK(a.rope_factor == b.rope_factor);
        DY_CHECK(a.rope_low_freq_factor == b.rope_low_freq_factor);
        DY_CHECK(a.rope_high_freq_factor == b.rope_high_freq_factor);
        DY_CHECK(a.rope_original_max_positions == b.rope_original_max_positions);
        DY_REQUIRE(a.head_dim == 32 && b.head_dim == 32);
        dy_rope_inv_freq(&a, inv_a);
        dy_rope_inv_freq(&b, inv_b);
        DY_CHECK(memcmp(inv_a, inv_b, 16 * sizeof(float)) == 0);
    }
}

/* The llama3 rule again, in double, independently of the float32 code. */
static void test_llama3_inv_freq(void)
{
    char path[4096], err[512];
    struct dy_model_config cfg;
    float inv[64];
    DY_REQUIRE(dy_preset_path("llama-3.1-8b", path, sizeof path) == DY_OK);
    DY_REQUIRE(dy_config_load(path, &cfg, err, sizeof err) == DY_OK);
    DY_REQUIRE(cfg.head_dim == 128);
    dy_rope_inv_freq(&cfg, inv);

    const double theta = 500000.0, factor = 8.0, low = 1.0, high = 4.0, old_context = 8192.0;
    int scaled = 0, smoothed = 0, kept = 0;
    for (int i = 0; i < 64; i++) {
        double freq = 1.0 / pow(theta, 2.0 * i / 128.0);
        double wavelen = 2.0 * M_PI / freq;
        double want;
        if (wavelen < old_context / high) {
            want = freq;
            kept++;
        } else if (wavelen > old_context / low) {
            want = freq / factor;
            scaled++;
        } else {
            double smooth = (old_context / wavelen - low) / (high - low);
            want = (1.0 - smooth) * freq / factor + smooth * freq;
            smoothed++;
        }
        if (fabs(inv[i] - want) > 1e-6 * want) {
            printf("# inv_freq[%d] = %.9g, want %.9g\n", i, inv[i], want);
            DY_CHECK(false);
        }
    }
    /* the preset exercises all three regions of the rule */
    DY_CHECK(kept > 0 && scaled > 0 && smoothed > 0);
    DY_CHECK(inv[0] == 1.0f);
}

static void test_linear_rope(void)
{
    char path[4096], err[512];
    struct dy_model_config plain, linear;
    float inv_plain[16], inv_linear[16];

    write_json(base_config(), "plain.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &plain, err, sizeof err) == DY_OK);
    json_t *root = base_config();
    /* the legacy key "type" */
    json_object_set_new(root, "rope_scaling", json_pack("{s:s, s:f}", "type", "linear", "factor", 2.0));
    write_json(root, "linear.json", path, sizeof path);
    DY_REQUIRE(dy_config_load(path, &linear, err, sizeof err) == DY_OK);
    DY_CHECK(linear.rope_type == DY_ROPE_LINEAR && linear.rope_factor == 2.0);
    dy_rope_inv_freq(&plain, inv_plain);
    dy_rope_inv_freq(&linear, inv_linear);
    for (int i = 0; i < 16; i++)
        DY_CHECK(inv_linear[i] == inv_plain[i] / 2.0f);
}

static void expect_failure(const char *name, json_t *root, const char *field)
{
    char path[4096], err[512];
    struct dy_model_config cfg;
    write_json(root, name, path, sizeof path);
    int rc = dy_config_load(path, &cfg, err, sizeof err);
    printf("# %s: %s\n", name, err);
    DY_CHECK(rc == DY_E_FORMAT);
    DY_CHECK(strstr(err, path) != NULL);
    DY_CHECK(strstr(err, field) != NULL);
}

static json_t *with(const char *key, json_t *value)
{
    json_t *root = base_config();
    json_object_set_new(root, key, value);
    return root;
}

static json_t *without(const char *key)
{
    json_t *root = base_config();
    json_object_del(root, key);
    return root;
}

static void test_bad_configs(void)
{
    char path[4096], err[512];
    struct dy_model_config cfg;

    write_text("{\n  \"hidden_size\": 4096,\n    \"vocab_size\": ,\n}\n", "malformed.json",
               path, sizeof path);
    DY_CHECK(dy_config_load(path, &cfg, err, sizeof err) == DY_E_FORMAT);
    printf("# malformed.json: %s\n", err);
    DY_CHECK(strstr(err, path) != NULL);
    DY_CHECK(strstr(err, "malformed JSON at line 3") != NULL);

    snprintf(path, sizeof path, "%s/absent.json", scratch_dir());
    DY_CHECK(dy_config_load(path, &cfg, err, sizeof err) == DY_E_IO);
    DY_CHECK(strstr(err, path) != NULL);

    expect_failure("missing.json", without("num_attention_heads"), "\"num_attention_heads\"");
    expect_failure("string.json", with("hidden_size", json_string("4096")), "\"hidden_size\"");
    expect_failure("negative.json", with("num_hidden_layers", json_integer(-1)), "\"num_hidden_layers\"");
    expect_failure("real.json", with("vocab_size", json_real(1000.5)), "\"vocab_size\"");
    expect_failure("arch.json", with("architectures", json_pack("[s]", "GPT2LMHeadModel")),
                   "unsupported architecture \"GPT2LMHeadModel\"");
    expect_failure("no-arch.json", without("architectures"), "\"architectures\"");
    expect_failure("kv.json", with("num_key_value_heads", json_integer(3)), "\"num_key_value_heads\"");
    expect_failure("odd-head.json", with("head_dim", json_integer(31)), "\"head_dim\"");
    expect_failure("eps.json", with("rms_norm_eps", json_string("1e-5")), "\"rms_norm_eps\"");
    expect_failure("theta.json", with("rope_theta", json_integer(0)), "\"rope_theta\"");
    expect_failure("tied.json", with("tie_word_embeddings", json_string("yes")), "\"tie_word_embeddings\"");
    expect_failure("dtype.json", with("torch_dtype", json_string("int8")), "\"torch_dtype\"");
    expect_failure("act.json", with("hidden_act", json_string("gelu")), "\"hidden_act\"");
    expect_failure("yarn.json", with("rope_scaling", json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0)),
                   "\"rope_scaling.rope_type\": unsupported rope_type \"yarn\"");
    expect_failure("dynamic.json", with("rope_parameters", json_pack("{s:s}", "rope_type", "dynamic")),
                   "\"rope_parameters.rope_type\"");
    json_t *no_factor = llama3_scaling(8.0);
    json_object_del(no_factor, "factor");
    expect_failure("no-factor.json", with("rope_scaling", no_factor), "\"rope_scaling.factor\"");
    json_t *no_orig = llama3_scaling(8.0);
    json_object_del(no_orig, "original_max_position_embeddings");
    expect_failure("no-orig.json", with("rope_parameters", no_orig),
                   "\"rope_parameters.original_max_position_embeddings\"");
    expect_failure("scaling-type.json", with("rope_scaling", json_string("llama3")), "\"rope_scaling\"");
    write_text("[1, 2]", "array.json", path, sizeof path);
    DY_CHECK(dy_config_load(path, &cfg, err, sizeof err) == DY_E_FORMAT);
    DY_CHECK(strstr(err, path) != NULL);
}

DY_TESTS(
    DY_TEST(test_presets_load)
    DY_TEST(test_preset_list_sorted)
    DY_TEST(test_defaults)
    DY_TEST(test_name_from_directory)
    DY_TEST(test_rope_layouts_identical)
    DY_TEST(test_llama3_inv_freq)
    DY_TEST(test_linear_rope)
    DY_TEST(test_bad_configs)
)
