/* Tests of the Prometheus exposition: names, escaping, histograms, and promtool's verdict. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "expo.h"
#include "log.h"
#include "unit.h"

static struct config expo_cfg(char *clicks, char *txns)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kafka.clicks_topic = clicks;
    cfg.kafka.transactions_topic = txns;
    return cfg;
}

/* Returns the value of the sample line starting with "name " (name includes labels), or
 * NAN when there is no such line. */
static double sample(const char *page, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = page; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
    return NAN;
}

void test_expo_escape_label(void)
{
    char out[64];
    CHECK_INT_EQ(expo_escape_label(out, sizeof out, "a\\b\"c\nd"), 10);
    CHECK_STR_EQ(out, "a\\\\b\\\"c\\nd");
    /* truncation keeps the NUL and still reports the full length */
    CHECK_INT_EQ(expo_escape_label(out, 4, "\"\"\""), 6);
    CHECK_INT_EQ(strlen(out), 3);
}

void test_expo_format_double(void)
{
    char num[32];
    CHECK_STR_EQ(expo_format_double(num, 0.1), "0.1");
    CHECK_STR_EQ(expo_format_double(num, 0.000025), "2.5e-05");
    CHECK_STR_EQ(expo_format_double(num, NAN), "NaN");
    CHECK_STR_EQ(expo_format_double(num, INFINITY), "+Inf");
    CHECK_STR_EQ(expo_format_double(num, -INFINITY), "-Inf");
    CHECK(strtod(expo_format_double(num, 1.0 / 3), NULL) == 1.0 / 3);
}

void test_expo_every_design_metric_has_help_and_type(void)
{
    static const char *const names[] = {"intentd_events_consumed_total",
                                        "intentd_events_rejected_total",
                                        "intentd_examples_total",
                                        "intentd_examples_trained_total",
                                        "intentd_train_batches_total",
                                        "intentd_progressive_auc",
                                        "intentd_progressive_logloss",
                                        "intentd_progressive_accuracy",
                                        "intentd_progressive_precision",
                                        "intentd_progressive_recall",
                                        "intentd_progressive_mean_prediction",
                                        "intentd_progressive_positive_rate",
                                        "intentd_model_version",
                                        "intentd_model_age_seconds",
                                        "intentd_snapshots_published_total",
                                        "intentd_snapshots_rejected_total",
                                        "intentd_pending_labels",
                                        "intentd_pending_transactions",
                                        "intentd_unmatched_transactions_total",
                                        "intentd_pending_evicted_total",
                                        "intentd_unknown_features_total",
                                        "intentd_dead_letter_errors_total",
                                        "intentd_offset_resets_total",
                                        "intentd_checkpoint_failures_total",
                                        "intentd_queue_examples",
                                        "intentd_ingest_paused",
                                        "intentd_kafka_consumer_lag",
                                        "intentd_http_requests_total",
                                        "intentd_predict_duration_seconds",
                                        "intentd_checkpoint_duration_seconds",
                                        "intentd_checkpoint_last_success_timestamp_seconds",
                                        "intentd_build_info",
                                        "process_resident_memory_bytes",
                                        "process_cpu_seconds_total",
                                        "process_start_time_seconds"};
    struct stats s;
    stats_init(&s);
    struct config cfg = expo_cfg("c", "t");
    size_t len = 0;
    char *page = expo_render(&s, &cfg, NULL, &len);
    CHECK(page);
    CHECK_INT_EQ(strlen(page), len);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, "# HELP %s ", names[i]);
        CHECK_STR_HAS(page, line);
        snprintf(line, sizeof line, "# TYPE %s ", names[i]);
        CHECK_STR_HAS(page, line);
        if (strstr(names[i], "_total")) {
            snprintf(line, sizeof line, "# TYPE %s counter\n", names[i]);
            CHECK_STR_HAS(page, line);
        }
    }
    CHECK_STR_HAS(page, "intentd_build_info{version=\"" INTENTD_VERSION "\"} 1\n");
    CHECK(sample(page, "process_resident_memory_bytes") > 0);
    CHECK(sample(page, "process_start_time_seconds") > 1.7e9);
    /* no snapshot yet: version 0 and no age sample */
    CHECK(sample(page, "intentd_model_version") == 0);
    CHECK(isnan(sample(page, "intentd_model_age_seconds")));
    free(page);
}

void test_expo_values_and_partitions(void)
{
    struct stats s;
    stats_init(&s);
    struct config cfg = expo_cfg("clicks\"x", "tx\\n\ny");
    stats_add(&s.events_consumed[TOPIC_CLICKS], 7);
    stats_add(&s.events_rejected[REJECT_BAD_LABEL], 3);
    stats_add(&s.examples_positive, 5);
    stats_set_double(&s.progressive_auc, 0.75);
    atomic_store(&s.consumer_lag[TOPIC_CLICKS][2], 42);
    atomic_store(&s.consumer_lag[TOPIC_TRANSACTIONS][0], 0);
    stats_add(&s.offset_resets[TOPIC_TRANSACTIONS][9], 1); /* reset, since unassigned */
    stats_add(&s.http_requests[ROUTE_OTHER][STATUS_404], 2);
    stats_set(&s.checkpoint_last_success_ms, 1764842400123);
    struct expo_model m = {.served = 1, .version = 17, .published_ms = log_wall_ms() - 2500};
    size_t len;
    char *page = expo_render(&s, &cfg, &m, &len);
    CHECK(page);
    CHECK(sample(page, "intentd_events_consumed_total{topic=\"clicks\\\"x\"}") == 7);
    CHECK(sample(page, "intentd_events_consumed_total{topic=\"tx\\\\n\\ny\"}") == 0);
    CHECK(sample(page, "intentd_events_rejected_total{reason=\"bad_label\"}") == 3);
    CHECK(sample(page, "intentd_examples_total{label=\"positive\"}") == 5);
    CHECK(sample(page, "intentd_progressive_auc") == 0.75);
    CHECK(sample(page, "intentd_kafka_consumer_lag{topic=\"clicks\\\"x\",partition=\"2\"}") == 42);
    CHECK(sample(page, "intentd_kafka_consumer_lag{topic=\"tx\\\\n\\ny\",partition=\"0\"}") == 0);
    /* only assigned partitions have lag series */
    CHECK(isnan(sample(page, "intentd_kafka_consumer_lag{topic=\"clicks\\\"x\",partition=\"0\"}")));
    CHECK(sample(page, "intentd_offset_resets_total{topic=\"tx\\\\n\\ny\",partition=\"9\"}") == 1);
    CHECK(sample(page, "intentd_offset_resets_total{topic=\"clicks\\\"x\",partition=\"2\"}") == 0);
    CHECK(
        isnan(sample(page, "intentd_offset_resets_total{topic=\"clicks\\\"x\",partition=\"3\"}")));
    CHECK(sample(page, "intentd_http_requests_total{path=\"other\",code=\"404\"}") == 2);
    CHECK(sample(page, "intentd_http_requests_total{path=\"/v1/predict\",code=\"200\"}") == 0);
    CHECK(sample(page, "intentd_model_version") == 17);
    double age = sample(page, "intentd_model_age_seconds");
    CHECK(age >= 2.5 && age < 60);
    CHECK_NEAR(sample(page, "intentd_checkpoint_last_success_timestamp_seconds"), 1764842400.123,
               1e-3);
    free(page);
}

void test_expo_histogram_cumulative(void)
{
    struct stats s;
    stats_init(&s);
    struct config cfg = expo_cfg("c", "t");
    stats_hist_observe(&s.predict_duration, 0.00001); /* first bucket */
    stats_hist_observe(&s.predict_duration, 0.00003); /* le 5e-05 */
    stats_hist_observe(&s.predict_duration, 0.0007);  /* le 0.001 */
    stats_hist_observe(&s.predict_duration, 5.0);     /* +Inf only */
    size_t len;
    char *page = expo_render(&s, &cfg, NULL, &len);
    CHECK(page);
    const char *h = "intentd_predict_duration_seconds";
    char name[128];
    snprintf(name, sizeof name, "%s_bucket{le=\"2.5e-05\"}", h);
    CHECK(sample(page, name) == 1);
    snprintf(name, sizeof name, "%s_bucket{le=\"5e-05\"}", h);
    CHECK(sample(page, name) == 2);
    snprintf(name, sizeof name, "%s_bucket{le=\"0.0005\"}", h);
    CHECK(sample(page, name) == 2);
    snprintf(name, sizeof name, "%s_bucket{le=\"0.001\"}", h);
    CHECK(sample(page, name) == 3);
    snprintf(name, sizeof name, "%s_bucket{le=\"1\"}", h);
    CHECK(sample(page, name) == 3);
    snprintf(name, sizeof name, "%s_bucket{le=\"+Inf\"}", h);
    CHECK(sample(page, name) == 4);
    snprintf(name, sizeof name, "%s_count", h);
    CHECK(sample(page, name) == 4);
    snprintf(name, sizeof name, "%s_sum", h);
    CHECK_NEAR(sample(page, name), 5.00074, 1e-6);
    free(page);
}

/* Pipes a page into `promtool check metrics`; returns its exit status and output. */
static int promtool(const char *page, size_t len, char *out, size_t outlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/scrape.txt", unit_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f);
    CHECK(fwrite(page, 1, len, f) == len);
    CHECK(fclose(f) == 0);
    char cmd[8500];
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void test_expo_promtool_clean(void)
{
    if (system("command -v promtool > /dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool missing (Debian package prometheus): check skipped\n");
        return;
    }
    struct stats s;
    stats_init(&s);
    struct config cfg = expo_cfg("intentd.clicks", "intentd.transactions");
    char out[8192];
    size_t len;
    /* a fresh process: no snapshot, no partitions */
    char *page = expo_render(&s, &cfg, NULL, &len);
    CHECK(page);
    int rc = promtool(page, len, out, sizeof out);
    if (rc != 0 || out[0]) unit_fail(__FILE__, __LINE__, "promtool (exit %d): %s", rc, out);
    free(page);
    /* a busy one: every kind of series present */
    for (int p = 0; p < 4; p++) {
        atomic_store(&s.consumer_lag[TOPIC_CLICKS][p], p * 10);
        atomic_store(&s.consumer_lag[TOPIC_TRANSACTIONS][p], 0);
    }
    stats_add(&s.offset_resets[TOPIC_CLICKS][1], 2);
    stats_add(&s.http_requests[ROUTE_PREDICT][STATUS_400], 2);
    stats_add(&s.http_requests[ROUTE_OTHER][STATUS_404], 1);
    stats_add(&s.http_requests[ROUTE_METRICS][STATUS_OTHER], 1);
    stats_hist_observe(&s.predict_duration, 0.0002);
    stats_hist_observe(&s.checkpoint_duration, 0.02);
    stats_set_double(&s.progressive_logloss, NAN);
    struct expo_model m = {.served = 1, .version = 3, .published_ms = log_wall_ms()};
    page = expo_render(&s, &cfg, &m, &len);
    CHECK(page);
    rc = promtool(page, len, out, sizeof out);
    if (rc != 0 || out[0]) unit_fail(__FILE__, __LINE__, "promtool (exit %d): %s", rc, out);
    free(page);
}
