/* config.c: placeholder until the configuration module lands (see config.h). */
#include "config.h"

#include <string.h>

void config_defaults(Config *cfg) { memset(cfg, 0, sizeof *cfg); }
int config_load(Config *cfg, const char *path, BpError *err) {
    (void)cfg;
    return bp_fail_usage(err, "%s: config loading is not built yet", path);
}
int config_apply_override(Config *cfg, const char *assignment, BpError *err) {
    (void)cfg;
    return bp_fail_usage(err, "--set %s: overrides are not built yet", assignment);
}
int config_resolve(Config *cfg, BpError *err) {
    (void)cfg;
    return bp_fail_usage(err, "config resolution is not built yet");
}
void config_write_json(const Config *cfg, FILE *out) {
    (void)cfg;
    (void)out;
}
void config_write_summary(const Config *cfg, long long n_params, FILE *out) {
    (void)cfg;
    (void)n_params;
    (void)out;
}
const char *config_optimizer_name(OptimizerKind k) {
    static const char *names[] = {"lamb", "lars", "adam", "adamw"};
    return (unsigned)k < 4 ? names[k] : "?";
}
