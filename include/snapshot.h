/* snapshot.h — immutable, reference-counted model snapshots and the lock-free slot that
 * publishes them from the trainer to the HTTP workers.
 *
 * A snapshot is everything serving needs to score a request exactly as training scored it:
 * the feature schema (and an encoder built from it), the frozen normaliser (float mean and
 * 1/std per dense column), the model shape and its parameter block, plus the metadata of
 * GET /v1/model.  Once made it is never written again, so readers share it without locks.
 *
 * Encoding (snapshot_encode / snapshot_decode): one self-describing little-endian byte
 * buffer — magic "INTDSNAP", format version, metadata, schema (with the hash seed), shape,
 * normaliser, parameters, the 16-byte fingerprint, and an XXH64 checksum of everything
 * before it.  The same bytes are the model part of a checkpoint and, later, the messages of
 * the snapshot topic (DESIGN.md §10).
 *
 * Fingerprint: XXH3-128 over the hash seed, the schema, the shape, the normaliser and the
 * parameters (everything that determines a score, nothing else: not the version or the
 * metrics), printed as 32 lower-case hex digits.  Equal fingerprints ⇔ equal scores.
 *
 * Publication (struct snapshot_slot): one writer (the trainer) swaps snapshots in; any
 * number of readers take a reference for one request without a lock and never see a torn
 * model; a replaced snapshot is freed when its last reader releases it.  The scheme is a
 * split reference count: the slot word packs the pointer (low 48 bits) with a count of
 * readers that are between loading the pointer and owning a reference (high 16 bits), and
 * the publisher hands that count over to the replaced snapshot's own counter, so the
 * classic "load the pointer, then increment a count that was just freed" race cannot
 * happen.  See snapshot.c for the argument.
 */
#ifndef INTENTD_SNAPSHOT_H
#define INTENTD_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "features.h"
#include "model.h"

#define SNAPSHOT_MAGIC           "INTDSNAP"
#define SNAPSHOT_FORMAT          1
#define SNAPSHOT_FINGERPRINT_LEN 32 /* hex digits */

/* Progressive or holdout figures; NaN when unknown (no data yet). */
struct snapshot_eval {
    double auc;
    double logloss;
    uint64_t n; /* examples the figures cover */
};

/* Read-only for everyone after snapshot_new/snapshot_decode; fields are public so the
 * HTTP server can render GET /v1/model. */
struct snapshot {
    _Atomic int64_t refs;      /* internal reference count; see snapshot.c */
    uint64_t version;          /* model_version; the daemon makes it increase */
    int64_t created_at_ms;     /* wall clock, ms since the epoch */
    uint64_t trained_examples; /* fresh examples learned from when this was made */
    char fingerprint[SNAPSHOT_FINGERPRINT_LEN + 1]; /* hex, NUL-terminated */
    struct snapshot_eval progressive;               /* sliding window at publication */
    struct snapshot_eval holdout;                   /* holdout reservoir at publication */

    struct features *features; /* encoder for this snapshot's schema (owned) */
    struct model_shape shape;
    size_t nparams;
    float *params;  /* (nparams) the served weights (EMA ones when model.ema_decay > 0) */
    float *mean;    /* (shape.ndense) frozen normaliser */
    float *inv_std; /* (shape.ndense) */
};

/* The metadata a snapshot is made with. */
struct snapshot_meta {
    uint64_t version;
    int64_t created_at_ms;
    uint64_t trained_examples;
    struct snapshot_eval progressive;
    struct snapshot_eval holdout;
};

/* Makes a snapshot from copies of the arguments (the encoder is rebuilt from f's schema,
 * params has model_nparams(shape) floats, mean and inv_std have shape->ndense) and
 * computes its fingerprint.  Returns NULL when out of memory or when f and shape
 * disagree.  The caller owns the one reference (snapshot_release, or hand it to
 * snapshot_slot_publish). */
struct snapshot *snapshot_new(const struct features *f, const struct model_shape *shape,
                              const float *params, const float *mean, const float *inv_std,
                              const struct snapshot_meta *meta);

/* Takes one more reference to s (which the caller must already hold one of) and returns s. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drops one reference; the last one frees the snapshot.  Accepts NULL; returns NULL. */
struct snapshot *snapshot_release(struct snapshot *s);

/* Snapshots currently allocated in the process (made and not yet freed): for leak tests. */
long snapshot_live(void);

/* Scores one example (raw dense values as features.h makes them): standardises with the
 * frozen normaliser and runs model_predict.  No allocation (stack scratch), no lock. */
float snapshot_score(const struct snapshot *s, const struct example *e);

/* Writes the encoding into a new buffer: *buf (malloc'd, owned by the caller) of *len
 * bytes.  Returns 0 or -ENOMEM. */
int snapshot_encode(const struct snapshot *s, void **buf, size_t *len);

/* Bytes snapshot_encode() will write, and encoding into a caller's buffer of that size. */
size_t snapshot_encoded_size(const struct snapshot *s);
void snapshot_encode_into(const struct snapshot *s, void *buf);

/* Decodes a buffer written by snapshot_encode: checks magic, format version, length,
 * checksum, the schema and shape (the encoder is rebuilt and must give the stored shape),
 * and recomputes the fingerprint.  Returns 0 with *out (one reference, owned by the
 * caller), or -EINVAL / -ENOMEM with err saying what is wrong. */
int snapshot_decode(const void *buf, size_t len, struct snapshot **out, char *err, size_t errlen);

/* Compares an expected schema and shape (f, shape: the configuration's) with ones found
 * (f2, shape2: a checkpoint's or a snapshot's); returns 0 when they are the same, else
 * -EINVAL with err naming the first difference as "found, not expected": 'feature 3 is
 * "Month", not "Browser"', 'feature "Month" has 16 buckets, not 32', 'hidden layer 2 has
 * width 32, not 16', ... */
int snapshot_check_compatible(const struct features *f, const struct model_shape *shape,
                              const struct features *f2, const struct model_shape *shape2,
                              char *err, size_t errlen);

/* The publication slot.  Embed it (e.g. in struct intentd); zero-initialised or
 * snapshot_slot_init'd it is empty. */
struct snapshot_slot {
    _Atomic uint64_t word; /* pointer (low 48 bits) | readers in the acquire window (high 16) */
};

void snapshot_slot_init(struct snapshot_slot *slot);

/* Drops the slot's reference to its snapshot and leaves it empty.  Only when no other
 * thread uses the slot any more (shutdown). */
void snapshot_slot_clear(struct snapshot_slot *slot);

/* Publishes s (takes ownership of the caller's reference: do not release it) and drops the
 * slot's reference to the one it replaces.  One publisher at a time (the trainer). */
void snapshot_slot_publish(struct snapshot_slot *slot, struct snapshot *s);

/* Returns a reference to the current snapshot (NULL before the first publication), which
 * the caller releases with snapshot_release when done.  Lock-free; safe from any number of
 * threads concurrently with snapshot_slot_publish. */
struct snapshot *snapshot_slot_acquire(struct snapshot_slot *slot);

#endif
