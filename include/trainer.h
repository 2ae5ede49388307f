/* trainer.h — the trainer thread: example queue → learner → snapshots and checkpoints.
 *
 * The one thread that owns the learner.  It pops examples from the queue into the learner
 * (minibatches by size, or after training.max_batch_wait), publishes a snapshot each
 * snapshot.interval once snapshot.min_examples were learned (gated on the holdout), and
 * at every barrier from ingest writes a checkpoint — the learner, the joiner state and
 * offsets the barrier carries, the counters and the served snapshot (first published anew
 * when the model changed since the last one and the gate takes it, so the checkpoint's
 * snapshot is the model at the cut) — then reports the offsets as durable so that ingest
 * commits them.
 *
 * Serving never sees the learner: it reads the snapshot slot only.
 */
#ifndef INTENTD_TRAINER_H
#define INTENTD_TRAINER_H

#include <stdint.h>

#include "checkpoint.h"
#include "config.h"
#include "learner.h"
#include "queue.h"
#include "snapshot.h"
#include "stats.h"

/* Called from the trainer thread when the checkpoint of barrier seq is durable (ok = 1,
 * offsets valid during the call) or could not be written (ok = 0). */
typedef void (*trainer_durable_fn)(void *ctx, uint64_t seq, int ok,
                                   const struct checkpoint_offset *offsets, size_t n);

struct trainer_params {
    const struct config *cfg;
    struct learner *learner; /* owned by the trainer thread from trainer_start on */
    struct queue *queue;
    struct snapshot_slot *slot; /* where snapshots are published */
    struct stats *stats;
    struct checkpoint_store *store; /* NULL: no checkpoints (tests) */
    trainer_durable_fn durable;
    void *durable_ctx;
    uint64_t version;      /* the last version served (0: none yet) */
    const char *state_dir; /* for the version high-water file; NULL: none */
};

struct trainer;

/* Returns a trainer (not yet running) or NULL with err filled.  The caller owns it. */
struct trainer *trainer_new(const struct trainer_params *p, char *err, size_t errlen);

int trainer_start(struct trainer *t);

/* Waits for the thread, which ends after the final barrier or when the queue is closed. */
int trainer_join(struct trainer *t);

/* Run-time settings (SIGHUP), applied by the trainer thread at its next loop.  cfg is
 * copied from (here, in the caller's thread; cfg is not kept): optimizer.learning_rate,
 * training.replay_ratio, training.positive_weight, training.max_batch_wait,
 * evaluation.threshold, snapshot.interval, snapshot.max_regression, snapshot.min_holdout,
 * snapshot.min_examples (not live: main passes the running value) and checkpoint.keep. */
void trainer_reload(struct trainer *t, const struct config *cfg);

/* Test seam: a stalled trainer takes nothing from the queue and stops its heartbeat. */
void trainer_set_stalled(struct trainer *t, int stalled);

/* Monotonic ms of the trainer's last loop (for the watchdog). */
uint64_t trainer_heartbeat_ms(const struct trainer *t);

/* Frees t (joining the thread first if it runs and the queue is closed); accepts NULL. */
struct trainer *trainer_free(struct trainer *t);

/* Reads STATE_DIR/model-version, the highest version ever published (0 when absent). */
uint64_t trainer_read_version_mark(const char *state_dir);

/* Writes it (to a temporary file, then renamed: safe against kill -9; made durable by the
 * next checkpoint's directory fsync).  Returns 0 or -errno. */
int trainer_write_version_mark(const char *state_dir, uint64_t version);

#endif
