/* event.h — parsing and validation of one Kafka message payload (DESIGN.md §5).
 *
 * A click event {"session_id", "ts", "features", "label"?, "weight"?} becomes a struct
 * event plus an example record (features.h) encoded by features_from_json; a transaction
 * event {"session_id", "ts", "order_id"?, "amount"?} becomes a struct event alone.  A bad
 * payload is rejected with exactly one reason of enum stats_reject and a short message for
 * the (rate-limited) log line.  Nothing here knows of Kafka or threads: the caller passes
 * the message's bytes, its Kafka timestamp and the wall clock.
 *
 * Checks, in this order (the first that fails names the reason):
 *   too_large           len > kafka.max_event_bytes (before any parsing)
 *   invalid_json        not JSON (a bare NaN or Infinity token, a number beyond double
 *                       range, trailing bytes, invalid UTF-8, nesting deeper than jansson's
 *                       2048 levels) or a key repeated within one object: jansson's
 *                       JSON_REJECT_DUPLICATES, because with two "session_id"s or two
 *                       values for one feature, which one counts would be a guess
 *   not_object          valid JSON, but not an object
 *   missing_session_id  no "session_id" (or null)
 *   bad_session_id      not a string, empty, or longer than EVENT_MAX_SESSION_ID bytes
 *   bad_value           "ts" not an integer (a real with no fractional part is accepted)
 *   ts_out_of_range     ts (or, when "ts" is absent or null, the Kafka timestamp) negative
 *                       or more than labels.max_future ahead of the wall clock
 *   clicks only:
 *   bad_label           "label" not 0, 1, true or false (null = absent)
 *   bad_value           "weight" not a finite number > 0 (null = absent)
 *   bad_features        "features" absent, null or not an object
 *   bad_value           a feature of the wrong type, NaN or infinite (features_from_json)
 *   transactions only:
 *   bad_value           "order_id" not a string or integer, "amount" not a number
 * Other top-level keys are ignored; feature names not in the schema are counted.
 */
#ifndef INTENTD_EVENT_H
#define INTENTD_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "features.h"
#include "stats.h"

#define EVENT_OK             (-1) /* event_parse: accepted (else an enum stats_reject) */
#define EVENT_MAX_SESSION_ID 256  /* bytes; longer ids are bad_session_id */

/* One accepted event.  The strings are borrowed from the parsed document (root) and live
 * until event_clear. */
struct event {
    enum stats_topic topic; /* TOPIC_CLICKS or TOPIC_TRANSACTIONS */
    const char *session_id; /* NUL-terminated, 1..EVENT_MAX_SESSION_ID bytes, no NUL inside */
    size_t session_len;
    int64_t ts;        /* event time, ms since the epoch, >= 0 */
    int ts_from_kafka; /* 1 when "ts" was absent and the Kafka timestamp was used */
    /* clicks */
    int label;        /* 0 or 1 for a directly labelled click, -1 to be joined */
    double weight;    /* the event's loss weight, > 0; 1 when absent */
    json_t *features; /* the "features" object, borrowed from root */
    /* transactions */
    const char *order_id; /* NULL when absent; for an integer id, its decimal text */
    double amount;        /* NaN when absent */
    char order_buf[24];   /* holds an integer order_id's text */
    json_t *root;         /* the parsed document, owned (event_clear) */
};

/* Parses and validates payload[0..len) read from topic.  kafka_ts is the message's Kafka
 * timestamp in ms (-1 when it has none), wall_now_ms the wall clock.
 * For a click, example (features_example_size(f) bytes) is filled: features_example_init,
 * then the features, weight = the event's weight, label = the event's label (0 when it has
 * none; the joiner sets it when it labels the example); seq is left 0 for the caller.
 * *unknown (may be NULL) is incremented by the feature names not in the schema.
 * Returns EVENT_OK with ev filled, or the enum stats_reject reason with why filled (a
 * short sentence naming the field) and ev holding nothing to free.  Call event_clear(ev)
 * after either.  Never crashes on any bytes; thread-safe (cfg and f are only read). */
int event_parse(const struct config *cfg, const struct features *f, enum stats_topic topic,
                const void *payload, size_t len, int64_t kafka_ts, int64_t wall_now_ms,
                struct event *ev, void *example, uint32_t *unknown, char *why, size_t whylen);

/* Releases the parsed document; ev's strings are gone after it.  Idempotent. */
void event_clear(struct event *ev);

#endif
