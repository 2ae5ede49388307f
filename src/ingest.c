/* ingest.c — see ingest.h.
 *
 * Thread: "ingest".  It alone uses the consumer, the joiner and the dead-letter producer;
 * it shares only the queue (examples and barriers to the trainer), the stats atomics and
 * the durable-offsets mailbox (filled by the trainer, guarded by a mutex).
 *
 * Offsets: handed[topic][partition] is the next offset after the last message of that
 * partition that ingest has fully handled: its example (if any) is in the queue, or it is
 * pending in the joiner (whose state travels in the barrier), or it was rejected and its
 * dead-letter copy acknowledged.  A barrier is only put into the queue when no dead-letter
 * copy is outstanding, so every offset in it is covered.
 */
#include "ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "log.h"

#define INGEST_POLL_MS             100
#define INGEST_STATS_MS            250  /* counters and gauges to /metrics this often */
#define INGEST_TICK_MS             1000 /* joiner idle-timeout tick */
#define INGEST_HI_QUERY_MS         2000 /* while paused: ask the brokers for high watermarks */
#define INGEST_HI_QUERY_TIMEOUT_MS 500
#define INGEST_FULL_GRACE_MS       100  /* a full queue is waited on this long before pausing */
#define INGEST_DLQ_WAIT_MS         5000 /* a due barrier waits this long for dead-letter acks */
#define INGEST_MAX_HELD            4096 /* messages held while paused (at most one per partition) */
#define INGEST_META_TIMEOUT_MS     2000 /* static: one metadata request per topic */
#define INGEST_META_RETRY_MS       1000 /* static: until the first metadata answer */
#define INGEST_META_REFRESH_MS     30000 /* static: then look for new partitions this often */

struct ingest {
    const struct config *cfg;
    struct queue *q;
    struct joiner *joiner;
    const struct features *f;
    struct stats *stats;

    rd_kafka_t *consumer;
    rd_kafka_t *dlq; /* idempotent producer for the dead-letter topic, or NULL */
    rd_kafka_topic_t *dlq_topic;
    const char *topics[TOPIC_N];

    pthread_t thread;
    int started;
    atomic_int stop; /* ingest_request_stop */
    _Atomic uint64_t heartbeat_ms;
    _Atomic uint64_t checkpoint_interval_ms;

    /* ingest-thread state */
    int64_t handed[TOPIC_N][STATS_MAX_PARTITIONS];    /* next offset handled; -1: none */
    int64_t resume_at[TOPIC_N][STATS_MAX_PARTITIONS]; /* from the checkpoint; -1: none */
    uint8_t assigned[TOPIC_N][STATS_MAX_PARTITIONS];
    int64_t hi_queried[TOPIC_N][STATS_MAX_PARTITIONS]; /* broker high watermark, -1: none */
    int64_t start_at[TOPIC_N][STATS_MAX_PARTITIONS]; /* where a partition started: the
                                                          committed offset; -1: earliest */
    uint64_t last_hi_query_ms;
    uint64_t counters[INGEST_NCOUNTERS];
    uint64_t barrier_seq;
    int paused;
    int dirty; /* something was handed over since the last barrier */
    rd_kafka_message_t *held[INGEST_MAX_HELD]; /* consumed while paused, handled on resume */
    size_t nheld;
    size_t example_size;
    unsigned char *example;           /* scratch example record */
    _Atomic uint64_t dlq_outstanding; /* dead-letter copies not yet acknowledged */
    struct log_ratelimit reject_rl;
    struct log_ratelimit error_rl;
    struct log_ratelimit meta_rl; /* static: metadata failures (retried every second) */
    int static_assigned;          /* static: the first metadata answer has been assigned */
    int static_over_logged;       /* static: partitions beyond STATS_MAX_PARTITIONS were logged */

    /* mailbox: durable offsets from the trainer, committed by the ingest thread */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t durable_seq;   /* highest durable barrier seq */
    uint64_t committed_seq; /* highest committed */
    uint64_t failed_seq;    /* highest barrier whose checkpoint failed */
    uint64_t retried_seq;   /* failed_seq already answered by a new barrier (ingest) */
    struct checkpoint_offset *durable;
    size_t ndurable;
};

void ingest_barrier_free(struct ingest_barrier *b)
{
    if (!b) return;
    free(b->offsets);
    free(b->joiner_state);
    free(b);
}

static int topic_kind(const struct ingest *in, const char *name)
{
    for (int t = 0; t < TOPIC_N; t++)
        if (strcmp(name, in->topics[t]) == 0) return t;
    return -1;
}

static void sync_stats(struct ingest *in)
{
    struct stats *s = in->stats;
    stats_set(&s->events_consumed[TOPIC_CLICKS], in->counters[INGEST_CONSUMED_CLICKS]);
    stats_set(&s->events_consumed[TOPIC_TRANSACTIONS], in->counters[INGEST_CONSUMED_TRANSACTIONS]);
    for (int r = 0; r < REJECT_NREASONS; r++)
        stats_set(&s->events_rejected[r], in->counters[INGEST_REJECTED_FIRST + r]);
    struct joiner_counts jc;
    joiner_counts(in->joiner, &jc);
    in->counters[INGEST_EXAMPLES_POSITIVE] = jc.positives;
    in->counters[INGEST_EXAMPLES_NEGATIVE] = jc.negatives;
    in->counters[INGEST_UNMATCHED] = jc.unmatched;
    in->counters[INGEST_EVICTED] = jc.evicted;
    stats_set(&s->examples_positive, jc.positives);
    stats_set(&s->examples_negative, jc.negatives);
    stats_set(&s->unmatched_transactions, jc.unmatched);
    stats_set(&s->pending_evicted, jc.evicted);
    stats_set(&s->pending_labels, jc.pending);
    stats_set(&s->pending_transactions, jc.held_transactions);
    stats_set(&s->queue_examples, queue_len(in->q));
    stats_set(&s->ingest_paused, (uint64_t)in->paused);
    stats_set(&s->dead_letter_errors, in->counters[INGEST_DEAD_LETTER_ERRORS]);
}

/* ---- the dead-letter producer ---- */

static void dlq_delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct ingest *in = opaque;
    if (m->err) {
        /* Retriable errors are retried by librdkafka forever (message.timeout.ms=0); what
         * reaches us is permanent: count it, the operator must act (log below). */
        in->counters[INGEST_DEAD_LETTER_ERRORS]++;
        uint64_t sup;
        if (log_ratelimit_ok(&in->error_rl, &sup))
            LOG(LOG_ERROR, "ingest", "dead-letter copy failed: %s (%" PRIu64 " suppressed)",
                rd_kafka_err2str(m->err), sup);
    }
    atomic_fetch_sub(&in->dlq_outstanding, 1);
}

static void dead_letter(struct ingest *in, const rd_kafka_message_t *m, int reason)
{
    if (!in->dlq) return;
    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    const char *src = rd_kafka_topic_name(m->rkt);
    atomic_fetch_add(&in->dlq_outstanding, 1);
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            in->dlq, RD_KAFKA_V_RKT(in->dlq_topic), RD_KAFKA_V_VALUE(m->payload, m->len),
            RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("intentd-reason", stats_reject_names[reason], -1),
            RD_KAFKA_V_HEADER("intentd-source-topic", src, -1),
            RD_KAFKA_V_HEADER("intentd-source-partition", part, -1),
            RD_KAFKA_V_HEADER("intentd-source-offset", off, -1), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(in->dlq, 50); /* wait for room; deliveries free it */
            continue;
        }
        atomic_fetch_sub(&in->dlq_outstanding, 1);
        in->counters[INGEST_DEAD_LETTER_ERRORS]++;
        LOG(LOG_ERROR, "ingest", "cannot dead-letter %s[%d]@%" PRId64 ": %s", src,
            (int)m->partition, m->offset, rd_kafka_err2str(err));
        return;
    }
}

/* ---- message handling ---- */

struct emit_ctx {
    struct ingest *in;
};

/* The joiner's emit callback: a labelled example into the queue.  Ingest checked for room
 * before handing the event over, but one event can close many windows: such a burst goes
 * in beyond capacity (bounded by labels.max_pending), since the event cannot be un-read. */
static void emit_example(void *ctx, const void *example, int label)
{
    struct ingest *in = ctx;
    (void)label; /* the joiner has set the example's label */
    in->dirty = 1;
    if (queue_push_example_force(in->q, example) < 0) {
        uint64_t sup;
        if (log_ratelimit_ok(&in->error_rl, &sup))
            LOG(LOG_ERROR, "ingest", "cannot queue an example (out of memory or stopping)");
    }
}

static void reject(struct ingest *in, const rd_kafka_message_t *m, int reason, const char *why)
{
    in->counters[INGEST_REJECTED_FIRST + reason]++;
    uint64_t sup;
    if (log_ratelimit_ok(&in->reject_rl, &sup)) {
        if (sup)
            LOG(LOG_WARN, "ingest",
                "%" PRIu64 " more rejections were not logged (at most %u "
                "lines per %" PRIu64 " s; intentd_events_rejected_total counts them all)",
                sup, in->reject_rl.burst, in->reject_rl.period_ms / 1000);
        LOG(LOG_WARN, "ingest", "rejected %s[%d]@%" PRId64 " (%s): %s", rd_kafka_topic_name(m->rkt),
            (int)m->partition, m->offset, stats_reject_names[reason], why);
    }
    dead_letter(in, m, reason);
}

/* The suppressed-rejections summary also when no rejection follows to carry it. */
static void reject_log_flush(struct ingest *in, uint64_t now)
{
    struct log_ratelimit *rl = &in->reject_rl;
    if (rl->suppressed == 0 || now - rl->window_start_ms < rl->period_ms) return;
    LOG(LOG_WARN, "ingest",
        "%" PRIu64 " more rejections were not logged (at most %u lines "
        "per %" PRIu64 " s; intentd_events_rejected_total counts them all)",
        rl->suppressed, rl->burst, rl->period_ms / 1000);
    rl->suppressed = 0;
}

static void handle_message(struct ingest *in, rd_kafka_message_t *m)
{
    int t = topic_kind(in, rd_kafka_topic_name(m->rkt));
    int p = (int)m->partition;
    if (t < 0 || p < 0 || p >= STATS_MAX_PARTITIONS) return;
    in->counters[t == TOPIC_CLICKS ? INGEST_CONSUMED_CLICKS : INGEST_CONSUMED_TRANSACTIONS]++;

    rd_kafka_timestamp_type_t tstype;
    int64_t kafka_ts = rd_kafka_message_timestamp(m, &tstype);
    struct event ev;
    char why[256];
    uint32_t unknown = 0;
    int reason = event_parse(in->cfg, in->f, (enum stats_topic)t, m->payload, m->len, kafka_ts,
                             (int64_t)log_wall_ms(), &ev, in->example, &unknown, why, sizeof why);
    in->counters[INGEST_UNKNOWN_FEATURES] += unknown;
    if (unknown) stats_add(&in->stats->unknown_features, unknown);
    if (reason >= 0) {
        reject(in, m, reason, why);
    } else if (t == TOPIC_CLICKS) {
        joiner_click(in->joiner, p, &ev, in->example, log_now_ms());
    } else {
        joiner_transaction(in->joiner, p, &ev, log_now_ms());
    }
    event_clear(&ev);
    in->handed[t][p] = m->offset + 1;
    in->dirty = 1;
}

/* ---- pause / resume ---- */

static rd_kafka_topic_partition_list_t *assigned_list(struct ingest *in)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(in->consumer, &l) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    return l;
}

static void set_paused(struct ingest *in, int paused)
{
    if (in->paused == paused) return;
    rd_kafka_topic_partition_list_t *l = assigned_list(in);
    if (l) {
        if (paused)
            rd_kafka_pause_partitions(in->consumer, l);
        else
            rd_kafka_resume_partitions(in->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
    in->paused = paused;
    stats_set(&in->stats->ingest_paused, (uint64_t)paused);
    LOG(LOG_DEBUG, "ingest", "%s partitions (queue %zu)", paused ? "paused" : "resumed",
        queue_len(in->q));
}

/* ---- rebalance ---- */

/* Sets each partition's start offset (handed > checkpoint > committed > earliest) and marks
 * it assigned; both kafka.assignment modes go through here. */
static void resolve_offsets(struct ingest *in, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int t = topic_kind(in, tp->topic);
        int p = (int)tp->partition;
        if (t < 0 || p < 0 || p >= STATS_MAX_PARTITIONS) continue;
        int64_t want = in->handed[t][p] >= 0 ? in->handed[t][p] : in->resume_at[t][p];
        if (want >= 0) {
            /* Offsets the broker no longer has (retention, a recreated topic, an embedded
             * broker's restart) are never skipped silently: count, log, resume earliest. */
            int64_t lo = -1, hi = -1;
            rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
                in->consumer, tp->topic, tp->partition, &lo, &hi, 5000);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR && (want < lo || want > hi)) {
                LOG(LOG_WARN, "ingest",
                    "%s[%d]: offset %" PRId64 " is not on the broker (it has %" PRId64 "..%" PRId64
                    "); the model is kept, resuming from the earliest offset",
                    tp->topic, p, want, lo, hi);
                stats_add(&in->stats->offset_resets[t][p], 1);
                want = lo;
            }
            tp->offset = want;
        } else {
            tp->offset = RD_KAFKA_OFFSET_STORED; /* committed, else earliest */
        }
        in->assigned[t][p] = 1;
        in->hi_queried[t][p] = -1; /* a recreated topic starts over */
        joiner_assign(in->joiner, t, p, log_now_ms());
        in->start_at[t][p] = tp->offset;
    }
    /* Where the partitions that start at their committed offset start, for the lag until
     * their first message (librdkafka's position is unknown until then). */
    rd_kafka_topic_partition_list_t *stored = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].offset == RD_KAFKA_OFFSET_STORED)
            rd_kafka_topic_partition_list_add(stored, parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (stored->cnt && rd_kafka_committed(in->consumer, stored, 5000) == 0) {
        for (int i = 0; i < stored->cnt; i++) {
            int t = topic_kind(in, stored->elems[i].topic);
            int p = (int)stored->elems[i].partition;
            if (t >= 0 && p >= 0 && p < STATS_MAX_PARTITIONS)
                in->start_at[t][p] = stored->elems[i].err ? -1 : stored->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(stored);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int t = topic_kind(in, tp->topic);
        int p = (int)tp->partition;
        if (t < 0 || p < 0 || p >= STATS_MAX_PARTITIONS) continue;
        if (tp->offset >= 0)
            LOG(LOG_INFO, "ingest", "assigned %s[%d] at offset %" PRId64, tp->topic, p,
                tp->offset);
        else if (in->start_at[t][p] >= 0)
            LOG(LOG_INFO, "ingest", "assigned %s[%d] at its committed offset %" PRId64,
                tp->topic, p, in->start_at[t][p]);
        else
            LOG(LOG_INFO, "ingest", "assigned %s[%d] at the earliest offset (none committed)",
                tp->topic, p);
    }
}

static void on_assign(struct ingest *in, rd_kafka_topic_partition_list_t *parts)
{
    resolve_offsets(in, parts);
    rd_kafka_resp_err_t err = rd_kafka_assign(in->consumer, parts);
    if (err) LOG(LOG_ERROR, "ingest", "assign failed: %s", rd_kafka_err2str(err));
    if (in->paused) { /* new partitions start paused too while the queue is full */
        in->paused = 0;
        set_paused(in, 1);
    }
}

static void on_revoke(struct ingest *in, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        int t = topic_kind(in, parts->elems[i].topic);
        int p = (int)parts->elems[i].partition;
        if (t < 0 || p < 0 || p >= STATS_MAX_PARTITIONS) continue;
        in->assigned[t][p] = 0;
        atomic_store(&in->stats->consumer_lag[t][p], -1);
        joiner_revoke(in->joiner, t, p);
        LOG(LOG_INFO, "ingest", "revoked %s[%d]", parts->elems[i].topic, p);
    }
    /* Messages held for a revoked partition are dropped unhandled: their offsets were not
     * handed over, so whoever owns the partition next reads them again. */
    size_t k = 0;
    for (size_t i = 0; i < in->nheld; i++) {
        int t = topic_kind(in, rd_kafka_topic_name(in->held[i]->rkt));
        int p = (int)in->held[i]->partition;
        if (t >= 0 && p >= 0 && p < STATS_MAX_PARTITIONS && !in->assigned[t][p])
            rd_kafka_message_destroy(in->held[i]);
        else
            in->held[k++] = in->held[i];
    }
    in->nheld = k;
    rd_kafka_assign(in->consumer, NULL);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)rk;
    struct ingest *in = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(in, parts);
    else
        on_revoke(in, parts);
}

/* ---- static assignment ---- */

/* Adds to parts every partition of topic t that is not assigned yet.  Returns 0, or a
 * librdkafka error when the broker did not describe the topic. */
static rd_kafka_resp_err_t add_new_partitions(struct ingest *in, int t,
                                              rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(in->consumer, in->topics[t], NULL);
    if (!rkt) return rd_kafka_last_error();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(in->consumer, 0, rkt, &md, INGEST_META_TIMEOUT_MS);
    if (!err && md->topic_cnt != 1) err = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (!err) err = md->topics[0].err;
    if (!err && md->topics[0].partition_cnt == 0) err = RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
    for (int i = 0; !err && i < md->topics[0].partition_cnt; i++) {
        int p = (int)md->topics[0].partitions[i].id;
        if (p < 0 || p >= STATS_MAX_PARTITIONS) {
            if (!in->static_over_logged)
                LOG(LOG_ERROR, "ingest",
                    "static: %s[%d] is beyond the %d partitions one daemon tracks; not read",
                    in->topics[t], p, STATS_MAX_PARTITIONS);
            in->static_over_logged = 1;
            continue;
        }
        if (!in->assigned[t][p]) rd_kafka_topic_partition_list_add(parts, in->topics[t], p);
    }
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return err;
}

/* kafka.assignment static: reads the metadata of both topics and assigns every partition not
 * assigned yet, at the same offsets a group assignment would resume at.  Returns 0, or -EAGAIN
 * when a topic could not be described (nothing is assigned then: retried). */
static int static_assign(struct ingest *in)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    for (int t = 0; t < TOPIC_N; t++) {
        rd_kafka_resp_err_t err = add_new_partitions(in, t, parts);
        if (err) {
            uint64_t sup;
            if (log_ratelimit_ok(&in->meta_rl, &sup))
                LOG(in->static_assigned ? LOG_WARN : LOG_INFO, "ingest",
                    "static: no metadata for %s: %s (retrying every %d s)", in->topics[t],
                    rd_kafka_err2str(err),
                    (in->static_assigned ? INGEST_META_REFRESH_MS : INGEST_META_RETRY_MS) / 1000);
            rd_kafka_topic_partition_list_destroy(parts);
            return -EAGAIN;
        }
    }
    if (parts->cnt > 0) {
        if (in->static_assigned)
            LOG(LOG_INFO, "ingest", "static: %d new partitions appeared; assigning them",
                parts->cnt);
        resolve_offsets(in, parts);
        /* Incremental: the partitions already assigned keep their fetch positions (and the
         * messages held for them while paused). */
        rd_kafka_error_t *e = rd_kafka_incremental_assign(in->consumer, parts);
        if (e) {
            LOG(LOG_ERROR, "ingest", "static: assign failed: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            for (int i = 0; i < parts->cnt; i++) { /* not ours: found again next time */
                int t = topic_kind(in, parts->elems[i].topic);
                int p = (int)parts->elems[i].partition;
                in->assigned[t][p] = 0;
                joiner_revoke(in->joiner, t, p);
            }
            rd_kafka_topic_partition_list_destroy(parts);
            return -EAGAIN;
        }
        if (in->paused) { /* new partitions start paused too while the queue is full */
            in->paused = 0;
            set_paused(in, 1);
        }
    }
    if (!in->static_assigned)
        LOG(LOG_INFO, "ingest", "static: assigned %d partitions of %s and %s", parts->cnt,
            in->topics[TOPIC_CLICKS], in->topics[TOPIC_TRANSACTIONS]);
    in->static_assigned = 1;
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

/* ---- barriers and commits ---- */

static int put_barrier(struct ingest *in, int final)
{
    struct ingest_barrier *b = calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    size_t n = 0;
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++) n += in->handed[t][p] >= 0;
    b->offsets = calloc(n ? n : 1, sizeof *b->offsets);
    if (!b->offsets) {
        free(b);
        return -ENOMEM;
    }
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++) {
            if (in->handed[t][p] < 0) continue;
            struct checkpoint_offset *o = &b->offsets[b->noffsets++];
            snprintf(o->topic, sizeof o->topic, "%s", in->topics[t]);
            o->partition = p;
            o->offset = in->handed[t][p];
        }
    int rc = joiner_save(in->joiner, &b->joiner_state, &b->joiner_len);
    if (rc < 0) {
        ingest_barrier_free(b);
        return rc;
    }
    sync_stats(in);
    memcpy(b->counters, in->counters, sizeof b->counters);
    b->seq = ++in->barrier_seq;
    b->final = final;
    rc = queue_push_barrier(in->q, b); /* from here the trainer owns b */
    if (rc < 0) {
        in->barrier_seq--;
        ingest_barrier_free(b);
    }
    return rc;
}

void ingest_durable(struct ingest *in, uint64_t seq, int ok,
                    const struct checkpoint_offset *offsets, size_t noffsets)
{
    if (!ok) { /* nothing to commit; only wake a final wait */
        pthread_mutex_lock(&in->lock);
        if (seq > in->failed_seq) in->failed_seq = seq;
        pthread_cond_broadcast(&in->cond);
        pthread_mutex_unlock(&in->lock);
        return;
    }
    struct checkpoint_offset *copy = malloc((noffsets ? noffsets : 1) * sizeof *copy);
    if (copy && noffsets) memcpy(copy, offsets, noffsets * sizeof *copy);
    pthread_mutex_lock(&in->lock);
    if (copy && seq > in->durable_seq) {
        free(in->durable);
        in->durable = copy;
        in->ndurable = noffsets;
        in->durable_seq = seq;
        copy = NULL;
    }
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
    free(copy);
}

/* Commits the newest durable offsets (only partitions still assigned). */
static void commit_durable(struct ingest *in, int sync)
{
    pthread_mutex_lock(&in->lock);
    /* A failed checkpoint (full disk) is retried at the next interval even when nothing new
     * arrives, so its offsets get committed once the disk has room again. */
    if (in->failed_seq > in->retried_seq && in->failed_seq > in->durable_seq) {
        in->retried_seq = in->failed_seq;
        in->dirty = 1;
    }
    if (in->durable_seq == in->committed_seq) {
        pthread_mutex_unlock(&in->lock);
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)in->ndurable);
    for (size_t i = 0; i < in->ndurable; i++) {
        const struct checkpoint_offset *o = &in->durable[i];
        int t = topic_kind(in, o->topic);
        if (t < 0 || o->partition < 0 || o->partition >= STATS_MAX_PARTITIONS ||
            !in->assigned[t][o->partition])
            continue;
        rd_kafka_topic_partition_list_add(l, o->topic, o->partition)->offset = o->offset;
    }
    in->committed_seq = in->durable_seq;
    pthread_mutex_unlock(&in->lock);
    if (l->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(in->consumer, l, sync ? 0 : 1);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            LOG(LOG_WARN, "ingest", "offset commit failed: %s (the checkpoint holds them)",
                rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- lag ---- */

/* intentd_kafka_consumer_lag: per assigned partition, the broker's high watermark minus the
 * next offset ingest has to handle (a message that sits in the joiner or the queue counts as
 * handled; lag is what has not been read yet). */
static void update_lag(struct ingest *in, uint64_t now)
{
    rd_kafka_topic_partition_list_t *l = assigned_list(in);
    if (!l) return;
    rd_kafka_position(in->consumer, l);
    /* A paused partition is not fetched, so librdkafka's cached high watermark stops while
     * producers go on: under backpressure, exactly when an operator looks at the lag, it
     * would freeze.  So while paused, ask the brokers every INGEST_HI_QUERY_MS; bounded: one
     * short request per partition, given up at the first that fails (a broker down). */
    int query = in->paused && now - in->last_hi_query_ms >= INGEST_HI_QUERY_MS;
    if (query) in->last_hi_query_ms = now;
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        int t = topic_kind(in, tp->topic);
        int p = (int)tp->partition;
        if (t < 0 || p < 0 || p >= STATS_MAX_PARTITIONS) continue;
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(in->consumer, tp->topic, tp->partition, &lo, &hi))
            lo = hi = -1;
        if (query) {
            int64_t qlo, qhi;
            if (rd_kafka_query_watermark_offsets(in->consumer, tp->topic, tp->partition, &qlo, &qhi,
                                                 INGEST_HI_QUERY_TIMEOUT_MS) == 0)
                in->hi_queried[t][p] = qhi;
            else
                query = 0;
        }
        if (in->hi_queried[t][p] > hi) hi = in->hi_queried[t][p];
        int64_t pos = in->handed[t][p] >= 0 ? in->handed[t][p] : tp->offset;
        if (pos < 0) pos = in->start_at[t][p];
        if (pos < 0) pos = lo;
        if (hi >= 0 && pos >= 0)
            atomic_store(&in->stats->consumer_lag[t][p], hi > pos ? hi - pos : 0);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- the thread ---- */

static int queue_has_room(struct ingest *in)
{
    return queue_free_space(in->q) > 0;
}

static void handle_or_hold(struct ingest *in, rd_kafka_message_t *m)
{
    /* Pausing is dear: librdkafka drops what it has pre-fetched for the partitions and
     * fetches it again after the resume.  A queue that is full only for a moment (a burst
     * of examples from one watermark move, which the trainer eats in a millisecond) is
     * waited on briefly instead; a trainer that stays behind makes ingest pause. */
    if (!in->paused && (queue_has_room(in) || queue_wait_space(in->q, INGEST_FULL_GRACE_MS) == 0)) {
        handle_message(in, m);
        rd_kafka_message_destroy(m);
        return;
    }
    /* Full: pause, keep the message (its offset is already past librdkafka's position, so
     * the fetcher will not give it again) and handle it once the trainer has drained. */
    set_paused(in, 1);
    if (in->nheld < INGEST_MAX_HELD) {
        in->held[in->nheld++] = m;
    } else { /* cannot happen: one per partition at most; never lose it though */
        handle_message(in, m);
        rd_kafka_message_destroy(m);
    }
}

static void drain_held(struct ingest *in)
{
    size_t i = 0;
    while (i < in->nheld && queue_has_room(in)) {
        handle_message(in, in->held[i]);
        rd_kafka_message_destroy(in->held[i]);
        i++;
    }
    memmove(in->held, in->held + i, (in->nheld - i) * sizeof in->held[0]);
    in->nheld -= i;
    if (in->nheld == 0 && in->paused && queue_below_low_water(in->q)) set_paused(in, 0);
}

static void consumer_error(struct ingest *in, rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && m->rkt) {
        int t = topic_kind(in, rd_kafka_topic_name(m->rkt));
        if (t >= 0 && m->partition >= 0 && m->partition < STATS_MAX_PARTITIONS)
            stats_add(&in->stats->offset_resets[t][m->partition], 1);
        LOG(LOG_WARN, "ingest", "%s[%d]: offset reset to the earliest: %s",
            rd_kafka_topic_name(m->rkt), (int)m->partition, rd_kafka_message_errstr(m));
        return;
    }
    uint64_t sup;
    if (log_ratelimit_ok(&in->error_rl, &sup))
        LOG(LOG_WARN, "ingest", "consumer: %s", rd_kafka_message_errstr(m));
}

static void *ingest_main(void *arg)
{
    /* Role: the only thread that talks to Kafka's consumer.  Reads, validates, joins and
     * queues; puts checkpoint barriers; commits what the trainer made durable. */
    struct ingest *in = arg;
    pthread_setname_np(pthread_self(), "ingest"); /* for top -H and per-thread CPU */
    uint64_t last_tick = 0, last_stats = 0, last_barrier = log_now_ms(), barrier_due = 0;
    uint64_t next_metadata = 0;
    int barrier_wanted = 0;
    int is_static = in->cfg->kafka.assignment == ASSIGNMENT_STATIC;
    if (is_static)
        LOG(LOG_INFO, "ingest",
            "kafka.assignment static: one daemon per group, partitions assigned directly, no "
            "group join (a restart consumes at once; offsets are committed to group %s)",
            in->cfg->kafka.group_id);
    else
        LOG(LOG_INFO, "ingest",
            "kafka.assignment group: joining consumer group %s (a restart after a crash "
            "waits for the broker to drop the dead member: up to session.timeout.ms)",
            in->cfg->kafka.group_id);
    while (!atomic_load(&in->stop)) {
        uint64_t now = log_now_ms();
        atomic_store(&in->heartbeat_ms, now);
        if (is_static && now >= next_metadata) {
            /* Blocks for at most INGEST_META_TIMEOUT_MS per topic, well inside the
             * watchdog's heartbeat allowance. */
            static_assign(in); /* failures are logged and retried */
            now = log_now_ms();
            next_metadata =
                now + (in->static_assigned ? INGEST_META_REFRESH_MS : INGEST_META_RETRY_MS);
            atomic_store(&in->heartbeat_ms, now);
        }
        if (in->nheld)
            drain_held(in);
        else if (in->paused && queue_below_low_water(in->q))
            set_paused(in, 0);

        if (barrier_wanted && in->dirty && atomic_load(&in->dlq_outstanding) > 0 &&
            now - barrier_due < INGEST_DLQ_WAIT_MS) {
            /* A barrier is due but dead-letter copies are in flight: read nothing new until
             * they are acknowledged, or a steady stream of bad messages (always one copy in
             * flight) would hold every checkpoint off.  Acks take milliseconds; bounded, so
             * that an unreachable dead-letter topic does not stop consumption (the barrier
             * is then skipped below and tried again at the next interval). */
            rd_kafka_poll(in->dlq, INGEST_POLL_MS);
        } else {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(in->consumer, INGEST_POLL_MS);
            if (m) {
                if (m->err) {
                    consumer_error(in, m);
                    rd_kafka_message_destroy(m);
                } else {
                    handle_or_hold(in, m);
                }
            }
            if (in->dlq) rd_kafka_poll(in->dlq, 0);
        }

        now = log_now_ms();
        if (now - last_tick >= INGEST_TICK_MS) {
            joiner_tick(in->joiner, now);
            reject_log_flush(in, now);
            last_tick = now;
        }
        if (now - last_stats >= INGEST_STATS_MS) {
            update_lag(in, now);
            sync_stats(in);
            last_stats = now;
        }
        if (!barrier_wanted && now - last_barrier >= atomic_load(&in->checkpoint_interval_ms)) {
            barrier_wanted = 1;
            barrier_due = now;
        }
        /* A barrier only when every dead-letter copy so far is acknowledged (their offsets
         * may be committed only then). */
        if (barrier_wanted && !in->dirty) { /* nothing new: the last checkpoint holds */
            barrier_wanted = 0;
            last_barrier = now;
        }
        if (barrier_wanted && atomic_load(&in->dlq_outstanding) > 0 &&
            now - barrier_due >= INGEST_DLQ_WAIT_MS) {
            uint64_t sup;
            if (log_ratelimit_ok(&in->error_rl, &sup))
                LOG(LOG_WARN, "ingest",
                    "checkpoint skipped: %" PRIu64 " dead-letter copies "
                    "unacknowledged for %d s (is %s writable?)",
                    (uint64_t)atomic_load(&in->dlq_outstanding), INGEST_DLQ_WAIT_MS / 1000,
                    in->cfg->kafka.dead_letter_topic);
            barrier_wanted = 0;
            last_barrier = now;
        }
        if (barrier_wanted && atomic_load(&in->dlq_outstanding) == 0) {
            in->dirty = 0;
            if (put_barrier(in, 0) == 0) {
                barrier_wanted = 0;
                last_barrier = now;
            } else {
                in->dirty = 1;
            }
        }
        commit_durable(in, 0);
    }

    /* Graceful stop: no more reading; flush the dead-letter copies, put the final barrier,
     * wait for it to be durable, commit synchronously, leave the group. */
    if (in->dlq) {
        for (int i = 0; i < 300 && atomic_load(&in->dlq_outstanding) > 0; i++)
            rd_kafka_poll(in->dlq, 100);
        if (atomic_load(&in->dlq_outstanding) > 0)
            LOG(LOG_WARN, "ingest",
                "stopping with %" PRIu64 " dead-letter copies in flight; "
                "their messages are read again at the next start",
                (uint64_t)atomic_load(&in->dlq_outstanding));
    }
    /* Held messages were never handed over; they are read again after a restart. */
    for (size_t i = 0; i < in->nheld; i++) rd_kafka_message_destroy(in->held[i]);
    in->nheld = 0;
    if (atomic_load(&in->dlq_outstanding) == 0 && atomic_load(&in->stop) == 1 &&
        put_barrier(in, 1) == 0) {
        uint64_t want = in->barrier_seq;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60; /* bounded: the unit's TimeoutStopSec allows for it */
        pthread_mutex_lock(&in->lock);
        while (in->durable_seq < want && in->failed_seq < want && atomic_load(&in->stop) == 1)
            if (pthread_cond_timedwait(&in->cond, &in->lock, &ts) == ETIMEDOUT) break;
        int ok = in->durable_seq >= want;
        pthread_mutex_unlock(&in->lock);
        if (ok)
            commit_durable(in, 1);
        else
            LOG(LOG_WARN, "ingest",
                "the final checkpoint did not become durable; offsets "
                "stay at the previous checkpoint");
    }
    sync_stats(in);
    rd_kafka_consumer_close(in->consumer);
    return NULL;
}

/* ---- life cycle ---- */

static int set_conf(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen)
{
    char e[512];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof e) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka property %s=%s: %s", k, v, e);
        return -EINVAL;
    }
    return 0;
}

/* Our defaults, then kafka.properties verbatim (so every librdkafka setting and SASL/SSL
 * work), then what correctness needs and no property may change. */
static rd_kafka_conf_t *make_conf(const struct config *cfg, const char *brokers, int consumer,
                                  char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Quick join and re-join: one daemon per group, so a short session timeout lets a
     * restart after a crash get its partitions back within seconds; 6 s is Kafka's default
     * group.min.session.timeout.ms, so real brokers accept it. */
    const char *defaults[][2] = {
        {"session.timeout.ms", "6000"},
        {"heartbeat.interval.ms", "1000"},
        {"fetch.wait.max.ms", "100"},
        {"topic.metadata.refresh.interval.ms", "10000"},
        {"queued.max.messages.kbytes", "16384"},
        {"message.timeout.ms", "0"},
        {"client.id", "intentd"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        if (consumer && strcmp(defaults[i][0], "message.timeout.ms") == 0) continue;
        if (!consumer &&
            (strstr(defaults[i][0], "session") || strstr(defaults[i][0], "heartbeat") ||
             strstr(defaults[i][0], "fetch") || strstr(defaults[i][0], "queued.max.messages")))
            continue;
        if (set_conf(conf, defaults[i][0], defaults[i][1], err, errlen)) goto fail;
    }
    for (size_t i = 0; i < cfg->kafka.nproperties; i++) {
        const char *k = cfg->kafka.properties[i].key;
        /* consumer-only or producer-only keys are skipped for the other client */
        char e[512];
        rd_kafka_conf_res_t r =
            rd_kafka_conf_set(conf, k, cfg->kafka.properties[i].value, e, sizeof e);
        if (r == RD_KAFKA_CONF_INVALID) {
            snprintf(err, errlen, "kafka.properties.%s: %s", k, e);
            goto fail;
        }
        if (r == RD_KAFKA_CONF_UNKNOWN) {
            snprintf(err, errlen, "kafka.properties.%s: %s", k, e);
            goto fail;
        }
    }
    if (set_conf(conf, "bootstrap.servers", brokers, err, errlen)) goto fail;
    if (consumer) {
        if (set_conf(conf, "group.id", cfg->kafka.group_id, err, errlen) ||
            set_conf(conf, "enable.auto.commit", "false", err, errlen) ||
            set_conf(conf, "enable.auto.offset.store", "false", err, errlen) ||
            set_conf(conf, "auto.offset.reset", "earliest", err, errlen) ||
            set_conf(conf, "enable.partition.eof", "false", err, errlen))
            goto fail;
    } else {
        if (set_conf(conf, "enable.idempotence", "true", err, errlen)) goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static void kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    LOG(level <= 3   ? LOG_ERROR
        : level <= 4 ? LOG_WARN
        : level <= 6 ? LOG_INFO
                     : LOG_DEBUG,
        "kafka", "%s: %s", fac, buf);
}

struct ingest *ingest_new(const struct config *cfg, const char *brokers, struct queue *q,
                          struct joiner *joiner, const struct features *f, struct stats *stats,
                          const struct ingest_resume *resume, char *err, size_t errlen)
{
    struct ingest *in = calloc(1, sizeof *in);
    if (!in) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    in->cfg = cfg;
    in->q = q;
    in->joiner = joiner;
    in->f = f;
    in->stats = stats;
    in->topics[TOPIC_CLICKS] = cfg->kafka.clicks_topic;
    in->topics[TOPIC_TRANSACTIONS] = cfg->kafka.transactions_topic;
    atomic_store(&in->checkpoint_interval_ms, cfg->checkpoint.interval_ms);
    in->reject_rl = (struct log_ratelimit){.period_ms = 10000, .burst = 10};
    in->error_rl = (struct log_ratelimit){.period_ms = 10000, .burst = 10};
    in->meta_rl = (struct log_ratelimit){.period_ms = 10000, .burst = 1};
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, NULL);
    for (int t = 0; t < TOPIC_N; t++)
        for (int p = 0; p < STATS_MAX_PARTITIONS; p++)
            in->handed[t][p] = in->resume_at[t][p] = in->hi_queried[t][p] = in->start_at[t][p] = -1;
    if (resume) {
        for (size_t i = 0; i < resume->noffsets; i++) {
            const struct checkpoint_offset *o = &resume->offsets[i];
            int t = topic_kind(in, o->topic);
            if (t < 0 || o->partition < 0 || o->partition >= STATS_MAX_PARTITIONS) continue;
            in->resume_at[t][o->partition] = o->offset;
        }
        if (resume->counters) memcpy(in->counters, resume->counters, sizeof in->counters);
    }
    in->example_size = features_example_size(f);
    in->example = calloc(1, in->example_size);
    if (!in->example) {
        snprintf(err, errlen, "out of memory");
        return ingest_free(in);
    }

    char e[512];
    rd_kafka_conf_t *conf = make_conf(cfg, brokers, 1, err, errlen);
    if (!conf) return ingest_free(in);
    rd_kafka_conf_set_opaque(conf, in);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log);
    in->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof e);
    if (!in->consumer) {
        snprintf(err, errlen, "kafka consumer: %s", e);
        rd_kafka_conf_destroy(conf);
        return ingest_free(in);
    }
    conf = NULL; /* now owned by the consumer */
    rd_kafka_poll_set_consumer(in->consumer);

    if (cfg->kafka.dead_letter_topic[0]) {
        conf = make_conf(cfg, brokers, 0, err, errlen);
        if (!conf) return ingest_free(in);
        rd_kafka_conf_set_opaque(conf, in);
        rd_kafka_conf_set_dr_msg_cb(conf, dlq_delivered);
        rd_kafka_conf_set_log_cb(conf, kafka_log);
        in->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
        if (!in->dlq) {
            snprintf(err, errlen, "kafka dead-letter producer: %s", e);
            rd_kafka_conf_destroy(conf);
            return ingest_free(in);
        }
        in->dlq_topic = rd_kafka_topic_new(in->dlq, cfg->kafka.dead_letter_topic, NULL);
    }

    /* static: the ingest thread assigns the partitions once their metadata is known (it may
     * wait for the broker; ingest_new must not, so READY=1 goes out at once). */
    if (cfg->kafka.assignment == ASSIGNMENT_GROUP) {
        rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(2);
        rd_kafka_topic_partition_list_add(subs, cfg->kafka.clicks_topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_topic_partition_list_add(subs, cfg->kafka.transactions_topic,
                                          RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t rerr = rd_kafka_subscribe(in->consumer, subs);
        rd_kafka_topic_partition_list_destroy(subs);
        if (rerr) {
            snprintf(err, errlen, "kafka subscribe: %s", rd_kafka_err2str(rerr));
            return ingest_free(in);
        }
    }
    joiner_set_emit(joiner, emit_example, in);
    sync_stats(in); /* a restart shows the checkpoint's counts before the first poll */
    return in;
}

int ingest_start(struct ingest *in)
{
    int rc = pthread_create(&in->thread, NULL, ingest_main, in);
    if (rc) return -rc;
    in->started = 1;
    return 0;
}

void ingest_request_stop(struct ingest *in)
{
    int expected = 0;
    atomic_compare_exchange_strong(&in->stop, &expected, 1);
}

int ingest_join(struct ingest *in)
{
    if (!in->started) return 0;
    int rc = pthread_join(in->thread, NULL);
    in->started = 0;
    return -rc;
}

void ingest_set_checkpoint_interval(struct ingest *in, uint64_t ms)
{
    atomic_store(&in->checkpoint_interval_ms, ms);
}

uint64_t ingest_heartbeat_ms(const struct ingest *in)
{
    return atomic_load((_Atomic uint64_t *)&in->heartbeat_ms);
}

struct ingest *ingest_free(struct ingest *in)
{
    if (!in) return NULL;
    if (in->started) {
        atomic_store(&in->stop, 2); /* hard: do not wait for a final checkpoint */
        pthread_mutex_lock(&in->lock);
        pthread_cond_broadcast(&in->cond);
        pthread_mutex_unlock(&in->lock);
        ingest_join(in);
    }
    if (in->consumer) rd_kafka_destroy(in->consumer);
    if (in->dlq) {
        rd_kafka_flush(in->dlq, 5000);
        if (in->dlq_topic) rd_kafka_topic_destroy(in->dlq_topic);
        rd_kafka_destroy(in->dlq);
    }
    for (size_t i = 0; i < in->nheld; i++) rd_kafka_message_destroy(in->held[i]);
    free(in->example);
    free(in->durable);
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->cond);
    free(in);
    return NULL;
}
