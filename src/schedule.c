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
    if (t >= total) return end;
    if (s->form == SCHEDULE_NVIDIA) {
        /* progress counts the update being made: NVIDIA's scheduler reads the optimizer's step
         * count (0 before the first update) + 1 */
        if (t < w) return peak * ((double)(t + 1) / (double)total) / p->segment_warmup_ratio;
        return end + (peak - end) * pow((double)(total - t - 1) / (double)total, s->decay_power);
    }
    if (t < w) return peak * (double)t / (double)w;
    /* 1 - progress from integer step counts: exact near the end, where 1 - t/S would cancel */
    long span = s->decay_from == DECAY_FROM_ZERO ? total : total - w;
    return end + (peak - end) * pow((double)(total - t) / (double)span, s->decay_power);
}
