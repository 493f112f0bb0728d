/* `dyno generate`: greedy token ids, for checking a backend against a
 * reference implementation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/llm.h"
#include "axes.h"
#include "harness.h"

struct gen_opts {
    const char *model, *model_dir, *prompt, *backend;
    const char *weight_dtype, *kv_dtype;
    int64_t max_new, device, seed, layers, block_size;
};

static int usage(void)
{
    fprintf(stderr,
            "usage: dyno generate (--model NAME | --model-dir DIR) --prompt 1,2,3 --max-new-tokens N\n"
            "                     [--backend cpu] [--device 0] [--weight-dtype f32|f16|bf16|fp8|int8|int4|\n"
            "                     int4-asym|mopeq:BITS] [--kv-dtype f32|f16|bf16|fp8|int8] [--seed 0]\n"
            "                     [--layers N] [--block-size 16]\n"
            "Prints the generated token ids, comma-separated, on one line.\n"
            "Weights default to the checkpoint's dtype (f32 for presets), the KV cache to f32;\n"
            "quantized formats are made from bf16 weights.\n");
    return 2;
}

static int parse(int argc, char **argv, struct gen_opts *o)
{
    *o = (struct gen_opts){ .backend = "cpu", .kv_dtype = "f32", .max_new = -1, .block_size = 16,
                            .layers = -1 };
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **str = !strcmp(f, "--model") ? &o->model
                         : !strcmp(f, "--model-dir") ? &o->model_dir
                         : !strcmp(f, "--prompt") ? &o->prompt
                         : !strcmp(f, "--backend") ? &o->backend
                         : !strcmp(f, "--weight-dtype") ? &o->weight_dtype
                         : !strcmp(f, "--kv-dtype") ? &o->kv_dtype : NULL;
        int64_t *num = !strcmp(f, "--max-new-tokens") ? &o->max_new
                     : !strcmp(f, "--device") ? &o->device
                     : !strcmp(f, "--seed") ? &o->seed
                     : !strcmp(f, "--layers") ? &o->layers
                     : !strcmp(f, "--block-size") ? &o->block_size : NULL;
        if (!str && !num) {
            fprintf(stderr, "dyno generate: unknown flag \"%s\"\n", f);
            return usage();
        }
        if (!v) {
            fprintf(stderr, "dyno generate: %s needs a value\n", f);
            return 2;
        }
        if (str)
            *str = v;
        else if (!dy_parse_int(v, num) || *num < 0) {
            fprintf(stderr, "dyno generate: %s: \"%s\" is not a non-negative integer\n", f, v);
            return 2;
        }
        i++;
    }
    if ((!o->model && !o->model_dir) || !o->prompt || o->max_new < 1) {
        fprintf(stderr, "dyno generate: --model or --model-dir, --prompt and --max-new-tokens >= 1 are required\n");
        return usage();
    }
    return 0;
}

int dy_cmd_generate(int argc, char **argv)
{
    struct gen_opts o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    char err[1024], path[1200];
    struct dy_list prompt_items;
    if (dy_split_list(o.prompt, &prompt_items, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno generate: --prompt: %s\n", err);
        return 2;
    }
    int prompt_len = prompt_items.count;
    int32_t *prompt = calloc((size_t)prompt_len, sizeof *prompt);
    int32_t *out = calloc((size_t)o.max_new, sizeof *out);
    struct dy_model_config cfg;
    struct dy_llm_weights w = { 0 }, qw = { 0 };
    bool quantized = false;
    struct dy_llm *m = NULL;
    dy_ctx *ctx = NULL;
    struct dy_checkpoint *ck = NULL;
    rc = 1;
    if (!prompt || !out)
        goto done;
    if (o.model_dir)
        snprintf(path, sizeof path, "%s/config.json", o.model_dir);
    else if (dy_preset_path(o.model, path, sizeof path) != DY_OK) {
        fprintf(stderr, "dyno generate: unknown model \"%s\" (see `dyno models`)\n", o.model);
        goto done;
    }
    if (dy_config_load(path, &cfg, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno generate: %s\n", err);
        goto done;
    }
    for (int i = 0; i < prompt_len; i++) {
        int64_t id;
        if (!dy_parse_int(prompt_items.items[i], &id) || id < 0 || id >= cfg.vocab) {
            fprintf(stderr, "dyno generate: --prompt: \"%s\" is not a token id in [0, %d)\n",
                    prompt_items.items[i], cfg.vocab);
            rc = 2;
            goto done;
        }
        prompt[i] = (int32_t)id;
    }
    if (o.layers >= 0) {
        if (o.layers < 1 || o.layers > cfg.layers) {
            fprintf(stderr, "dyno generate: --layers %lld: the model has %d layers\n",
                    (long long)o.layers, cfg.layers);
            rc = 2;
            goto done;
        }
        cfg.layers = (int)o.layers;
    }
    enum dy_dtype wdtype = o.model_dir ? cfg.torch_dtype : DY_F32, kv_dtype;
    struct dy_llm_format format = { .dtype = wdtype, .quant = { .dtype = wdtype } };
    if (o.weight_dtype && !dy_llm_format_parse(o.weight_dtype, &format)) {
        fprintf(stderr, "dyno generate: --weight-dtype %s: expected f32, f16, bf16, fp8, int8, int4, "
                "int4-asym or mopeq:BITS\n", o.weight_dtype);
        rc = 2;
        goto done;
    }
    wdtype = format.dtype;
    if (!dy_dtype_parse(o.kv_dtype, &kv_dtype) || kv_dtype == DY_I32 || kv_dtype == DY_I4) {
        fprintf(stderr, "dyno generate: --kv-dtype %s: expected f32, f16, bf16, fp8 or int8\n", o.kv_dtype);
        rc = 2;
        goto done;
    }
    char why[512];
    const struct dy_backend *be = dy_registry_find(o.backend, why, sizeof why);
    if (!be) {
        fprintf(stderr, "dyno generate: %s\n", why);
        goto done;
    }
    int st = dy_ctx_create(be, (int)o.device, &ctx);
    if (st != DY_OK) {
        fprintf(stderr, "dyno generate: cannot open %s device %lld: %s\n", o.backend,
                (long long)o.device, dy_strerror(st));
        goto done;
    }
    if (o.model_dir) {
        if (dy_checkpoint_open(o.model_dir, &ck, err, sizeof err) != DY_OK ||
            dy_llm_weights_load(ctx, &cfg, wdtype, ck, &w, err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno generate: %s\n", err);
            goto done;
        }
    } else if (dy_llm_weights_random(ctx, &cfg, wdtype, (uint64_t)o.seed, &w) != DY_OK) {
        fprintf(stderr, "dyno generate: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    if (dy_llm_format_quantized(&format)) {
        if (!be->dequantize) {
            fprintf(stderr, "dyno generate: --weight-dtype %s: the %s backend has no quantized weights\n",
                    o.weight_dtype, be->name);
            goto done;
        }
        if (dy_llm_weights_quantize(ctx, &cfg, &w, &format, &qw, err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno generate: %s\n", err);
            goto done;
        }
        quantized = true;
    }
    struct dy_llm_options opt = {
        .weight_dtype = wdtype, .kv_dtype = kv_dtype, .block_size = (int)o.block_size,
        .max_batch = 1, .max_prompt = prompt_len, .max_tokens = prompt_len + (int)o.max_new,
    };
    if ((st = dy_llm_create(ctx, &cfg, quantized ? &qw : &w, &opt, &m)) || (st = dy_llm_prefill(m, prompt, 1, prompt_len)) ||
        (st = dy_llm_read_tokens(m, &out[0])))
        goto fail;
    for (int i = 1; i < o.max_new; i++)
        if ((st = dy_llm_decode(m)) || (st = dy_llm_read_tokens(m, &out[i])))
            goto fail;
    for (int i = 0; i < o.max_new; i++)
        printf("%s%d", i ? "," : "", out[i]);
    printf("\n");
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "dyno generate: %s\n", dy_ctx_error(ctx));
done:
    dy_llm_destroy(m);
    if (ctx && quantized)
        dy_llm_weights_free(ctx, &qw);
    if (ctx)
        dy_llm_weights_free(ctx, &w);
    dy_checkpoint_close(ck);
    dy_ctx_destroy(ctx);
    dy_list_free(&prompt_items);
    free(prompt);
    free(out);
    return rc;
}
