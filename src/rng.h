/* rng.h: counter-based random numbers. Every random choice in the program is a pure function of
 * (seed, purpose, indices): no generator state advances as the program runs, so results do not
 * depend on thread count, micro-batch split or MPI ranks, and resume needs only (seed, step).
 *
 * The mixer is splitmix64's finaliser applied to a running combination of the inputs; a stream
 * (RngStream) draws successive values as hash(key, counter). */
#ifndef BP_RNG_H
#define BP_RNG_H

#include <stdint.h>

/* What a random number is for: keeps streams of different purposes independent. */
enum {
    RNG_INIT = 1,     /* parameter init: (tensor index) */
    RNG_EXAMPLE = 2,  /* example construction: (global example index) */
    RNG_MASK = 3,     /* dynamic masking: (global example index, draw) */
    RNG_DROPOUT = 4,  /* dropout: (step, site, example, element) */
    RNG_SHUFFLE = 5,  /* epoch shuffles: (epoch) */
    RNG_SPLIT = 6,    /* train/eval document split */
    RNG_BENCH = 7,    /* random data for bench/gradcheck */
    RNG_TEST = 8,
};

static inline uint64_t rng_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* hash of up to four words; distinct argument tuples give independent-looking outputs */
static inline uint64_t rng_hash(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = rng_mix(seed ^ 0x243F6A8885A308D3ull);
    h = rng_mix(h ^ a);
    h = rng_mix(h ^ (b + 0x13198A2E03707344ull));
    return rng_mix(h ^ (c + 0xA4093822299F31D0ull));
}

/* uniform in [0, 1) with 24 random bits (exactly representable as float) */
static inline float rng_u01(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }
/* uniform in [0, 1) with 53 bits */
static inline double rng_u01d(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }
/* uniform integer in [0, n) without modulo bias worth caring about (n < 2^32) */
static inline uint32_t rng_below(uint64_t h, uint32_t n) {
    return (uint32_t)(((h >> 32) * (uint64_t)n) >> 32);
}

typedef struct {
    uint64_t key;
    uint64_t counter;
} RngStream;

static inline RngStream rng_stream(uint64_t seed, uint64_t purpose, uint64_t index) {
    RngStream s = {rng_hash(seed, purpose, index, 0), 0};
    return s;
}
static inline uint64_t rng_next(RngStream *s) { return rng_mix(s->key ^ rng_mix(s->counter++)); }
static inline float rng_next_u01(RngStream *s) { return rng_u01(rng_next(s)); }
static inline double rng_next_u01d(RngStream *s) { return rng_u01d(rng_next(s)); }
static inline uint32_t rng_next_below(RngStream *s, uint32_t n) { return rng_below(rng_next(s), n); }
/* standard normal (Box-Muller, one value per two draws) */
double rng_next_normal(RngStream *s);

#endif
