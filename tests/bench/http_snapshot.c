/* http_snapshot — intentd's HTTP server alone, in-process, serving a snapshot of the UCI
 * schema with random weights, optionally swapping in a new snapshot N times a second.
 * The benchmark's view of serving without Kafka or a trainer: the same http.c the daemon
 * runs, next to the two bare servers (bare_http, bare_http_json).
 *
 *   http_snapshot PORT [THREADS] [SWAPS_PER_SECOND]
 * Prints "listening PORT" when ready; runs until SIGTERM/SIGINT.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "features.h"
#include "http.h"
#include "log.h"
#include "snapshot.h"

static volatile sig_atomic_t running = 1;

static void on_signal(int sig)
{
    (void)sig;
    running = 0;
}

static const struct config_feature uci_cols[] = {
    {"Administrative", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Administrative_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"Informational", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Informational_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"ProductRelated", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"ProductRelated_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"BounceRates", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"ExitRates", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"PageValues", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"SpecialDay", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Month", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"OperatingSystems", FEATURE_CATEGORICAL, TRANSFORM_NONE, 8},
    {"Browser", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"Region", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"TrafficType", FEATURE_CATEGORICAL, TRANSFORM_NONE, 32},
    {"VisitorType", FEATURE_CATEGORICAL, TRANSFORM_NONE, 4},
    {"Weekend", FEATURE_BOOLEAN, TRANSFORM_NONE, 0},
};

/* The shipped default shape (model.hidden [64, 32]) with small random weights. */
static struct snapshot *make(const struct features *f, uint64_t version, uint64_t seed)
{
    struct model_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.ndense = features_ndense(f);
    sh.nsparse = features_nsparse(f);
    sh.ncat = features_ncat(f);
    sh.nlayers = 3;
    sh.width[0] = sh.ndense + sh.nsparse;
    sh.width[1] = 64;
    sh.width[2] = 32;
    sh.width[3] = 1;
    sh.activation = ACTIVATION_RELU;
    size_t np = model_nparams(&sh);
    float *p = malloc(np * sizeof *p), mean[CONFIG_MAX_FEATURES], inv[CONFIG_MAX_FEATURES];
    if (!p) return NULL;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < np; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(x >> 40) / (double)(1ull << 24) - 0.5) * 0.2f;
    }
    for (uint32_t j = 0; j < sh.ndense; j++) {
        mean[j] = 1.0f;
        inv[j] = 0.5f;
    }
    struct snapshot_meta meta = {.version = version,
                                 .created_at_ms = (int64_t)log_wall_ms(),
                                 .trained_examples = version * 1000,
                                 .progressive = {NAN, NAN, 0},
                                 .holdout = {NAN, NAN, 0}};
    struct snapshot *s = snapshot_new(f, &sh, p, mean, inv, &meta);
    free(p);
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS] [SWAPS_PER_SECOND]\n", argv[0]);
        return 2;
    }
    char listen[64], err[256];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", argv[1]);
    unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
    double swaps = argc > 3 ? atof(argv[3]) : 0;
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kafka.clicks_topic = "intentd.clicks";
    cfg.kafka.transactions_topic = "intentd.transactions";
    cfg.http.listen = listen;
    cfg.http.threads = threads;
    cfg.http.max_body = 65536;
    cfg.http.max_batch = 1024;
    cfg.http.max_connections = 1024;
    cfg.http.connection_timeout_ms = 30000;
    struct stats stats;
    stats_init(&stats);
    struct snapshot_slot slot;
    snapshot_slot_init(&slot);
    struct features *f =
        features_new(uci_cols, sizeof uci_cols / sizeof uci_cols[0], err, sizeof err);
    if (!f) {
        fprintf(stderr, "features: %s\n", err);
        return 1;
    }
    uint64_t version = 1;
    snapshot_slot_publish(&slot, make(f, version, version));
    struct http *h = http_new(&cfg, &slot, f, &stats, err, sizeof err);
    if (!h) {
        fprintf(stderr, "http: %s\n", err);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("listening %u\n", http_port(h));
    fflush(stdout);
    long period_ns = swaps > 0 ? (long)(1e9 / swaps) : 100000000L;
    while (running) {
        struct timespec ts = {period_ns / 1000000000L, period_ns % 1000000000L};
        nanosleep(&ts, NULL);
        if (swaps > 0 && running) {
            version++;
            struct snapshot *s = make(f, version, version);
            if (s) snapshot_slot_publish(&slot, s);
        }
    }
    h = http_free(h);
    snapshot_slot_clear(&slot);
    features_free(f);
    fprintf(stderr, "served %llu predictions, %llu snapshots\n",
            (unsigned long long)stats_get(&stats.http_requests[ROUTE_PREDICT][STATUS_200]),
            (unsigned long long)version);
    return 0;
}
