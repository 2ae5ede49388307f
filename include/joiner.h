/* joiner.h — turns click and transaction events into labelled examples (DESIGN.md §5).
 *
 * Rules (times are event times in ms unless said otherwise; W = labels.window,
 * L = labels.allowed_lateness):
 *   - A directly labelled click (label 0/1) bypasses the table: emitted at once.
 *   - Any other click makes its session pending, keyed by session_id, with first = last =
 *     its ts and its example.  A later click of a pending session (later in event time,
 *     ts >= last; ties go to the one that arrived last) replaces the example and sets
 *     last = ts; an older one only lowers first.  The session's window closes at last + W.
 *   - A transaction at time x matches its pending session when first <= x <= last + W
 *     (both edges inclusive): the example is emitted at once as a positive and the session
 *     leaves the table.  A purchase made before the session's last click but after its
 *     first still counts: the session converted.
 *   - Otherwise the transaction is held (the two topics are consumed independently, so its
 *     click may still come): when a click of that session arrives and its session range
 *     [first, last + W] covers x, the session is emitted as a positive at once.  A held
 *     transaction whose x is below the watermark (no click that could match it is still to
 *     come in time) is dropped and counted unmatched.  A session's held transactions are
 *     tried in arrival order; each matches at most one example.
 *   - Watermark = min over assigned, non-idle partitions of both topics of that partition's
 *     largest event time, minus L (an assigned partition with no event yet holds it at
 *     -infinity).  It never goes back, and with no partition assigned or all idle it stays.
 *     A partition with no event for labels.idle_timeout (caller's clock; 0 = never) is
 *     idle until its next event.  A pending session with last + W < watermark (strictly)
 *     is emitted as a negative, in the order of (last + W, creation), so the output is the
 *     same for the same input sequence.
 *   - The pending table holds at most labels.max_pending sessions: a new one beyond that
 *     first emits the session whose window closes first as a negative, counted evicted.
 *     Held transactions are bounded by labels.max_pending too: beyond that the one with
 *     the smallest time (the next to expire) is dropped, counted unmatched.
 *
 * The example records are opaque blobs of example_size bytes except for their first field:
 * the joiner writes the label into struct example's `label` (features.h) before emitting.
 * Not thread-safe: one thread (ingest) owns a joiner.  Nothing here knows of Kafka.
 */
#ifndef INTENTD_JOINER_H
#define INTENTD_JOINER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "event.h"
#include "stats.h"

#define JOINER_MAX_PARTITIONS 4096 /* (topic, partition) pairs tracked */

struct joiner;

/* Called for every labelled example, synchronously, in a deterministic order.  example
 * (example_size bytes, label already set) is valid only during the call; the callback must
 * not call back into the joiner. */
typedef void (*joiner_emit_fn)(void *ctx, const void *example, int label);

/* Counters (since the state began, restored by joiner_load) and gauges. */
struct joiner_counts {
    uint64_t clicks;            /* click events handed in */
    uint64_t transactions;      /* transaction events handed in */
    uint64_t positives;         /* examples emitted with label 1 (joined and direct) */
    uint64_t negatives;         /* label 0: closed windows, evictions and direct */
    uint64_t direct;            /* of positives + negatives, directly labelled clicks */
    uint64_t evicted;           /* of negatives, emitted early: the table was full */
    uint64_t replaced;          /* clicks that updated a pending session */
    uint64_t matched_held;      /* positives made by a held transaction */
    uint64_t unmatched;         /* transactions that found no click (expired or dropped) */
    uint64_t held_dropped;      /* of unmatched, dropped because the held table was full */
    uint64_t late_clicks;       /* joined clicks whose window had closed before they came
                                   (last + W below the watermark): negatives at once */
    uint64_t late_transactions; /* transactions below the watermark with no pending click
                                   when they came: unmatched at once */
    uint64_t pending;           /* gauge: pending sessions */
    uint64_t held_transactions; /* gauge: transactions held for their click */
    int64_t watermark;          /* INT64_MIN until the first one */
};

/* Returns an empty joiner for cfg->labels (window, allowed_lateness, idle_timeout,
 * max_pending; read now, cfg may go afterwards) and examples of example_size bytes
 * (>= sizeof(struct example)), or NULL with err filled.  It emits nothing until
 * joiner_set_emit.  The caller owns it (joiner_free). */
struct joiner *joiner_new(const struct config *cfg, size_t example_size, char *err, size_t errlen);

/* Frees j; accepts NULL; returns NULL. */
struct joiner *joiner_free(struct joiner *j);

void joiner_set_emit(struct joiner *j, joiner_emit_fn emit, void *ctx);

/* A partition of topic (TOPIC_CLICKS | TOPIC_TRANSACTIONS) was assigned / revoked.  An
 * assigned partition holds the watermark back until it has events (or goes idle); its
 * idle clock starts at now_ms.  A revoked one stops holding it back (its largest event
 * time is kept, should it come back).  Returns 0, -EINVAL (bad topic or partition < 0) or
 * -ENOSPC (JOINER_MAX_PARTITIONS). */
int joiner_assign(struct joiner *j, int topic, int32_t partition, uint64_t now_ms);
int joiner_revoke(struct joiner *j, int topic, int32_t partition);

/* A click of session[0..len) (1..65535 bytes) at event time ts, from clicks partition
 * `partition`, with its example (example_size bytes, copied); label 0/1 for a directly
 * labelled click, -1 to join.  now_ms is the caller's clock for idle timeouts (monotonic
 * recommended).  An event on a partition never assigned assigns it.  Emits what it
 * decides, then closes the windows the watermark passed.  Returns 0, -EINVAL, -ENOSPC or
 * -ENOMEM (the event is then not taken in). */
int joiner_add_click(struct joiner *j, int32_t partition, const char *session, size_t len,
                     int64_t ts, int label, const void *example, uint64_t now_ms);

/* A transaction of session at time ts from transactions partition `partition`.  Returns as
 * joiner_add_click. */
int joiner_add_transaction(struct joiner *j, int32_t partition, const char *session, size_t len,
                           int64_t ts, uint64_t now_ms);

/* The same for a parsed event (event.h): its session_id, ts and, for a click, label. */
int joiner_click(struct joiner *j, int32_t partition, const struct event *ev, const void *example,
                 uint64_t now_ms);
int joiner_transaction(struct joiner *j, int32_t partition, const struct event *ev,
                       uint64_t now_ms);

/* Marks partitions idle whose last event (or assignment) is labels.idle_timeout before
 * now_ms, and closes the windows the watermark then passed.  Call it about once a second;
 * with idle_timeout 0 it changes nothing. */
void joiner_tick(struct joiner *j, uint64_t now_ms);

void joiner_counts(const struct joiner *j, struct joiner_counts *out);

/* Serialises the whole state (pending sessions with their examples, held transactions,
 * per-partition event-time maxima, the watermark, sequence numbers and counters) into a
 * malloc'd buffer: *buf (caller frees) of *len bytes.  The same state always gives the
 * same bytes.  Returns 0 or -ENOMEM.
 * Not restored by joiner_load: which partitions are assigned and idle (that belongs to the
 * consumer's session: call joiner_assign for the partitions assigned after the restart,
 * as the rebalance callback does; one not assigned again no longer holds the watermark),
 * and the idle clocks (they start again at the assignment). */
int joiner_save(const struct joiner *j, void **buf, size_t *len);

/* Replaces j's state by the one saved in buf[0..len) (the emit callback and the
 * configuration stay j's).  Returns 0, or -EINVAL with err filled (and j unchanged) when
 * the buffer is not a joiner state, is truncated, or was saved for another example size;
 * -ENOMEM.  Emits nothing, even when more sessions are pending than max_pending allows
 * (the next new session evicts the surplus). */
int joiner_load(struct joiner *j, const void *buf, size_t len, char *err, size_t errlen);

#endif
