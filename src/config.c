/* config.c — see config.h.
 *
 * One table (config_keys below) names every key: its type, where it lives in struct config,
 * its default (as YAML text), its bounds and a one-line doc.  The same table fills the
 * defaults (config_new parses each default through the ordinary parser), parses a file,
 * validates it, prints the effective configuration and compares two configurations.
 * Adding a key is adding one entry.
 *
 * Parsing uses libyaml's document API: every node keeps its start mark, so any error can
 * name FILE:LINE:COL of the node at fault.  A file is applied to a copy of the caller's
 * configuration, which replaces the original only when the whole file was accepted.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CONFIG_MAX_FILE_BYTES (16u << 20) /* a configuration file is small; refuse a huge one */
#define CONFIG_MAX_PROPERTIES 256
#define CONFIG_MAX_BUCKETS    (1u << 24)

enum key_type {
    T_STRING,     /* char *; K_NONEMPTY forbids "" */
    T_ENUM,       /* int, the index of the value in .names */
    T_BOOL,       /* int, 0 or 1 */
    T_INT,        /* uint32_t or uint64_t (by .size), in [.min, .max] */
    T_DOUBLE,     /* double in [.dmin, .dmax], ends open with K_DMIN_OPEN / K_DMAX_OPEN */
    T_DURATION,   /* uint64_t milliseconds in [.min, .max] */
    T_SIZE,       /* uint64_t bytes in [.min, .max] */
    T_UINTLIST,   /* uint32_t[.max_items] + size_t count at .count_offset; items in bounds */
    T_FEATURES,   /* struct config_feature * + size_t count at .count_offset */
    T_PROPERTIES, /* struct config_property * + size_t count at .count_offset */
};

enum key_flags {
    K_NONEMPTY = 1 << 0,  /* string: "" is not allowed */
    K_DMIN_OPEN = 1 << 1, /* double: the lower bound is excluded */
    K_DMAX_OPEN = 1 << 2, /* double: the upper bound is excluded */
    K_RELOAD = 1 << 3,    /* can change at run time (SIGHUP); the others need a restart */
};

struct key {
    const char *name; /* dotted: "section.key" or "key" (table) / "key" (feature table) */
    enum key_type type;
    size_t offset;            /* of the field in its struct (struct config or config_feature) */
    size_t size;              /* of the field, for T_INT (4 or 8) */
    size_t count_offset;      /* T_UINTLIST, T_FEATURES, T_PROPERTIES: the size_t count */
    size_t max_items;         /* T_UINTLIST: capacity of the array */
    const char *def;          /* default, as YAML text (parsed by the same code as a file) */
    uint64_t min, max;        /* T_INT, T_DURATION (ms), T_SIZE (bytes), T_UINTLIST items */
    double dmin, dmax;        /* T_DOUBLE */
    unsigned flags;           /* enum key_flags */
    const char *const *names; /* T_ENUM: value names, indexed by value, NULL-terminated */
    /* T_STRING: extra validation; returns NULL or what was expected */
    const char *(*check)(const char *value);
    const char *doc; /* one line, printed as a comment by config_print */
};

#define FIELD(f) .offset = offsetof(struct config, f), .size = sizeof(((struct config *)0)->f)
#define FFIELD(f)                                                                                  \
    .offset = offsetof(struct config_feature, f), .size = sizeof(((struct config_feature *)0)->f)
#define COUNT(f) .count_offset = offsetof(struct config, f)
#define SEC(s)   ((uint64_t)(s)*1000)
#define MIN(m)   (SEC(m) * 60)
#define HOUR(h)  (MIN(h) * 60)
#define KIB(k)   ((uint64_t)(k) << 10)
#define MIB(m)   ((uint64_t)(m) << 20)
#define GIB(g)   ((uint64_t)(g) << 30)

static const char *const log_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const activation_names[] = {"relu", "tanh", "sigmoid", NULL};
static const char *const assignment_names[] = {"group", "static", NULL};
static const char *const optimizer_names[] = {"adam", "sgd", NULL};
static const char *const feature_type_names[] = {"numeric", "categorical", "boolean", NULL};
static const char *const transform_names[] = {"none", "log1p", NULL};

static const char *check_listen(const char *value);

/* The configuration, in the order config_print writes it.  Keys of one section must be
 * contiguous.  Each default sits on its own line so that tuning one is a one-line edit
 * (and config/intentd.yaml documents the same value: a unit test compares them). */
// clang-format off
static const struct key config_keys[] = {
    {.name = "state_dir", .type = T_STRING, FIELD(state_dir),
     .def = "/var/lib/intentd",
     .flags = K_NONEMPTY, .doc = "checkpoints and the embedded broker's address live here"},
    {.name = "log_level", .type = T_ENUM, FIELD(log_level),
     .def = "info",
     .names = log_level_names, .flags = K_RELOAD, .doc = "debug | info | warn | error"},

    {.name = "kafka.brokers", .type = T_STRING, FIELD(kafka.brokers),
     .def = "embedded",
     .flags = K_NONEMPTY, .doc = "\"embedded\", or \"host:9092,host2:9092\""},
    {.name = "kafka.group_id", .type = T_STRING, FIELD(kafka.group_id),
     .def = "intentd",
     .flags = K_NONEMPTY, .doc = "consumer group"},
    {.name = "kafka.clicks_topic", .type = T_STRING, FIELD(kafka.clicks_topic),
     .def = "intentd.clicks",
     .flags = K_NONEMPTY, .doc = "click events"},
    {.name = "kafka.transactions_topic", .type = T_STRING, FIELD(kafka.transactions_topic),
     .def = "intentd.transactions",
     .flags = K_NONEMPTY, .doc = "transaction events (the labels)"},
    {.name = "kafka.dead_letter_topic", .type = T_STRING, FIELD(kafka.dead_letter_topic),
     .def = "intentd.dead-letter",
     .doc = "bad messages are copied here; \"\" disables"},
    {.name = "kafka.properties", .type = T_PROPERTIES, FIELD(kafka.properties),
     COUNT(kafka.nproperties),
     .def = "{}",
     .doc = "passed verbatim to librdkafka (security.protocol, sasl.*, ssl.*, ...)"},
    {.name = "kafka.max_event_bytes", .type = T_SIZE, FIELD(kafka.max_event_bytes),
     .def = "64KiB",
     .min = 64, .max = GIB(1), .doc = "larger messages are rejected as too_large"},
    {.name = "kafka.assignment", .type = T_ENUM, FIELD(kafka.assignment),
     .def = "group",
     .names = assignment_names,
     .doc = "group (join the consumer group) | static (assign every partition directly)"},

    {.name = "features", .type = T_FEATURES, FIELD(features), COUNT(nfeatures),
     .def = "[{name: PageValues, type: numeric, transform: log1p},"
            " {name: Month, type: categorical, buckets: 16},"
            " {name: Weekend, type: boolean}]",
     .doc = "the input schema; order fixes the layout"},

    {.name = "labels.window", .type = T_DURATION, FIELD(labels.window_ms),
     .def = "30m",
     .min = 1, .max = HOUR(24 * 30), .doc = "a transaction this soon after a click labels it"},
    {.name = "labels.allowed_lateness", .type = T_DURATION, FIELD(labels.allowed_lateness_ms),
     .def = "1m",
     .min = 0, .max = HOUR(24 * 30), .doc = "the watermark trails the event times by this"},
    {.name = "labels.idle_timeout", .type = T_DURATION, FIELD(labels.idle_timeout_ms),
     .def = "30s",
     .min = 0, .max = HOUR(24 * 30),
     .doc = "an idle partition stops holding the watermark; 0 = never"},
    {.name = "labels.max_future", .type = T_DURATION, FIELD(labels.max_future_ms),
     .def = "1h",
     .min = 0, .max = HOUR(24 * 30), .flags = K_RELOAD,
     .doc = "events stamped further ahead of the wall clock are rejected"},
    {.name = "labels.max_pending", .type = T_INT, FIELD(labels.max_pending),
     .def = "1000000",
     .min = 1, .max = 100000000, .doc = "pending clicks; when full the oldest closes early"},

    {.name = "model.hidden", .type = T_UINTLIST, FIELD(model.hidden), COUNT(model.nhidden),
     .max_items = CONFIG_MAX_HIDDEN,
     .def = "[64, 32]",
     .min = 1, .max = 65536, .doc = "widths of the hidden layers ([] = logistic regression)"},
    {.name = "model.activation", .type = T_ENUM, FIELD(model.activation),
     .def = "relu",
     .names = activation_names, .doc = "relu | tanh | sigmoid"},
    {.name = "model.dropout", .type = T_DOUBLE, FIELD(model.dropout),
     .def = "0.0",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN, .doc = "dropout rate of the hidden layers"},
    {.name = "model.l2", .type = T_DOUBLE, FIELD(model.l2),
     .def = "0.0",
     .dmin = 0, .dmax = 1e6, .doc = "L2 weight decay"},
    {.name = "model.seed", .type = T_INT, FIELD(model.seed),
     .def = "1",
     .min = 0, .max = UINT64_MAX, .doc = "seeds initial weights, dropout, replay, holdout"},
    {.name = "model.ema_decay", .type = T_DOUBLE, FIELD(model.ema_decay),
     .def = "0.995",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN,
     .doc = "served weights are an exponential moving average of the trained ones; 0 = off"},

    {.name = "optimizer.name", .type = T_ENUM, FIELD(optimizer.name),
     .def = "adam",
     .names = optimizer_names, .doc = "adam | sgd"},
    {.name = "optimizer.learning_rate", .type = T_DOUBLE, FIELD(optimizer.learning_rate),
     .def = "0.003",
     .dmin = 0, .dmax = 10, .flags = K_DMIN_OPEN | K_RELOAD, .doc = "step size"},
    {.name = "optimizer.beta1", .type = T_DOUBLE, FIELD(optimizer.beta1),
     .def = "0.9",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN, .doc = "adam: first-moment decay"},
    {.name = "optimizer.beta2", .type = T_DOUBLE, FIELD(optimizer.beta2),
     .def = "0.999",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN, .doc = "adam: second-moment decay"},
    {.name = "optimizer.epsilon", .type = T_DOUBLE, FIELD(optimizer.epsilon),
     .def = "1.0e-8",
     .dmin = 0, .dmax = 1, .flags = K_DMIN_OPEN, .doc = "adam: denominator guard"},
    {.name = "optimizer.momentum", .type = T_DOUBLE, FIELD(optimizer.momentum),
     .def = "0.9",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN, .doc = "sgd only"},

    {.name = "training.batch_size", .type = T_INT, FIELD(training.batch_size),
     .def = "32",
     .min = 1, .max = 65536, .doc = "examples per minibatch"},
    {.name = "training.max_batch_wait", .type = T_DURATION, FIELD(training.max_batch_wait_ms),
     .def = "200ms",
     .min = 0, .max = HOUR(1), .flags = K_RELOAD,
     .doc = "a partial batch is trained after this; 0: only full batches (deterministic)"},
    {.name = "training.replay_ratio", .type = T_DOUBLE, FIELD(training.replay_ratio),
     .def = "4",
     .dmin = 0, .dmax = 64, .flags = K_RELOAD,
     .doc = "replayed minibatches from a reservoir per fresh one"},
    {.name = "training.replay_capacity", .type = T_INT, FIELD(training.replay_capacity),
     .def = "65536",
     .min = 1, .max = 1u << 26, .doc = "examples in the replay reservoir"},
    {.name = "training.queue_capacity", .type = T_INT, FIELD(training.queue_capacity),
     .def = "65536",
     .min = 1, .max = 1u << 24, .doc = "examples; ingest pauses when full"},
    {.name = "training.positive_weight", .type = T_DOUBLE, FIELD(training.positive_weight),
     .def = "1.0",
     .dmin = 0, .dmax = 1e6, .flags = K_DMIN_OPEN | K_RELOAD,
     .doc = "loss weight of positives; an event's own \"weight\" multiplies it"},

    {.name = "evaluation.threshold", .type = T_DOUBLE, FIELD(evaluation.threshold),
     .def = "0.5",
     .dmin = 0, .dmax = 1, .flags = K_RELOAD, .doc = "for accuracy, precision, recall"},
    {.name = "evaluation.window", .type = T_INT, FIELD(evaluation.window),
     .def = "10000",
     .min = 1, .max = 1u << 24,
     .doc = "examples in the sliding window of the progressive metrics"},

    {.name = "snapshot.interval", .type = T_DURATION, FIELD(snapshot.interval_ms),
     .def = "1s",
     .min = 1, .max = HOUR(24), .flags = K_RELOAD,
     .doc = "a changed model is published this often"},
    {.name = "snapshot.min_examples", .type = T_INT, FIELD(snapshot.min_examples),
     .def = "256",
     .min = 0, .max = UINT64_MAX,
     .doc = "nothing is served before this many examples were learned"},
    {.name = "snapshot.holdout_fraction", .type = T_DOUBLE, FIELD(snapshot.holdout_fraction),
     .def = "0.05",
     .dmin = 0, .dmax = 1, .flags = K_DMAX_OPEN,
     .doc = "examples held back from training to gate snapshots"},
    {.name = "snapshot.max_regression", .type = T_DOUBLE, FIELD(snapshot.max_regression),
     .def = "0.05",
     .dmin = 0, .dmax = 100, .flags = K_RELOAD,
     .doc = "a candidate whose holdout log loss is worse by more is refused"},
    {.name = "snapshot.min_holdout", .type = T_INT, FIELD(snapshot.min_holdout),
     .def = "200",
     .min = 0, .max = 1u << 24, .flags = K_RELOAD,
     .doc = "the gate applies once the holdout reservoir holds this many"},

    {.name = "checkpoint.interval", .type = T_DURATION, FIELD(checkpoint.interval_ms),
     .def = "10s",
     .min = 1, .max = HOUR(24), .flags = K_RELOAD, .doc = "a durable checkpoint this often"},
    {.name = "checkpoint.keep", .type = T_INT, FIELD(checkpoint.keep),
     .def = "3",
     .min = 1, .max = 1000, .flags = K_RELOAD, .doc = "checkpoints kept in state_dir"},

    {.name = "http.listen", .type = T_STRING, FIELD(http.listen),
     .def = "127.0.0.1:8080",
     .flags = K_NONEMPTY, .check = check_listen, .doc = "HOST:PORT (no TLS, no auth: loopback)"},
    {.name = "http.threads", .type = T_INT, FIELD(http.threads),
     .def = "2",
     .min = 1, .max = 256, .doc = "worker threads"},
    {.name = "http.max_body", .type = T_SIZE, FIELD(http.max_body),
     .def = "64KiB",
     .min = 64, .max = GIB(1), .doc = "larger request bodies get 413"},
    {.name = "http.max_batch", .type = T_INT, FIELD(http.max_batch),
     .def = "1024",
     .min = 1, .max = 1u << 20, .doc = "instances in one request"},
    {.name = "http.max_connections", .type = T_INT, FIELD(http.max_connections),
     .def = "1024",
     .min = 1, .max = 1u << 20, .doc = "concurrent connections"},
    {.name = "http.connection_timeout", .type = T_DURATION, FIELD(http.connection_timeout_ms),
     .def = "30s",
     .min = SEC(1), .max = HOUR(24), .doc = "an idle or slow connection is closed after this"},
};
#define NKEYS (sizeof config_keys / sizeof config_keys[0])

/* The keys of one entry of `features`.  name and type are required. */
static const struct key feature_keys[] = {
    {.name = "name", .type = T_STRING, FFIELD(name), .flags = K_NONEMPTY,
     .doc = "column / JSON key"},
    {.name = "type", .type = T_ENUM, FFIELD(type), .names = feature_type_names,
     .doc = "numeric | categorical | boolean"},
    {.name = "transform", .type = T_ENUM, FFIELD(transform), .names = transform_names,
     .doc = "numeric only: none | log1p"},
    {.name = "buckets", .type = T_INT, FFIELD(buckets), .min = 1, .max = CONFIG_MAX_BUCKETS,
     .doc = "categorical only: hashed one-hot slots"},
};
// clang-format on
#define NFEATURE_KEYS           (sizeof feature_keys / sizeof feature_keys[0])
#define FEATURE_DEFAULT_BUCKETS 16

/* ---------------------------------------------------------------------------------------- */
/* Memory */

static void free_features(struct config_feature *f, size_t n)
{
    for (size_t i = 0; i < n; i++) free(f[i].name);
    free(f);
}

static void free_properties(struct config_property *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].key);
        free(p[i].value);
    }
    free(p);
}

static void *field(void *base, const struct key *k)
{
    return (char *)base + k->offset;
}

static const void *cfield(const void *base, const struct key *k)
{
    return (const char *)base + k->offset;
}

static size_t *count_field(void *base, const struct key *k)
{
    return (size_t *)((char *)base + k->count_offset);
}

static size_t ccount(const void *base, const struct key *k)
{
    return *(const size_t *)((const char *)base + k->count_offset);
}

/* Frees what cfg owns (table-driven) without freeing cfg itself. */
static void config_release(struct config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &config_keys[i];
        void *f = field(cfg, k);
        if (k->type == T_STRING) {
            free(*(char **)f);
            *(char **)f = NULL;
        } else if (k->type == T_FEATURES) {
            free_features(*(struct config_feature **)f, *count_field(cfg, k));
            *(struct config_feature **)f = NULL;
            *count_field(cfg, k) = 0;
        } else if (k->type == T_PROPERTIES) {
            free_properties(*(struct config_property **)f, *count_field(cfg, k));
            *(struct config_property **)f = NULL;
            *count_field(cfg, k) = 0;
        }
    }
    free(cfg->path);
    cfg->path = NULL;
}

struct config *config_free(struct config *cfg)
{
    if (!cfg) return NULL;
    config_release(cfg);
    free(cfg);
    return NULL;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

struct config *config_dup(const struct config *src)
{
    struct config *cfg = malloc(sizeof *cfg);
    if (!cfg) return NULL;
    memcpy(cfg, src, sizeof *cfg);
    bool oom = false;
    /* first make every owned pointer NULL, so a failure half-way frees only copies */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &config_keys[i];
        if (k->type == T_STRING || k->type == T_FEATURES || k->type == T_PROPERTIES)
            *(void **)field(cfg, k) = NULL;
        if (k->type == T_FEATURES || k->type == T_PROPERTIES) *count_field(cfg, k) = 0;
    }
    cfg->path = dup_or_null(src->path, &oom);
    for (size_t i = 0; i < NKEYS && !oom; i++) {
        const struct key *k = &config_keys[i];
        const void *from = cfield(src, k);
        void *to = field(cfg, k);
        size_t n = ccount(src, k);
        if (k->type == T_STRING) {
            *(char **)to = dup_or_null(*(char *const *)from, &oom);
        } else if (k->type == T_FEATURES) {
            const struct config_feature *sf = *(struct config_feature *const *)from;
            struct config_feature *df = n ? calloc(n, sizeof *df) : NULL;
            if (n && !df) {
                oom = true;
                break;
            }
            for (size_t j = 0; j < n; j++) {
                df[j] = sf[j];
                df[j].name = dup_or_null(sf[j].name, &oom);
            }
            *(struct config_feature **)to = df;
            *count_field(cfg, k) = n;
        } else if (k->type == T_PROPERTIES) {
            const struct config_property *sp = *(struct config_property *const *)from;
            struct config_property *dp = n ? calloc(n, sizeof *dp) : NULL;
            if (n && !dp) {
                oom = true;
                break;
            }
            for (size_t j = 0; j < n; j++) {
                dp[j].key = dup_or_null(sp[j].key, &oom);
                dp[j].value = dup_or_null(sp[j].value, &oom);
            }
            *(struct config_property **)to = dp;
            *count_field(cfg, k) = n;
        }
    }
    if (oom) return config_free(cfg);
    return cfg;
}

/* ---------------------------------------------------------------------------------------- */
/* Durations and sizes */

int config_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !isdigit((unsigned char)*s)) return -EINVAL;
    uint64_t n = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (UINT64_MAX - 9) / 10) return -ERANGE;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    uint64_t unit;
    if (strcmp(p, "ms") == 0)
        unit = 1;
    else if (strcmp(p, "s") == 0)
        unit = 1000;
    else if (strcmp(p, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(p, "h") == 0)
        unit = 3600 * 1000;
    else if (*p == '\0' && n == 0)
        unit = 1; /* a bare 0 needs no unit; any other bare number is ambiguous */
    else
        return -EINVAL;
    if (n > UINT64_MAX / unit) return -ERANGE;
    *ms = n * unit;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    if (!s || !isdigit((unsigned char)*s)) return -EINVAL;
    uint64_t n = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p); p++) {
        if (n > (UINT64_MAX - 9) / 10) return -ERANGE;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    unsigned shift;
    if (*p == '\0' || strcmp(p, "B") == 0)
        shift = 0;
    else if (strcmp(p, "KiB") == 0)
        shift = 10;
    else if (strcmp(p, "MiB") == 0)
        shift = 20;
    else if (strcmp(p, "GiB") == 0)
        shift = 30;
    else if (strcmp(p, "TiB") == 0)
        shift = 40;
    else
        return -EINVAL;
    if (n > (UINT64_MAX >> shift)) return -ERANGE;
    *bytes = n << shift;
    return 0;
}

/* The shortest exact spelling: 1800000 → "30m", 1500 → "1500ms", 0 → "0". */
static void format_duration(char *buf, size_t len, uint64_t ms)
{
    if (ms == 0)
        snprintf(buf, len, "0");
    else if (ms % HOUR(1) == 0)
        snprintf(buf, len, "%" PRIu64 "h", ms / HOUR(1));
    else if (ms % MIN(1) == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / MIN(1));
    else if (ms % SEC(1) == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / SEC(1));
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
}

static void format_size(char *buf, size_t len, uint64_t b)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 4; i++) {
        unsigned shift = (unsigned)(40 - 10 * i);
        if (b && b % ((uint64_t)1 << shift) == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", b >> shift, units[i]);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64, b);
}

/* The shortest spelling that strtod reads back as the same double, with a ".0" when it
 * would otherwise read like an integer (a reader then sees which keys take fractions). */
static void format_double(char *buf, size_t len, double v)
{
    /* %g drops trailing zeros, so 15 digits print 0.1 as "0.1" and 10 as "10" (not 1e+01) */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".e")) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, ".0");
    }
}

static void format_bounds(char *buf, size_t len, const struct key *k)
{
    char a[32], b[32];
    switch (k->type) {
    case T_DURATION:
        format_duration(a, sizeof a, k->min);
        format_duration(b, sizeof b, k->max);
        snprintf(buf, len, "a duration in [%s, %s]", a, b);
        break;
    case T_SIZE:
        format_size(a, sizeof a, k->min);
        format_size(b, sizeof b, k->max);
        snprintf(buf, len, "a size in [%s, %s]", a, b);
        break;
    case T_DOUBLE:
        format_double(a, sizeof a, k->dmin);
        format_double(b, sizeof b, k->dmax);
        snprintf(buf, len, "a number in %c%s, %s%c", k->flags & K_DMIN_OPEN ? '(' : '[', a, b,
                 k->flags & K_DMAX_OPEN ? ')' : ']');
        break;
    default:
        snprintf(buf, len, "an integer in [%" PRIu64 ", %" PRIu64 "]", k->min, k->max);
        break;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing */

struct parse {
    const char *name; /* file name for messages */
    yaml_document_t *doc;
    char *err;
    size_t errlen;
};

/* Writes "NAME:LINE:COL: message" (1-based) and returns -EINVAL. */
__attribute__((format(printf, 3, 4))) static int fail_at(struct parse *p, yaml_mark_t m,
                                                         const char *fmt, ...)
{
    if (p->err && p->errlen) {
        int n = snprintf(p->err, p->errlen, "%s:%zu:%zu: ", p->name, m.line + 1, m.column + 1);
        if (n >= 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -EINVAL;
}

static yaml_node_t *node(struct parse *p, int id)
{
    return yaml_document_get_node(p->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* A plain ~, null or empty value: YAML's null. */
static bool is_null(const yaml_node_t *n)
{
    if (!is_plain(n)) return false;
    const char *s = scalar(n);
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static const char *kind(const yaml_node_t *n)
{
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (is_null(n)) return "nothing (null)";
    return is_plain(n) ? "a scalar" : "a quoted string";
}

/* A short, printable quote of a scalar for messages. */
static const char *shown(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type != YAML_SCALAR_NODE) return kind(n);
    const char *s = scalar(n);
    size_t j = 0, i = 0;
    buf[j++] = '\'';
    for (; s[i] && j + 6 < len; i++) buf[j++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    if (s[i]) j += (size_t)snprintf(buf + j, len - j, "...");
    buf[j++] = '\'';
    buf[j] = '\0';
    return buf;
}

/* A scalar (not a list or map) whose text has no NUL bytes. */
static int want_scalar(struct parse *p, const char *key, const yaml_node_t *n, const char *what)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail_at(p, n->start_mark, "%s: expected %s, got %s", key, what, kind(n));
    if (strlen(scalar(n)) != n->data.scalar.length)
        return fail_at(p, n->start_mark, "%s: expected %s, got a string with a NUL byte", key,
                       what);
    return 0;
}

static int parse_uint(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                      uint64_t *out)
{
    char bounds[96], q[64];
    format_bounds(bounds, sizeof bounds, k);
    int rc = want_scalar(p, key, n, bounds);
    if (rc) return rc;
    const char *s = scalar(n);
    if (!is_plain(n))
        return fail_at(p, n->start_mark, "%s: expected %s, got a quoted string", key, bounds);
    const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
    bool digits = *d != '\0';
    for (const char *c = d; *c; c++)
        if (!isdigit((unsigned char)*c)) digits = false;
    if (!digits)
        return fail_at(p, n->start_mark, "%s: expected %s, got %s", key, bounds,
                       shown(n, q, sizeof q));
    errno = 0;
    uint64_t v = strtoull(d, NULL, 10);
    bool zero = strspn(d, "0") == strlen(d);
    if (errno == ERANGE || (*s == '-' && !zero) || v < k->min || v > k->max)
        return fail_at(p, n->start_mark, "%s: %s is out of range, expected %s", key, s, bounds);
    *out = v;
    return 0;
}

static int parse_double(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                        double *out)
{
    char bounds[96], q[64];
    format_bounds(bounds, sizeof bounds, k);
    int rc = want_scalar(p, key, n, bounds);
    if (rc) return rc;
    const char *s = scalar(n);
    if (!is_plain(n))
        return fail_at(p, n->start_mark, "%s: expected %s, got a quoted string", key, bounds);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* strtod also reads hex, inf and nan, none of which belongs in a configuration */
    if (!*s || *end || s[strspn(s, "0123456789+-.eE")] || !isfinite(v))
        return fail_at(p, n->start_mark, "%s: expected %s, got %s", key, bounds,
                       shown(n, q, sizeof q));
    bool low = (k->flags & K_DMIN_OPEN) ? !(v > k->dmin) : !(v >= k->dmin);
    bool high = (k->flags & K_DMAX_OPEN) ? !(v < k->dmax) : !(v <= k->dmax);
    if (low || high)
        return fail_at(p, n->start_mark, "%s: %s is out of range, expected %s", key, s, bounds);
    *out = v;
    return 0;
}

static int parse_enum(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                      int *out)
{
    char expected[160] = "", q[64];
    for (size_t i = 0; k->names[i]; i++) {
        size_t len = strlen(expected);
        snprintf(expected + len, sizeof expected - len, "%s%s", i ? " | " : "", k->names[i]);
    }
    int rc = want_scalar(p, key, n, expected);
    if (rc) return rc;
    for (int i = 0; k->names[i]; i++)
        if (strcmp(scalar(n), k->names[i]) == 0) {
            *out = i;
            return 0;
        }
    return fail_at(p, n->start_mark, "%s: unknown value %s, expected %s", key,
                   shown(n, q, sizeof q), expected);
}

/* Replaces *slot with a copy of the node's text. */
static int parse_string(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                        char **slot)
{
    int rc = want_scalar(p, key, n, "a string");
    if (rc) return rc;
    if (is_null(n) && !(k->flags & K_NONEMPTY))
        return fail_at(p, n->start_mark,
                       "%s: expected a string, got nothing (write \"\" for "
                       "an empty one)",
                       key);
    if ((k->flags & K_NONEMPTY) && (is_null(n) || !*scalar(n)))
        return fail_at(p, n->start_mark, "%s: expected a non-empty string", key);
    const char *why = k->check ? k->check(scalar(n)) : NULL;
    if (why) return fail_at(p, n->start_mark, "%s: expected %s, got '%s'", key, why, scalar(n));
    char *s = strdup(scalar(n));
    if (!s) return -ENOMEM;
    free(*slot);
    *slot = s;
    return 0;
}

static const char *check_listen(const char *value)
{
    const char *colon = strrchr(value, ':');
    static const char *const what = "HOST:PORT with a port in [0, 65535]";
    if (!colon || colon == value || !colon[1] || strlen(colon + 1) > 5) return what;
    for (const char *c = colon + 1; *c; c++)
        if (!isdigit((unsigned char)*c)) return what;
    if (atoi(colon + 1) > 65535) return what;
    return NULL;
}

static int parse_uintlist(struct parse *p, const char *key, const struct key *k,
                          const yaml_node_t *n, void *base)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_at(p, n->start_mark, "%s: expected a list of integers like [64, 32], got %s",
                       key, kind(n));
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > k->max_items)
        return fail_at(p, n->start_mark, "%s: at most %zu items, got %zu", key, k->max_items,
                       count);
    uint32_t items[64];
    for (size_t i = 0; i < count; i++) {
        uint64_t v;
        char ikey[128];
        snprintf(ikey, sizeof ikey, "%s[%zu]", key, i);
        int rc = parse_uint(p, ikey, k, node(p, n->data.sequence.items.start[i]), &v);
        if (rc) return rc;
        items[i] = (uint32_t)v;
    }
    memcpy(field(base, k), items, count * sizeof items[0]);
    *count_field(base, k) = count;
    return 0;
}

/* Checks a mapping's keys: plain scalars, none twice.  Returns 0 or an error. */
static int check_mapping_keys(struct parse *p, const char *prefix, const yaml_node_t *map)
{
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++) {
        yaml_node_t *ka = node(p, a->key);
        if (ka->type != YAML_SCALAR_NODE || is_null(ka))
            return fail_at(p, ka->start_mark, "%s%skeys must be names, got %s",
                           prefix ? prefix : "", prefix ? ": " : "", kind(ka));
        for (yaml_node_pair_t *b = map->data.mapping.pairs.start; b < a; b++) {
            yaml_node_t *kb = node(p, b->key);
            if (strcmp(scalar(ka), scalar(kb)) == 0)
                return fail_at(p, ka->start_mark, "duplicate key '%s%s%s' (first on line %zu)",
                               prefix ? prefix : "", prefix ? "." : "", scalar(ka),
                               kb->start_mark.line + 1);
        }
    }
    return 0;
}

static bool secret_key(const char *key)
{
    return strcasestr(key, "password") || strcasestr(key, "secret") || strcasestr(key, "key");
}

static int parse_properties(struct parse *p, const char *key, const struct key *k,
                            const yaml_node_t *n, void *base)
{
    if (is_null(n)) n = NULL; /* "properties:" with nothing under it: none */
    if (n && n->type != YAML_MAPPING_NODE)
        return fail_at(p, n->start_mark,
                       "%s: expected a mapping of librdkafka settings (name: value), got %s", key,
                       kind(n));
    size_t count = n ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) : 0;
    if (count > CONFIG_MAX_PROPERTIES)
        return fail_at(p, n->start_mark, "%s: at most %d entries", key, CONFIG_MAX_PROPERTIES);
    int rc = n ? check_mapping_keys(p, key, n) : 0;
    if (rc) return rc;
    struct config_property *props = count ? calloc(count, sizeof *props) : NULL;
    if (count && !props) return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        yaml_node_pair_t *pair = &n->data.mapping.pairs.start[i];
        yaml_node_t *kn = node(p, pair->key), *vn = node(p, pair->value);
        char pkey[256];
        snprintf(pkey, sizeof pkey, "%s.%s", key, scalar(kn));
        rc = want_scalar(p, pkey, kn, "a name");
        if (!rc) rc = want_scalar(p, pkey, vn, "a string value");
        if (!rc && is_null(vn))
            rc = fail_at(p, vn->start_mark, "%s: expected a value, got nothing", pkey);
        if (rc) {
            free_properties(props, count);
            return rc;
        }
        props[i].key = strdup(scalar(kn));
        props[i].value = strdup(scalar(vn));
        if (!props[i].key || !props[i].value) {
            free_properties(props, count);
            return -ENOMEM;
        }
    }
    struct config_property **slot = field(base, k);
    free_properties(*slot, *count_field(base, k));
    *slot = props;
    *count_field(base, k) = count;
    return 0;
}

static int apply(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                 void *base);

static const struct key *find_key(const struct key *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0) return &table[i];
    return NULL;
}

static size_t edit_distance(const char *a, const char *b);

static int unknown_feature_key(struct parse *p, const yaml_node_t *kn, const char *full)
{
    for (size_t i = 0; i < NFEATURE_KEYS; i++)
        if (edit_distance(scalar(kn), feature_keys[i].name) <= 2)
            return fail_at(p, kn->start_mark, "unknown key '%s' in a feature (did you mean '%s'?)",
                           full, feature_keys[i].name);
    return fail_at(p, kn->start_mark,
                   "unknown key '%s' in a feature (expected name, type, transform, buckets)", full);
}

static int parse_features(struct parse *p, const char *key, const struct key *k,
                          const yaml_node_t *n, void *base)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_at(p, n->start_mark, "%s: expected a list of {name, type, ...} maps, got %s",
                       key, kind(n));
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0)
        return fail_at(p, n->start_mark,
                       "%s: the list is empty, the model needs at least one "
                       "feature",
                       key);
    if (count > CONFIG_MAX_FEATURES)
        return fail_at(p, n->start_mark, "%s: at most %d features, got %zu", key,
                       CONFIG_MAX_FEATURES, count);
    struct config_feature *fs = calloc(count, sizeof *fs);
    if (!fs) return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        yaml_node_t *m = node(p, n->data.sequence.items.start[i]);
        char fkey[96];
        snprintf(fkey, sizeof fkey, "%s[%zu]", key, i);
        if (m->type != YAML_MAPPING_NODE) {
            rc = fail_at(p, m->start_mark,
                         "%s: expected a map like {name: PageValues, type: numeric}, got %s", fkey,
                         kind(m));
            break;
        }
        if ((rc = check_mapping_keys(p, fkey, m))) break;
        struct config_feature *f = &fs[i];
        f->transform = TRANSFORM_NONE;
        f->buckets = 0;
        yaml_mark_t transform_mark = m->start_mark, buckets_mark = m->start_mark;
        bool has_type = false, has_transform = false, has_buckets = false;
        for (yaml_node_pair_t *pr = m->data.mapping.pairs.start;
             pr < m->data.mapping.pairs.top && !rc; pr++) {
            yaml_node_t *kn = node(p, pr->key), *vn = node(p, pr->value);
            const struct key *fk = find_key(feature_keys, NFEATURE_KEYS, scalar(kn));
            char subkey[160];
            snprintf(subkey, sizeof subkey, "%s.%s", fkey, scalar(kn));
            if (!fk) {
                rc = unknown_feature_key(p, kn, subkey);
                break;
            }
            if (strcmp(fk->name, "type") == 0) has_type = true;
            if (strcmp(fk->name, "transform") == 0) {
                has_transform = true;
                transform_mark = kn->start_mark;
            }
            if (strcmp(fk->name, "buckets") == 0) {
                has_buckets = true;
                buckets_mark = kn->start_mark;
            }
            rc = apply(p, subkey, fk, vn, f);
        }
        if (rc) break;
        if (!f->name) {
            rc = fail_at(p, m->start_mark, "%s: a feature needs a name", fkey);
        } else if (!has_type) {
            rc = fail_at(p, m->start_mark,
                         "%s (%s): a feature needs a type: numeric | "
                         "categorical | boolean",
                         fkey, f->name);
        } else if (has_buckets && f->type != FEATURE_CATEGORICAL) {
            rc = fail_at(p, buckets_mark,
                         "%s.buckets (%s): only a categorical feature has "
                         "buckets, this one is %s",
                         fkey, f->name, feature_type_names[f->type]);
        } else if (has_transform && f->type != FEATURE_NUMERIC) {
            rc = fail_at(p, transform_mark,
                         "%s.transform (%s): only a numeric feature has a "
                         "transform, this one is %s",
                         fkey, f->name, feature_type_names[f->type]);
        }
        if (rc) break;
        if (f->type == FEATURE_CATEGORICAL && !has_buckets) f->buckets = FEATURE_DEFAULT_BUCKETS;
        for (size_t j = 0; j < i; j++)
            if (strcmp(fs[j].name, f->name) == 0) {
                rc = fail_at(p, m->start_mark, "%s: duplicate feature name '%s' (also %s[%zu])",
                             fkey, f->name, key, j);
                break;
            }
    }
    if (rc) {
        free_features(fs, count);
        return rc;
    }
    struct config_feature **slot = field(base, k);
    free_features(*slot, *count_field(base, k));
    *slot = fs;
    *count_field(base, k) = count;
    return 0;
}

static int apply(struct parse *p, const char *key, const struct key *k, const yaml_node_t *n,
                 void *base)
{
    void *f = field(base, k);
    uint64_t u = 0;
    double d = 0;
    int e = 0, rc;
    char q[64];
    switch (k->type) {
    case T_STRING:
        return parse_string(p, key, k, n, (char **)f);
    case T_ENUM:
        if ((rc = parse_enum(p, key, k, n, &e))) return rc;
        *(int *)f = e;
        return 0;
    case T_BOOL:
        if ((rc = want_scalar(p, key, n, "true or false"))) return rc;
        if (is_plain(n) && (strcasecmp(scalar(n), "true") == 0)) {
            *(int *)f = 1;
        } else if (is_plain(n) && strcasecmp(scalar(n), "false") == 0) {
            *(int *)f = 0;
        } else {
            return fail_at(p, n->start_mark, "%s: expected true or false, got %s", key,
                           shown(n, q, sizeof q));
        }
        return 0;
    case T_INT:
        if ((rc = parse_uint(p, key, k, n, &u))) return rc;
        if (k->size == sizeof(uint32_t))
            *(uint32_t *)f = (uint32_t)u;
        else
            *(uint64_t *)f = u;
        return 0;
    case T_DOUBLE:
        if ((rc = parse_double(p, key, k, n, &d))) return rc;
        *(double *)f = d;
        return 0;
    case T_DURATION:
    case T_SIZE: {
        bool dur = k->type == T_DURATION;
        const char *syntax = dur ? "a duration like 250ms, 10s, 30m, 2h (or 0)"
                                 : "a size like 64KiB, 8MiB, 1GiB or a number of bytes";
        if ((rc = want_scalar(p, key, n, syntax))) return rc;
        rc = dur ? config_parse_duration(scalar(n), &u) : config_parse_size(scalar(n), &u);
        if (rc == -EINVAL)
            return fail_at(p, n->start_mark, "%s: invalid %s %s, expected %s", key,
                           dur ? "duration" : "size", shown(n, q, sizeof q), syntax);
        if (rc || u < k->min || u > k->max) {
            char bounds[96];
            format_bounds(bounds, sizeof bounds, k);
            return fail_at(p, n->start_mark, "%s: %s is out of range, expected %s", key, scalar(n),
                           bounds);
        }
        *(uint64_t *)f = u;
        return 0;
    }
    case T_UINTLIST:
        return parse_uintlist(p, key, k, n, base);
    case T_FEATURES:
        return parse_features(p, key, k, n, base);
    case T_PROPERTIES:
        return parse_properties(p, key, k, n, base);
    }
    return -EINVAL;
}

/* Levenshtein distance, for "did you mean"; short strings only. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The key of the table closest to name: a small typo, or the right key in another section. */
static const char *suggest(const char *name)
{
    const char *best = NULL;
    size_t bestd = 3;
    for (size_t i = 0; i < NKEYS; i++) {
        size_t d = edit_distance(name, config_keys[i].name);
        if (d < bestd) {
            bestd = d;
            best = config_keys[i].name;
        }
    }
    if (best) return best;
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    for (size_t i = 0; i < NKEYS; i++) {
        const char *l = strrchr(config_keys[i].name, '.');
        if (l && strcmp(l + 1, last) == 0) return config_keys[i].name;
    }
    return NULL;
}

static bool is_section(const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(config_keys[i].name, name, len) == 0 && config_keys[i].name[len] == '.')
            return true;
    return false;
}

static int unknown_key(struct parse *p, const yaml_node_t *kn, const char *full)
{
    const char *s = suggest(full);
    if (s) return fail_at(p, kn->start_mark, "unknown key '%s' (did you mean '%s'?)", full, s);
    return fail_at(p, kn->start_mark, "unknown key '%s'", full);
}

static int apply_root(struct parse *p, const yaml_node_t *root, struct config *cfg)
{
    if (is_null(root)) return 0;
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(p, root->start_mark,
                       "expected a mapping of settings (key: value) at the top, got %s",
                       kind(root));
    int rc = check_mapping_keys(p, NULL, root);
    if (rc) return rc;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = node(p, pr->key), *vn = node(p, pr->value);
        const char *name = scalar(kn);
        const struct key *k = find_key(config_keys, NKEYS, name);
        if (k) {
            if ((rc = apply(p, name, k, vn, cfg))) return rc;
            continue;
        }
        if (!is_section(name)) return unknown_key(p, kn, name);
        if (is_null(vn)) continue; /* a section with every key commented out */
        if (vn->type != YAML_MAPPING_NODE)
            return fail_at(p, vn->start_mark, "%s: expected a mapping of %s.* settings, got %s",
                           name, name, kind(vn));
        if ((rc = check_mapping_keys(p, name, vn))) return rc;
        for (yaml_node_pair_t *sp = vn->data.mapping.pairs.start; sp < vn->data.mapping.pairs.top;
             sp++) {
            yaml_node_t *skn = node(p, sp->key), *svn = node(p, sp->value);
            char full[256];
            snprintf(full, sizeof full, "%s.%s", name, scalar(skn));
            const struct key *sk = find_key(config_keys, NKEYS, full);
            if (!sk) return unknown_key(p, skn, full);
            if ((rc = apply(p, full, sk, svn, cfg))) return rc;
        }
    }
    return 0;
}

/* Parses len bytes of YAML into cfg (which the caller throws away on error). */
static int parse_into(struct config *cfg, const char *yaml, size_t len, const char *name, char *err,
                      size_t errlen)
{
    struct parse p = {.name = name, .err = err, .errlen = errlen};
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        if (parser.error == YAML_MEMORY_ERROR) {
            rc = -ENOMEM;
        } else {
            rc = fail_at(&p, parser.problem_mark, "malformed YAML: %s%s%s",
                         parser.problem ? parser.problem : "syntax error",
                         parser.context ? " " : "", parser.context ? parser.context : "");
        }
        yaml_parser_delete(&parser);
        return rc;
    }
    p.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) rc = apply_root(&p, root, cfg);
    if (rc == 0 && root) {
        /* a second document would be ignored silently by a naive reader: refuse it */
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            rc = fail_at(&p, parser.problem_mark, "malformed YAML: %s%s%s",
                         parser.problem ? parser.problem : "syntax error",
                         parser.context ? " " : "", parser.context ? parser.context : "");
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2)
                rc = fail_at(&p, next.start_mark,
                             "only one YAML document is allowed, found a second one");
            yaml_document_delete(&next);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Public: new, load */

struct config *config_new(void)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    /* each default is parsed by the same code as a file: a default outside its own bounds
     * cannot slip through (and config_new fails, which the unit tests catch) */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &config_keys[i];
        /* the default is a YAML node on its own: "[64, 32]", "30m", "{}" */
        struct parse p = {.name = "(default)"};
        yaml_parser_t parser;
        yaml_document_t d;
        if (!yaml_parser_initialize(&parser)) return config_free(cfg);
        yaml_parser_set_input_string(&parser, (const unsigned char *)k->def, strlen(k->def));
        int rc = -EINVAL;
        if (yaml_parser_load(&parser, &d)) {
            p.doc = &d;
            yaml_node_t *root = yaml_document_get_root_node(&d);
            if (root) rc = apply(&p, k->name, k, root, cfg);
            yaml_document_delete(&d);
        }
        yaml_parser_delete(&parser);
        if (rc) return config_free(cfg);
    }
    return cfg;
}

int config_load_string(struct config *cfg, const char *yaml, const char *name, char *err,
                       size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    struct config *copy = config_dup(cfg);
    if (!copy) return -ENOMEM;
    int rc = parse_into(copy, yaml, strlen(yaml), name ? name : "(string)", err, errlen);
    if (rc == -ENOMEM && err && errlen) snprintf(err, errlen, "%s: out of memory", name);
    if (rc) {
        config_free(copy);
        return rc;
    }
    /* swap: cfg takes the copy's contents; the old contents are freed with the shell */
    struct config old = *cfg;
    *cfg = *copy;
    *copy = old;
    config_free(copy);
    return 0;
}

/* Reads a whole file; errors name the file with position 1:1 so every message has the one
 * FILE:LINE:COL shape scripts and editors understand. */
static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s:1:1: cannot open the configuration file: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
        snprintf(err, errlen, "%s:1:1: cannot read the configuration file: %s%s", path, strerror(e),
                 e == EISDIR ? " (expected a YAML file)" : "");
        close(fd);
        return -e;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE_BYTES) {
                snprintf(err, errlen, "%s:1:1: the configuration file is larger than %u bytes",
                         path, CONFIG_MAX_FILE_BYTES);
                free(buf);
                close(fd);
                return -EFBIG;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            snprintf(err, errlen, "%s:1:1: cannot read the configuration file: %s", path,
                     strerror(e));
            free(buf);
            close(fd);
            return -e;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(path, &text, &len, err, errlen);
    if (rc) return rc;
    if (strlen(text) != len) {
        /* libyaml would stop at a NUL without complaint */
        size_t off = strlen(text), line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        snprintf(err, errlen, "%s:%zu:%zu: malformed YAML: a NUL byte in the file", path, line,
                 col);
        free(text);
        return -EINVAL;
    }
    struct config *copy = config_dup(cfg);
    char *p = strdup(path);
    if (!copy || !p) {
        free(text);
        free(p);
        config_free(copy);
        return -ENOMEM;
    }
    rc = parse_into(copy, text, len, path, err, errlen);
    free(text);
    if (rc) {
        if (rc == -ENOMEM) snprintf(err, errlen, "%s:1:1: out of memory", path);
        free(p);
        config_free(copy);
        return rc;
    }
    free(copy->path);
    copy->path = p;
    struct config old = *cfg;
    *cfg = *copy;
    *copy = old;
    config_free(copy);
    return 0;
}

int config_feature_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nfeatures; i++)
        if (strcmp(cfg->features[i].name, name) == 0) return (int)i;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Printing */

/* Whether s can be written as a plain YAML scalar and read back as the same string. */
static bool plain_ok(const char *s, bool flow)
{
    static const char *const reserved[] = {"null", "~",   "true", "false", "yes", "no",
                                           "on",   "off", "y",    "n",     NULL};
    if (!*s) return false;
    if (!isalnum((unsigned char)*s) && *s != '/' && *s != '_' && *s != '.') return false;
    for (const char *c = s; *c; c++) {
        if (isalnum((unsigned char)*c) || strchr("_./@+-", *c)) continue;
        /* ':' and ',' stay plain in block context unless a ':' ends the scalar (no space
         * can follow one here: spaces are not plain-safe) */
        if (!flow && (*c == ',' || (*c == ':' && c[1]))) continue;
        return false;
    }
    for (int i = 0; reserved[i]; i++)
        if (strcasecmp(s, reserved[i]) == 0) return false;
    return true;
}

static void put_string(FILE *out, const char *s, bool flow)
{
    if (plain_ok(s, flow)) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", out);
        else if (*c == '\t')
            fputs("\\t", out);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\x%02x", *c);
        else
            fputc(*c, out);
    }
    fputc('"', out);
}

static void put_feature(FILE *out, const struct config_feature *f)
{
    fputs("{name: ", out);
    put_string(out, f->name, true);
    fprintf(out, ", type: %s", feature_type_names[f->type]);
    if (f->type == FEATURE_NUMERIC) fprintf(out, ", transform: %s", transform_names[f->transform]);
    if (f->type == FEATURE_CATEGORICAL) fprintf(out, ", buckets: %" PRIu32, f->buckets);
    fputc('}', out);
}

/* Writes the value of a scalar-like key (everything but features and a non-empty properties
 * map in block style).  flow: features and properties as one flow node (for config_diff). */
static void put_value(FILE *out, const struct key *k, const void *base, bool redact)
{
    const void *f = cfield(base, k);
    char buf[64];
    switch (k->type) {
    case T_STRING:
        put_string(out, *(char *const *)f ? *(char *const *)f : "", false);
        break;
    case T_ENUM:
        fputs(k->names[*(const int *)f], out);
        break;
    case T_BOOL:
        fputs(*(const int *)f ? "true" : "false", out);
        break;
    case T_INT:
        fprintf(out, "%" PRIu64,
                k->size == sizeof(uint32_t) ? (uint64_t) * (const uint32_t *)f
                                            : *(const uint64_t *)f);
        break;
    case T_DOUBLE:
        format_double(buf, sizeof buf, *(const double *)f);
        fputs(buf, out);
        break;
    case T_DURATION:
        format_duration(buf, sizeof buf, *(const uint64_t *)f);
        fputs(buf, out);
        break;
    case T_SIZE:
        format_size(buf, sizeof buf, *(const uint64_t *)f);
        fputs(buf, out);
        break;
    case T_UINTLIST: {
        const uint32_t *items = f;
        fputc('[', out);
        for (size_t i = 0; i < ccount(base, k); i++)
            fprintf(out, "%s%" PRIu32, i ? ", " : "", items[i]);
        fputc(']', out);
        break;
    }
    case T_FEATURES: {
        const struct config_feature *fs = *(struct config_feature *const *)f;
        fputc('[', out);
        for (size_t i = 0; i < ccount(base, k); i++) {
            if (i) fputs(", ", out);
            put_feature(out, &fs[i]);
        }
        fputc(']', out);
        break;
    }
    case T_PROPERTIES: {
        const struct config_property *ps = *(struct config_property *const *)f;
        fputc('{', out);
        for (size_t i = 0; i < ccount(base, k); i++) {
            fputs(i ? ", " : "", out);
            put_string(out, ps[i].key, true);
            fputs(": ", out);
            if (redact && secret_key(ps[i].key))
                fputs("<redacted>", out);
            else
                put_string(out, ps[i].value, true);
        }
        fputc('}', out);
        break;
    }
    }
}

/* Each key's doc goes on the line above it, so that every "key: value" line is exactly that
 * and scripts can read a value with sed (tests/run-dev.sh does). */
static void put_doc(FILE *out, const char *indent, const struct key *k)
{
    fprintf(out, "%s# %s%s\n", indent, (k->flags & K_RELOAD) ? "(live) " : "", k->doc);
}

int config_print(const struct config *cfg, FILE *out)
{
    /* built in memory and written at once: a reader never sees half a configuration */
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) return -errno;
    fputs("# intentd: the effective configuration, every default filled in.\n"
          "# (live) keys take effect on SIGHUP; the others need a restart.\n",
          m);
    const char *section = NULL;
    size_t seclen = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &config_keys[i];
        const char *dot = strchr(k->name, '.');
        const char *leaf = k->name;
        if (dot) {
            size_t sl = (size_t)(dot - k->name);
            if (!section || sl != seclen || strncmp(section, k->name, sl) != 0) {
                fprintf(m, "%.*s:\n", (int)sl, k->name);
                section = k->name;
                seclen = sl;
            }
            leaf = dot + 1;
        } else {
            section = NULL;
        }
        const char *indent = dot ? "  " : "";
        put_doc(m, indent, k);
        if (k->type == T_FEATURES) {
            fprintf(m, "%s%s:\n", indent, leaf);
            for (size_t j = 0; j < cfg->nfeatures; j++) {
                fprintf(m, "%s  - ", indent);
                put_feature(m, &cfg->features[j]);
                fputc('\n', m);
            }
        } else if (k->type == T_PROPERTIES && ccount(cfg, k) > 0) {
            fprintf(m, "%s%s:\n", indent, leaf);
            const struct config_property *ps = *(struct config_property *const *)cfield(cfg, k);
            for (size_t j = 0; j < ccount(cfg, k); j++) {
                fprintf(m, "%s  ", indent);
                put_string(m, ps[j].key, true);
                fputs(": ", m);
                if (secret_key(ps[j].key))
                    fputs("<redacted>", m);
                else
                    put_string(m, ps[j].value, false);
                fputc('\n', m);
            }
        } else {
            fprintf(m, "%s%s: ", indent, leaf);
            put_value(m, k, cfg, true);
            fputc('\n', m);
        }
    }
    if (fclose(m) != 0) {
        free(text);
        return -ENOMEM;
    }
    size_t w = fwrite(text, 1, len, out);
    free(text);
    if (w != len || fflush(out) != 0) return -EIO;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Comparing */

static char *render(const struct key *k, const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) return NULL;
    put_value(m, k, cfg, false); /* a changed secret is a change too */
    if (fclose(m) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

int config_diff(const struct config *a, const struct config *b, char *out, size_t outlen)
{
    char live[2048] = "", restart[2048] = "";
    int nrestart = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &config_keys[i];
        char *va = render(k, a), *vb = render(k, b);
        if (!va || !vb) {
            free(va);
            free(vb);
            return -ENOMEM;
        }
        bool changed = strcmp(va, vb) != 0;
        free(va);
        free(vb);
        if (!changed) continue;
        char *list = (k->flags & K_RELOAD) ? live : restart;
        size_t used = strlen(list);
        snprintf(list + used, sizeof live - used, "%s%s", used ? ", " : "", k->name);
        if (!(k->flags & K_RELOAD)) nrestart++;
    }
    if (out && outlen) {
        out[0] = '\0';
        if (*live && *restart)
            snprintf(out, outlen, "changed: %s; need a restart: %s", live, restart);
        else if (*live)
            snprintf(out, outlen, "changed: %s", live);
        else if (*restart)
            snprintf(out, outlen, "need a restart: %s", restart);
    }
    return nrestart;
}

int config_key_reloadable(const char *key)
{
    const struct key *k = find_key(config_keys, NKEYS, key);
    if (!k) return -ENOENT;
    return (k->flags & K_RELOAD) ? 1 : 0;
}
