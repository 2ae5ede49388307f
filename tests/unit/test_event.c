/* Tests of event parsing and validation: every rejection reason from real bytes, the
 * accepted shapes of click and transaction events, and the encoded example. */
#include <errno.h>
#include <stdlib.h>

#include "event.h"
#include "unit.h"

#define NOW     INT64_C(1764842400000) /* the wall clock of these tests */
#define HOUR_MS INT64_C(3600000)

struct fixture {
    struct config cfg;
    struct config_feature cols[3];
    struct features *f;
    void *example;
};

static void setup(struct fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    fx->cols[0] = (struct config_feature){
        .name = "PageValues", .type = FEATURE_NUMERIC, .transform = TRANSFORM_LOG1P};
    fx->cols[1] =
        (struct config_feature){.name = "Month", .type = FEATURE_CATEGORICAL, .buckets = 16};
    fx->cols[2] = (struct config_feature){.name = "Weekend", .type = FEATURE_BOOLEAN};
    fx->cfg.features = fx->cols;
    fx->cfg.nfeatures = 3;
    fx->cfg.kafka.max_event_bytes = 64 * 1024;
    fx->cfg.labels.max_future_ms = (uint64_t)HOUR_MS;
    char err[256];
    fx->f = features_new(fx->cols, 3, err, sizeof err);
    if (!fx->f) unit_fail(__FILE__, __LINE__, "features_new: %s", err);
    fx->example = calloc(1, features_example_size(fx->f));
    CHECK(fx->example);
}

static void teardown(struct fixture *fx)
{
    features_free(fx->f);
    free(fx->example);
}

/* Parses s (strlen bytes) from topic; returns the reason or EVENT_OK, the message in why. */
static int parse_n(struct fixture *fx, enum stats_topic topic, const void *s, size_t len,
                   int64_t kafka_ts, struct event *ev, char *why, uint32_t *unknown)
{
    int r = event_parse(&fx->cfg, fx->f, topic, s, len, kafka_ts, NOW, ev, fx->example, unknown,
                        why, 200);
    return r;
}

static int reason_of(struct fixture *fx, enum stats_topic topic, const char *s)
{
    struct event ev;
    char why[200];
    int r = parse_n(fx, topic, s, strlen(s), NOW, &ev, why, NULL);
    if (r != EVENT_OK && why[0] == '\0') unit_fail(__FILE__, __LINE__, "no message for %s", s);
    event_clear(&ev);
    return r;
}

#define CHECK_REASON(fx, topic, json, reason)                                                      \
    do {                                                                                           \
        int r_ = reason_of((fx), (topic), (json));                                                 \
        if (r_ != (reason))                                                                        \
            unit_fail(__FILE__, __LINE__, "%s: got %s, want %s", (json),                           \
                      r_ == EVENT_OK ? "accepted" : stats_reject_names[r_],                        \
                      (reason) == EVENT_OK ? "accepted" : stats_reject_names[(reason)]);           \
    } while (0)

void test_event_click_accepted_and_encoded(void)
{
    struct fixture fx;
    setup(&fx);
    const char *s = "{\"session_id\": \"s-42\", \"ts\": 1764842400000, \"extra\": [1],"
                    " \"features\": {\"PageValues\": 12.5, \"Month\": \"Nov\","
                    " \"Weekend\": true, \"Nope\": 1, \"Nope2\": null}}";
    struct event ev;
    char why[200];
    uint32_t unknown = 0;
    CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, s, strlen(s), -1, &ev, why, &unknown), EVENT_OK);
    CHECK_STR_EQ(ev.session_id, "s-42");
    CHECK_INT_EQ(ev.session_len, 4);
    CHECK_INT_EQ(ev.ts, INT64_C(1764842400000));
    CHECK_INT_EQ(ev.ts_from_kafka, 0);
    CHECK_INT_EQ(ev.label, -1);
    CHECK_NEAR(ev.weight, 1.0, 0);
    CHECK(json_is_object(ev.features));
    CHECK_INT_EQ(unknown, 2);
    struct example *e = fx.example;
    CHECK_NEAR(e->label, 0, 0);
    CHECK_NEAR(e->weight, 1, 0);
    CHECK_NEAR(example_dense(e)[0], log1p(12.5), 1e-6); /* PageValues, log1p */
    CHECK_NEAR(example_dense(e)[1], 1, 0);              /* Weekend */
    uint32_t nov = features_hash(fx.f, 0, "Nov", 3);
    CHECK_INT_EQ(example_cat(fx.f, e)[0], nov);
    event_clear(&ev);
    event_clear(&ev); /* idempotent */

    /* Directly labelled, weighted, no ts (the Kafka timestamp), missing features. */
    s = "{\"session_id\": \"d\", \"label\": true, \"weight\": 2.5, \"features\": {}}";
    CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, s, strlen(s), NOW - 5, &ev, why, NULL), EVENT_OK);
    CHECK_INT_EQ(ev.label, 1);
    CHECK_NEAR(ev.weight, 2.5, 0);
    CHECK_INT_EQ(ev.ts, NOW - 5);
    CHECK_INT_EQ(ev.ts_from_kafka, 1);
    CHECK_NEAR(e->label, 1, 0);
    CHECK_NEAR(e->weight, 2.5, 0);
    CHECK(isnan(example_dense(e)[0])); /* missing: NaN until standardised */
    event_clear(&ev);

    /* Every accepted label spelling. */
    const char *labels[][2] = {{"0", "0"},   {"1", "1"},   {"false", "0"}, {"true", "1"},
                               {"0.0", "0"}, {"1.0", "1"}, {"null", "-1"}};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        char buf[200];
        snprintf(buf, sizeof buf, "{\"session_id\": \"x\", \"label\": %s, \"features\": {}}",
                 labels[i][0]);
        CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, buf, strlen(buf), NOW, &ev, why, NULL), EVENT_OK);
        CHECK_INT_EQ(ev.label, atoi(labels[i][1]));
        event_clear(&ev);
    }
    /* Edges of ts: 0, exactly max_future ahead, a whole real. */
    CHECK_REASON(&fx, TOPIC_CLICKS, "{\"session_id\":\"x\",\"ts\":0,\"features\":{}}", EVENT_OK);
    CHECK_REASON(&fx, TOPIC_CLICKS, "{\"session_id\":\"x\",\"ts\":1764846000000,\"features\":{}}",
                 EVENT_OK);
    CHECK_REASON(&fx, TOPIC_CLICKS, "{\"session_id\":\"x\",\"ts\":1.7648424e12,\"features\":{}}",
                 EVENT_OK);
    /* A session id of exactly the bound. */
    char big[400];
    memset(big, 'a', sizeof big);
    snprintf(big, sizeof big, "{\"session_id\":\"%.*s\",\"features\":{}}", EVENT_MAX_SESSION_ID,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK_REASON(&fx, TOPIC_CLICKS, big, EVENT_OK);
    teardown(&fx);
}

void test_event_transaction_accepted(void)
{
    struct fixture fx;
    setup(&fx);
    struct event ev;
    char why[200];
    const char *s = "{\"session_id\": \"s-42\", \"ts\": 1764842460000, \"order_id\": \"o-9\","
                    " \"amount\": 59.90}";
    CHECK_INT_EQ(parse_n(&fx, TOPIC_TRANSACTIONS, s, strlen(s), -1, &ev, why, NULL), EVENT_OK);
    CHECK_INT_EQ(ev.topic, TOPIC_TRANSACTIONS);
    CHECK_STR_EQ(ev.session_id, "s-42");
    CHECK_INT_EQ(ev.ts, INT64_C(1764842460000));
    CHECK_STR_EQ(ev.order_id, "o-9");
    CHECK_NEAR(ev.amount, 59.90, 1e-12);
    event_clear(&ev);
    /* Minimal: no features needed, integer order id, no amount. */
    s = "{\"session_id\": \"s\", \"order_id\": 12345678901}";
    CHECK_INT_EQ(parse_n(&fx, TOPIC_TRANSACTIONS, s, strlen(s), NOW, &ev, why, NULL), EVENT_OK);
    CHECK_STR_EQ(ev.order_id, "12345678901");
    CHECK(isnan(ev.amount));
    CHECK_INT_EQ(ev.ts, NOW);
    event_clear(&ev);
    CHECK_REASON(&fx, TOPIC_TRANSACTIONS, "{\"session_id\":\"s\",\"order_id\":[1]}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, TOPIC_TRANSACTIONS, "{\"session_id\":\"s\",\"amount\":\"12\"}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, TOPIC_TRANSACTIONS, "{\"ts\":5}", REJECT_MISSING_SESSION_ID);
    teardown(&fx);
}

void test_event_every_rejection_reason(void)
{
    struct fixture fx;
    setup(&fx);
    const enum stats_topic C = TOPIC_CLICKS;
    /* invalid_json */
    CHECK_REASON(&fx, C, "", REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "not json", REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": NaN}}",
                 REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "NaN", REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": Infinity}}",
                 REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": 1e999}}",
                 REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {}", REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {}} trailing", REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"a\", \"session_id\": \"b\", \"features\": {}}",
                 REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"Month\": 1, \"Month\": 2}}",
                 REJECT_INVALID_JSON);
    CHECK_REASON(&fx, C, "{\"session_id\": \"\xff\xfe\", \"features\": {}}",
                 REJECT_INVALID_JSON); /* invalid UTF-8 */
    CHECK_REASON(&fx, C, "{\"session_id\": \"a\\u0000b\", \"features\": {}}",
                 REJECT_INVALID_JSON); /* NUL inside a string */
    {
        /* A NUL byte in the middle of the payload. */
        struct event ev;
        char why[200];
        const char raw[] = "{\"session_id\": \"s\"\0, \"features\": {}}";
        CHECK_INT_EQ(parse_n(&fx, C, raw, sizeof raw - 1, NOW, &ev, why, NULL),
                     REJECT_INVALID_JSON);
        event_clear(&ev);
    }
    /* not_object */
    CHECK_REASON(&fx, C, "[1, 2]", REJECT_NOT_OBJECT);
    CHECK_REASON(&fx, C, "\"s-42\"", REJECT_NOT_OBJECT);
    CHECK_REASON(&fx, C, "42", REJECT_NOT_OBJECT);
    CHECK_REASON(&fx, C, "null", REJECT_NOT_OBJECT);
    /* missing_session_id */
    CHECK_REASON(&fx, C, "{\"features\": {}}", REJECT_MISSING_SESSION_ID);
    CHECK_REASON(&fx, C, "{\"session_id\": null, \"features\": {}}", REJECT_MISSING_SESSION_ID);
    CHECK_REASON(&fx, C, "{\"sessionid\": \"s\", \"features\": {}}", REJECT_MISSING_SESSION_ID);
    /* bad_session_id */
    CHECK_REASON(&fx, C, "{\"session_id\": 42, \"features\": {}}", REJECT_BAD_SESSION_ID);
    CHECK_REASON(&fx, C, "{\"session_id\": \"\", \"features\": {}}", REJECT_BAD_SESSION_ID);
    CHECK_REASON(&fx, C, "{\"session_id\": {\"id\": \"s\"}, \"features\": {}}",
                 REJECT_BAD_SESSION_ID);
    CHECK_REASON(&fx, C, "{\"session_id\": [\"s\"], \"features\": {}}", REJECT_BAD_SESSION_ID);
    {
        char buf[600];
        int n = snprintf(buf, sizeof buf, "{\"session_id\": \"");
        for (int i = 0; i <= EVENT_MAX_SESSION_ID; i++) buf[n++] = 'x';
        snprintf(buf + n, sizeof buf - (size_t)n, "\", \"features\": {}}");
        CHECK_REASON(&fx, C, buf, REJECT_BAD_SESSION_ID);
    }
    /* bad_features */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\"}", REJECT_BAD_FEATURES);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": null}", REJECT_BAD_FEATURES);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": [1, 2]}", REJECT_BAD_FEATURES);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": \"PageValues=1\"}",
                 REJECT_BAD_FEATURES);
    /* bad_value: features of the wrong type, nested wrong types, ts and weight */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": \"12\"}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": [12]}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"PageValues\": {\"v\": 1}}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"Weekend\": 2}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"Weekend\": \"yes\"}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"Month\": 1.5}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"features\": {\"Month\": {\"m\": \"Nov\"}}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": \"1764842400000\", \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": 1.5, \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": true, \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"weight\": 0, \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"weight\": -1, \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"weight\": \"2\", \"features\": {}}",
                 REJECT_BAD_VALUE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"weight\": 1e300, \"features\": {}}",
                 REJECT_BAD_VALUE); /* infinite as a float */
    /* bad_label */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"label\": 2, \"features\": {}}",
                 REJECT_BAD_LABEL);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"label\": \"1\", \"features\": {}}",
                 REJECT_BAD_LABEL);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"label\": 0.5, \"features\": {}}",
                 REJECT_BAD_LABEL);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"label\": [1], \"features\": {}}",
                 REJECT_BAD_LABEL);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"label\": -1, \"features\": {}}",
                 REJECT_BAD_LABEL);
    /* ts_out_of_range */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": -1, \"features\": {}}",
                 REJECT_TS_OUT_OF_RANGE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": 1764846000001, \"features\": {}}",
                 REJECT_TS_OUT_OF_RANGE); /* 1 ms beyond max_future */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": 9223372036854775807, \"features\": {}}",
                 REJECT_TS_OUT_OF_RANGE);
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": -9223372036854775808, \"features\": {}}",
                 REJECT_TS_OUT_OF_RANGE);
    CHECK_REASON(&fx, TOPIC_TRANSACTIONS, "{\"session_id\": \"s\", \"ts\": 9999999999999999}",
                 REJECT_TS_OUT_OF_RANGE);
    {
        /* No ts and no Kafka timestamp; no ts and a Kafka timestamp in the future. */
        struct event ev;
        char why[200];
        const char *s = "{\"session_id\": \"s\", \"features\": {}}";
        CHECK_INT_EQ(parse_n(&fx, C, s, strlen(s), -1, &ev, why, NULL), REJECT_TS_OUT_OF_RANGE);
        CHECK_STR_HAS(why, "Kafka timestamp");
        event_clear(&ev);
        CHECK_INT_EQ(parse_n(&fx, C, s, strlen(s), NOW + 2 * HOUR_MS, &ev, why, NULL),
                     REJECT_TS_OUT_OF_RANGE);
        event_clear(&ev);
    }
    /* A number too big for an integer is not JSON jansson can hold. */
    CHECK_REASON(&fx, C, "{\"session_id\": \"s\", \"ts\": 99999999999999999999, \"features\": {}}",
                 REJECT_INVALID_JSON);
    teardown(&fx);
}

void test_event_too_large_before_parsing(void)
{
    struct fixture fx;
    setup(&fx);
    /* 900 kB of junk with max_event_bytes 64 KiB. */
    size_t n = 900 * 1000;
    char *junk = malloc(n);
    CHECK(junk);
    for (size_t i = 0; i < n; i++) junk[i] = (char)(i * 7919 % 251);
    struct event ev;
    char why[200];
    CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, junk, n, NOW, &ev, why, NULL), REJECT_TOO_LARGE);
    CHECK_STR_HAS(why, "900000 bytes");
    CHECK(ev.root == NULL);
    event_clear(&ev);
    /* A valid event just over the limit is too_large; at the limit it is parsed. */
    size_t lim = fx.cfg.kafka.max_event_bytes;
    char *big = malloc(lim + 2);
    CHECK(big);
    const char *head = "{\"session_id\": \"s\", \"features\": {}, \"pad\": \"";
    size_t hl = strlen(head);
    memcpy(big, head, hl);
    memset(big + hl, 'p', lim - hl - 2);
    memcpy(big + lim - 2, "\"}", 2);
    CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, big, lim, NOW, &ev, why, NULL), EVENT_OK);
    event_clear(&ev);
    memmove(big + hl + 1, big + hl, lim - hl);
    CHECK_INT_EQ(parse_n(&fx, TOPIC_CLICKS, big, lim + 1, NOW, &ev, why, NULL), REJECT_TOO_LARGE);
    event_clear(&ev);
    free(big);
    free(junk);
    teardown(&fx);
}

void test_event_deep_nesting_and_random_bytes_do_not_crash(void)
{
    struct fixture fx;
    setup(&fx);
    /* 20,000 nested arrays inside features: jansson's depth limit, not the stack. */
    size_t depth = 20000;
    char *s = malloc(2 * depth + 100);
    CHECK(s);
    int n = sprintf(s, "{\"session_id\":\"s\",\"features\":{\"PageValues\":");
    for (size_t i = 0; i < depth; i++) s[n++] = '[';
    for (size_t i = 0; i < depth; i++) s[n++] = ']';
    strcpy(s + n, "}}");
    CHECK_REASON(&fx, TOPIC_CLICKS, s, REJECT_INVALID_JSON);
    free(s);
    /* Random bytes and mutations of a good event: every result is a known reason. */
    const char *good = "{\"session_id\":\"s-1\",\"ts\":1764842400000,\"label\":1,\"weight\":2,"
                       "\"features\":{\"PageValues\":1.5,\"Month\":\"May\",\"Weekend\":0}}";
    size_t gl = strlen(good);
    char buf[256];
    unsigned seed = 12345;
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, good, gl);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[(seed >> 8) % gl] = (char)(seed >> 20);
        }
        struct event ev;
        char why[200];
        int r = parse_n(&fx, (enum stats_topic)(it % 2), buf, gl, NOW, &ev, why, NULL);
        CHECK(r == EVENT_OK || (r >= 0 && r < REJECT_NREASONS));
        if (r == EVENT_OK) {
            accepted++;
            CHECK(ev.session_len >= 1 && ev.session_len <= EVENT_MAX_SESSION_ID);
            CHECK(ev.ts >= 0);
        }
        event_clear(&ev);
    }
    CHECK(accepted > 0);
    teardown(&fx);
}
