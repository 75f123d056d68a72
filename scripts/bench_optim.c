/* bench_optim.c: the optimizer step's time against the memory bandwidth (see optim_bench in
 * src/optim.c; `bert_pretrain bench --optimizer-only --floats N` runs the same measurement). Not
 * part of `make`; build and run by hand from the repository root:
 *
 *   make && gcc -std=c11 -D_GNU_SOURCE -O3 -march=native -fopenmp -Isrc -o build/bench_optim \
 *       scripts/bench_optim.c build/libbert.a $(pkg-config --libs openblas yaml-0.1 zlib) -lm \
 *       && build/bench_optim [n_floats]
 *
 * n_floats defaults to 110e6 (bert-base); the run needs about 5 * 4 * n_floats bytes of memory. */
#include <stdio.h>
#include <stdlib.h>

#include "optim.h"

int main(int argc, char **argv) {
    size_t n = 110000000;
    if (argc > 1) {
        char *end;
        double v = strtod(argv[1], &end);
        if (*end || v < 1e4 || v > 4e9) {
            fprintf(stderr, "usage: %s [n_floats, 1e4..4e9]\n", argv[0]);
            return 2;
        }
        n = (size_t)v;
    }
    OptimBench b;
    BpError err = {0};
    if (optim_bench(n, &b, &err)) {
        fprintf(stderr, "bench_optim: %s\n", err.msg);
        return 1;
    }
    optim_bench_print(&b, stdout);
    return 0;
}
