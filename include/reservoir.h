/* reservoir.h — a bounded store of fixed-size records (examples), and the small
 * deterministic RNG the learning core uses.
 *
 * Two policies:
 *   RESERVOIR_SAMPLE — reservoir sampling (Vitter's algorithm R): after n additions each
 *                      of them is held with probability capacity/n (the replay memory);
 *   RESERVOIR_RECENT — a ring of the most recent `capacity` records (the holdout, so that
 *                      the gate follows drift).
 * All randomness comes from the reservoir's own RNG, which its state (reservoir_save)
 * includes, so a restored reservoir continues exactly.  Not thread-safe.
 */
#ifndef INTENTD_RESERVOIR_H
#define INTENTD_RESERVOIR_H

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** seeded through splitmix64: fast, small, and the same on every machine. */
struct reservoir_rng {
    uint64_t s[4];
};
void reservoir_rng_seed(struct reservoir_rng *r, uint64_t seed);
uint64_t reservoir_rng_next(struct reservoir_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double reservoir_rng_uniform(struct reservoir_rng *r);
/* Uniform in [0, n), n ≥ 1 (Lemire's nearly divisionless method, unbiased). */
uint64_t reservoir_rng_below(struct reservoir_rng *r, uint64_t n);

enum reservoir_policy { RESERVOIR_SAMPLE = 0, RESERVOIR_RECENT = 1 };

struct reservoir;

/* capacity ≥ 1 records of `stride` bytes.  The storage grows as records arrive (up to
 * capacity), so a large capacity costs nothing until used.  Returns NULL when out of
 * memory.  The caller owns it (reservoir_free). */
struct reservoir *reservoir_new(size_t stride, uint32_t capacity, enum reservoir_policy policy,
                                uint64_t seed);
struct reservoir *reservoir_free(struct reservoir *r);

/* Offers one record (copied).  Returns 0, or -ENOMEM when growing failed (the record is
 * then not kept; the reservoir stays valid). */
int reservoir_add(struct reservoir *r, const void *record);

size_t reservoir_size(const struct reservoir *r); /* records held, ≤ capacity */
uint32_t reservoir_capacity(const struct reservoir *r);
uint64_t reservoir_seen(const struct reservoir *r); /* records ever offered */
size_t reservoir_stride(const struct reservoir *r);

/* Record i, 0 ≤ i < reservoir_size (in no particular order). */
const void *reservoir_get(const struct reservoir *r, size_t i);

/* A uniformly random held record (with replacement), or NULL when empty. */
const void *reservoir_sample(struct reservoir *r);

/* Everything (policy, capacity, stride, RNG, counters, records), for checkpoints.
 * reservoir_load checks stride and policy: -EINVAL when they differ or the buffer is short
 * or inconsistent; -ENOMEM.  A state saved with another capacity keeps what fits in r's
 * (RECENT: the most recent records); with the same capacity the copy is exact.  On error r
 * is unchanged. */
size_t reservoir_state_size(const struct reservoir *r);
void reservoir_save(const struct reservoir *r, void *buf);
int reservoir_load(struct reservoir *r, const void *buf, size_t len);

#endif
