/* log.c: metrics.jsonl and the progress line (see log.h). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
static int drop_later_records(const char *path, long keep_through, long *last_eval, BpError *err) {
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
        if (nl && step <= keep_through) {
            fwrite(line, 1, n + 1, af.fp);
            const char *ev = strstr(line, "\"type\":\"eval\"");
            if (ev && ev < line + n && step > *last_eval) *last_eval = step;
        }
        line += n + 1;
    }
    free(text);
    return bp_atomic_commit(&af, err);
}

int log_open(Logger *lg, const char *run_dir, long keep_through_step, BpError *err) {
    memset(lg, 0, sizeof *lg);
    lg->fd = -1;
    lg->last_eval_step = -1;
    snprintf(lg->path, sizeof lg->path, "%s/metrics.jsonl", run_dir);
    if (keep_through_step >= 0 && drop_later_records(lg->path, keep_through_step, &lg->last_eval_step, err) != 0)
        return -1;
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (keep_through_step >= 0 ? 0 : O_TRUNC);
    lg->fd = open(lg->path, flags, 0644);
    if (lg->fd < 0) return bp_fail_kind(err, BP_ERR_IO, "%s: cannot open for writing: %s", lg->path, strerror(errno));
    struct stat st;
    if (fstat(lg->fd, &st) != 0) return bp_fail_kind(err, BP_ERR_IO, "%s: cannot stat: %s", lg->path, strerror(errno));
    lg->good_bytes = (long long)st.st_size;
    lg->tty = isatty(STDERR_FILENO);
    lg->last_print_s = -1e9;
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The held records into the file, oldest first; a record that fails is cut off again so that the
 * file never holds half a line. 0 when none is left held, 1 otherwise. */
int log_flush(Logger *lg) {
    if (lg->fd < 0) return lg->n_held ? 1 : 0;
    size_t done = 0;
    long first_step = lg->n_held ? lg->held_step[0] : 0;
    bool was_failing = lg->failed_errno != 0;
    while (done < lg->n_held) {
        size_t len = strlen(lg->held[done]);
        if (write_all(lg->fd, lg->held[done], len) != 0) {
            int e = errno;
            /* cut off the part that got in; were that to fail as well, the next record would follow
               a torn line, which a reader skips as unparsable: nothing better is possible then */
            int cut = ftruncate(lg->fd, (off_t)lg->good_bytes);
            (void)cut;
            if (!was_failing) {
                log_break(lg);
                fprintf(stderr, "warning: %s: write failed at step %ld: %s. Records are held in memory and "
                                "retried at every step\n", lg->path, lg->held_step[done], strerror(e));
            }
            lg->failed_errno = e;
            break;
        }
        lg->good_bytes += (long long)len;
        lg->held_bytes -= len;
        free(lg->held[done++]);
    }
    if (done > 0) {
        memmove(lg->held, lg->held + done, (lg->n_held - done) * sizeof *lg->held);
        memmove(lg->held_step, lg->held_step + done, (lg->n_held - done) * sizeof *lg->held_step);
        lg->n_held -= done;
    }
    if (lg->n_held == 0 && was_failing) {
        log_break(lg);
        fprintf(stderr, "%s: writing again: the records held since step %ld are in the file\n", lg->path,
                first_step);
        lg->failed_errno = 0;
    }
    return lg->n_held ? 1 : 0;
}

/* What the records held say about the steps they cover, for an error. */
static int held_error(const Logger *lg, const char *what, BpError *err) {
    return bp_fail_kind(err, BP_ERR_IO, "%s: %s: the records of steps %ld to %ld (%zu records) are not in the file: %s",
                        lg->path, what, lg->held_step[0], lg->held_step[lg->n_held - 1], lg->n_held,
                        strerror(lg->failed_errno ? lg->failed_errno : EIO));
}

/* Takes a finished record (malloc'd text; NULL when formatting ran out of memory) and writes it
 * behind the held ones. */
static int put_record(Logger *lg, long step, char *text, BpError *err) {
    if (!text) return bp_fail(err, "%s: out of memory formatting a record of step %ld", lg->path, step);
    if (lg->n_held == lg->cap_held) {
        size_t cap = lg->cap_held ? 2 * lg->cap_held : 16;
        char **h = realloc(lg->held, cap * sizeof *h);
        if (h) lg->held = h;
        long *s = h ? realloc(lg->held_step, cap * sizeof *s) : NULL;
        if (s) lg->held_step = s;
        if (!s) {
            free(text);
            return bp_fail(err, "%s: out of memory holding records", lg->path);
        }
        lg->cap_held = cap;
    }
    lg->held[lg->n_held] = text;
    lg->held_step[lg->n_held++] = step;
    lg->held_bytes += strlen(text);
    int rc = log_flush(lg);
    if (rc == 1 && lg->held_bytes > LOG_HOLD_MAX_BYTES) return held_error(lg, "writes keep failing", err);
    return rc;
}

int log_close(Logger *lg, BpError *err) {
    log_break(lg);
    int rc = log_flush(lg) == 0 ? 0 : held_error(lg, "at the end of the run", err);
    for (size_t i = 0; i < lg->n_held; i++) free(lg->held[i]);
    free(lg->held);
    free(lg->held_step);
    lg->held = NULL;
    lg->held_step = NULL;
    lg->n_held = lg->cap_held = lg->held_bytes = 0;
    if (lg->fd >= 0 && close(lg->fd) != 0 && rc == 0)
        rc = bp_fail_kind(err, BP_ERR_IO, "%s: close failed: %s", lg->path, strerror(errno));
    lg->fd = -1;
    return rc;
}

/* A record is formatted into memory first, so that it reaches the file whole or not at all. */
typedef struct {
    FILE *f;
    char *text;
    size_t len;
} Record;

static FILE *record_begin(Record *rec) {
    rec->text = NULL;
    rec->len = 0;
    rec->f = open_memstream(&rec->text, &rec->len);
    return rec->f;
}

static char *record_end(Record *rec) {
    if (!rec->f) return NULL;
    bool bad = ferror(rec->f) != 0;
    if (fclose(rec->f) != 0) bad = true;
    if (bad) {
        free(rec->text);
        return NULL;
    }
    return rec->text;
}

int log_step(Logger *lg, const StepRecord *r, BpError *err) {
    Record rec;
    FILE *f = record_begin(&rec);
    if (f) {
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
    }
    return put_record(lg, r->step, record_end(&rec), err);
}

void log_eval_line(FILE *out, const EvalRecord *r) {
    fprintf(out,
            "eval @ step %ld: mlm_loss %.4f  mlm_acc %.4f (most-frequent-token baseline %.4f)  nsp_loss %.4f  "
            "nsp_acc %.4f  (%ld examples, %ld predictions, %.1f s)\n",
            r->step, r->mlm_loss, r->mlm_acc, r->mlm_majority_acc, r->nsp_loss, r->nsp_acc, r->examples,
            r->predictions, r->seconds);
}

int log_eval(Logger *lg, const EvalRecord *r, BpError *err) {
    Record rec;
    FILE *f = record_begin(&rec);
    if (f) {
        fprintf(f, "{\"type\":\"eval\",\"step\":%ld,", r->step);
        put_num(f, "eval_mlm_loss", r->mlm_loss, true);
        put_num(f, "eval_mlm_acc", r->mlm_acc, true);
        put_num(f, "eval_nsp_loss", r->nsp_loss, true);
        put_num(f, "eval_nsp_acc", r->nsp_acc, true);
        put_num(f, "eval_mlm_majority_acc", r->mlm_majority_acc, true);
        fprintf(f, "\"examples\":%ld,\"predictions\":%ld,", r->examples, r->predictions);
        put_num(f, "seconds", r->seconds, false);
        fputs("}\n", f);
    }
    return put_record(lg, r->step, record_end(&rec), err);
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

int log_trust_ratios(Logger *lg, long step, const ParamTable *t, const OptimLayerStat *stats, BpError *err) {
    Record rec;
    FILE *f = record_begin(&rec);
    if (f) {
        fprintf(f, "{\"type\":\"trust\",\"step\":%ld,", step);
        put_map(f, "trust_ratio", t, stats, offsetof(OptimLayerStat, trust_ratio), true);
        put_map(f, "param_norm", t, stats, offsetof(OptimLayerStat, param_norm), true);
        put_map(f, "update_norm", t, stats, offsetof(OptimLayerStat, update_norm), false);
        fputs("}\n", f);
    }
    return put_record(lg, step, record_end(&rec), err);
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
