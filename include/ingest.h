/* ingest.h — the ingest thread: Kafka consumer → event validation → joiner → example queue.
 *
 * One librdkafka high-level consumer in one consumer group reads both topics.  Good events
 * go to the joiner, whose labelled examples go into the bounded queue; bad ones are copied
 * unchanged to the dead-letter topic.  When the queue is full, ingest pauses its
 * partitions and resumes them once the trainer has drained it below half.
 *
 * Offsets are never auto-committed: every checkpoint.interval ingest puts a barrier into
 * the queue carrying the offsets it has handed over, the joiner's state and its counters
 * (a consistent cut, as Flink's barriers).  When the trainer has written a checkpoint that
 * includes the barrier, it calls ingest_durable(), and ingest commits those offsets.
 *
 * Ingest never touches the model.
 */
#ifndef INTENTD_INGEST_H
#define INTENTD_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "features.h"
#include "joiner.h"
#include "queue.h"
#include "stats.h"

/* The counters ingest owns; restored from a checkpoint so that counts survive a crash. */
enum ingest_counter {
    INGEST_CONSUMED_CLICKS,
    INGEST_CONSUMED_TRANSACTIONS,
    INGEST_REJECTED_FIRST, /* REJECT_NREASONS slots follow */
    INGEST_EXAMPLES_POSITIVE = INGEST_REJECTED_FIRST + REJECT_NREASONS,
    INGEST_EXAMPLES_NEGATIVE,
    INGEST_UNMATCHED,
    INGEST_EVICTED,
    INGEST_UNKNOWN_FEATURES,
    INGEST_DEAD_LETTER_ERRORS,
    INGEST_NCOUNTERS
};

/* A barrier: what ingest contributes to a checkpoint.  Whoever holds it owns it. */
struct ingest_barrier {
    uint64_t seq;                      /* 1, 2, ... within this process */
    int final;                         /* the last barrier before shutdown */
    size_t noffsets;
    struct checkpoint_offset *offsets; /* the next offset to read, per handed-over partition */
    void *joiner_state;                /* joiner_save() at the cut */
    size_t joiner_len;
    uint64_t counters[INGEST_NCOUNTERS];
};
void ingest_barrier_free(struct ingest_barrier *b);

/* Where ingest starts: the state of a loaded checkpoint (all may be empty). */
struct ingest_resume {
    const struct checkpoint_offset *offsets; /* resume exactly here */
    size_t noffsets;
    const uint64_t *counters;                /* INGEST_NCOUNTERS values, or NULL */
};

struct ingest;

/* Creates the consumer and the dead-letter producer for `brokers` and subscribes to both
 * topics (this is the point after which READY=1 may be sent: the group join happens in the
 * thread).  The joiner (already loaded from a checkpoint, if any) is used by the ingest
 * thread only, from ingest_start on; queue, features and stats are shared and must outlive
 * the ingest.  Returns NULL with err filled. */
struct ingest *ingest_new(const struct config *cfg, const char *brokers, struct queue *q,
                          struct joiner *joiner, const struct features *f, struct stats *stats,
                          const struct ingest_resume *resume, char *err, size_t errlen);

/* Starts the ingest thread.  Returns 0 or -errno. */
int ingest_start(struct ingest *in);

/* Asks the thread to stop consuming, flush the dead-letter producer and put a final
 * barrier into the queue; the thread then waits (bounded) for that barrier to become
 * durable, commits, closes the consumer and exits.  Does not block. */
void ingest_request_stop(struct ingest *in);

/* Waits for the thread to end.  Returns 0 or -errno. */
int ingest_join(struct ingest *in);

/* The trainer reports that the checkpoint holding barrier `seq` is durable (ok = 1): its
 * offsets (copied here) are committed to Kafka by the ingest thread; or that it could not
 * be written (ok = 0): nothing is committed.  Matches trainer_durable_fn.  Thread-safe. */
void ingest_durable(struct ingest *in, uint64_t seq, int ok,
                    const struct checkpoint_offset *offsets, size_t noffsets);

/* Changes the barrier interval (SIGHUP).  Thread-safe. */
void ingest_set_checkpoint_interval(struct ingest *in, uint64_t ms);

/* Monotonic ms of the ingest thread's last loop (for the watchdog). */
uint64_t ingest_heartbeat_ms(const struct ingest *in);

/* Stops the thread if running and frees everything; accepts NULL; returns NULL. */
struct ingest *ingest_free(struct ingest *in);

#endif
