/* schedule.c: warmup + polynomial decay over schedule segments (see schedule.h). */
#include "schedule.h"

#include <math.h>

double schedule_lr(const Config *cfg, long step) {
    if (cfg->n_phases < 1) return 0.0;
    if (step < 0) step = 0;
    const PhaseConfig *p = &cfg->phases[config_phase_of(cfg, step)];
    const ScheduleConfig *s = &cfg->schedule;
    double peak = p->segment_lr, end = s->end_lr;
    long t = step - p->segment_start, w = p->segment_warmup, total = p->segment_steps;
    if (t < w) return peak * (double)t / (double)w;
    if (t >= total) return end;
    /* 1 - progress from integer step counts: exact near the end, where 1 - t/S would cancel */
    long span = s->decay_from == DECAY_FROM_ZERO ? total : total - w;
    double left = (double)(total - t) / (double)span;
    return end + (peak - end) * pow(left, s->decay_power);
}
