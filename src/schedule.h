/* schedule.h: the learning-rate schedule, a pure function of (resolved config, global step), so a
 * resumed run or a phase change cannot get it wrong.
 *
 * The phases are grouped into schedule segments: phase 0 and every phase with restart_schedule
 * start one (re-warmup), the others continue it. config_resolve fills each phase's segment_start,
 * segment_steps (S), segment_warmup (W), segment_lr (P, the peak) and, for form nvidia, the
 * warmup share r. With t the step counted from the segment's start, E = end_lr, p = decay_power:
 *
 * form bert (google-research/bert and ALBERT create_optimizer: tf.train.polynomial_decay over all
 * S steps, the linear warmup overriding the first W; update t + 1 uses global_step t):
 *   t < W                        P * t / W
 *   decay_from = zero (default)  E + (P - E) * (1 - t / S)^p
 *   decay_from = warmup          E + (P - E) * (1 - (t - W) / (S - W))^p
 * form nvidia (NVIDIA DeepLearningExamples PyTorch BERT, PolyWarmUpScheduler: progress q = (t + 1) / S,
 * the optimizer's step count after the update, over one stage's S steps):
 *   q < r (t < W)                P * q / r
 *   otherwise                    E + (P - E) * (1 - q)^p       (NVIDIA has E = 0)
 * and E from t >= S on (a step past the last one). docs/optimizers.md gives the sources. */
#ifndef BP_SCHEDULE_H
#define BP_SCHEDULE_H

#include "config.h"

/* lr at 0-based global optimizer step `step` (update number step + 1 uses it); cfg resolved.
 * A step before 0 counts as 0, a step past the run's end continues the last segment (end_lr). */
double schedule_lr(const Config *cfg, long step);

#endif
