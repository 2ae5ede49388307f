/* config.h — intentd's configuration: one table of keys drives defaults, YAML parsing,
 * validation and --print-config (see config.c).
 *
 * Every setting lives in struct config.  Durations are stored in milliseconds, sizes in
 * bytes.  The struct is plain data: other modules read its fields directly; only config.c
 * writes them.  Strings and arrays are owned by the struct and freed by config_free().
 */
#ifndef INTENTD_CONFIG_H
#define INTENTD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_DEFAULT_PATH "/etc/intentd/intentd.yaml"
#define CONFIG_MAX_FEATURES 256 /* columns in the schema */
#define CONFIG_MAX_HIDDEN 8     /* hidden layers */

enum feature_type { FEATURE_NUMERIC = 0, FEATURE_CATEGORICAL = 1, FEATURE_BOOLEAN = 2 };
enum feature_transform { TRANSFORM_NONE = 0, TRANSFORM_LOG1P = 1 };
enum activation { ACTIVATION_RELU = 0, ACTIVATION_TANH = 1, ACTIVATION_SIGMOID = 2 };
enum optimizer_name { OPTIMIZER_ADAM = 0, OPTIMIZER_SGD = 1 };
/* kafka.assignment: static assigns every partition of both topics directly (no group join,
 * so a restart after a crash consumes at once); right while one daemon runs per group. */
enum kafka_assignment { ASSIGNMENT_GROUP = 0, ASSIGNMENT_STATIC = 1 };

/* One column of the input schema; the order of config.features fixes the layout. */
struct config_feature {
    char *name;                       /* column / JSON key; unique, non-empty */
    enum feature_type type;           /* numeric | categorical | boolean */
    enum feature_transform transform; /* numeric only: none | log1p */
    uint32_t buckets;                 /* categorical only: hashed one-hot slots, >= 1 */
};

/* One kafka.properties entry, passed verbatim to librdkafka. */
struct config_property {
    char *key;
    char *value;
};

struct config {
    char *path;     /* the file this was loaded from (NULL for pure defaults) */
    char *state_dir;
    int log_level;  /* enum log_level */

    struct {
        char *brokers; /* "embedded" or "host:port,..." */
        char *group_id;
        char *clicks_topic;
        char *transactions_topic;
        char *dead_letter_topic; /* "" disables dead-lettering */
        struct config_property *properties;
        size_t nproperties;
        uint64_t max_event_bytes;
        int assignment; /* enum kafka_assignment */
    } kafka;

    struct config_feature *features;
    size_t nfeatures;

    struct {
        uint64_t window_ms;
        uint64_t allowed_lateness_ms;
        uint64_t idle_timeout_ms; /* 0 = never */
        uint64_t max_future_ms;
        uint64_t max_pending;
    } labels;

    struct {
        uint32_t hidden[CONFIG_MAX_HIDDEN];
        size_t nhidden;
        int activation; /* enum activation */
        double dropout; /* [0, 1) */
        double l2;      /* >= 0 */
        uint64_t seed;
        double ema_decay; /* served weights are an EMA of the trained ones; 0 = off */
    } model;

    struct {
        int name; /* enum optimizer_name */
        double learning_rate;
        double beta1;
        double beta2;
        double epsilon;
        double momentum;
    } optimizer;

    struct {
        uint32_t batch_size;
        uint64_t max_batch_wait_ms; /* 0: only full batches */
        double replay_ratio;        /* replayed minibatches per fresh one (fractions allowed) */
        uint32_t replay_capacity;
        uint32_t queue_capacity;
        double positive_weight;
    } training;

    struct {
        double threshold;
        uint32_t window;
    } evaluation;

    struct {
        uint64_t interval_ms;
        uint64_t min_examples;
        double holdout_fraction;
        double max_regression;
        uint32_t min_holdout;
    } snapshot;

    struct {
        uint64_t interval_ms;
        uint32_t keep;
    } checkpoint;

    struct {
        char *listen; /* "HOST:PORT" */
        uint32_t threads;
        uint64_t max_body;
        uint32_t max_batch;
        uint32_t max_connections;
        uint64_t connection_timeout_ms;
    } http;
};

/* Returns a configuration holding every default, or NULL when out of memory.
 * The caller owns it (config_free). */
struct config *config_new(void);

/* Frees cfg and everything it owns; accepts NULL; returns NULL. */
struct config *config_free(struct config *cfg);

/* Loads the YAML file at path over the defaults in cfg.  Returns 0, or a negative errno
 * with err filled as "FILE:LINE:COL: message" naming the key and what was expected
 * (unknown key, wrong type, out-of-range value, duplicate key, malformed YAML, missing or
 * unreadable file).  On error cfg is left unchanged. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Same as config_load, from a string (name is used in messages). */
int config_load_string(struct config *cfg, const char *yaml, const char *name, char *err,
                       size_t errlen);

/* Writes the effective configuration, every key with its value, as YAML that config_load
 * accepts; secrets in kafka.properties (keys containing "password", "secret" or "key")
 * are printed as <redacted>.  Returns 0 or -errno. */
int config_print(const struct config *cfg, FILE *out);

/* Parsers shared with the command-line tools: "250ms", "10s", "30m", "2h", "0" → ms, and
 * "64KiB", "8MiB", "1GiB", "100" → bytes.  Return 0, -EINVAL (syntax) or -ERANGE (does not
 * fit 64 bits). */
int config_parse_duration(const char *s, uint64_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);

/* Returns the index of the feature called name, or -1. */
int config_feature_index(const struct config *cfg, const char *name);

/* Returns a deep copy of cfg (the caller owns it), or NULL when out of memory. */
struct config *config_dup(const struct config *cfg);

/* Compares the running configuration a with a re-read one b (SIGHUP), key by key.  Fills out
 * with "changed: K1, K2; need a restart: K3" (the first part lists the keys that can change
 * at run time, the second those that only take effect after a restart; "" when nothing
 * changed).  A change of a kafka.properties secret counts, but no value is ever written.
 * Returns the number of changed keys that need a restart (0: everything that changed can be
 * applied live), or -ENOMEM. */
int config_diff(const struct config *a, const struct config *b, char *out, size_t outlen);

/* Returns 1 if the dotted key (e.g. "log_level") can change at run time, 0 if it needs a
 * restart, -ENOENT for an unknown key. */
int config_key_reloadable(const char *key);

#endif
