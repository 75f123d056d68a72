/* log.c: metrics.jsonl and the progress line (see log.h). */
#include "log.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* JSON has no NaN/Inf: write them as null so the file stays parseable by every reader */
static void put_num(FILE *f, const char *key, double v, bool comma) {
    if (isfinite(v))
        fprintf(f, "\"%s\":%.9g%s", key, v, comma ? "," : "");
    else
        fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
}

/* Rewrites metrics.jsonl without the records of steps after keep_through: on resume those steps
 * run again and must not appear twice. A record's step is its "step" field. */
static int drop_later_records(const char *path, long keep_through, BpError *err) {
    size_t len = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) return 0; /* no metrics yet */
    fclose(probe);
    char *text = bp_read_file(path, &len, err);
    if (!text) return -1;
    AtomicFile af;
    if (bp_atomic_open(&af, path, err) != 0) {
        free(text);
        return -1;
    }
    char *line = text;
    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(text + len - line);
        const char *s = strstr(line, "\"step\":");
        long step = (s && s < line + n) ? strtol(s + 7, NULL, 10) : 0;
        /* a torn last line (kill -9 mid-write) has no newline: drop it */
        if (nl && step <= keep_through) fwrite(line, 1, n + 1, af.fp);
        line += n + 1;
    }
    free(text);
    return bp_atomic_commit(&af, err);
}

int log_open(Logger *lg, const char *run_dir, long keep_through_step, BpError *err) {
    memset(lg, 0, sizeof *lg);
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (keep_through_step >= 0 && drop_later_records(path, keep_through_step, err) != 0) return -1;
    lg->metrics = fopen(path, keep_through_step >= 0 ? "ab" : "wb");
    if (!lg->metrics) return bp_fail(err, "%s: cannot open for writing", path);
    lg->tty = isatty(STDERR_FILENO);
    lg->last_print_s = -1e9;
    return 0;
}

void log_close(Logger *lg) {
    log_break(lg);
    if (lg->metrics) fclose(lg->metrics);
    lg->metrics = NULL;
}

void log_step(Logger *lg, const StepRecord *r) {
    FILE *f = lg->metrics;
    if (!f) return;
    fprintf(f, "{\"type\":\"step\",\"step\":%ld,\"phase\":%d,", r->step, r->phase);
    put_num(f, "lr", r->lr, true);
    put_num(f, "loss", r->loss, true);
    put_num(f, "mlm_loss", r->mlm_loss, true);
    put_num(f, "nsp_loss", r->nsp_loss, true);
    put_num(f, "mlm_acc", r->mlm_acc, true);
    put_num(f, "nsp_acc", r->nsp_acc, true);
    put_num(f, "grad_norm", r->grad_norm, true);
    put_num(f, "tokens_per_s", r->tokens_per_s, true);
    if (r->ranks > 1) {
        fprintf(f, "\"ranks\":%d,", r->ranks);
        put_num(f, "comm_exposed_s", r->comm_exposed_s, true);
    }
    put_num(f, "elapsed_s", r->elapsed_s, false);
    fputs("}\n", f);
    fflush(f);
}

void log_eval_line(FILE *out, const EvalRecord *r) {
    fprintf(out,
            "eval @ step %ld: mlm_loss %.4f  mlm_acc %.4f (most-frequent-token baseline %.4f)  nsp_loss %.4f  "
            "nsp_acc %.4f  (%ld examples, %ld predictions, %.1f s)\n",
            r->step, r->mlm_loss, r->mlm_acc, r->mlm_majority_acc, r->nsp_loss, r->nsp_acc, r->examples,
            r->predictions, r->seconds);
}

void log_eval(Logger *lg, const EvalRecord *r) {
    FILE *f = lg->metrics;
    if (!f) return;
    fprintf(f, "{\"type\":\"eval\",\"step\":%ld,", r->step);
    put_num(f, "eval_mlm_loss", r->mlm_loss, true);
    put_num(f, "eval_mlm_acc", r->mlm_acc, true);
    put_num(f, "eval_nsp_loss", r->nsp_loss, true);
    put_num(f, "eval_nsp_acc", r->nsp_acc, true);
    put_num(f, "eval_mlm_majority_acc", r->mlm_majority_acc, true);
    fprintf(f, "\"examples\":%ld,\"predictions\":%ld,", r->examples, r->predictions);
    put_num(f, "seconds", r->seconds, false);
    fputs("}\n", f);
    fflush(f);
}

/* one statistic of every tensor as {"name": value, ...}; field = offsetof its double in
   OptimLayerStat */
static void put_map(FILE *f, const char *key, const ParamTable *t, const OptimLayerStat *s, size_t field,
                    bool comma) {
    fprintf(f, "\"%s\":{", key);
    for (int i = 0; i < t->n; i++) {
        if (i) fputc(',', f);
        double v;
        memcpy(&v, (const char *)&s[i] + field, sizeof v);
        put_num(f, t->params[i].name, v, false);
    }
    fprintf(f, "}%s", comma ? "," : "");
}

void log_trust_ratios(Logger *lg, long step, const ParamTable *t, const OptimLayerStat *stats) {
    FILE *f = lg->metrics;
    if (!f) return;
    fprintf(f, "{\"type\":\"trust\",\"step\":%ld,", step);
    put_map(f, "trust_ratio", t, stats, offsetof(OptimLayerStat, trust_ratio), true);
    put_map(f, "param_norm", t, stats, offsetof(OptimLayerStat, param_norm), true);
    put_map(f, "update_norm", t, stats, offsetof(OptimLayerStat, update_norm), false);
    fputs("}\n", f);
    fflush(f);
}

void log_format_duration(char *out, size_t len, double s) {
    if (!isfinite(s) || s < 0)
        snprintf(out, len, "?");
    else if (s >= 2.0 * 365.25 * 86400)
        snprintf(out, len, "%.1f years", s / (365.25 * 86400));
    else if (s >= 86400)
        snprintf(out, len, "%dd %02dh", (int)(s / 86400), (int)fmod(s / 3600, 24));
    else if (s >= 3600)
        snprintf(out, len, "%dh %02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else
        snprintf(out, len, "%dm %02ds", (int)(s / 60), (int)fmod(s, 60));
}

void log_break(Logger *lg) {
    if (lg->line_open) fputc('\n', stderr);
    lg->line_open = false;
}

void log_progress(Logger *lg, const StepRecord *r, long total_steps, int n_phases, double eta_s,
                  bool force) {
    /* on a terminal redraw often; in a log file one line every 10 s (and when forced) */
    double now = bp_now();
    if (!force && now - lg->last_print_s < (lg->tty ? 0.2 : 10.0)) return;
    lg->last_print_s = now;
    char eta[32], comm[64] = "";
    log_format_duration(eta, sizeof eta, eta_s);
    if (r->ranks > 1)
        snprintf(comm, sizeof comm, "  %d ranks, comm exposed %.0f ms", r->ranks, r->comm_exposed_s * 1e3);
    fprintf(stderr,
            "%sphase %d/%d  step %ld/%ld  loss %.4f  mlm_acc %.3f  lr %.3g  |g| %.3g  %.0f tok/s%s  "
            "ETA %s%s",
            lg->tty ? "\r\033[K" : "", r->phase + 1, n_phases, r->step, total_steps, r->loss,
            r->mlm_acc, r->lr, r->grad_norm, r->tokens_per_s, comm, eta, lg->tty ? "" : "\n");
    lg->line_open = lg->tty;
    fflush(stderr);
}
