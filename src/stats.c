/* stats.c — see stats.h. */
#include "stats.h"

#include "log.h"

const char *const stats_reject_names[REJECT_NREASONS] = {
    "invalid_json", "not_object", "missing_session_id", "bad_session_id", "bad_features",
    "bad_value",    "bad_label",  "too_large",          "ts_out_of_range",
};

const char *const stats_route_names[ROUTE_N] = {
    "/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "other",
};

const int stats_status_codes[STATUS_N] = {200, 400, 404, 405, 413, 500, 503, 0};

enum stats_status stats_status_index(int code)
{
    for (int i = 0; i < STATUS_OTHER; i++)
        if (stats_status_codes[i] == code) return (enum stats_status)i;
    return STATUS_OTHER;
}

/* Scoring takes microseconds; the buckets resolve 25 µs up to a slow 1 s outlier. */
static const double predict_bounds[] = {0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                        0.001,    0.0025,  0.005,  0.01,    0.025,
                                        0.05,     0.1,     0.25,   1.0};
/* A checkpoint is an fsync or two: milliseconds to seconds. */
static const double checkpoint_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,  0.5,   1.0,  2.5,   5.0,  10.0};

void stats_hist_init(struct stats_hist *h, const double *bounds, uint32_t nbounds)
{
    h->bounds = bounds;
    h->nbounds = nbounds > STATS_HIST_MAX ? STATS_HIST_MAX : nbounds;
    for (uint32_t i = 0; i <= STATS_HIST_MAX; i++) atomic_store(&h->count[i], 0);
    atomic_store(&h->sum_ns, 0);
}

void stats_hist_observe(struct stats_hist *h, double seconds)
{
    uint32_t i = 0;
    while (i < h->nbounds && seconds > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
    double ns = seconds * 1e9;
    atomic_fetch_add_explicit(&h->sum_ns, ns > 0 ? (uint64_t)ns : 0, memory_order_relaxed);
}

void stats_init(struct stats *s)
{
    memset(s, 0, sizeof *s);
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++) atomic_store(&s->consumer_lag[t][p], -1);
    stats_hist_init(&s->predict_duration, predict_bounds,
                    sizeof predict_bounds / sizeof predict_bounds[0]);
    stats_hist_init(&s->checkpoint_duration, checkpoint_bounds,
                    sizeof checkpoint_bounds / sizeof checkpoint_bounds[0]);
    s->start_time_ms = log_wall_ms();
}
