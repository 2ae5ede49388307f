/* stats.h — the counters and gauges every thread updates and /metrics reads.
 *
 * Threads share data only through the example queue, the snapshot pointer and this struct
 * of atomics (relaxed order: each value is independent; a scrape needs no lock and never
 * blocks the trainer).  One struct stats lives in struct intentd (main.c); modules get a
 * pointer to it.  Gauges holding doubles are stored as their bit pattern in a uint64_t
 * (stats_set_double / stats_get_double).
 *
 * The metric names are contract (DESIGN.md §9); the exposition is in metrics.c.
 */
#ifndef INTENTD_STATS_H
#define INTENTD_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define STATS_MAX_PARTITIONS 256 /* per topic, for lag and offset-reset series */

/* intentd_events_rejected_total{reason}: the reasons of DESIGN.md §5, in this order. */
enum stats_reject {
    REJECT_INVALID_JSON,
    REJECT_NOT_OBJECT,
    REJECT_MISSING_SESSION_ID,
    REJECT_BAD_SESSION_ID,
    REJECT_BAD_FEATURES,
    REJECT_BAD_VALUE,
    REJECT_BAD_LABEL,
    REJECT_TOO_LARGE,
    REJECT_TS_OUT_OF_RANGE,
    REJECT_NREASONS
};
extern const char *const stats_reject_names[REJECT_NREASONS]; /* "invalid_json", ... */

enum stats_topic { TOPIC_CLICKS = 0, TOPIC_TRANSACTIONS = 1, TOPIC_N = 2 };

/* intentd_http_requests_total{path,code}: routes by name, "other" for anything unknown. */
enum stats_route {
    ROUTE_PREDICT,
    ROUTE_MODEL,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_OTHER,
    ROUTE_N
};
extern const char *const stats_route_names[ROUTE_N]; /* "/v1/predict", ..., "other" */

/* The status codes the server produces; anything else is counted under STATUS_OTHER. */
enum stats_status {
    STATUS_200,
    STATUS_400,
    STATUS_404,
    STATUS_405,
    STATUS_413,
    STATUS_500,
    STATUS_503,
    STATUS_OTHER,
    STATUS_N
};
extern const int stats_status_codes[STATUS_N]; /* 200, 400, ..., 0 for other */
enum stats_status stats_status_index(int code);

/* A cumulative histogram with fixed upper bounds (seconds); the last bucket is +Inf. */
#define STATS_HIST_MAX 24
struct stats_hist {
    const double *bounds;                 /* nbounds finite upper bounds, ascending */
    uint32_t nbounds;
    _Atomic uint64_t count[STATS_HIST_MAX + 1]; /* per bucket (not cumulative), +Inf last */
    _Atomic uint64_t sum_ns;              /* sum of observations, nanoseconds */
};
void stats_hist_init(struct stats_hist *h, const double *bounds, uint32_t nbounds);
void stats_hist_observe(struct stats_hist *h, double seconds);

struct stats {
    /* ingest */
    _Atomic uint64_t events_consumed[TOPIC_N];
    _Atomic uint64_t events_rejected[REJECT_NREASONS];
    _Atomic uint64_t unknown_features;       /* in events and in requests */
    _Atomic uint64_t dead_letter_errors;
    _Atomic uint64_t ingest_paused;          /* gauge 0/1 */
    _Atomic int64_t consumer_lag[TOPIC_N][STATS_MAX_PARTITIONS]; /* -1: not assigned */
    _Atomic uint64_t offset_resets[TOPIC_N][STATS_MAX_PARTITIONS];

    /* joiner (updated by whoever runs it) */
    _Atomic uint64_t examples_positive;
    _Atomic uint64_t examples_negative;
    _Atomic uint64_t pending_labels;         /* gauge */
    _Atomic uint64_t pending_transactions;   /* gauge */
    _Atomic uint64_t unmatched_transactions;
    _Atomic uint64_t pending_evicted;

    /* queue */
    _Atomic uint64_t queue_examples;         /* gauge */

    /* trainer */
    _Atomic uint64_t examples_trained;
    _Atomic uint64_t train_batches;
    _Atomic uint64_t progressive_auc;        /* double bits; gauges over the sliding window */
    _Atomic uint64_t progressive_logloss;
    _Atomic uint64_t progressive_accuracy;
    _Atomic uint64_t progressive_precision;
    _Atomic uint64_t progressive_recall;
    _Atomic uint64_t progressive_mean_prediction;
    _Atomic uint64_t progressive_positive_rate;
    _Atomic uint64_t snapshots_published;
    _Atomic uint64_t snapshots_rejected;
    _Atomic uint64_t trainer_heartbeat_ms;   /* monotonic ms of the trainer's last loop */

    /* checkpointer */
    _Atomic uint64_t checkpoint_failures;
    _Atomic uint64_t checkpoint_last_success_ms; /* wall clock ms, 0 = never */
    struct stats_hist checkpoint_duration;

    /* http */
    _Atomic uint64_t http_requests[ROUTE_N][STATUS_N];
    struct stats_hist predict_duration;

    /* process */
    uint64_t start_time_ms; /* wall clock, set once at start */
};

/* Zeroes s and sets up the histograms' buckets and the "not assigned" lag markers. */
void stats_init(struct stats *s);

static inline void stats_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}
static inline void stats_set(_Atomic uint64_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}
static inline uint64_t stats_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}
static inline void stats_set_double(_Atomic uint64_t *g, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    atomic_store_explicit(g, bits, memory_order_relaxed);
}
static inline double stats_get_double(const _Atomic uint64_t *g)
{
    uint64_t bits = atomic_load_explicit((_Atomic uint64_t *)g, memory_order_relaxed);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

#endif
