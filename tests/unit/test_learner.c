/* Tests of the trainer core: progressive validation, replay, weights, holdout routing,
 * the gate, and save/load continuing bit-identically. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "features.h"
#include "learner.h"
#include "reservoir.h"
#include "snapshot.h"
#include "unit.h"

static const char *base_yaml = "features:\n"
                               "  - {name: x0, type: numeric}\n"
                               "  - {name: x1, type: numeric, transform: log1p}\n"
                               "  - {name: c, type: categorical, buckets: 8}\n"
                               "  - {name: b, type: boolean}\n"
                               "model: {hidden: [8, 4], seed: 3}\n"
                               "optimizer: {learning_rate: 0.01}\n"
                               "training: {batch_size: 16, replay_ratio: 0, max_batch_wait: 0}\n"
                               "snapshot: {holdout_fraction: 0, min_holdout: 50}\n"
                               "evaluation: {window: 1000}\n";

/* A configuration from base_yaml plus overrides (more YAML, later keys win by section). */
static struct config *cfg_of(const char *extra)
{
    struct config *cfg = config_new();
    CHECK(cfg != NULL);
    char err[512];
    if (config_load_string(cfg, base_yaml, "base", err, sizeof err) < 0)
        unit_fail(__FILE__, __LINE__, "base config: %s", err);
    if (extra && config_load_string(cfg, extra, "extra", err, sizeof err) < 0)
        unit_fail(__FILE__, __LINE__, "extra config: %s", err);
    return cfg;
}

static struct learner *learner_of(const char *extra)
{
    struct config *cfg = cfg_of(extra);
    char err[512];
    struct learner *l = learner_new(cfg, err, sizeof err);
    if (!l) unit_fail(__FILE__, __LINE__, "learner_new: %s", err);
    config_free(cfg);
    return l;
}

/* n examples with a learnable label (deterministic from seed), in a flat array. */
static unsigned char *make_examples(const struct features *f, size_t n, uint64_t seed)
{
    size_t stride = features_example_size(f);
    unsigned char *buf = malloc(n * stride);
    CHECK(buf != NULL);
    struct reservoir_rng g;
    reservoir_rng_seed(&g, seed);
    for (size_t i = 0; i < n; i++) {
        struct example *e = example_at(buf, stride, i);
        features_example_init(f, e);
        double x0 = reservoir_rng_uniform(&g) * 4 - 2;
        double x1 = reservoir_rng_uniform(&g) * 100;
        int c = (int)reservoir_rng_below(&g, 5);
        int b = reservoir_rng_uniform(&g) < 0.5;
        e->dense[0] = (float)x0;
        e->dense[1] = (float)log1p(x1);
        e->dense[2] = (float)b;
        char s[8];
        int len = snprintf(s, sizeof s, "v%d", c);
        example_cat(f, e)[0] = features_hash(f, 0, s, (size_t)len);
        if (i % 7 == 0) e->dense[0] = NAN; /* some missing values */
        double z = 1.5 * x0 - 0.02 * x1 + (c == 2 ? 1.5 : -0.3) + 0.5 * b;
        e->label = reservoir_rng_uniform(&g) < 1 / (1 + exp(-z)) ? 1.0f : 0.0f;
        e->seq = i;
    }
    return buf;
}

static const struct example *ex(const struct features *f, const unsigned char *buf, size_t i)
{
    return (const struct example *)(const void *)(buf + i * features_example_size(f));
}

void test_learner_progressive_scores_before_step(void)
{
    struct learner *l = learner_of("optimizer: {learning_rate: 0.05}\n");
    const struct features *f = learner_features(l);
    unsigned char *data = make_examples(f, 64, 1);
    /* First batch: warms up the normaliser and the weights. */
    for (size_t i = 0; i < 16; i++) learner_push(l, ex(f, data, i));
    /* Second batch: predict every example with the current state, then push them. */
    double before_sum = 0, before_ll = 0;
    float before[16];
    for (size_t i = 16; i < 32; i++) {
        const struct example *e = ex(f, data, i);
        float p = learner_predict(l, e);
        before[i - 16] = p;
        before_sum += p;
        before_ll += e->label > 0.5f ? -log(p) : -log(1 - p);
    }
    for (size_t i = 16; i < 31; i++) CHECK_INT_EQ(learner_push(l, ex(f, data, i)), 0);
    CHECK_INT_EQ(learner_pending(l), 15);
    CHECK_INT_EQ(learner_push(l, ex(f, data, 31)), 1); /* one step, no replay */
    CHECK_INT_EQ(learner_pending(l), 0);
    struct metrics_summary w, c;
    learner_metrics(l, &w, &c);
    CHECK_INT_EQ(w.n, 32);
    /* The window holds both batches; take out the first batch's figures by re-deriving
     * them from a learner that saw only it. */
    struct learner *l1 = learner_of("optimizer: {learning_rate: 0.05}\n");
    for (size_t i = 0; i < 16; i++) learner_push(l1, ex(f, data, i));
    struct metrics_summary w1;
    learner_metrics(l1, &w1, NULL);
    double second_mean = (w.mean_prediction * 32 - w1.mean_prediction * 16) / 16;
    double second_ll = (w.logloss * 32 - w1.logloss * 16) / 16;
    printf("second batch: progressive mean %.7f vs pre-step predict %.7f; log loss %.7f vs "
           "%.7f\n",
           second_mean, before_sum / 16, second_ll, before_ll / 16);
    CHECK_NEAR(second_mean, before_sum / 16, 1e-5);
    CHECK_NEAR(second_ll, before_ll / 16, 1e-4);
    /* And the step did change the predictions (so the check above could fail). */
    double after_diff = 0;
    for (size_t i = 16; i < 32; i++)
        after_diff += fabs(learner_predict(l, ex(f, data, i)) - before[i - 16]);
    printf("mean |change| of the predictions after the step: %.3g\n", after_diff / 16);
    CHECK(after_diff / 16 > 1e-3);
    free(data);
    learner_free(l);
    learner_free(l1);
}

static struct learner_counters run_counters(const char *extra, size_t n)
{
    struct learner *l = learner_of(extra);
    const struct features *f = learner_features(l);
    unsigned char *data = make_examples(f, n, 2);
    for (size_t i = 0; i < n; i++) CHECK(learner_push(l, ex(f, data, i)) >= 0);
    struct learner_counters c;
    learner_counters(l, &c);
    free(data);
    learner_free(l);
    return c;
}

void test_learner_replay_steps(void)
{
    struct learner_counters off = run_counters(NULL, 160);
    CHECK_INT_EQ(off.fresh_batches, 10);
    CHECK_INT_EQ(off.replay_batches, 0);
    CHECK_INT_EQ(off.steps, 10);
    CHECK_INT_EQ(off.examples_trained, 160);
    struct learner_counters two = run_counters("training: {replay_ratio: 2}\n", 160);
    CHECK_INT_EQ(two.fresh_batches, 10);
    CHECK_INT_EQ(two.replay_batches, 20); /* replay starts after the first fresh batch */
    CHECK_INT_EQ(two.steps, 30);
    CHECK_INT_EQ(two.examples_trained, 160); /* replayed examples are not counted */
    struct learner_counters half = run_counters("training: {replay_ratio: 0.5}\n", 160);
    CHECK_INT_EQ(half.replay_batches, 5); /* fractional ratios accumulate */
    CHECK_INT_EQ(half.steps, 15);
}

void test_learner_replay_changes_model(void)
{
    struct learner *a = learner_of(NULL), *b = learner_of("training: {replay_ratio: 3}\n");
    const struct features *f = learner_features(a);
    unsigned char *data = make_examples(f, 800, 4);
    for (size_t i = 0; i < 800; i++) {
        learner_push(a, ex(f, data, i));
        learner_push(b, ex(f, data, i));
    }
    struct snapshot *sa = learner_snapshot(a, 1, 0), *sb = learner_snapshot(b, 1, 0);
    CHECK(strcmp(sa->fingerprint, sb->fingerprint) != 0);
    /* Replay squeezes more out of the same data: the progressive log loss improves. */
    struct metrics_summary ca, cb;
    learner_metrics(a, NULL, &ca);
    learner_metrics(b, NULL, &cb);
    printf("progressive log loss without replay %.4f, with replay 3: %.4f\n", ca.logloss,
           cb.logloss);
    CHECK(cb.logloss < ca.logloss);
    snapshot_release(sa);
    snapshot_release(sb);
    free(data);
    learner_free(a);
    learner_free(b);
}

void test_learner_example_weights(void)
{
    /* positive_weight 2 is the same computation as an event weight of 2 on positives. */
    struct learner *a = learner_of("training: {positive_weight: 2}\n");
    struct learner *b = learner_of(NULL);
    struct learner *c = learner_of(NULL);
    const struct features *f = learner_features(a);
    size_t stride = features_example_size(f);
    unsigned char *data = make_examples(f, 320, 5);
    struct example *tmp = malloc(stride);
    for (size_t i = 0; i < 320; i++) {
        learner_push(a, ex(f, data, i));
        memcpy(tmp, ex(f, data, i), stride);
        if (tmp->label > 0.5f) tmp->weight = 2.0f;
        learner_push(b, tmp);
        learner_push(c, ex(f, data, i));
    }
    struct snapshot *sa = learner_snapshot(a, 1, 0), *sb = learner_snapshot(b, 1, 0),
                    *sc = learner_snapshot(c, 1, 0);
    CHECK_STR_EQ(sa->fingerprint, sb->fingerprint);
    CHECK(strcmp(sa->fingerprint, sc->fingerprint) != 0); /* the weight does something */
    /* Weighting positives up raises the mean prediction. */
    double ma = 0, mc = 0;
    for (size_t i = 0; i < 320; i++) {
        ma += snapshot_score(sa, ex(f, data, i));
        mc += snapshot_score(sc, ex(f, data, i));
    }
    printf("mean prediction, positives weighted 2: %.4f, unweighted: %.4f\n", ma / 320, mc / 320);
    CHECK(ma > mc);
    /* Bad labels and weights are refused. */
    memcpy(tmp, ex(f, data, 0), stride);
    tmp->weight = 0;
    CHECK_INT_EQ(learner_push(c, tmp), -EINVAL);
    tmp->weight = NAN;
    CHECK_INT_EQ(learner_push(c, tmp), -EINVAL);
    tmp->weight = 1;
    tmp->label = 0.5f;
    CHECK_INT_EQ(learner_push(c, tmp), -EINVAL);
    snapshot_release(sa);
    snapshot_release(sb);
    snapshot_release(sc);
    free(tmp);
    free(data);
    learner_free(a);
    learner_free(b);
    learner_free(c);
}

void test_learner_holdout_routing(void)
{
    const size_t n = 8000;
    struct learner *l = learner_of("snapshot: {holdout_fraction: 0.25, min_holdout: 50}\n");
    const struct features *f = learner_features(l);
    unsigned char *data = make_examples(f, n, 6);
    for (size_t i = 0; i < n; i++) learner_push(l, ex(f, data, i));
    struct learner_counters c;
    learner_counters(l, &c);
    printf("holdout: %llu of %zu (expected 2000 ± 39)\n", (unsigned long long)c.holdout_examples,
           n);
    CHECK_NEAR((double)c.holdout_examples, 2000, 160);
    CHECK_INT_EQ(c.examples_pushed, n);
    CHECK_INT_EQ(c.examples_trained + c.holdout_examples + learner_pending(l), n);
    /* The holdout keeps the most recent max(evaluation.window, min_holdout) = 1000. */
    CHECK_INT_EQ(learner_holdout_size(l), 1000);
    free(data);
    learner_free(l);
}

void test_learner_gate(void)
{
    struct learner *l = learner_of("snapshot: {holdout_fraction: 0.3, min_holdout: 200, "
                                   "max_regression: 0.01}\n");
    struct learner *untrained = learner_of(NULL);
    const struct features *f = learner_features(l);
    unsigned char *data = make_examples(f, 4000, 7);
    for (size_t i = 0; i < 300; i++) learner_push(l, ex(f, data, i));
    struct snapshot *bad = learner_snapshot(untrained, 1, 0);
    double cl, sl;
    /* Fewer than min_holdout held out: accepted without scoring. */
    CHECK(learner_holdout_size(l) < 200);
    struct snapshot *good = learner_snapshot(l, 2, 0);
    CHECK_INT_EQ(learner_gate(l, bad, good, &cl, &sl), 1);
    CHECK(isnan(cl) && isnan(sl));
    snapshot_release(good);
    for (size_t i = 300; i < 4000; i++) learner_push(l, ex(f, data, i));
    CHECK(learner_holdout_size(l) >= 200);
    good = learner_snapshot(l, 3, 0);
    CHECK_INT_EQ(learner_gate(l, bad, good, &cl, &sl), 0); /* much worse: refused */
    printf("gate: untrained candidate %.4f vs served %.4f\n", cl, sl);
    CHECK(cl > sl + 0.01);
    CHECK_INT_EQ(learner_gate(l, good, bad, &cl, &sl), 1);
    CHECK(cl == good->holdout.logloss && sl > cl); /* the candidate's own holdout figure */
    CHECK_INT_EQ(learner_gate(l, good, NULL, NULL, NULL), 1);
    CHECK(good->holdout.n == learner_holdout_size(l));
    printf("served holdout AUC %.4f, log loss %.4f\n", good->holdout.auc, good->holdout.logloss);
    CHECK(good->holdout.auc > 0.7);
    learner_set_gate(l, 100, 200); /* a margin of 100 accepts anything */
    CHECK_INT_EQ(learner_gate(l, bad, good, NULL, NULL), 1);
    snapshot_release(bad);
    snapshot_release(good);
    free(data);
    learner_free(l);
    learner_free(untrained);
}

/* Runs n examples through a learner with everything on, saving after k and loading into a
 * fresh learner that continues; the continued state must equal an uninterrupted run's. */
void test_learner_save_load_bit_identical(void)
{
    const char *extra = "training: {replay_ratio: 1.5, batch_size: 32}\n"
                        "snapshot: {holdout_fraction: 0.1, min_holdout: 50}\n"
                        "model: {ema_decay: 0.99, dropout: 0.1}\n";
    const size_t n = 3000, k = 1537; /* k: mid-batch, so the partial minibatch matters */
    struct learner *a = learner_of(extra);
    const struct features *f = learner_features(a);
    unsigned char *data = make_examples(f, n, 8);
    for (size_t i = 0; i < k; i++) learner_push(a, ex(f, data, i));
    void *buf;
    size_t len;
    CHECK_INT_EQ(learner_save(a, &buf, &len), 0);
    struct learner *b = learner_of(extra);
    char err[512];
    int rc = learner_load(b, buf, len, err, sizeof err);
    if (rc < 0) unit_fail(__FILE__, __LINE__, "learner_load: %s", err);
    CHECK_INT_EQ(learner_pending(b), learner_pending(a));
    /* Taking a snapshot mid-way must not disturb the state either. */
    snapshot_release(learner_snapshot(a, 1, 0));
    for (size_t i = k; i < n; i++) {
        learner_push(a, ex(f, data, i));
        learner_push(b, ex(f, data, i));
    }
    learner_flush(a);
    learner_flush(b);
    struct snapshot *sa = learner_snapshot(a, 9, 0), *sb = learner_snapshot(b, 9, 0);
    printf("uninterrupted %s, saved and continued %s\n", sa->fingerprint, sb->fingerprint);
    CHECK_STR_EQ(sa->fingerprint, sb->fingerprint);
    void *ba, *bb;
    size_t la, lb;
    CHECK_INT_EQ(learner_save(a, &ba, &la), 0);
    CHECK_INT_EQ(learner_save(b, &bb, &lb), 0);
    CHECK_INT_EQ(la, lb);
    CHECK(memcmp(ba, bb, la) == 0); /* every byte of the state */
    struct learner_counters ca, cb;
    learner_counters(a, &ca);
    learner_counters(b, &cb);
    CHECK(memcmp(&ca, &cb, sizeof ca) == 0);
    CHECK(ca.replay_batches > 0 && ca.holdout_examples > 0);

    /* Settings that size the state but are not the schema or shape (replay capacity, the
     * metrics window, the holdout size) may change across a restart: what fits is kept. */
    struct learner *d = learner_of("training: {replay_ratio: 1.5, batch_size: 32, "
                                   "replay_capacity: 100}\n"
                                   "snapshot: {holdout_fraction: 0.1, min_holdout: 20}\n"
                                   "evaluation: {window: 50}\n");
    rc = learner_load(d, buf, len, err, sizeof err);
    if (rc < 0) unit_fail(__FILE__, __LINE__, "learner_load with other capacities: %s", err);
    struct metrics_summary dw;
    learner_metrics(d, &dw, NULL);
    CHECK_INT_EQ(dw.n, 50);
    CHECK_INT_EQ(learner_holdout_size(d), 50);
    for (size_t i = k; i < n; i++) CHECK(learner_push(d, ex(f, data, i)) >= 0);
    learner_free(d);

    /* A corrupt or truncated state is refused, leaving the learner as it was. */
    ((unsigned char *)buf)[len / 2] ^= 0x40;
    CHECK_INT_EQ(learner_load(b, buf, len, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "corrupt");
    CHECK_INT_EQ(learner_load(b, buf, len / 3, err, sizeof err), -EINVAL);
    void *bc;
    size_t lc;
    CHECK_INT_EQ(learner_save(b, &bc, &lc), 0);
    CHECK(lc == lb && memcmp(bc, bb, lb) == 0);
    free(buf);
    free(ba);
    free(bb);
    free(bc);
    snapshot_release(sa);
    snapshot_release(sb);
    free(data);
    learner_free(a);
    learner_free(b);
}

static void expect_mismatch(const void *buf, size_t len, const char *yaml, const char *needle)
{
    struct config *cfg = config_new();
    char err[512];
    if (config_load_string(cfg, yaml, "other", err, sizeof err) < 0)
        unit_fail(__FILE__, __LINE__, "config: %s", err);
    struct learner *l = learner_new(cfg, err, sizeof err);
    CHECK(l != NULL);
    CHECK_INT_EQ(learner_load(l, buf, len, err, sizeof err), -EINVAL);
    printf("refused: %s\n", err);
    CHECK_STR_HAS(err, needle);
    learner_free(l);
    config_free(cfg);
}

void test_learner_schema_mismatch(void)
{
    struct learner *a = learner_of(NULL);
    void *buf;
    size_t len;
    CHECK_INT_EQ(learner_save(a, &buf, &len), 0);
    const char *tail = "training: {batch_size: 16}\nsnapshot: {holdout_fraction: 0}\n"
                       "evaluation: {window: 1000}\n";
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "features:\n  - {name: x0, type: numeric}\n"
             "  - {name: x1, type: numeric, transform: log1p}\n"
             "  - {name: c, type: categorical, buckets: 16}\n  - {name: b, type: boolean}\n"
             "model: {hidden: [8, 4]}\n%s",
             tail);
    expect_mismatch(buf, len, yaml, "feature \"c\" has 8 buckets, not 16");
    snprintf(yaml, sizeof yaml,
             "features:\n  - {name: x0, type: numeric}\n"
             "  - {name: x1, type: numeric, transform: log1p}\n"
             "  - {name: c, type: categorical, buckets: 8}\n  - {name: b, type: boolean}\n"
             "model: {hidden: [8, 5]}\n%s",
             tail);
    expect_mismatch(buf, len, yaml, "hidden layer 2 has width 4, not 5");
    snprintf(yaml, sizeof yaml,
             "features:\n  - {name: x0, type: numeric}\n"
             "  - {name: x1, type: numeric}\n"
             "  - {name: c, type: categorical, buckets: 8}\n  - {name: b, type: boolean}\n"
             "model: {hidden: [8, 4]}\n%s",
             tail);
    expect_mismatch(buf, len, yaml, "feature \"x1\" has transform log1p, not none");
    snprintf(yaml, sizeof yaml,
             "features:\n  - {name: x0, type: numeric}\n"
             "  - {name: x1, type: numeric, transform: log1p}\n"
             "  - {name: month, type: categorical, buckets: 8}\n  - {name: b, type: boolean}\n"
             "model: {hidden: [8, 4]}\n%s",
             tail);
    expect_mismatch(buf, len, yaml, "feature 3 is \"c\", not \"month\"");
    snprintf(yaml, sizeof yaml,
             "features:\n  - {name: x0, type: numeric}\n"
             "  - {name: x1, type: numeric, transform: log1p}\n"
             "  - {name: c, type: categorical, buckets: 8}\n"
             "model: {hidden: [8, 4]}\n%s",
             tail);
    expect_mismatch(buf, len, yaml, "feature \"b\" is extra");
    free(buf);
    learner_free(a);
}

void test_learner_flush_and_settings(void)
{
    struct learner *l = learner_of(NULL);
    const struct features *f = learner_features(l);
    unsigned char *data = make_examples(f, 40, 9);
    for (size_t i = 0; i < 20; i++) learner_push(l, ex(f, data, i));
    CHECK_INT_EQ(learner_pending(l), 4);
    CHECK_INT_EQ(learner_flush(l), 1);
    CHECK_INT_EQ(learner_pending(l), 0);
    CHECK_INT_EQ(learner_flush(l), 0);
    struct learner_counters c;
    learner_counters(l, &c);
    CHECK_INT_EQ(c.examples_trained, 20);
    CHECK_INT_EQ(c.fresh_batches, 2);
    learner_set_replay_ratio(l, 1);
    for (size_t i = 20; i < 40; i++) learner_push(l, ex(f, data, i));
    learner_counters(l, &c);
    CHECK_INT_EQ(c.replay_batches, 1); /* the reservoir had a batch's worth after one */
    learner_set_threshold(l, 0.999);
    struct metrics_summary w;
    learner_metrics(l, &w, NULL);
    CHECK_NEAR(w.recall, 0, 1e-12);
    learner_set_learning_rate(l, 0.01);
    free(data);
    learner_free(l);
}
