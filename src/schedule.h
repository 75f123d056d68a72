/* schedule.h: the learning-rate schedule, a pure function of (resolved config, global step), so a
 * resumed run or a phase change cannot get it wrong.
 *
 * The phases are grouped into schedule segments: phase 0 and every phase with restart_schedule
 * start one (re-warmup), the others continue it. config_resolve fills each phase's segment_start,
 * segment_steps, segment_warmup (W) and segment_lr (the peak). With t the step counted from the
 * segment's start and S its steps:
 *   t < W                        peak * t / W                       (linear warmup from 0)
 *   decay_from = warmup (paper)  end + (peak - end) * (1 - (t - W) / (S - W))^power
 *   decay_from = zero   ([bert]) end + (peak - end) * (1 - t / S)^power
 * and end_lr from t >= S on (a step past the last one). docs/optimizers.md gives the sources. */
#ifndef BP_SCHEDULE_H
#define BP_SCHEDULE_H

#include "config.h"

/* lr at 0-based global optimizer step `step` (update number step + 1 uses it); cfg resolved.
 * A step before 0 counts as 0, a step past the run's end continues the last segment (end_lr). */
double schedule_lr(const Config *cfg, long step);

#endif
