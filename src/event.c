/* event.c — one Kafka payload → a validated event, or a rejection reason (see event.h). */
#include "event.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *why, size_t whylen, int reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *why, size_t whylen, int reason, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return reason;
}

/* The JSON type's name, for messages. */
static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* Reads "ts" into *ts: 0, -1 when absent/null, or 1 when of the wrong type. */
static int read_ts(const json_t *v, int64_t *ts)
{
    if (!v || json_is_null(v)) return -1;
    if (json_is_integer(v)) {
        *ts = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        /* ±2^63 bounds the exact conversion; jansson never gives NaN or infinity. */
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            *ts = (int64_t)d;
            return 0;
        }
    }
    return 1;
}

static int parse_label(const json_t *v, int *label)
{
    if (json_is_true(v) || json_is_false(v)) {
        *label = json_is_true(v);
        return 0;
    }
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
        *label = (int)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && (json_real_value(v) == 0.0 || json_real_value(v) == 1.0)) {
        *label = json_real_value(v) == 1.0;
        return 0;
    }
    return -1;
}

static int parse_click(const struct features *f, struct event *ev, void *example, uint32_t *unknown,
                       char *why, size_t whylen)
{
    json_t *root = ev->root;
    json_t *v = json_object_get(root, "label");
    if (v && !json_is_null(v) && parse_label(v, &ev->label) < 0)
        return fail(why, whylen, REJECT_BAD_LABEL, "\"label\" must be 0, 1, true or false, not %s",
                    type_name(v));

    v = json_object_get(root, "weight");
    if (v && !json_is_null(v)) {
        double w = json_is_number(v) ? json_number_value(v) : NAN;
        /* > 0 and finite, also as the float the example record holds */
        if (!(w > 0) || !isfinite(w) || !((float)w > 0) || !isfinite((float)w))
            return fail(why, whylen, REJECT_BAD_VALUE,
                        "\"weight\" must be a finite number > 0 (got %s)", type_name(v));
        ev->weight = w;
    }

    v = json_object_get(root, "features");
    if (!v || !json_is_object(v))
        return fail(why, whylen, REJECT_BAD_FEATURES, "\"features\" must be an object, %s",
                    v ? type_name(v) : "is missing");
    ev->features = v;

    struct example *e = example;
    features_example_init(f, e);
    char ferr[160];
    const char *field = NULL;
    int rc = features_from_json(f, v, e, unknown, ferr, sizeof ferr, &field);
    if (rc == -EINVAL)
        return fail(why, whylen, REJECT_BAD_FEATURES, "\"features\" must be an object");
    if (rc < 0) return fail(why, whylen, REJECT_BAD_VALUE, "%s", ferr);
    e->label = ev->label == 1 ? 1.0f : 0.0f;
    e->weight = (float)ev->weight;
    e->seq = 0;
    return EVENT_OK;
}

static int parse_transaction(struct event *ev, char *why, size_t whylen)
{
    json_t *v = json_object_get(ev->root, "order_id");
    if (v && !json_is_null(v)) {
        if (json_is_string(v)) {
            ev->order_id = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(ev->order_buf, sizeof ev->order_buf, "%lld", (long long)json_integer_value(v));
            ev->order_id = ev->order_buf;
        } else {
            return fail(why, whylen, REJECT_BAD_VALUE,
                        "\"order_id\" must be a string or an integer, not %s", type_name(v));
        }
    }
    v = json_object_get(ev->root, "amount");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v))
            return fail(why, whylen, REJECT_BAD_VALUE, "\"amount\" must be a number, not %s",
                        type_name(v));
        ev->amount = json_number_value(v);
    }
    return EVENT_OK;
}

int event_parse(const struct config *cfg, const struct features *f, enum stats_topic topic,
                const void *payload, size_t len, int64_t kafka_ts, int64_t wall_now_ms,
                struct event *ev, void *example, uint32_t *unknown, char *why, size_t whylen)
{
    memset(ev, 0, sizeof *ev);
    ev->topic = topic;
    ev->label = -1;
    ev->weight = 1.0;
    ev->amount = NAN;
    if (why && whylen) why[0] = '\0';

    if (len > cfg->kafka.max_event_bytes)
        return fail(why, whylen, REJECT_TOO_LARGE, "%zu bytes, over kafka.max_event_bytes %llu",
                    len, (unsigned long long)cfg->kafka.max_event_bytes);
    if (len > 0 && !payload) return fail(why, whylen, REJECT_INVALID_JSON, "no payload");

    json_error_t jerr;
    /* JSON_DECODE_ANY: a scalar document is valid JSON, so it is not_object, not
     * invalid_json.  JSON_REJECT_DUPLICATES: see event.h. */
    json_t *root =
        json_loadb(payload ? payload : "", len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(why, whylen, REJECT_INVALID_JSON, "not JSON: %s at byte %d", jerr.text,
                    jerr.position);
    if (!json_is_object(root)) {
        int r =
            fail(why, whylen, REJECT_NOT_OBJECT, "the event is %s, not an object", type_name(root));
        json_decref(root);
        return r;
    }
    ev->root = root; /* owned by ev from here: event_clear frees it, also on rejection */

    json_t *v = json_object_get(root, "session_id");
    if (!v || json_is_null(v))
        return fail(why, whylen, REJECT_MISSING_SESSION_ID, "no \"session_id\"");
    if (!json_is_string(v))
        return fail(why, whylen, REJECT_BAD_SESSION_ID, "\"session_id\" must be a string, not %s",
                    type_name(v));
    size_t slen = json_string_length(v);
    if (slen == 0) return fail(why, whylen, REJECT_BAD_SESSION_ID, "\"session_id\" is empty");
    if (slen > EVENT_MAX_SESSION_ID)
        return fail(why, whylen, REJECT_BAD_SESSION_ID, "\"session_id\" is %zu bytes, over %d",
                    slen, EVENT_MAX_SESSION_ID);
    ev->session_id = json_string_value(v);
    ev->session_len = slen;

    v = json_object_get(root, "ts");
    int t = read_ts(v, &ev->ts);
    if (t > 0)
        return fail(why, whylen, REJECT_BAD_VALUE, "\"ts\" must be an integer (ms), not %s",
                    type_name(v));
    if (t < 0) {
        ev->ts = kafka_ts;
        ev->ts_from_kafka = 1;
    }
    if (ev->ts < 0)
        return fail(why, whylen, REJECT_TS_OUT_OF_RANGE, "%s %lld is negative",
                    ev->ts_from_kafka ? "no \"ts\" and the Kafka timestamp" : "\"ts\"",
                    (long long)ev->ts);
    /* wall_now + max_future without overflow: both are far below 2^62 in practice, but the
     * payload is not to be trusted, the clock is. */
    /* labels.max_future changes on SIGHUP while ingest parses: main stores it atomically */
    uint64_t max_future = __atomic_load_n(&cfg->labels.max_future_ms, __ATOMIC_RELAXED);
    uint64_t limit = (uint64_t)(wall_now_ms > 0 ? wall_now_ms : 0) + max_future;
    if ((uint64_t)ev->ts > limit)
        return fail(why, whylen, REJECT_TS_OUT_OF_RANGE,
                    "\"ts\" %lld is %llu ms ahead of the clock, over labels.max_future",
                    (long long)ev->ts,
                    (unsigned long long)((uint64_t)ev->ts - (limit - max_future)));

    if (topic == TOPIC_CLICKS) return parse_click(f, ev, example, unknown, why, whylen);
    return parse_transaction(ev, why, whylen);
}

void event_clear(struct event *ev)
{
    if (!ev) return;
    json_decref(ev->root);
    ev->root = NULL;
    ev->features = NULL;
    ev->session_id = NULL;
    ev->order_id = NULL;
}
