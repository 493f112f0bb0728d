/* `dyno encode`: a ViT's last hidden state for given pixels, for checking a
 * backend against a reference implementation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../workloads/vit.h"
#include "axes.h"
#include "harness.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: dyno encode (--model NAME | --model-dir DIR) --pixels FILE [-o OUT]\n"
            "                   [--backend cpu] [--device 0] [--weight-dtype f32|f16|bf16] [--seed 0]\n"
            "                   [--lora-rank R | --lora-rank-map MAP] [--lora-targets attn|attn+mlp]\n"
            "                   [--lora-merged 1] [--image-size S]\n"
            "FILE holds little-endian float32 pixels, N x channels x S x S (S: the\n"
            "config's image size unless given; another size interpolates the position\n"
            "embeddings); OUT (default hidden.f32) gets the last hidden state,\n"
            "N x tokens x hidden float32. Weights default to f32.\n");
    return 2;
}

int dy_cmd_encode(int argc, char **argv)
{
    const char *model = NULL, *dir = NULL, *pixels_path = NULL, *out_path = "hidden.f32";
    const char *backend = "cpu", *wname = "f32", *targets = "attn", *rank_map = NULL;
    int64_t device = 0, seed = 0, lora_rank = 0, lora_merged = 0, image_size = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **str = !strcmp(f, "--model") ? &model : !strcmp(f, "--model-dir") ? &dir
                         : !strcmp(f, "--pixels") ? &pixels_path : !strcmp(f, "-o") ? &out_path
                         : !strcmp(f, "--backend") ? &backend : !strcmp(f, "--weight-dtype") ? &wname
                         : !strcmp(f, "--lora-targets") ? &targets
                         : !strcmp(f, "--lora-rank-map") ? &rank_map : NULL;
        int64_t *num = !strcmp(f, "--device") ? &device : !strcmp(f, "--seed") ? &seed
                     : !strcmp(f, "--lora-rank") ? &lora_rank
                     : !strcmp(f, "--lora-merged") ? &lora_merged
                     : !strcmp(f, "--image-size") ? &image_size : NULL;
        if ((!str && !num) || !v) {
            fprintf(stderr, "dyno encode: %s \"%s\"\n", v ? "unknown flag" : "missing value for", f);
            return usage();
        }
        if (str)
            *str = v;
        else if (!dy_parse_int(v, num) || *num < 0) {
            fprintf(stderr, "dyno encode: %s: \"%s\" is not a non-negative integer\n", f, v);
            return 2;
        }
        i++;
    }
    enum dy_dtype wdtype;
    if ((!model && !dir) || !pixels_path || !dy_dtype_parse(wname, &wdtype) || wdtype > DY_BF16)
        return usage();
    if (strcmp(targets, "attn") && strcmp(targets, "attn+mlp")) {
        fprintf(stderr, "dyno encode: --lora-targets \"%s\": expected attn or attn+mlp\n", targets);
        return 2;
    }
    if (lora_rank && rank_map) {
        fprintf(stderr, "dyno encode: --lora-rank and --lora-rank-map both give the ranks: use one\n");
        return 2;
    }
    bool mlp = !strcmp(targets, "attn+mlp"), merged = lora_merged == 1;
    char path[1200], err[1024];
    struct dy_vit_config cfg;
    if (dir)
        snprintf(path, sizeof path, "%s/config.json", dir);
    else if (dy_preset_path(model, path, sizeof path) != DY_OK) {
        fprintf(stderr, "dyno encode: unknown model \"%s\" (see `dyno models`)\n", model);
        return 2;
    }
    if (dy_vit_config_load(path, &cfg, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno encode: %s\n", err);
        return 2;
    }
    int size = image_size ? (int)image_size : cfg.image_size;
    if (size < cfg.patch || size % cfg.patch) {
        fprintf(stderr, "dyno encode: --image-size %d is not a multiple of the patch size %d\n",
                size, cfg.patch);
        return 2;
    }
    /* the pixel file's size must be a whole number of images */
    struct stat sb;
    size_t image_floats = (size_t)cfg.channels * size * size;
    if (stat(pixels_path, &sb) != 0 || sb.st_size == 0 || (size_t)sb.st_size % (image_floats * 4)) {
        fprintf(stderr, "dyno encode: %s: expected a non-empty multiple of %zu bytes "
                "(float32 images of %d x %d x %d)\n", pixels_path, image_floats * 4, cfg.channels,
                size, size);
        return 2;
    }
    struct dy_vit_lora lora = { 0 };
    if ((rank_map && dy_vit_lora_map_load(rank_map, &cfg, mlp, merged, &lora, err, sizeof err)) ||
        (lora_rank && dy_vit_lora_uniform(&cfg, (int)lora_rank, mlp, merged, &lora, err, sizeof err))) {
        fprintf(stderr, "dyno encode: %s\n", err);
        return 2;
    }
    int batch = (int)((size_t)sb.st_size / (image_floats * 4));
    float *pixels = malloc((size_t)sb.st_size), *hidden = NULL;
    FILE *in = fopen(pixels_path, "rb");
    int rc = 1;
    dy_ctx *ctx = NULL;
    struct dy_vit_weights w = { 0 };
    struct dy_vit *m = NULL;
    struct dy_checkpoint *ck = NULL;
    if (!pixels || !in || fread(pixels, 1, (size_t)sb.st_size, in) != (size_t)sb.st_size) {
        fprintf(stderr, "dyno encode: cannot read %s\n", pixels_path);
        goto done;
    }
    char why[512];
    const struct dy_backend *be = dy_registry_find(backend, why, sizeof why);
    if (!be || dy_ctx_create(be, (int)device, &ctx) != DY_OK) {
        fprintf(stderr, "dyno encode: %s\n", be ? "cannot open the device" : why);
        goto done;
    }
    int st;
    if (dir) {
        if (dy_checkpoint_open(dir, &ck, err, sizeof err) != DY_OK ||
            dy_vit_weights_load(ctx, &cfg, wdtype, ck, &w, err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno encode: %s\n", err);
            goto done;
        }
    } else if (dy_vit_weights_random(ctx, &cfg, wdtype, (uint64_t)seed, &w) != DY_OK) {
        fprintf(stderr, "dyno encode: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    if (lora.layers && dy_vit_lora_add(ctx, &cfg, &w, &lora, (uint64_t)seed) != DY_OK) {
        fprintf(stderr, "dyno encode: LoRA adapters: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    size_t out_floats = (size_t)batch * dy_vit_tokens(&cfg, size) * cfg.hidden;
    hidden = malloc(out_floats * sizeof(float));
    if (!hidden || (st = dy_vit_create(ctx, &cfg, &w, batch, size, &m)) ||
        (st = dy_vit_set_images(m, pixels, batch)) || (st = dy_vit_forward(m)) ||
        (st = dy_vit_read_hidden(m, hidden))) {
        fprintf(stderr, "dyno encode: %s\n", dy_ctx_error(ctx));
        goto done;
    }
    FILE *out = fopen(out_path, "wb");
    if (!out || fwrite(hidden, sizeof(float), out_floats, out) != out_floats || fclose(out)) {
        fprintf(stderr, "dyno encode: cannot write %s\n", out_path);
        goto done;
    }
    fprintf(stderr, "dyno encode: %d x %d x %d float32 -> %s\n", batch,
            dy_vit_tokens(&cfg, size), cfg.hidden, out_path);
    rc = 0;
done:
    if (in)
        fclose(in);
    dy_vit_destroy(m);
    if (ctx)
        dy_vit_weights_free(ctx, &w);
    dy_checkpoint_close(ck);
    dy_ctx_destroy(ctx);
    dy_vit_lora_free(&lora);
    free(pixels);
    free(hidden);
    return rc;
}
