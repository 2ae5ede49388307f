/* trainer.c — see trainer.h. */
#include "trainer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"
#include "log.h"

/* The settings SIGHUP may change, handed from the main thread under a mutex. */
struct trainer_settings {
    double learning_rate;
    double replay_ratio;
    double threshold;
    double max_regression;
    double positive_weight;
    uint32_t min_holdout;
    unsigned checkpoint_keep;
    uint64_t snapshot_interval_ms;
    uint64_t min_examples;
    uint64_t max_batch_wait_ms;
};

struct trainer {
    struct trainer_params p;
    size_t example_size;
    size_t batch_cap; /* examples popped at once */
    void *batch;      /* (batch_cap, example_size) pop buffer */

    pthread_t thread;
    int started;
    atomic_int stalled;
    _Atomic uint64_t heartbeat_ms;

    pthread_mutex_t lock; /* guards next/have_next */
    struct trainer_settings next;
    int have_next;

    /* trainer-thread state */
    struct trainer_settings s;
    struct snapshot *served;        /* our reference to what the slot serves */
    uint64_t version;               /* the last published version */
    uint64_t last_snapshot_trained; /* examples_trained at the last candidate */
    uint64_t last_snapshot_ms;
    uint64_t partial_since_ms; /* when the partial minibatch got its first example */
    uint64_t last_metrics_ms;
};

static void settings_from(struct trainer_settings *s, const struct config *cfg)
{
    s->learning_rate = cfg->optimizer.learning_rate;
    s->replay_ratio = cfg->training.replay_ratio;
    s->threshold = cfg->evaluation.threshold;
    s->max_regression = cfg->snapshot.max_regression;
    s->positive_weight = cfg->training.positive_weight;
    s->checkpoint_keep = cfg->checkpoint.keep;
    s->min_holdout = cfg->snapshot.min_holdout;
    s->snapshot_interval_ms = cfg->snapshot.interval_ms;
    s->min_examples = cfg->snapshot.min_examples;
    s->max_batch_wait_ms = cfg->training.max_batch_wait_ms;
}

uint64_t trainer_read_version_mark(const char *state_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model-version", state_dir);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    uint64_t v = 0;
    if (fscanf(f, "%" SCNu64, &v) != 1) v = 0;
    fclose(f);
    return v;
}

int trainer_write_version_mark(const char *state_dir, uint64_t version)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/model-version", state_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", version);
    ssize_t w = write(fd, buf, (size_t)n);
    int rc = w == n ? 0 : w < 0 ? -errno : -EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
    if (rc) unlink(tmp);
    return rc;
}

/* Records the highest version published, so a restart never serves a lower one.  A failure
 * (full disk) is not fatal: the mark only lags. */
static void write_version_mark(struct trainer *t)
{
    if (t->p.state_dir) trainer_write_version_mark(t->p.state_dir, t->version);
}

static void publish(struct trainer *t, struct snapshot *s)
{
    t->version = s->version;
    write_version_mark(t);
    snapshot_release(t->served);
    t->served = snapshot_ref(s);
    snapshot_slot_publish(t->p.slot, s); /* the slot takes our other reference */
    stats_add(&t->p.stats->snapshots_published, 1);
}

static void update_metrics(struct trainer *t, uint64_t now)
{
    struct learner_counters c;
    learner_counters(t->p.learner, &c);
    struct stats *st = t->p.stats;
    stats_set(&st->examples_trained, c.examples_trained);
    stats_set(&st->train_batches, c.fresh_batches);
    stats_set(&st->queue_examples, queue_len(t->p.queue));
    if (now - t->last_metrics_ms < 500) return;
    t->last_metrics_ms = now;
    struct metrics_summary w, cum;
    learner_metrics(t->p.learner, &w, &cum);
    stats_set_double(&st->progressive_auc, w.auc);
    stats_set_double(&st->progressive_logloss, w.logloss);
    stats_set_double(&st->progressive_accuracy, w.accuracy);
    stats_set_double(&st->progressive_precision, w.precision);
    stats_set_double(&st->progressive_recall, w.recall);
    stats_set_double(&st->progressive_mean_prediction, w.mean_prediction);
    stats_set_double(&st->progressive_positive_rate, w.positive_rate);
}

/* Publishes a snapshot when one is due: the first as soon as min_examples were learned,
 * then at each interval when the model changed, if the gate accepts it. */
static void maybe_snapshot(struct trainer *t, uint64_t now, int force)
{
    struct learner_counters c;
    learner_counters(t->p.learner, &c);
    if (c.examples_trained < t->s.min_examples || c.examples_trained == 0) return;
    if (c.examples_trained == t->last_snapshot_trained && t->served) return;
    if (t->served && !force && now - t->last_snapshot_ms < t->s.snapshot_interval_ms) return;
    /* On a fixed cadence (the time a snapshot and its gate take does not stretch the
     * interval), unless we fell more than an interval behind. */
    if (!force && now - t->last_snapshot_ms < 2 * t->s.snapshot_interval_ms)
        t->last_snapshot_ms += t->s.snapshot_interval_ms;
    else
        t->last_snapshot_ms = now;
    t->last_snapshot_trained = c.examples_trained;
    struct snapshot *cand = learner_snapshot(t->p.learner, t->version + 1, (int64_t)log_wall_ms());
    if (!cand) {
        LOG(LOG_ERROR, "trainer", "out of memory making a snapshot; serving the previous one");
        return;
    }
    double closs = NAN, sloss = NAN;
    if (!learner_gate(t->p.learner, cand, t->served, &closs, &sloss)) {
        stats_add(&t->p.stats->snapshots_rejected, 1);
        LOG(LOG_WARN, "trainer",
            "snapshot %" PRIu64 " refused by the gate: holdout log loss %.6f > served %.6f + "
            "%.4f; still serving version %" PRIu64,
            cand->version, closs, sloss, t->s.max_regression, t->version);
        snapshot_release(cand);
        return;
    }
    if (!t->served)
        LOG(LOG_INFO, "trainer", "first snapshot published after %" PRIu64 " examples",
            c.examples_trained);
    publish(t, cand);
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes the checkpoint of barrier b: the cut where everything before b is in the
 * learner.  Returns 0 or -errno. */
static int write_checkpoint(struct trainer *t, const struct ingest_barrier *b)
{
    if (!t->p.store) return 0;
    uint64_t t0 = log_now_ms();
    struct checkpoint *cp = checkpoint_new();
    void *lbuf = NULL, *sbuf = NULL;
    size_t llen = 0, slen = 0;
    char err[512] = "";
    int rc = cp ? 0 : -ENOMEM;
    unsigned char counters[INGEST_NCOUNTERS * 8];
    for (int i = 0; i < INGEST_NCOUNTERS; i++) put_le64(counters + 8 * i, b->counters[i]);
    if (!rc) rc = learner_save(t->p.learner, &lbuf, &llen);
    if (!rc) rc = checkpoint_take(cp, "learner", lbuf, llen); /* lbuf now owned by cp */
    lbuf = NULL;
    if (!rc) rc = checkpoint_add(cp, "joiner", b->joiner_state, b->joiner_len);
    if (!rc) rc = checkpoint_add(cp, "ingest_counters", counters, sizeof counters);
    if (!rc) rc = checkpoint_set_offsets(cp, b->offsets, b->noffsets);
    if (!rc) rc = checkpoint_set_u64(cp, "served_version", t->served ? t->served->version : 0);
    if (!rc) rc = checkpoint_set_u64(cp, "published_version", t->version);
    if (!rc && t->served) {
        rc = snapshot_encode(t->served, &sbuf, &slen);
        if (!rc) rc = checkpoint_take(cp, "snapshot", sbuf, slen); /* now owned by cp */
        sbuf = NULL;
    }
    if (!rc) rc = checkpoint_store_write(t->p.store, cp, err, sizeof err);
    free(lbuf);
    free(sbuf);
    checkpoint_free(cp);
    double secs = (double)(log_now_ms() - t0) / 1000.0;
    if (rc) {
        stats_add(&t->p.stats->checkpoint_failures, 1);
        LOG(LOG_ERROR, "trainer",
            "checkpoint failed (%s); learning and serving go on, the previous checkpoint "
            "stays, retrying at the next interval",
            err[0] ? err : strerror(-rc));
        return rc;
    }
    stats_hist_observe(&t->p.stats->checkpoint_duration, secs);
    stats_set(&t->p.stats->checkpoint_last_success_ms, log_wall_ms());
    LOG(LOG_DEBUG, "trainer", "checkpoint %" PRIu64 " written in %.3f s", b->seq, secs);
    return 0;
}

static void apply_settings(struct trainer *t)
{
    pthread_mutex_lock(&t->lock);
    int have = t->have_next;
    struct trainer_settings n = t->next;
    t->have_next = 0;
    pthread_mutex_unlock(&t->lock);
    if (!have) return;
    learner_set_learning_rate(t->p.learner, n.learning_rate);
    learner_set_replay_ratio(t->p.learner, n.replay_ratio);
    learner_set_threshold(t->p.learner, n.threshold);
    learner_set_gate(t->p.learner, n.max_regression, n.min_holdout);
    learner_set_positive_weight(t->p.learner, n.positive_weight);
    checkpoint_store_set_keep(t->p.store, n.checkpoint_keep); /* this thread writes */
    t->s = n;
}

static void *trainer_main(void *arg)
{
    /* Role: the only thread that owns the learner.  Trains, publishes snapshots, and
     * writes the checkpoints that let ingest commit offsets. */
    struct trainer *t = arg;
    for (;;) {
        uint64_t now = log_now_ms();
        apply_settings(t);
        if (atomic_load(&t->stalled)) {
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        atomic_store(&t->heartbeat_ms, now);

        int timeout = 100;
        if (learner_pending(t->p.learner) && t->s.max_batch_wait_ms) {
            uint64_t due = t->partial_since_ms + t->s.max_batch_wait_ms;
            timeout = due > now ? (int)(due - now < 100 ? due - now : 100) : 0;
        }
        size_t n = 0;
        void *payload = NULL;
        int kind = queue_pop(t->p.queue, timeout, t->batch, t->batch_cap, &n, &payload);
        now = log_now_ms();
        if (kind == -EPIPE) break;
        if (kind == QUEUE_EXAMPLE) {
            for (size_t i = 0; i < n; i++) {
                if (learner_pending(t->p.learner) == 0) t->partial_since_ms = now;
                learner_push(t->p.learner, example_at(t->batch, t->example_size, i));
            }
        } else if (kind == QUEUE_BARRIER) {
            struct ingest_barrier *b = payload; /* ours now */
            if (!b) continue;
            update_metrics(t, now);
            /* The checkpoint's snapshot is the model at the cut (when the gate takes it), so
             * a restart serves what was served last rather than one from an interval ago. */
            maybe_snapshot(t, now, 1);
            int rc = write_checkpoint(t, b);
            if (t->p.durable)
                t->p.durable(t->p.durable_ctx, b->seq, rc == 0, b->offsets, b->noffsets);
            int final = b->final;
            ingest_barrier_free(b);
            if (final) break;
            continue;
        }
        if (t->s.max_batch_wait_ms && learner_pending(t->p.learner) &&
            now - t->partial_since_ms >= t->s.max_batch_wait_ms)
            learner_flush(t->p.learner);
        update_metrics(t, now);
        maybe_snapshot(t, now, 0);
    }
    /* A last snapshot of what was learned, so that a drained daemon serves all of it. */
    maybe_snapshot(t, log_now_ms(), 1);
    update_metrics(t, log_now_ms() + 1000);
    return NULL;
}

struct trainer *trainer_new(const struct trainer_params *p, char *err, size_t errlen)
{
    struct trainer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->p = *p;
    t->version = p->version;
    t->example_size = features_example_size(learner_features(p->learner));
    t->batch_cap = p->cfg->training.batch_size;
    t->batch = calloc(t->batch_cap, t->example_size);
    if (!t->batch) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    settings_from(&t->s, p->cfg);
    pthread_mutex_init(&t->lock, NULL);
    /* What the slot serves already (a checkpoint's snapshot) is what the gate compares. */
    t->served = snapshot_slot_acquire(p->slot);
    if (t->served) {
        struct learner_counters c;
        learner_counters(p->learner, &c);
        t->last_snapshot_trained = c.examples_trained;
    }
    atomic_store(&t->heartbeat_ms, log_now_ms());
    return t;
}

int trainer_start(struct trainer *t)
{
    t->last_snapshot_ms = log_now_ms();
    int rc = pthread_create(&t->thread, NULL, trainer_main, t);
    if (rc) return -rc;
    t->started = 1;
    return 0;
}

int trainer_join(struct trainer *t)
{
    if (!t->started) return 0;
    int rc = pthread_join(t->thread, NULL);
    t->started = 0;
    return -rc;
}

void trainer_reload(struct trainer *t, const struct config *cfg)
{
    pthread_mutex_lock(&t->lock);
    settings_from(&t->next, cfg);
    t->have_next = 1;
    pthread_mutex_unlock(&t->lock);
}

void trainer_set_stalled(struct trainer *t, int stalled)
{
    atomic_store(&t->stalled, stalled);
}

uint64_t trainer_heartbeat_ms(const struct trainer *t)
{
    return atomic_load((_Atomic uint64_t *)&t->heartbeat_ms);
}

struct trainer *trainer_free(struct trainer *t)
{
    if (!t) return NULL;
    if (t->started) {
        queue_close(t->p.queue);
        trainer_join(t);
    }
    snapshot_release(t->served);
    pthread_mutex_destroy(&t->lock);
    free(t->batch);
    free(t);
    return NULL;
}
