/* learner.h — the trainer core: minibatches, progressive validation, the online normaliser,
 * replay, EMA weights, the holdout that gates snapshots, and the learning state that
 * checkpoints carry.  intentd-eval and the daemon's trainer thread both use it (there is
 * no second implementation).  Not thread-safe: one thread (the trainer) owns a learner.
 *
 * What learner_push does with an example (a copy is taken; the caller keeps e):
 *   1. With probability snapshot.holdout_fraction (a deterministic RNG seeded from
 *      model.seed) it goes to the holdout reservoir — the most recent examples, capacity
 *      max(evaluation.window, snapshot.min_holdout) — and is never learned from.
 *   2. Otherwise it joins the partial minibatch.  When that holds training.batch_size
 *      examples it is trained:
 *        a. standardised with the CURRENT normaliser (features_standardise);
 *        b. one training forward pass; its probabilities are the progressive scores,
 *           recorded into the metrics before anything is learned from the batch;
 *        c. the normaliser is updated with the batch's raw values;
 *        d. the optimizer step (model_step) on that same forward pass, loss weights
 *           weight · (label ? training.positive_weight : 1);
 *        e. the EMA of the weights is advanced (model.ema_decay > 0);
 *        f. while training.replay_ratio > 0, the batch enters the replay reservoir
 *           (reservoir sampling over everything trained, capacity
 *           training.replay_capacity);
 *        g. replay: training.replay_ratio is added to an accumulator and, while it is
 *           ≥ 1, one minibatch of training.batch_size examples drawn uniformly (with
 *           replacement) from the reservoir is standardised with the current normaliser
 *           and trained on (no metrics, no normaliser update).  Replay starts once the
 *           reservoir holds a batch's worth.
 * Every random choice comes from RNGs that learner_save keeps, so a run that is saved,
 * loaded and continued is bit-identical to one that never stopped (one BLAS thread).
 */
#ifndef INTENTD_LEARNER_H
#define INTENTD_LEARNER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "features.h"
#include "metrics.h"
#include "snapshot.h"

#define LEARNER_STATE_MAGIC "INTDLRN1"

/* Counters since the learner's start (kept across save/load). */
struct learner_counters {
    uint64_t examples_pushed;  /* everything given to learner_push */
    uint64_t examples_trained; /* fresh examples learned from (not replayed ones) */
    uint64_t holdout_examples; /* examples routed to the holdout */
    uint64_t fresh_batches;    /* fresh minibatches trained (intentd_train_batches_total) */
    uint64_t replay_batches;   /* replayed minibatches trained */
    uint64_t steps;            /* optimizer steps: fresh + replayed */
};

struct learner;

/* Creates a learner for cfg (features, model, optimizer, training, evaluation, snapshot
 * sections); cfg is only read here (the learner keeps copies of what it needs).  Returns
 * NULL with err filled on a bad schema or shape or out of memory.  The caller owns it. */
struct learner *learner_new(const struct config *cfg, char *err, size_t errlen);

/* Frees l; accepts NULL; returns NULL. */
struct learner *learner_free(struct learner *l);

/* The encoder of the configured schema (owned by l, immutable: other threads may parse
 * with it while the trainer trains). */
const struct features *learner_features(const struct learner *l);
const struct model_shape *learner_shape(const struct learner *l);

/* Keeps every progressive score so the cumulative AUC is exact instead of binned
 * (intentd-eval; memory grows with the stream, so not for the daemon).  Only before the
 * first batch is trained: -EBUSY after; -ENOMEM. */
int learner_exact_metrics(struct learner *l);

/* Takes one example (copied; see the top of this file).  Returns the number of optimizer
 * steps taken (0 while the minibatch fills), or -EINVAL for a label other than 0/1 or a
 * weight that is not finite and > 0 (the example is dropped). */
int learner_push(struct learner *l, const struct example *e);

/* Trains the partial minibatch now, whatever its size (training.max_batch_wait), with its
 * replay.  Returns the number of steps taken (0 when it was empty). */
int learner_flush(struct learner *l);

/* Examples waiting in the partial minibatch. */
size_t learner_pending(const struct learner *l);

/* Scores one example with the current training weights and normaliser (not the EMA):
 * what the next progressive score of e would be.  For tests and tools. */
float learner_predict(const struct learner *l, const struct example *e);

/* Progressive metrics: the sliding window of evaluation.window examples, and everything
 * since the start.  metrics_window sorts: call at most a few times a second. */
void learner_metrics(const struct learner *l, struct metrics_summary *window,
                     struct metrics_summary *cumulative);
void learner_counters(const struct learner *l, struct learner_counters *out);

/* Makes a snapshot of the current state: the EMA weights when model.ema_decay > 0, else
 * the training weights; the normaliser frozen; progressive = the window's figures;
 * holdout = the snapshot's own figures on the holdout reservoir (NaN when empty).
 * Returns NULL when out of memory.  The caller owns the one reference. */
struct snapshot *learner_snapshot(struct learner *l, uint64_t version, int64_t now_ms);

/* The gate: scores candidate and served (either may be NULL) on the holdout reservoir.
 * Returns 1 (accept) when served is NULL, when the reservoir holds fewer than
 * snapshot.min_holdout examples, or when cand_loss ≤ served_loss + max_regression;
 * else 0.  *cand_loss and *served_loss (either may be NULL) receive the mean log losses
 * (NaN when not computed). */
int learner_gate(struct learner *l, const struct snapshot *candidate, const struct snapshot *served,
                 double *cand_loss, double *served_loss);

/* Examples in the holdout reservoir. */
size_t learner_holdout_size(const struct learner *l);

/* Run-time settings (SIGHUP).  Out-of-range values are the caller's to refuse (config.c
 * validates them); the learner applies what it is given. */
void learner_set_learning_rate(struct learner *l, double lr);
void learner_set_replay_ratio(struct learner *l, double ratio);
void learner_set_threshold(struct learner *l, double threshold);
void learner_set_positive_weight(struct learner *l, double positive_weight);
void learner_set_gate(struct learner *l, double max_regression, uint32_t min_holdout);

/* The whole learning state, for checkpoints: schema and shape, model parameters and
 * optimizer state (model_state_save), EMA weights, normaliser, partial minibatch, replay
 * and holdout reservoirs, RNG states, replay accumulator, metrics, counters.  Writes a new
 * buffer *buf (malloc'd, owned by the caller) of *len bytes.  Returns 0 or -ENOMEM. */
int learner_save(const struct learner *l, void **buf, size_t *len);

/* Restores a state written by learner_save into l, which must have been made for the
 * same schema and shape: otherwise -EINVAL with err naming the difference (a feature, a
 * bucket count, a layer width...).  A truncated or corrupt buffer is -EINVAL too.  On
 * error l is left unchanged.  Settings that are not state (learning rate, replay ratio,
 * threshold, gate) stay those of l's configuration. */
int learner_load(struct learner *l, const void *buf, size_t len, char *err, size_t errlen);

#endif
