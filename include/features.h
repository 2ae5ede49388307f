/* features.h — the feature pipeline: from an event's "features" object (or a CSV row) to a
 * fixed-size example record, and the online normaliser of the dense columns.
 *
 * The encoder (struct features) is built once from the configured schema and is immutable
 * afterwards, so any number of threads may parse with it at once.  It fixes the layout:
 *
 *   dense  — the numeric columns (transform applied: none | sign-preserving log1p,
 *            sign(x)·log(1+|x|)) and the boolean columns (0/1), in schema order;
 *            a missing value is NaN until standardisation turns it into 0 (the mean).
 *   sparse — one global index per categorical column: the column's offset plus
 *            XXH3_64(value, FEATURES_HASH_SEED) % buckets, offsets assigned in schema
 *            order, so nsparse = Σ buckets; MODEL_NO_INDEX when missing.  An integer value
 *            hashes as its decimal string, so 2 and "2" are one value.
 *
 * Examples travel as flat arrays of fixed stride (features_example_size()) with no
 * pointers: queues, joiners, reservoirs and checkpoints copy them with memcpy.  A record is
 * struct example (label, weight, seq) followed by ndense floats and ncat uint32 indices.
 *
 * The dense values in an example are NOT standardised: the learner standardises each batch
 * with its running statistics (struct features_norm), and a snapshot freezes them as float
 * mean and 1/std; both go through features_standardise(), so serving computes exactly
 * what training computed.
 */
#ifndef INTENTD_FEATURES_H
#define INTENTD_FEATURES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Seed of the categorical hash.  Part of the encoding: changing it remaps every value, so
 * snapshots and checkpoints record it and refuse a different one. */
#define FEATURES_HASH_SEED UINT64_C(0x696e74656e746431) /* "intentd1" */

/* One labelled (or, for scoring, unlabelled) example.  Fixed stride; no pointers. */
struct example {
    float label;   /* 0 or 1 (ignored when scoring) */
    float weight;  /* the event's own loss weight, > 0 (1 when absent); the learner
                      multiplies positives by training.positive_weight */
    uint64_t seq;  /* the caller's tag (row number, offset...); the learner keeps it as is */
    float dense[]; /* ndense floats, then ncat uint32 sparse indices (example_cat) */
};

/* Static description of one schema column, as features_column() returns it. */
struct features_column {
    const char *name; /* owned by the encoder */
    enum feature_type type;
    enum feature_transform transform; /* numeric only */
    uint32_t buckets;                 /* categorical only */
    uint32_t slot;   /* index into dense (numeric, boolean) or into the sparse part (categ.) */
    uint32_t offset; /* categorical only: first global sparse index of this column */
};

struct features;

/* Builds the encoder for the columns cols[0..n) (a copy is kept: cols may be freed).
 * Returns NULL with err filled on a bad schema (no columns, empty or duplicate name,
 * zero buckets, Σ buckets ≥ 2^32 - 1) or out of memory.  The caller owns it
 * (features_free). */
struct features *features_new(const struct config_feature *cols, size_t n, char *err,
                              size_t errlen);

/* Frees f; accepts NULL; returns NULL. */
struct features *features_free(struct features *f);

uint32_t features_ncolumns(const struct features *f); /* schema columns */
uint32_t features_ndense(const struct features *f);   /* numeric + boolean columns */
uint32_t features_ncat(const struct features *f);     /* categorical columns */
uint32_t features_nsparse(const struct features *f);  /* Σ buckets of the categoricals */

/* Column i (0 ≤ i < features_ncolumns) in schema order; the pointer lives as long as f. */
const struct features_column *features_column(const struct features *f, uint32_t i);

/* The schema as config_feature entries (names owned by f), for snapshots. */
const struct config_feature *features_schema(const struct features *f);

/* "numeric" | "categorical" | "boolean" (GET /v1/model, messages). */
const char *features_type_name(enum feature_type t);

/* Returns the schema column called name, or -1. */
int features_find(const struct features *f, const char *name);

/* Bytes of one example record: sizeof(struct example) + 4·ndense + 4·ncat, rounded up to
 * a multiple of 8 so arrays of records stay aligned. */
size_t features_example_size(const struct features *f);

static inline float *example_dense(struct example *e)
{
    return e->dense;
}
static inline const float *example_dense_c(const struct example *e)
{
    return e->dense;
}
/* The ncat sparse indices, after the ndense floats. */
static inline uint32_t *example_cat_at(struct example *e, uint32_t ndense)
{
    return (uint32_t *)(void *)(e->dense + ndense);
}
static inline const uint32_t *example_cat_at_c(const struct example *e, uint32_t ndense)
{
    return (const uint32_t *)(const void *)(e->dense + ndense);
}
uint32_t *example_cat(const struct features *f, struct example *e);
const uint32_t *example_cat_c(const struct features *f, const struct example *e);

/* Record i of a flat array of records of stride features_example_size(f). */
static inline struct example *example_at(void *base, size_t stride, size_t i)
{
    return (struct example *)(void *)((char *)base + i * stride);
}

/* Sets every feature of e missing (dense NaN, indices MODEL_NO_INDEX), label 0, weight 1,
 * seq 0. */
void features_example_init(const struct features *f, struct example *e);

/* Encodes one categorical value of column slot `cat` (0 ≤ cat < ncat) into its global
 * sparse index.  len bytes of s (no terminator needed). */
uint32_t features_hash(const struct features *f, uint32_t cat, const char *s, size_t len);

/* Fills the features of e (dense and sparse parts; label, weight and seq are left as they
 * are) from a JSON object {"name": value, ...}:
 *   numeric      — a JSON integer or real, finite (also after the transform, as a float);
 *   boolean      — true/false, "true"/"false" in any case ("TRUE"/"FALSE"), or 0/1;
 *   categorical  — a string, or an integer (hashed as its decimal string);
 *   null         — missing, as is an absent name.
 * A name not in the schema is ignored and counted into *unknown_count (which may be NULL;
 * it is incremented, not reset).
 * Returns 0; -EINVAL when features_obj is not an object (*bad_field = NULL); -EDOM when a
 * value has the wrong type, is NaN or infinite, with err naming the feature and
 * *bad_field pointing to its name (owned by f).  err and bad_field may be NULL.
 * Thread-safe (f is only read). */
int features_from_json(const struct features *f, const json_t *features_obj, struct example *e,
                       uint32_t *unknown_count, char *err, size_t errlen, const char **bad_field);

/* CSV input (intentd-eval, intentd-replay).  An empty cell is a missing feature. */

/* Splits one CSV line in place into at most max fields (quotes "..." with "" escapes are
 * understood; a trailing CR or LF is removed).  Returns the number of fields, or -E2BIG
 * when the line has more than max. */
int features_csv_split(char *line, char **fields, size_t max);

/* Maps a CSV header to the schema: colmap[i] (for i < nfields) receives the schema column
 * of header field i, or -1 for a field the schema does not use (the label, say).
 * Returns 0, or -ENOENT with err naming the first schema feature missing from the
 * header, -EINVAL for a header field named twice. */
int features_csv_map(const struct features *f, char *const *header, size_t nfields, int *colmap,
                     char *err, size_t errlen);

/* Fills the features of e from one CSV row (fields as features_csv_split gives them;
 * nfields must not exceed the header's width, i.e. colmap's length).  Numeric cells are parsed with
 * strtod (so 7.50E-05 reads), booleans as in features_from_json, categoricals hash their text.
 * Returns 0, or -EDOM with err naming the feature (and *bad_field its name) for a cell
 * that does not parse, is NaN or infinite. */
int features_from_csv_row(const struct features *f, const int *colmap, char *const *fields,
                          size_t nfields, struct example *e, char *err, size_t errlen,
                          const char **bad_field);

/* Parses a boolean cell or string: "true"/"false" (any case), "1"/"0".  Returns 0 or 1, or
 * -1 when s is neither.  Shared with intentd-replay. */
int features_parse_bool(const char *s, size_t len);

/* The online normaliser: per dense column, the count, mean and sum of squared deviations
 * of the values seen (in doubles, each batch merged as a whole with Chan et al.'s update;
 * missing values are skipped).  Owned by the learner; not thread-safe. */
struct features_norm {
    uint32_t ndense;
    double *count; /* (ndense) values seen per column */
    double *mean;  /* (ndense) running mean */
    double *m2;    /* (ndense) Σ (x - mean)² */
};

/* Allocates a normaliser for ndense columns with no data; returns NULL when out of
 * memory.  The caller owns it (features_norm_free). */
struct features_norm *features_norm_new(uint32_t ndense);
struct features_norm *features_norm_free(struct features_norm *n);

/* Adds the B examples of a batch of raw dense rows x (B, ndense); NaN = missing.  A batch
 * is merged as a whole (Chan et al.), so the result depends on how the stream is cut into
 * batches only by float rounding. */
void features_norm_update(struct features_norm *n, const float *x, size_t B);

/* The same from B example records of `stride` bytes (their dense parts). */
void features_norm_update_examples(struct features_norm *n, const void *records, size_t stride,
                                   size_t B);

/* The training batch path: standardises B example records (stride bytes apart) into out
 * (B, ndense), value for value as features_standardise does, and, when moments is not
 * NULL, fills moments (3·ndense floats) with each column's count, Σ d and Σ d² of
 * d = x - mean over the values present, for features_norm_merge.  One pass. */
void features_standardise_examples(uint32_t ndense, const float *mean, const float *inv_std,
                                   const void *records, size_t stride, size_t B, float *out,
                                   float *moments);

/* Merges a batch's moments, taken about mean (the float mean the batch was standardised
 * with), into n. */
void features_norm_merge(struct features_norm *n, const float *mean, const float *moments);

/* Freezes the statistics as float mean (ndense) and inv_std (ndense): 1/std of the
 * population variance, or 1 while a column has fewer than 2 values or no spread. */
void features_norm_freeze(const struct features_norm *n, float *mean, float *inv_std);

/* out[j] = (x[j] - mean[j]) · inv_std[j], and 0 where x[j] is NaN (missing = the mean):
 * the one standardisation used by training and serving.  x and out may alias. */
void features_standardise(uint32_t ndense, const float *mean, const float *inv_std, const float *x,
                          float *out);

/* Serialised size and (de)serialisation of a normaliser, for checkpoints. */
size_t features_norm_state_size(const struct features_norm *n);
void features_norm_save(const struct features_norm *n, void *buf);
int features_norm_load(struct features_norm *n, const void *buf, size_t len);

#endif
