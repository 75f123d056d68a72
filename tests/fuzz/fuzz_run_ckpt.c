/* Fuzz target: the training checkpoint (run_ckpt_open: the state section, config.json through the
 * config loader, every size against the model it describes) and, for what it accepts, restoring
 * the model and the optimizer state from it.
 *
 * Input: sections joined by SEP; each is NAME '\0' BYTES (a part without a NUL is skipped). The
 * target writes them with ckpt_write, so every input is a sound container and all the fuzzing goes
 * into what the sections say: a crafted state, config.json or optimizer blob, sections missing,
 * renamed or of the wrong size. tests/fuzz/run_ckpt.dict gives libFuzzer the separator and names. */
#include "checkpoint.h"
#include "fuzz.h"
#include "run_ckpt.h"

#define SEP "\n--section--\n"
#define MAX_SECTIONS 16

static void restore(const RunCkpt *ck) {
    BpError err;
    const Config *cfg = run_ckpt_config(ck);
    if (run_ckpt_check_resume(ck, cfg, NULL, NULL, &err) != 0) {
        fprintf(stderr, "a checkpoint does not resume its own config: %s\n", err.msg);
        abort();
    }
    size_t vlen = 0;
    const uint8_t *vocab = run_ckpt_vocab(ck, &vlen);
    for (size_t i = 0; i < vlen; i++) fuzz_sink += vocab[i];
    fuzz_sink += (uint64_t)run_ckpt_step(ck) + (uint64_t)run_ckpt_elapsed(ck) + strlen(run_ckpt_path(ck));
    Model *model = run_ckpt_model(ck, NULL, &err);
    if (!model) return;
    Optimizer *opt = optim_create(&cfg->optimizer, model_table(model), &err);
    if (opt) (void)run_ckpt_restore_optimizer(ck, opt, &err);
    optim_free(opt);
    model_free(model);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    CkptSection sec[MAX_SECTIONS] = {{0}};
    int n = 0;
    const uint8_t *p = data, *end = data + size;
    const size_t seplen = sizeof SEP - 1;
    while (p <= end && n < MAX_SECTIONS) {
        const uint8_t *q = memmem(p, (size_t)(end - p), SEP, seplen);
        const uint8_t *part_end = q ? q : end;
        const uint8_t *nul = memchr(p, 0, (size_t)(part_end - p));
        /* a name ckpt_write takes: 1..31 bytes, unique (a part that breaks that is skipped) */
        int ok = nul && nul > p && nul - p < CKPT_NAME_LEN;
        for (int k = 0; ok && k < n; k++) ok = strcmp(sec[k].name, (const char *)p) != 0;
        if (ok) sec[n++] = (CkptSection){.name = (const char *)p, .data = nul + 1, .bytes = (size_t)(part_end - nul - 1)};
        if (!q) break;
        p = q + seplen;
    }
    BpError err;
    const char *path = fuzz_path("ckpt.bin");
    if (ckpt_write(path, sec, n, &err) != 0) {
        fprintf(stderr, "ckpt_write: %s\n", err.msg);
        abort();
    }
    RunCkpt *ck = run_ckpt_open(path, &err);
    if (ck) restore(ck);
    run_ckpt_close(ck);
    return 0;
}
