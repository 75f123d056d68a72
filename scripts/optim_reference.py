#!/usr/bin/python3
"""Float64 reference for src/optim.c: several steps of LAMB, LARS (paper and classic forms), Adam
and AdamW on a small parameter table, written to tests/fixtures/optim/ for tests/test_optim.c.

The math follows the LAMB paper (You et al., "Large Batch Optimization for Deep Learning: Training
BERT in 76 minutes", ICLR 2020, arXiv:1904.00962: Section 3, Algorithm 1 for LARS and Algorithm 2
for LAMB), You, Gitman, Ginsburg 2017 (arXiv:1708.03888) for classic LARS, and docs/optimizers.md
for every choice the papers leave open, written here independently of the C code: plain numpy, one
tensor at a time, float64 throughout (the C code is float32 element-wise with double norms). Inputs
(parameters, gradients) are float32 values so both sides start from exactly the same numbers.

The table covers the special cases: a zero parameter tensor (||x|| = 0 at step 1), a tensor with
zero gradients and no weight decay (||u|| = 0), one with both zero, a bias/LayerNorm-like tensor
excluded from decay and adaptation, one excluded from adaptation only, odd lengths (vector tails).
Gradient scales vary per step so that clipping is active on some steps and not on others.

Run from the repository root:  /usr/bin/python3 scripts/optim_reference.py
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim")
STEPS = 5
GRAD_SCALE = [1.0, 0.05, 1.0, 2.0, 0.1]  # global grad norm ~3.6, 0.18, 3.6, 7, 0.36
LR_SHAPE = [0.5, 0.75, 1.0, 1.25, 1.5]  # lr of step t = base lr * LR_SHAPE[t]

# name, shape, weight_decay flag, layer_adaptation flag, x init, g kind
TENSORS = [
    ("w_a", (6, 10), True, True, "normal0.5", "normal"),
    ("w_b", (33,), True, True, "normal0.05", "normal"),
    ("zero_x", (4, 5), True, True, "zero", "normal"),
    ("zero_g", (7,), False, True, "normal1", "zero"),
    ("ln_bias", (12,), False, False, "one_ish", "normal"),
    ("no_adapt", (3, 4), True, False, "normal0.2", "normal"),
    ("both_zero", (5,), True, True, "zero", "zero"),
]

BASE = dict(optimizer="lamb", lars_form="paper", beta1=0.9, beta2=0.999, epsilon=1e-6,
            weight_decay=0.01, bias_correction=1, clip_grad_norm=0.0, gamma_l=0.0, gamma_u=0.0,
            momentum=0.9, eta=0.001, lr=0.02)

CASES = {
    "lamb": dict(),
    "lamb_clip": dict(clip_grad_norm=1.0, weight_decay=0.1),
    "lamb_nobc": dict(bias_correction=0, epsilon=1e-4, beta1=0.8, beta2=0.99, weight_decay=0.05),
    "lamb_phi": dict(gamma_l=0.5, gamma_u=2.0, clip_grad_norm=1.0),
    "lars_paper": dict(optimizer="lars", lr=0.05),
    "lars_paper_phi_clip": dict(optimizer="lars", lr=0.05, gamma_l=0.5, gamma_u=2.0,
                                clip_grad_norm=1.0, weight_decay=0.1, bias_correction=0),
    "lars_classic": dict(optimizer="lars", lars_form="classic", lr=1.0, eta=0.02),
    "lars_classic_clip": dict(optimizer="lars", lars_form="classic", lr=2.0, eta=0.05,
                              momentum=0.8, clip_grad_norm=1.0, weight_decay=0.05),
    "adam": dict(optimizer="adam", lr=0.01),
    "adam_nobc_clip": dict(optimizer="adam", lr=0.01, bias_correction=0, clip_grad_norm=1.0,
                           weight_decay=0.1),
    "adamw": dict(optimizer="adamw", lr=0.01, weight_decay=0.1),
    "adamw_nobc_clip": dict(optimizer="adamw", lr=0.01, bias_correction=0, clip_grad_norm=1.0),
}


def layout():
    off, out = 0, []
    for name, shape, wd, ad, xi, gk in TENSORS:
        n = int(np.prod(shape))
        out.append((name, shape, off, n, wd, ad, xi, gk))
        off += (n + 15) // 16 * 16
    return out, off


def make_inputs(table, total, rng):
    x = np.zeros(total, np.float32)
    grads = np.zeros((STEPS, total), np.float32)
    for name, shape, off, n, wd, ad, xi, gk in table:
        if xi.startswith("normal"):
            x[off:off + n] = rng.normal(0, float(xi[6:]), n)
        elif xi == "one_ish":
            x[off:off + n] = 1 + rng.normal(0, 0.1, n)
        for t in range(STEPS):
            if gk == "normal":
                grads[t, off:off + n] = rng.normal(0, 0.3 * GRAD_SCALE[t], n)
    return x, grads


def phi(c, z):
    if c["gamma_l"] > 0:
        z = max(z, c["gamma_l"])
    if c["gamma_u"] > 0:
        z = min(z, c["gamma_u"])
    return z


def run_case(c, table, total, x0, grads):
    kind = c["optimizer"] if c["optimizer"] != "lars" else "lars_" + c["lars_form"]
    x = x0.astype(np.float64)
    m = np.zeros(total)
    v = np.zeros(total)
    b1, b2, eps = c["beta1"], c["beta2"], c["epsilon"]
    xs, stats, lrs, gnorms = [], [], [], []
    for t in range(1, STEPS + 1):
        g_all = grads[t - 1].astype(np.float64)
        lr = c["lr"] * LR_SHAPE[t - 1]
        gnorm = float(np.sqrt(np.sum(g_all * g_all)))
        clip = c["clip_grad_norm"]
        scale = clip / gnorm if (clip > 0 and gnorm > clip) else 1.0
        bc1 = 1 - b1 ** t if c["bias_correction"] else 1.0
        bc2 = 1 - b2 ** t if c["bias_correction"] else 1.0
        step_stats = []
        for name, shape, off, n, wdf, adapt, xi, gk in table:
            s = slice(off, off + n)
            g = g_all[s] * scale
            xt = x[s]
            wd = c["weight_decay"] if wdf else 0.0
            xn = float(np.linalg.norm(xt))
            if kind in ("lamb", "adam", "adamw"):
                gm = g + wd * xt if kind == "adam" else g
                m[s] = b1 * m[s] + (1 - b1) * gm
                v[s] = b2 * v[s] + (1 - b2) * gm * gm
                r = (m[s] / bc1) / (np.sqrt(v[s] / bc2) + eps)
                if kind == "lamb":
                    u = r + wd * xt
                    un = float(np.linalg.norm(u))
                    ratio = phi(c, xn) / un if (adapt and xn > 0 and un > 0) else 1.0
                    x[s] = xt - lr * ratio * u
                    step_stats.append((xn, un, ratio))
                elif kind == "adam":
                    x[s] = xt - lr * r
                else:
                    x[s] = xt - lr * (r + wd * xt)
            elif kind == "lars_paper":
                m[s] = b1 * m[s] + (1 - b1) * (g + wd * xt)
                mn = float(np.linalg.norm(m[s]))
                ratio = phi(c, xn) / mn if (adapt and xn > 0 and mn > 0) else 1.0
                x[s] = xt - lr * ratio * m[s]
                step_stats.append((xn, mn, ratio))
            elif kind == "lars_classic":
                gn = float(np.linalg.norm(g))
                local = (c["eta"] * xn / (gn + wd * xn + eps)) if (adapt and xn > 0 and gn > 0) else 1.0
                m[s] = c["momentum"] * m[s] + lr * local * (g + wd * xt)
                x[s] = xt - m[s]
                step_stats.append((xn, gn, local))
        xs.append(x.copy())
        stats.append(step_stats)
        lrs.append(lr)
        gnorms.append(gnorm)
    moments = [m, v] if kind in ("lamb", "adam", "adamw") else [m]
    return xs, moments, stats, lrs, gnorms


def fmt(a, spec):
    return " ".join(spec % float(e) for e in a)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20190401)
    table, total = layout()
    x0, grads = make_inputs(table, total, rng)
    with open(os.path.join(OUT, "inputs.txt"), "w") as f:
        f.write("# written by scripts/optim_reference.py: the parameter table, x0 and the gradients\n")
        f.write("# of each step, float32 values printed exactly (%.9g)\n")
        f.write("tensors %d total %d steps %d\n" % (len(table), total, STEPS))
        for name, shape, off, n, wd, ad, xi, gk in table:
            dims = list(shape) + [1] * (2 - len(shape))
            f.write("tensor %s %d %d %d %d %d %d %d\n"
                    % (name, len(shape), dims[0], dims[1], off, n, int(wd), int(ad)))
        f.write("x0 %s\n" % fmt(x0, "%.9g"))
        for t in range(STEPS):
            f.write("grad %s\n" % fmt(grads[t], "%.9g"))
    for cname, over in CASES.items():
        c = dict(BASE)
        c.update(over)
        xs, moments, stats, lrs, gnorms = run_case(c, table, total, x0, grads)
        with open(os.path.join(OUT, cname + ".txt"), "w") as f:
            f.write("# written by scripts/optim_reference.py (float64 reference)\n")
            for k in ("optimizer", "lars_form"):
                f.write("%s %s\n" % (k, c[k]))
            for k in ("beta1", "beta2", "epsilon", "weight_decay", "bias_correction",
                      "clip_grad_norm", "gamma_l", "gamma_u", "momentum", "eta"):
                f.write("%s %.17g\n" % (k, c[k]))
            f.write("lr %s\n" % fmt(lrs, "%.17g"))
            f.write("grad_norm %s\n" % fmt(gnorms, "%.17g"))
            for t in range(STEPS):
                f.write("x %s\n" % fmt(xs[t], "%.10g"))
                if stats[t]:
                    f.write("stats %s\n" % fmt([v for st in stats[t] for v in st], "%.12g"))
            for mo in moments:
                f.write("moment %s\n" % fmt(mo, "%.10g"))
    print("wrote %d cases and inputs to %s" % (len(CASES), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
