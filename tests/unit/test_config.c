/* test_config.c — the configuration module: defaults, parsing, every error class with its
 * exact FILE:LINE:COL, printing, round trips, redaction, comparison. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config.h"
#include "unit.h"

/* Loads yaml (named "t.yaml" in messages) over fresh defaults; returns the error code and
 * leaves the message in err.  The configuration is freed. */
static int load_err(const char *yaml, char *err, size_t errlen)
{
    struct config *cfg = config_new();
    CHECK(cfg != NULL);
    int rc = config_load_string(cfg, yaml, "t.yaml", err, errlen);
    config_free(cfg);
    return rc;
}

/* Expects yaml to fail with a message that contains every one of the given fragments. */
#define CHECK_FAILS(yaml, ...)                                                                     \
    do {                                                                                           \
        char err_[1024];                                                                           \
        CHECK_INT_EQ(load_err((yaml), err_, sizeof err_), -EINVAL);                                \
        const char *frags_[] = {__VA_ARGS__};                                                      \
        for (size_t i_ = 0; i_ < sizeof frags_ / sizeof frags_[0]; i_++)                           \
            CHECK_STR_HAS(err_, frags_[i_]);                                                       \
    } while (0)

static char *print_to_string(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    CHECK(m != NULL);
    CHECK_INT_EQ(config_print(cfg, m), 0);
    fclose(m);
    return text;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    CHECK_INT_EQ(fclose(f), 0);
}

void test_config_defaults(void)
{
    struct config *cfg = config_new();
    CHECK(cfg != NULL);
    CHECK(cfg->path == NULL);
    CHECK_STR_EQ(cfg->state_dir, "/var/lib/intentd");
    CHECK_INT_EQ(cfg->log_level, 1); /* info */
    CHECK_STR_EQ(cfg->kafka.brokers, "embedded");
    CHECK_STR_EQ(cfg->kafka.group_id, "intentd");
    CHECK_STR_EQ(cfg->kafka.clicks_topic, "intentd.clicks");
    CHECK_STR_EQ(cfg->kafka.transactions_topic, "intentd.transactions");
    CHECK_STR_EQ(cfg->kafka.dead_letter_topic, "intentd.dead-letter");
    CHECK_INT_EQ(cfg->kafka.nproperties, 0);
    CHECK_INT_EQ(cfg->kafka.max_event_bytes, 64 * 1024);
    CHECK_INT_EQ(cfg->nfeatures, 3);
    CHECK_STR_EQ(cfg->features[0].name, "PageValues");
    CHECK_INT_EQ(cfg->features[0].type, FEATURE_NUMERIC);
    CHECK_INT_EQ(cfg->features[0].transform, TRANSFORM_LOG1P);
    CHECK_INT_EQ(cfg->features[1].type, FEATURE_CATEGORICAL);
    CHECK_INT_EQ(cfg->features[1].buckets, 16);
    CHECK_INT_EQ(cfg->features[2].type, FEATURE_BOOLEAN);
    CHECK_INT_EQ(cfg->labels.window_ms, 30 * 60 * 1000);
    CHECK_INT_EQ(cfg->labels.allowed_lateness_ms, 60 * 1000);
    CHECK_INT_EQ(cfg->labels.idle_timeout_ms, 30 * 1000);
    CHECK_INT_EQ(cfg->labels.max_future_ms, 3600 * 1000);
    CHECK_INT_EQ(cfg->labels.max_pending, 1000000);
    CHECK_INT_EQ(cfg->model.nhidden, 2);
    CHECK_INT_EQ(cfg->model.hidden[0], 64);
    CHECK_INT_EQ(cfg->model.hidden[1], 32);
    CHECK_INT_EQ(cfg->model.activation, ACTIVATION_RELU);
    CHECK(cfg->model.dropout == 0.0 && cfg->model.l2 == 0.0 && cfg->model.ema_decay == 0.995);
    CHECK_INT_EQ(cfg->model.seed, 1);
    CHECK_INT_EQ(cfg->optimizer.name, OPTIMIZER_ADAM);
    CHECK(cfg->optimizer.learning_rate == 0.003);
    CHECK(cfg->optimizer.beta1 == 0.9 && cfg->optimizer.beta2 == 0.999);
    CHECK(cfg->optimizer.epsilon == 1.0e-8 && cfg->optimizer.momentum == 0.9);
    CHECK_INT_EQ(cfg->training.batch_size, 32);
    CHECK_INT_EQ(cfg->training.max_batch_wait_ms, 200);
    CHECK(cfg->training.replay_ratio == 4.0);
    CHECK_INT_EQ(cfg->training.replay_capacity, 65536);
    CHECK_INT_EQ(cfg->training.queue_capacity, 65536);
    CHECK(cfg->training.positive_weight == 1.0);
    CHECK(cfg->evaluation.threshold == 0.5);
    CHECK_INT_EQ(cfg->evaluation.window, 10000);
    CHECK_INT_EQ(cfg->snapshot.interval_ms, 1000);
    CHECK_INT_EQ(cfg->snapshot.min_examples, 256);
    CHECK(cfg->snapshot.holdout_fraction == 0.05 && cfg->snapshot.max_regression == 0.05);
    CHECK_INT_EQ(cfg->snapshot.min_holdout, 200);
    CHECK_INT_EQ(cfg->checkpoint.interval_ms, 10000);
    CHECK_INT_EQ(cfg->checkpoint.keep, 3);
    CHECK_STR_EQ(cfg->http.listen, "127.0.0.1:8080");
    CHECK_INT_EQ(cfg->http.threads, 2);
    CHECK_INT_EQ(cfg->http.max_body, 64 * 1024);
    CHECK_INT_EQ(cfg->http.max_batch, 1024);
    CHECK_INT_EQ(cfg->http.max_connections, 1024);
    CHECK_INT_EQ(cfg->http.connection_timeout_ms, 30000);
    CHECK(config_free(cfg) == NULL);
    CHECK(config_free(NULL) == NULL);
}

void test_config_durations(void)
{
    uint64_t ms = 99;
    CHECK_INT_EQ(config_parse_duration("250ms", &ms), 0);
    CHECK_INT_EQ(ms, 250);
    CHECK_INT_EQ(config_parse_duration("10s", &ms), 0);
    CHECK_INT_EQ(ms, 10000);
    CHECK_INT_EQ(config_parse_duration("30m", &ms), 0);
    CHECK_INT_EQ(ms, 1800000);
    CHECK_INT_EQ(config_parse_duration("2h", &ms), 0);
    CHECK_INT_EQ(ms, 7200000);
    CHECK_INT_EQ(config_parse_duration("0", &ms), 0);
    CHECK_INT_EQ(ms, 0);
    ms = 5;
    CHECK_INT_EQ(config_parse_duration("0s", &ms), 0);
    CHECK_INT_EQ(ms, 0);
    const char *bad[] = {"", "10", "s", "10 s", "1.5s", "-1s", "10S", "10sec", "ms", "5d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT_EQ(config_parse_duration(bad[i], &ms), -EINVAL);
    CHECK_INT_EQ(config_parse_duration("99999999999999999999h", &ms), -ERANGE);
    CHECK_INT_EQ(config_parse_duration("9999999999999999h", &ms), -ERANGE);
}

void test_config_sizes(void)
{
    uint64_t b = 0;
    CHECK_INT_EQ(config_parse_size("64KiB", &b), 0);
    CHECK_INT_EQ(b, 65536);
    CHECK_INT_EQ(config_parse_size("8MiB", &b), 0);
    CHECK_INT_EQ(b, 8 << 20);
    CHECK_INT_EQ(config_parse_size("1GiB", &b), 0);
    CHECK_INT_EQ(b, 1 << 30);
    CHECK_INT_EQ(config_parse_size("1234", &b), 0);
    CHECK_INT_EQ(b, 1234);
    CHECK_INT_EQ(config_parse_size("0", &b), 0);
    CHECK_INT_EQ(b, 0);
    const char *bad[] = {"", "64KB", "64kib", "1.5MiB", "-1", "MiB", "64 KiB", "8M"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT_EQ(config_parse_size(bad[i], &b), -EINVAL);
    CHECK_INT_EQ(config_parse_size("20000000000TiB", &b), -ERANGE);
}

void test_config_load_values(void)
{
    struct config *cfg = config_new();
    char err[512];
    const char *yaml = "state_dir: /tmp/x\n"
                       "log_level: debug\n"
                       "kafka:\n"
                       "  brokers: a:9092,b:9092\n"
                       "  dead_letter_topic: \"\"\n"
                       "  max_event_bytes: 1MiB\n"
                       "  properties:\n"
                       "    security.protocol: SASL_SSL\n"
                       "    sasl.mechanism: PLAIN\n"
                       "model:\n"
                       "  hidden: [8]\n"
                       "  activation: tanh\n"
                       "  seed: 18446744073709551615\n"
                       "  ema_decay: 0.99\n"
                       "labels:\n"
                       "  window: 250ms\n"
                       "  idle_timeout: 0\n"
                       "optimizer: {name: sgd, learning_rate: 0.1}\n";
    CHECK_INT_EQ(config_load_string(cfg, yaml, "t.yaml", err, sizeof err), 0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(cfg->state_dir, "/tmp/x");
    CHECK_INT_EQ(cfg->log_level, 0);
    CHECK_STR_EQ(cfg->kafka.brokers, "a:9092,b:9092");
    CHECK_STR_EQ(cfg->kafka.dead_letter_topic, "");
    CHECK_INT_EQ(cfg->kafka.max_event_bytes, 1 << 20);
    CHECK_INT_EQ(cfg->kafka.nproperties, 2);
    CHECK_STR_EQ(cfg->kafka.properties[0].key, "security.protocol");
    CHECK_STR_EQ(cfg->kafka.properties[0].value, "SASL_SSL");
    CHECK_INT_EQ(cfg->model.nhidden, 1);
    CHECK_INT_EQ(cfg->model.hidden[0], 8);
    CHECK_INT_EQ(cfg->model.activation, ACTIVATION_TANH);
    CHECK(cfg->model.seed == UINT64_MAX);
    CHECK(cfg->model.ema_decay == 0.99);
    CHECK_INT_EQ(cfg->labels.window_ms, 250);
    CHECK_INT_EQ(cfg->labels.idle_timeout_ms, 0);
    CHECK_INT_EQ(cfg->optimizer.name, OPTIMIZER_SGD);
    CHECK(cfg->optimizer.learning_rate == 0.1);
    /* untouched keys keep their defaults */
    CHECK_INT_EQ(cfg->training.batch_size, 32);
    CHECK_INT_EQ(cfg->nfeatures, 3);
    config_free(cfg);
}

void test_config_unknown_key(void)
{
    CHECK_FAILS("log_level: info\nbatch_size: 5\n", "t.yaml:2:1: ", "unknown key 'batch_size'",
                "training.batch_size");
    CHECK_FAILS("kafka:\n  group_id: g\n  brokerz: x\n",
                "t.yaml:3:3: ", "unknown key 'kafka.brokerz'", "did you mean 'kafka.brokers'");
    CHECK_FAILS("nonsense: 1\n", "t.yaml:1:1: ", "unknown key 'nonsense'");
}

void test_config_unknown_in_feature(void)
{
    CHECK_FAILS(
        "features:\n  - {name: a, type: numeric}\n  - {name: b, type: boolean, colour: red}\n",
        "t.yaml:3:30: ", "features[1].colour", "unknown key");
    CHECK_FAILS("features:\n  - {name: a, type: numeric, transfrom: log1p}\n",
                "t.yaml:2:30: ", "features[0].transfrom", "did you mean 'transform'");
    CHECK_FAILS("features:\n  - name: a\n    type: text\n", "t.yaml:3:11: ", "features[0].type",
                "unknown value 'text'", "numeric | categorical | boolean");
    CHECK_FAILS("features:\n  - {name: a, type: numeric, transform: sqrt}\n",
                "t.yaml:2:41: ", "features[0].transform", "'sqrt'", "none | log1p");
    CHECK_FAILS("features:\n  - {name: a}\n", "t.yaml:2:5: ", "features[0] (a)", "needs a type");
    CHECK_FAILS("features:\n  - {type: numeric}\n", "t.yaml:2:5: ", "features[0]", "needs a name");
    CHECK_FAILS("features:\n  - PageValues\n", "t.yaml:2:5: ", "features[0]", "expected a map");
}

void test_config_wrong_type(void)
{
    CHECK_FAILS("training:\n  batch_size: abc\n", "t.yaml:2:15: ", "training.batch_size",
                "expected an integer in [1, 65536]", "'abc'");
    CHECK_FAILS("training:\n  batch_size: \"12\"\n", "t.yaml:2:15: ", "training.batch_size",
                "quoted string");
    CHECK_FAILS("state_dir: [a, b]\n", "t.yaml:1:12: ", "state_dir", "expected a string", "a list");
    CHECK_FAILS("model:\n  hidden: 64\n", "t.yaml:2:11: ", "model.hidden", "list of integers");
    CHECK_FAILS("model:\n  hidden: [64, x]\n", "t.yaml:2:16: ", "model.hidden[1]");
    CHECK_FAILS("model:\n  dropout: half\n", "t.yaml:2:12: ", "model.dropout",
                "a number in [0.0, 1.0)");
    CHECK_FAILS("model:\n  dropout: .nan\n", "t.yaml:2:12: ", "model.dropout");
    CHECK_FAILS("log_level: loud\n", "t.yaml:1:12: ", "log_level", "debug | info | warn | error");
    CHECK_FAILS("kafka: 5\n", "t.yaml:1:8: ", "kafka", "expected a mapping");
    CHECK_FAILS("kafka:\n  properties:\n    a.b: [1]\n", "t.yaml:3:10: ", "kafka.properties.a.b",
                "expected a string value");
    CHECK_FAILS("kafka:\n  properties: [x]\n", "t.yaml:2:15: ", "kafka.properties",
                "expected a mapping");
    CHECK_FAILS("- a\n- b\n", "t.yaml:1:1: ", "expected a mapping of settings");
    CHECK_FAILS("kafka:\n  brokers:\n", "t.yaml:2:11: ", "kafka.brokers", "non-empty");
    CHECK_FAILS("http:\n  listen: localhost\n", "t.yaml:2:11: ", "http.listen", "HOST:PORT");
    CHECK_FAILS("http:\n  listen: h:99999\n", "t.yaml:2:11: ", "http.listen", "HOST:PORT");
}

void test_config_out_of_range(void)
{
    CHECK_FAILS("model:\n  dropout: 1.0\n", "t.yaml:2:12: ", "model.dropout", "out of range",
                "[0.0, 1.0)");
    CHECK_FAILS("training:\n  batch_size: 0\n", "t.yaml:2:15: ", "training.batch_size",
                "0 is out of range");
    CHECK_FAILS("training:\n  batch_size: -5\n", "t.yaml:2:15: ", "training.batch_size",
                "-5 is out of range");
    CHECK_FAILS("optimizer:\n  learning_rate: 0\n", "t.yaml:2:18: ", "optimizer.learning_rate",
                "(0.0, 10.0]");
    CHECK_FAILS("model:\n  seed: 18446744073709551616\n", "t.yaml:2:9: ", "model.seed",
                "out of range");
    CHECK_FAILS("model:\n  ema_decay: 1\n", "t.yaml:2:14: ", "model.ema_decay", "out of range");
    CHECK_FAILS("snapshot:\n  max_regression: 100.5\n", "t.yaml:2:19: ", "snapshot.max_regression");
    CHECK_FAILS("http:\n  connection_timeout: 10ms\n", "t.yaml:2:23: ", "http.connection_timeout",
                "10ms is out of range", "[1s, 24h]");
    CHECK_FAILS("kafka:\n  max_event_bytes: 2GiB\n", "t.yaml:2:20: ", "kafka.max_event_bytes",
                "out of range", "[64, 1GiB]");
    CHECK_FAILS("model:\n  hidden: [64, 0]\n", "t.yaml:2:16: ", "model.hidden[1]", "out of range");
    CHECK_FAILS("model:\n  hidden: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", "t.yaml:2:11: ", "model.hidden",
                "at most 8");
    CHECK_FAILS("features:\n  - {name: a, type: categorical, buckets: 0}\n",
                "t.yaml:2:43: ", "features[0].buckets", "out of range");
}

void test_config_duplicate_key(void)
{
    CHECK_FAILS("log_level: info\nstate_dir: /a\nlog_level: warn\n",
                "t.yaml:3:1: ", "duplicate key 'log_level'", "first on line 1");
    CHECK_FAILS("http:\n  threads: 2\n  threads: 3\n", "t.yaml:3:3: ", "http.threads",
                "duplicate key");
    CHECK_FAILS("http:\n  threads: 2\nhttp:\n  max_batch: 3\n",
                "t.yaml:3:1: ", "duplicate key 'http'");
    CHECK_FAILS("features:\n  - {name: a, type: numeric, name: b}\n",
                "t.yaml:2:30: ", "duplicate key 'features[0].name'");
    CHECK_FAILS("kafka:\n  properties:\n    x: 1\n    x: 2\n",
                "t.yaml:4:5: ", "duplicate key 'kafka.properties.x'");
}

void test_config_malformed_yaml(void)
{
    CHECK_FAILS("kafka:\n  brokers: [a, b\nlog_level: info\n", "t.yaml:", "malformed YAML");
    char err[512];
    CHECK_INT_EQ(load_err("log_level: info\n  bad indent: x\n", err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "t.yaml:2:");
    CHECK_STR_HAS(err, "malformed YAML");
    CHECK_FAILS("a: 'unterminated\n", "t.yaml:2:1: ", "malformed YAML");
    CHECK_FAILS("log_level: info\n---\nlog_level: warn\n", "t.yaml:2:1: ", "one YAML document");
}

void test_config_missing_file(void)
{
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/nope.yaml", unit_tmpdir());
    struct config *cfg = config_new();
    CHECK_INT_EQ(config_load(cfg, path, err, sizeof err), -ENOENT);
    CHECK_STR_HAS(err, path);
    CHECK_STR_HAS(err, "nope.yaml:1:1: ");
    CHECK_STR_HAS(err, "No such file");
    CHECK(cfg->path == NULL);
    config_free(cfg);
}

void test_config_unreadable_file(void)
{
    /* tests run as root, where chmod 000 does not stop a read: a folder does */
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/dir.yaml", unit_tmpdir());
    CHECK_INT_EQ(mkdir(path, 0755), 0);
    struct config *cfg = config_new();
    CHECK_INT_EQ(config_load(cfg, path, err, sizeof err), -EISDIR);
    CHECK_STR_HAS(err, "dir.yaml:1:1: ");
    CHECK_STR_HAS(err, "Is a directory");
    config_free(cfg);
}

void test_config_bad_duration_and_size(void)
{
    CHECK_FAILS("labels:\n  window: 30\n", "t.yaml:2:11: ", "labels.window", "invalid duration",
                "250ms, 10s, 30m, 2h");
    CHECK_FAILS("labels:\n  window: 30 min\n", "t.yaml:2:11: ", "labels.window", "'30 min'");
    CHECK_FAILS("snapshot:\n  interval: 0\n", "t.yaml:2:13: ", "snapshot.interval", "out of range");
    CHECK_FAILS("http:\n  max_body: 64KB\n", "t.yaml:2:13: ", "http.max_body", "invalid size",
                "64KiB");
    CHECK_FAILS("http:\n  max_body: [1]\n", "t.yaml:2:13: ", "http.max_body", "a list");
}

void test_config_feature_rules(void)
{
    CHECK_FAILS("features:\n  - {name: a, type: numeric}\n  - {name: a, type: boolean}\n",
                "t.yaml:3:5: ", "features[1]", "duplicate feature name 'a'", "features[0]");
    CHECK_FAILS("log_level: info\nfeatures: []\n", "t.yaml:2:11: ", "features", "empty");
    CHECK_FAILS("features:\n  - {name: w, type: boolean, buckets: 8}\n",
                "t.yaml:2:30: ", "features[0].buckets (w)", "only a categorical feature");
    CHECK_FAILS("features:\n  - {name: m, type: categorical, transform: log1p}\n",
                "t.yaml:2:34: ", "features[0].transform (m)", "only a numeric feature");
    CHECK_FAILS("features: {name: a}\n", "t.yaml:1:11: ", "features", "expected a list");

    /* a categorical without buckets gets 16; the order of keys in a map does not matter */
    struct config *cfg = config_new();
    char err[512];
    CHECK_INT_EQ(config_load_string(cfg,
                                    "features:\n  - {type: categorical, name: c}\n"
                                    "  - {buckets: 64, name: d, type: categorical}\n",
                                    "t.yaml", err, sizeof err),
                 0);
    CHECK_INT_EQ(cfg->nfeatures, 2);
    CHECK_INT_EQ(cfg->features[0].buckets, 16);
    CHECK_INT_EQ(cfg->features[1].buckets, 64);
    CHECK_INT_EQ(config_feature_index(cfg, "d"), 1);
    CHECK_INT_EQ(config_feature_index(cfg, "PageValues"), -1);
    config_free(cfg);
}

void test_config_unchanged_on_error(void)
{
    struct config *cfg = config_new();
    char err[512], path[4200];
    CHECK_INT_EQ(config_load_string(cfg, "training:\n  batch_size: 64\n", "a", err, sizeof err), 0);
    /* an error after valid keys: none of them may leak into cfg */
    const char *bad = "training:\n  batch_size: 32\nfeatures:\n  - {name: z, type: boolean}\n"
                      "log_level: warn\nkafka:\n  properties: {a: b}\n  brokerz: 1\n";
    CHECK_INT_EQ(config_load_string(cfg, bad, "b", err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "b:8:3: ");
    CHECK_INT_EQ(cfg->training.batch_size, 64);
    CHECK_INT_EQ(cfg->nfeatures, 3);
    CHECK_STR_EQ(cfg->features[0].name, "PageValues");
    CHECK_INT_EQ(cfg->log_level, 1);
    CHECK_INT_EQ(cfg->kafka.nproperties, 0);
    /* and from a file: path stays as it was */
    snprintf(path, sizeof path, "%s/bad.yaml", unit_tmpdir());
    write_file(path, bad);
    CHECK_INT_EQ(config_load(cfg, path, err, sizeof err), -EINVAL);
    CHECK(cfg->path == NULL);
    CHECK_INT_EQ(cfg->training.batch_size, 64);
    config_free(cfg);
}

void test_config_round_trip(void)
{
    struct config *cfg = config_new();
    char err[512], path[4200];
    const char *yaml = "kafka:\n"
                       "  brokers: \"host one:9092\"\n"
                       "  group_id: \"with \\\"quotes\\\" and \\\\ and #hash\"\n"
                       "  dead_letter_topic: ''\n"
                       "  clicks_topic: \"trail:\"\n"
                       "  transactions_topic: a:b,c\n"
                       "  properties:\n"
                       "    security.protocol: SASL_SSL\n"
                       "    client.id: \"a, b: c\"\n"
                       "    retries: 5\n"
                       "    enable.idempotence: 'true'\n"
                       "    odd: \"tab\\there\"\n"
                       "features:\n"
                       "  - {name: \"a:b\", type: numeric}\n"
                       "  - {name: 'yes', type: boolean}\n"
                       "  - {name: \"x, y\", type: categorical, buckets: 1000}\n"
                       "model:\n"
                       "  hidden: []\n"
                       "  l2: 0.30000000000000004\n"
                       "  dropout: 0.1\n"
                       "optimizer:\n"
                       "  epsilon: 1e-300\n"
                       "training:\n"
                       "  max_batch_wait: 1500ms\n"
                       "labels:\n"
                       "  window: 90m\n"
                       "http:\n"
                       "  max_body: 1000\n";
    CHECK_INT_EQ(config_load_string(cfg, yaml, "t.yaml", err, sizeof err), 0);
    char *first = print_to_string(cfg);
    snprintf(path, sizeof path, "%s/printed.yaml", unit_tmpdir());
    write_file(path, first);
    struct config *again = config_new();
    CHECK_INT_EQ(config_load(again, path, err, sizeof err), 0);
    char *second = print_to_string(again);
    CHECK_STR_EQ(second, first);
    /* the values themselves survived, not just their printing */
    CHECK_STR_EQ(again->kafka.group_id, "with \"quotes\" and \\ and #hash");
    CHECK_STR_EQ(again->kafka.brokers, "host one:9092");
    CHECK_STR_EQ(again->kafka.clicks_topic, "trail:");
    CHECK_STR_HAS(first, "  transactions_topic: a:b,c\n");
    CHECK_STR_EQ(again->features[0].name, "a:b");
    CHECK_STR_EQ(again->features[1].name, "yes");
    CHECK_STR_EQ(again->kafka.properties[1].value, "a, b: c");
    CHECK_STR_EQ(again->kafka.properties[4].value, "tab\there");
    CHECK(again->model.l2 == 0.1 + 0.2);
    CHECK(again->optimizer.epsilon == 1e-300);
    CHECK_INT_EQ(again->model.nhidden, 0);
    CHECK_INT_EQ(again->training.max_batch_wait_ms, 1500);
    CHECK_STR_HAS(first, "  max_batch_wait: 1500ms");
    CHECK_STR_HAS(first, "  window: 90m");
    CHECK_STR_HAS(first, "  max_body: 1000\n");
    CHECK_STR_HAS(first, "  hidden: []");
    CHECK_STR_HAS(first, "  dropout: 0.1\n");
    CHECK_STR_HAS(first, "  - {name: \"x, y\", type: categorical, buckets: 1000}\n");
    CHECK_STR_HAS(first, "  - {name: \"a:b\", type: numeric, transform: none}\n");
    char d[512];
    CHECK_INT_EQ(config_diff(cfg, again, d, sizeof d), 0);
    CHECK_STR_EQ(d, "");
    free(first);
    free(second);
    config_free(cfg);
    config_free(again);
}

void test_config_print_defaults_every_key(void)
{
    struct config *cfg = config_new();
    char *text = print_to_string(cfg);
    const char *keys[] = {"\nstate_dir: /var/lib/intentd\n",
                          "\nlog_level: info\n",
                          "\n  brokers: embedded\n",
                          "\n  properties: {}\n",
                          "\n  max_event_bytes: 64KiB\n",
                          "\n  hidden: [64, 32]\n",
                          "\n  ema_decay: 0.995\n",
                          "\n  epsilon: 1e-08\n",
                          "\n  learning_rate: 0.003\n",
                          "\n  max_batch_wait: 200ms\n",
                          "\n  positive_weight: 1.0\n",
                          "\n  connection_timeout: 30s\n",
                          "\n  listen: 127.0.0.1:8080\n",
                          "\n  - {name: PageValues, type: numeric, transform: log1p}\n",
                          "\n  - {name: Month, type: categorical, buckets: 16}\n",
                          "\n  - {name: Weekend, type: boolean}\n",
                          "\nhttp:\n"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) CHECK_STR_HAS(text, keys[i]);
    /* the defaults printed load back as the defaults */
    struct config *again = config_new();
    char err[512], d[512];
    CHECK_INT_EQ(config_load_string(again, text, "p", err, sizeof err), 0);
    CHECK_INT_EQ(config_diff(cfg, again, d, sizeof d), 0);
    CHECK_STR_EQ(d, "");
    free(text);
    config_free(cfg);
    config_free(again);
}

void test_config_redaction(void)
{
    struct config *cfg = config_new();
    char err[512];
    const char *yaml = "kafka:\n  properties:\n"
                       "    sasl.password: hunter2\n"
                       "    ssl.key.password: k3y\n"
                       "    SASL.OAUTHBEARER.CLIENT.SECRET: s3cr3t\n"
                       "    ssl.keystore.location: /etc/ks\n"
                       "    sasl.username: alice\n";
    CHECK_INT_EQ(config_load_string(cfg, yaml, "t.yaml", err, sizeof err), 0);
    CHECK_STR_EQ(cfg->kafka.properties[0].value, "hunter2"); /* kept verbatim for librdkafka */
    char *text = print_to_string(cfg);
    CHECK(strstr(text, "hunter2") == NULL);
    CHECK(strstr(text, "k3y") == NULL);
    CHECK(strstr(text, "s3cr3t") == NULL);
    CHECK(strstr(text, "/etc/ks") == NULL);
    CHECK_STR_HAS(text, "    sasl.password: <redacted>\n");
    CHECK_STR_HAS(text, "    SASL.OAUTHBEARER.CLIENT.SECRET: <redacted>\n");
    CHECK_STR_HAS(text, "    sasl.username: alice\n");
    /* a changed secret is a change, but its value is never written */
    struct config *b = config_dup(cfg);
    free(b->kafka.properties[0].value);
    b->kafka.properties[0].value = strdup("other");
    char d[512];
    CHECK_INT_EQ(config_diff(cfg, b, d, sizeof d), 1);
    CHECK_STR_EQ(d, "need a restart: kafka.properties");
    free(text);
    config_free(cfg);
    config_free(b);
}

void test_config_reference_file(void)
{
    struct config *cfg = config_new();
    char err[512];
    CHECK_INT_EQ(config_load(cfg, "config/intentd.yaml", err, sizeof err), 0);
    CHECK_STR_EQ(cfg->path, "config/intentd.yaml");
    CHECK_INT_EQ(cfg->nfeatures, 17);
    const char *numeric[] = {"Administrative", "Administrative_Duration",
                             "Informational",  "Informational_Duration",
                             "ProductRelated", "ProductRelated_Duration",
                             "BounceRates",    "ExitRates",
                             "PageValues",     "SpecialDay"};
    for (size_t i = 0; i < 10; i++) {
        int j = config_feature_index(cfg, numeric[i]);
        CHECK(j >= 0);
        CHECK_INT_EQ(cfg->features[j].type, FEATURE_NUMERIC);
    }
    const char *categorical[] = {"Month",  "OperatingSystems", "Browser",
                                 "Region", "TrafficType",      "VisitorType"};
    for (size_t i = 0; i < 6; i++) {
        int j = config_feature_index(cfg, categorical[i]);
        CHECK(j >= 0);
        CHECK_INT_EQ(cfg->features[j].type, FEATURE_CATEGORICAL);
    }
    CHECK_INT_EQ(cfg->features[config_feature_index(cfg, "Weekend")].type, FEATURE_BOOLEAN);
    CHECK_INT_EQ(config_feature_index(cfg, "Revenue"), -1);
    CHECK_INT_EQ(cfg->features[config_feature_index(cfg, "PageValues")].transform, TRANSFORM_LOG1P);
    /* the reference documents the defaults: only the schema differs from them */
    struct config *def = config_new();
    char d[512];
    CHECK_INT_EQ(config_diff(def, cfg, d, sizeof d), 1);
    CHECK_STR_EQ(d, "need a restart: features");
    config_free(def);
    config_free(cfg);
}

void test_config_dev_file(void)
{
    struct config *cfg = config_new();
    char err[512];
    CHECK_INT_EQ(config_load(cfg, "config/dev.yaml", err, sizeof err), 0);
    CHECK_STR_EQ(cfg->kafka.brokers, "embedded");
    CHECK_STR_EQ(cfg->http.listen, "127.0.0.1:8080");
    CHECK_STR_HAS(cfg->state_dir, "build/dev-state");
    CHECK_INT_EQ(cfg->nfeatures, 17);
    config_free(cfg);
}

void test_config_diff(void)
{
    struct config *a = config_new(), *b = config_new();
    char d[512], err[512];
    CHECK_INT_EQ(config_diff(a, b, d, sizeof d), 0);
    CHECK_STR_EQ(d, "");
    CHECK_INT_EQ(
        config_load_string(b, "log_level: warn\nsnapshot:\n  interval: 5s\n", "b", err, sizeof err),
        0);
    CHECK_INT_EQ(config_diff(a, b, d, sizeof d), 0);
    CHECK_STR_EQ(d, "changed: log_level, snapshot.interval");
    CHECK_INT_EQ(config_load_string(b, "model:\n  hidden: [16]\nhttp:\n  listen: 0.0.0.0:9\n", "b",
                                    err, sizeof err),
                 0);
    CHECK_INT_EQ(config_diff(a, b, d, sizeof d), 2);
    CHECK_STR_EQ(d, "changed: log_level, snapshot.interval; need a restart: model.hidden, "
                    "http.listen");
    CHECK_INT_EQ(config_key_reloadable("log_level"), 1);
    CHECK_INT_EQ(config_key_reloadable("model.hidden"), 0);
    CHECK_INT_EQ(config_key_reloadable("no.such"), -ENOENT);
    config_free(a);
    config_free(b);
}

void test_config_dup_is_deep(void)
{
    struct config *a = config_new();
    char err[512];
    CHECK_INT_EQ(config_load_string(a, "kafka:\n  properties: {x: y}\n", "a", err, sizeof err), 0);
    struct config *b = config_dup(a);
    CHECK(b != NULL);
    CHECK(b->state_dir != a->state_dir);
    CHECK(b->features != a->features);
    CHECK(b->features[0].name != a->features[0].name);
    CHECK(b->kafka.properties != a->kafka.properties);
    CHECK_STR_EQ(b->kafka.properties[0].value, "y");
    config_free(a); /* b must stand alone */
    CHECK_STR_EQ(b->features[1].name, "Month");
    CHECK_STR_EQ(b->state_dir, "/var/lib/intentd");
    config_free(b);
}

void test_config_empty_and_null_sections(void)
{
    struct config *cfg = config_new();
    char err[512];
    /* an empty file, comments only, and a section whose keys are all commented out */
    CHECK_INT_EQ(config_load_string(cfg, "", "e", err, sizeof err), 0);
    CHECK_INT_EQ(config_load_string(cfg, "# nothing\n", "e", err, sizeof err), 0);
    CHECK_INT_EQ(config_load_string(cfg, "kafka:\n  # brokers: x\nhttp:\n", "e", err, sizeof err),
                 0);
    CHECK_STR_EQ(cfg->kafka.brokers, "embedded");
    CHECK_FAILS("kafka:\n  dead_letter_topic:\n", "t.yaml:2:21: ", "kafka.dead_letter_topic",
                "\"\"");
    config_free(cfg);
}

void test_config_nul_byte_in_file(void)
{
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/nul.yaml", unit_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fwrite("log_level: info\nst\0ate_dir: x\n", 1, 30, f);
    fclose(f);
    struct config *cfg = config_new();
    CHECK_INT_EQ(config_load(cfg, path, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "nul.yaml:2:3: ");
    CHECK_STR_HAS(err, "NUL");
    config_free(cfg);
}

void test_config_print_docs_and_live_marks(void)
{
    struct config *cfg = config_new();
    char *text = print_to_string(cfg);
    CHECK_STR_HAS(text, "\n# (live) debug | info | warn | error\nlog_level: info\n");
    CHECK_STR_HAS(text, "\n  # (live) step size\n  learning_rate: 0.003\n");
    CHECK_STR_HAS(text, "\n  # widths of the hidden layers ([] = logistic regression)\n"
                        "  hidden: [64, 32]\n");
    CHECK_STR_HAS(text, "\n  # served weights are an exponential moving average of the trained "
                        "ones; 0 = off\n  ema_decay: 0.995\n");
    free(text);
    config_free(cfg);
}

/* config/intentd.yaml marks "(live)" exactly the keys config_key_reloadable says can change
 * at run time, so the reference cannot promise a reload the daemon does not do. */
void test_config_reference_live_marks(void)
{
    FILE *f = fopen("config/intentd.yaml", "r");
    CHECK(f != NULL);
    char line[512], section[64] = "";
    int keys = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        const char *s = line;
        int indent = 0;
        while (*s == ' ') s++, indent++;
        if (*s == '#' || *s == '-') continue;
        size_t n = strcspn(s, ":");
        if (s[n] != ':') continue;
        char key[160];
        if (indent == 0) {
            snprintf(section, sizeof section, "%.*s", (int)n, s);
            snprintf(key, sizeof key, "%s", section);
        } else {
            snprintf(key, sizeof key, "%s.%.*s", section, (int)n, s);
        }
        int live = config_key_reloadable(key);
        if (live == -ENOENT) continue; /* a section header */
        keys++;
        int marked = strstr(line, "# (live)") != NULL;
        if (marked != live)
            unit_fail(__FILE__, __LINE__, "%s: (live) mark %d, reloadable %d", key, marked, live);
    }
    fclose(f);
    CHECK_INT_EQ(keys, 49); /* every key of the table is documented */
}

/* kafka.assignment: group by default, static accepted, anything else named with its place. */
void test_config_kafka_assignment(void)
{
    struct config *cfg = config_new();
    CHECK(cfg != NULL);
    CHECK_INT_EQ(cfg->kafka.assignment, ASSIGNMENT_GROUP);
    char err[1024];
    CHECK_INT_EQ(config_load_string(cfg, "kafka:\n  assignment: static\n", "t.yaml", err,
                                    sizeof err),
                 0);
    CHECK_INT_EQ(cfg->kafka.assignment, ASSIGNMENT_STATIC);
    CHECK_INT_EQ(config_load_string(cfg, "kafka:\n  assignment: group\n", "t.yaml", err,
                                    sizeof err),
                 0);
    CHECK_INT_EQ(cfg->kafka.assignment, ASSIGNMENT_GROUP);
    config_free(cfg);
    CHECK_FAILS("kafka:\n  assignment: manual\n", "t.yaml:2:15: ", "kafka.assignment", "'manual'",
                "group | static");
}
