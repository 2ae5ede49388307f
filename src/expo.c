/* expo.c — see expo.h. */
#include "expo.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

/* The page under construction; oom latches so callers check once at the end. */
struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->oom || b->len + extra < b->cap) return;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap <= b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

__attribute__((format(printf, 2, 3))) static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    buf_reserve(b, 256);
    if (b->oom) return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n + 1);
        if (b->oom) return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

size_t expo_escape_label(char *out, size_t outlen, const char *v)
{
    size_t n = 0;
    for (const char *s = v; *s; s++) {
        const char *rep = NULL;
        char one[2] = {*s, 0};
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '"')
            rep = "\\\"";
        else if (*s == '\n')
            rep = "\\n";
        else
            rep = one;
        for (const char *r = rep; *r; r++, n++)
            if (n + 1 < outlen) out[n] = *r;
    }
    if (outlen) out[n < outlen ? n : outlen - 1] = 0;
    return n;
}

char *expo_format_double(char out[32], double v)
{
    if (isnan(v)) return strcpy(out, "NaN");
    if (isinf(v)) return strcpy(out, v > 0 ? "+Inf" : "-Inf");
    /* shortest round-trip form: 0.1 prints as 0.1, not 0.10000000000000001 */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    return out;
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(struct buf *b, const char *name, uint64_t v)
{
    bprintf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void sample_double(struct buf *b, const char *name, double v)
{
    char num[32];
    bprintf(b, "%s %s\n", name, expo_format_double(num, v));
}

static void counter(struct buf *b, const char *name, const char *help, const _Atomic uint64_t *c)
{
    family(b, name, "counter", help);
    sample_u64(b, name, stats_get(c));
}

static void gauge_u64(struct buf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "gauge", help);
    sample_u64(b, name, v);
}

static void gauge_double(struct buf *b, const char *name, const char *help, double v)
{
    family(b, name, "gauge", help);
    sample_double(b, name, v);
}

static void histogram(struct buf *b, const char *name, const char *help, const struct stats_hist *h)
{
    char num[32];
    family(b, name, "histogram", help);
    /* Each bucket is read once; the cumulative counts and _count come from those reads, so
     * they agree with each other even while requests are observed concurrently. */
    uint64_t cum = 0;
    for (uint32_t i = 0; i < h->nbounds; i++) {
        cum += stats_get(&h->count[i]);
        bprintf(b, "%s_bucket{le=\"%s\"} %llu\n", name, expo_format_double(num, h->bounds[i]),
                (unsigned long long)cum);
    }
    cum += stats_get(&h->count[h->nbounds]);
    bprintf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    bprintf(b, "%s_sum %s\n", name, expo_format_double(num, (double)stats_get(&h->sum_ns) / 1e9));
    bprintf(b, "%s_count %llu\n", name, (unsigned long long)cum);
}

/* Resident set size from /proc/self/statm (pages); 0 if unreadable. */
static uint64_t process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    if (n != 2) return 0;
    long page = sysconf(_SC_PAGESIZE);
    return resident * (uint64_t)(page > 0 ? page : 4096);
}

static double process_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static const char *topic_name(const struct config *cfg, int t)
{
    const char *name = t == TOPIC_CLICKS ? cfg->kafka.clicks_topic : cfg->kafka.transactions_topic;
    return name ? name : "";
}

char *expo_render(const struct stats *s, const struct config *cfg, const struct expo_model *m,
                  size_t *len)
{
    struct buf b = {0};
    char esc[2][512];
    for (int t = 0; t < TOPIC_N; t++) expo_escape_label(esc[t], sizeof esc[t], topic_name(cfg, t));

    family(&b, "intentd_events_consumed_total", "counter",
           "Messages read from the clicks and transactions topics, valid or not.");
    for (int t = 0; t < TOPIC_N; t++)
        bprintf(&b, "intentd_events_consumed_total{topic=\"%s\"} %llu\n", esc[t],
                (unsigned long long)stats_get(&s->events_consumed[t]));

    family(&b, "intentd_events_rejected_total", "counter",
           "Bad messages, by reason; each is copied to the dead-letter topic.");
    for (int r = 0; r < REJECT_NREASONS; r++)
        bprintf(&b, "intentd_events_rejected_total{reason=\"%s\"} %llu\n", stats_reject_names[r],
                (unsigned long long)stats_get(&s->events_rejected[r]));

    family(&b, "intentd_examples_total", "counter",
           "Labelled examples made (joined or directly labelled), by label.");
    bprintf(&b, "intentd_examples_total{label=\"positive\"} %llu\n",
            (unsigned long long)stats_get(&s->examples_positive));
    bprintf(&b, "intentd_examples_total{label=\"negative\"} %llu\n",
            (unsigned long long)stats_get(&s->examples_negative));

    counter(&b, "intentd_examples_trained_total", "Examples the trainer has learned from.",
            &s->examples_trained);
    counter(&b, "intentd_train_batches_total", "Optimizer steps taken.", &s->train_batches);

    gauge_double(&b, "intentd_progressive_auc",
                 "ROC AUC of predictions made before learning, over the sliding window.",
                 stats_get_double(&s->progressive_auc));
    gauge_double(&b, "intentd_progressive_logloss",
                 "Log loss of predictions made before learning, over the sliding window.",
                 stats_get_double(&s->progressive_logloss));
    gauge_double(&b, "intentd_progressive_accuracy",
                 "Accuracy at evaluation.threshold over the sliding window.",
                 stats_get_double(&s->progressive_accuracy));
    gauge_double(&b, "intentd_progressive_precision",
                 "Precision at evaluation.threshold over the sliding window.",
                 stats_get_double(&s->progressive_precision));
    gauge_double(&b, "intentd_progressive_recall",
                 "Recall at evaluation.threshold over the sliding window.",
                 stats_get_double(&s->progressive_recall));
    gauge_double(&b, "intentd_progressive_mean_prediction",
                 "Mean predicted probability over the sliding window (calibration).",
                 stats_get_double(&s->progressive_mean_prediction));
    gauge_double(&b, "intentd_progressive_positive_rate",
                 "Fraction of positive labels over the sliding window (calibration).",
                 stats_get_double(&s->progressive_positive_rate));

    int served = m && m->served;
    gauge_u64(&b, "intentd_model_version", "Version of the served snapshot (0: none yet).",
              served ? m->version : 0);
    family(&b, "intentd_model_age_seconds", "gauge",
           "Seconds since the served snapshot was published (absent before the first).");
    if (served) {
        uint64_t now = log_wall_ms();
        double age = now > m->published_ms ? (double)(now - m->published_ms) / 1e3 : 0.0;
        sample_double(&b, "intentd_model_age_seconds", age);
    }
    counter(&b, "intentd_snapshots_published_total", "Snapshots published to serving.",
            &s->snapshots_published);
    counter(&b, "intentd_snapshots_rejected_total", "Candidate snapshots the holdout gate refused.",
            &s->snapshots_rejected);

    gauge_u64(&b, "intentd_pending_labels", "Clicks waiting for their label window to close.",
              stats_get(&s->pending_labels));
    gauge_u64(&b, "intentd_pending_transactions", "Transactions held until their click arrives.",
              stats_get(&s->pending_transactions));
    counter(&b, "intentd_unmatched_transactions_total",
            "Transactions for which no click arrived before the watermark passed them.",
            &s->unmatched_transactions);
    counter(&b, "intentd_pending_evicted_total",
            "Pending examples emitted early as negatives because the table was full.",
            &s->pending_evicted);
    counter(&b, "intentd_unknown_features_total",
            "Feature names not in the schema, in events and in requests (ignored).",
            &s->unknown_features);
    counter(&b, "intentd_dead_letter_errors_total",
            "Bad messages whose copy to the dead-letter topic failed.", &s->dead_letter_errors);

    family(&b, "intentd_offset_resets_total", "counter",
           "Times a partition's offset was gone from the broker and reading restarted at the "
           "earliest offset.");
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++) {
            uint64_t n = stats_get(&s->offset_resets[t][p]);
            int64_t lag = atomic_load_explicit((_Atomic int64_t *)&s->consumer_lag[t][p],
                                               memory_order_relaxed);
            if (n > 0 || lag >= 0)
                bprintf(&b, "intentd_offset_resets_total{topic=\"%s\",partition=\"%d\"} %llu\n",
                        esc[t], p, (unsigned long long)n);
        }

    counter(&b, "intentd_checkpoint_failures_total", "Checkpoints that could not be written.",
            &s->checkpoint_failures);
    gauge_u64(&b, "intentd_queue_examples", "Examples waiting in the queue to the trainer.",
              stats_get(&s->queue_examples));
    gauge_u64(&b, "intentd_ingest_paused", "1 while ingest has paused its partitions.",
              stats_get(&s->ingest_paused));

    family(&b, "intentd_kafka_consumer_lag", "gauge",
           "Messages between the consumer's position and the partition's high watermark, for "
           "assigned partitions.");
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++) {
            int64_t lag = atomic_load_explicit((_Atomic int64_t *)&s->consumer_lag[t][p],
                                               memory_order_relaxed);
            if (lag >= 0)
                bprintf(&b, "intentd_kafka_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
                        esc[t], p, (long long)lag);
        }

    family(&b, "intentd_http_requests_total", "counter",
           "HTTP requests answered, by route (\"other\" for unknown paths) and status code.");
    for (int r = 0; r < ROUTE_N; r++)
        for (int c = 0; c < STATUS_N; c++) {
            uint64_t n = stats_get(&s->http_requests[r][c]);
            /* Always show each route's 200 so the series exist from the start; other codes
             * appear once they happened. */
            if (n == 0 && !(c == STATUS_200 && r != ROUTE_OTHER)) continue;
            char code[16];
            if (stats_status_codes[c])
                snprintf(code, sizeof code, "%d", stats_status_codes[c]);
            else
                snprintf(code, sizeof code, "other");
            bprintf(&b, "intentd_http_requests_total{path=\"%s\",code=\"%s\"} %llu\n",
                    stats_route_names[r], code, (unsigned long long)n);
        }
    histogram(&b, "intentd_predict_duration_seconds",
              "Time to answer /v1/predict, from the request's headers to the queued response.",
              &s->predict_duration);
    histogram(&b, "intentd_checkpoint_duration_seconds", "Time to write and fsync a checkpoint.",
              &s->checkpoint_duration);

    uint64_t last = stats_get(&s->checkpoint_last_success_ms);
    gauge_double(&b, "intentd_checkpoint_last_success_timestamp_seconds",
                 "Unix time of the last durable checkpoint (0: none yet).", (double)last / 1e3);

    char ver[128];
    expo_escape_label(ver, sizeof ver, INTENTD_VERSION);
    family(&b, "intentd_build_info", "gauge", "Always 1; the label names the intentd version.");
    bprintf(&b, "intentd_build_info{version=\"%s\"} 1\n", ver);

    gauge_u64(&b, "process_resident_memory_bytes", "Resident memory size in bytes.",
              process_rss_bytes());
    family(&b, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    sample_double(&b, "process_cpu_seconds_total", process_cpu_seconds());
    gauge_double(&b, "process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.",
                 (double)s->start_time_ms / 1e3);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
