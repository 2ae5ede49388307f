/* Tests of snapshots: scoring, the encoding, and the lock-free publication slot under many
 * concurrent readers (run it under `make SAN=thread` and `make SAN=address,undefined`). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "features.h"
#include "learner.h"
#include "model.h"
#include "reservoir.h"
#include "snapshot.h"
#include "unit.h"
#include <xxhash.h>

static const char *yaml = "features:\n"
                          "  - {name: x0, type: numeric}\n"
                          "  - {name: c, type: categorical, buckets: 32}\n"
                          "  - {name: b, type: boolean}\n"
                          "  - {name: x1, type: numeric, transform: log1p}\n"
                          "model: {hidden: [16, 8], seed: 5, ema_decay: 0.9}\n"
                          "optimizer: {learning_rate: 0.01}\n"
                          "training: {batch_size: 8, max_batch_wait: 0}\n"
                          "snapshot: {holdout_fraction: 0.1, min_holdout: 10}\n";

static struct learner *trained_learner(unsigned char **data_out, size_t n)
{
    struct config *cfg = config_new();
    char err[512];
    if (config_load_string(cfg, yaml, "test", err, sizeof err) < 0)
        unit_fail(__FILE__, __LINE__, "config: %s", err);
    struct learner *l = learner_new(cfg, err, sizeof err);
    config_free(cfg);
    if (!l) unit_fail(__FILE__, __LINE__, "learner_new: %s", err);
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    unsigned char *data = malloc(n * stride);
    struct reservoir_rng g;
    reservoir_rng_seed(&g, 17);
    for (size_t i = 0; i < n; i++) {
        struct example *e = example_at(data, stride, i);
        features_example_init(f, e);
        e->dense[0] = (float)(reservoir_rng_uniform(&g) * 2 - 1);
        e->dense[1] = reservoir_rng_uniform(&g) < 0.3 ? 1.0f : 0.0f;
        e->dense[2] = i % 5 ? (float)log1p(reservoir_rng_uniform(&g) * 50) : NAN;
        char s[8];
        int len = snprintf(s, sizeof s, "%d", (int)reservoir_rng_below(&g, 10));
        example_cat(f, e)[0] = i % 9 ? features_hash(f, 0, s, (size_t)len) : MODEL_NO_INDEX;
        e->label = reservoir_rng_uniform(&g) < 0.5 + 0.4 * e->dense[0] ? 1.0f : 0.0f;
        learner_push(l, e);
    }
    *data_out = data;
    return l;
}

void test_snapshot_score_and_metadata(void)
{
    unsigned char *data;
    struct learner *l = trained_learner(&data, 1000);
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    struct snapshot *s = learner_snapshot(l, 7, 1764842400123);
    CHECK(s != NULL);
    CHECK_INT_EQ(s->version, 7);
    CHECK_INT_EQ(s->created_at_ms, 1764842400123);
    struct learner_counters c;
    learner_counters(l, &c);
    CHECK_INT_EQ(s->trained_examples, c.examples_trained);
    CHECK_INT_EQ(strlen(s->fingerprint), SNAPSHOT_FINGERPRINT_LEN);
    CHECK_INT_EQ(s->shape.width[0], 2 + 32 + 1);
    CHECK(s->progressive.n > 0 && s->progressive.auc > 0.5);
    CHECK(s->holdout.n > 0 && !isnan(s->holdout.logloss));
    CHECK_INT_EQ(features_ncolumns(s->features), 4);
    CHECK_STR_EQ(features_column(s->features, 3)->name, "x1");
    CHECK_INT_EQ(features_column(s->features, 3)->transform, TRANSFORM_LOG1P);
    CHECK_INT_EQ(features_column(s->features, 1)->buckets, 32);
    /* With the EMA on, the snapshot serves other weights than training's. */
    const struct example *e0 = example_at(data, stride, 3);
    CHECK(snapshot_score(s, e0) != learner_predict(l, e0));
    snapshot_release(s);
    learner_free(l);
    free(data);
}

void test_snapshot_score_equals_learner_predict(void)
{
    struct config *cfg = config_new();
    char err[512];
    CHECK_INT_EQ(config_load_string(cfg, yaml, "test", err, sizeof err), 0);
    cfg->model.ema_decay = 0; /* serve the training weights */
    struct learner *l = learner_new(cfg, err, sizeof err);
    config_free(cfg);
    CHECK(l != NULL);
    unsigned char *data;
    struct learner *tmp = trained_learner(&data, 600);
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    for (size_t i = 0; i < 600; i++) learner_push(l, example_at(data, stride, i));
    struct snapshot *s = learner_snapshot(l, 1, 0);
    float maxdiff = 0;
    for (size_t i = 0; i < 600; i++) {
        const struct example *e = example_at(data, stride, i);
        float a = snapshot_score(s, e), b = learner_predict(l, e);
        if (fabsf(a - b) > maxdiff) maxdiff = fabsf(a - b);
    }
    printf("max |snapshot_score - learner_predict| = %g\n", maxdiff);
    CHECK(maxdiff == 0); /* same frozen normaliser, same predict path: bit-equal */
    snapshot_release(s);
    learner_free(l);
    learner_free(tmp);
    free(data);
}

void test_snapshot_encode_decode(void)
{
    unsigned char *data;
    struct learner *l = trained_learner(&data, 500);
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    struct snapshot *s = learner_snapshot(l, 42, 1000);
    void *buf;
    size_t len;
    CHECK_INT_EQ(snapshot_encode(s, &buf, &len), 0);
    CHECK_INT_EQ(len, snapshot_encoded_size(s));
    CHECK(memcmp(buf, SNAPSHOT_MAGIC, 8) == 0);
    struct snapshot *d = NULL;
    char err[256];
    int rc = snapshot_decode(buf, len, &d, err, sizeof err);
    if (rc < 0) unit_fail(__FILE__, __LINE__, "decode: %s", err);
    CHECK_STR_EQ(d->fingerprint, s->fingerprint);
    CHECK_INT_EQ(d->version, 42);
    CHECK_INT_EQ(d->created_at_ms, 1000);
    CHECK_INT_EQ(d->trained_examples, s->trained_examples);
    CHECK_NEAR(d->holdout.auc, s->holdout.auc, 0);
    CHECK_INT_EQ(d->progressive.n, s->progressive.n);
    CHECK_INT_EQ(d->nparams, s->nparams);
    CHECK(memcmp(d->params, s->params, s->nparams * sizeof(float)) == 0);
    CHECK(memcmp(&d->shape, &s->shape, sizeof s->shape) == 0);
    for (size_t i = 0; i < 500; i++) {
        const struct example *e = example_at(data, stride, i);
        CHECK(snapshot_score(d, e) == snapshot_score(s, e));
    }
    void *buf2;
    size_t len2;
    CHECK_INT_EQ(snapshot_encode(d, &buf2, &len2), 0);
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0); /* a fixed point */

    /* Every corrupted byte is caught (checksum, or a check before it); so is truncation. */
    unsigned char *bad = malloc(len);
    size_t step = len / 97 + 1;
    for (size_t i = 0; i < len; i += step) {
        memcpy(bad, buf, len);
        bad[i] ^= 0x10;
        struct snapshot *x = NULL;
        CHECK_INT_EQ(snapshot_decode(bad, len, &x, err, sizeof err), -EINVAL);
        CHECK(x == NULL);
    }
    struct snapshot *x = NULL;
    CHECK_INT_EQ(snapshot_decode(buf, len - 1, &x, err, sizeof err), -EINVAL);
    CHECK_INT_EQ(snapshot_decode(buf, 10, &x, err, sizeof err), -EINVAL);
    memcpy(bad, buf, len);
    bad[0] = 'X';
    CHECK_INT_EQ(snapshot_decode(bad, len, &x, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "magic");
    /* A param changed and the checksum recomputed: the fingerprint check catches it. */
    memcpy(bad, buf, len);
    bad[len - 24 - 4] ^= 1; /* last byte of the last param */
    uint64_t sum = XXH64(bad, len - 8, 0);
    memcpy(bad + len - 8, &sum, 8);
    CHECK_INT_EQ(snapshot_decode(bad, len, &x, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "fingerprint");
    free(bad);
    free(buf);
    free(buf2);
    snapshot_release(s);
    snapshot_release(d);
    learner_free(l);
    free(data);
}

void test_snapshot_fingerprint_covers_weights_and_normaliser(void)
{
    unsigned char *data;
    struct learner *l = trained_learner(&data, 300);
    struct snapshot *s = learner_snapshot(l, 1, 0);
    struct snapshot_meta meta = {.version = 99, .created_at_ms = 5};
    struct snapshot *same =
        snapshot_new(s->features, &s->shape, s->params, s->mean, s->inv_std, &meta);
    CHECK_STR_EQ(same->fingerprint, s->fingerprint); /* metadata is not fingerprinted */
    float *p = malloc(s->nparams * sizeof(float));
    memcpy(p, s->params, s->nparams * sizeof(float));
    p[s->nparams / 2] += 1e-3f;
    struct snapshot *w = snapshot_new(s->features, &s->shape, p, s->mean, s->inv_std, &meta);
    CHECK(strcmp(w->fingerprint, s->fingerprint) != 0);
    float mean[4];
    memcpy(mean, s->mean, sizeof(float) * s->shape.ndense);
    mean[0] += 1e-3f;
    struct snapshot *n = snapshot_new(s->features, &s->shape, s->params, mean, s->inv_std, &meta);
    CHECK(strcmp(n->fingerprint, s->fingerprint) != 0);
    free(p);
    snapshot_release(s);
    snapshot_release(same);
    snapshot_release(w);
    snapshot_release(n);
    learner_free(l);
    free(data);
}

/* ---- the publication slot under concurrency ---- */

#define READERS   6
#define PUBLISHES 4000

struct race {
    struct snapshot_slot slot;
    const struct features *f;
    struct model_shape shape;
    _Atomic int done;
    _Atomic uint64_t reads;
    _Atomic uint64_t torn;
    _Atomic uint64_t backwards;
    _Atomic uint64_t nulls_after_first;
    unsigned char example[64];
};

/* Every parameter of snapshot v is v, and its mean[0] too: a torn read shows as a mix. */
static void *reader(void *arg)
{
    struct race *r = arg;
    uint64_t last = 0, reads = 0;
    while (!atomic_load(&r->done)) {
        struct snapshot *s = snapshot_slot_acquire(&r->slot);
        if (!s) {
            if (last) atomic_fetch_add(&r->nulls_after_first, 1);
            continue;
        }
        float v = (float)s->version;
        int torn = s->mean[0] != v;
        for (size_t i = 0; i < s->nparams; i += 7) torn |= s->params[i] != v;
        torn |= s->params[s->nparams - 1] != v;
        float score = snapshot_score(s, (const struct example *)(void *)r->example);
        torn |= !(score >= 0 && score <= 1);
        if (torn) atomic_fetch_add(&r->torn, 1);
        if (s->version < last) atomic_fetch_add(&r->backwards, 1);
        last = s->version;
        snapshot_release(s);
        reads++;
        atomic_fetch_add_explicit(&r->reads, 1, memory_order_relaxed);
    }
    (void)reads;
    return NULL;
}

void test_snapshot_slot_concurrent(void)
{
    static const struct config_feature cols[] = {
        {.name = "a", .type = FEATURE_NUMERIC},
        {.name = "b", .type = FEATURE_NUMERIC},
        {.name = "c", .type = FEATURE_CATEGORICAL, .buckets = 4}};
    char err[256];
    struct features *f = features_new(cols, 3, err, sizeof err);
    CHECK(f != NULL);
    static struct race r;
    memset(&r, 0, sizeof r);
    snapshot_slot_init(&r.slot);
    r.f = f;
    r.shape = (struct model_shape){.ndense = 2,
                                   .nsparse = 4,
                                   .ncat = 1,
                                   .nlayers = 2,
                                   .width = {6, 16, 1},
                                   .activation = ACTIVATION_SIGMOID};
    size_t np = model_nparams(&r.shape);
    CHECK(features_example_size(f) <= sizeof r.example);
    features_example_init(f, (struct example *)(void *)r.example);
    long live0 = snapshot_live();
    CHECK(snapshot_slot_acquire(&r.slot) == NULL); /* nothing before the first */

    pthread_t th[READERS];
    for (int i = 0; i < READERS; i++) CHECK_INT_EQ(pthread_create(&th[i], NULL, reader, &r), 0);
    float *params = malloc(np * sizeof(float));
    float mean[2], inv[2] = {1, 1};
    /* At least PUBLISHES publications, and on until the readers have read a good deal
     * (on a loaded machine they may start late), within a minute. */
    time_t deadline = time(NULL) + 60;
    uint64_t v;
    for (v = 1; v <= PUBLISHES || (atomic_load(&r.reads) < 20000 && time(NULL) < deadline); v++) {
        for (size_t i = 0; i < np; i++) params[i] = (float)v;
        mean[0] = mean[1] = (float)v;
        struct snapshot_meta meta = {.version = v};
        struct snapshot *s = snapshot_new(f, &r.shape, params, mean, inv, &meta);
        CHECK(s != NULL);
        snapshot_slot_publish(&r.slot, s); /* s is the slot's now */
    }
    atomic_store(&r.done, 1);
    for (int i = 0; i < READERS; i++) pthread_join(th[i], NULL);
    printf("%llu reads by %d readers over %llu publications; %ld snapshots alive at the end\n",
           (unsigned long long)atomic_load(&r.reads), READERS, (unsigned long long)(v - 1),
           snapshot_live() - live0);
    CHECK_INT_EQ(atomic_load(&r.torn), 0);
    CHECK_INT_EQ(atomic_load(&r.backwards), 0);
    CHECK_INT_EQ(atomic_load(&r.nulls_after_first), 0);
    CHECK(atomic_load(&r.reads) > 0);
    /* Every replaced snapshot was freed once its readers were done; only the slot's is left. */
    CHECK_INT_EQ(snapshot_live() - live0, 1);
    struct snapshot *cur = snapshot_slot_acquire(&r.slot);
    CHECK_INT_EQ(cur->version, v - 1);
    snapshot_release(cur);
    snapshot_slot_clear(&r.slot);
    CHECK_INT_EQ(snapshot_live() - live0, 0);
    CHECK(snapshot_slot_acquire(&r.slot) == NULL);
    free(params);
    features_free(f);
}

/* A reader holding a snapshot across many publications keeps it alive and intact. */
void test_snapshot_slot_long_reader(void)
{
    static const struct config_feature cols[] = {{.name = "a", .type = FEATURE_NUMERIC}};
    struct features *f = features_new(cols, 1, NULL, 0);
    struct model_shape shape = {.ndense = 1,
                                .nsparse = 0,
                                .ncat = 0,
                                .nlayers = 1,
                                .width = {1, 1},
                                .activation = ACTIVATION_RELU};
    struct snapshot_slot slot;
    snapshot_slot_init(&slot);
    long live0 = snapshot_live();
    float p[2] = {1, 2}, m[1] = {0}, inv[1] = {1};
    struct snapshot_meta meta = {.version = 1};
    snapshot_slot_publish(&slot, snapshot_new(f, &shape, p, m, inv, &meta));
    struct snapshot *held = snapshot_slot_acquire(&slot);
    struct snapshot *extra = snapshot_ref(held);
    for (int v = 2; v < 50; v++) {
        meta.version = (uint64_t)v;
        snapshot_slot_publish(&slot, snapshot_new(f, &shape, p, m, inv, &meta));
    }
    CHECK_INT_EQ(snapshot_live() - live0, 2); /* the held one and the current one */
    CHECK_INT_EQ(held->version, 1);
    snapshot_release(extra);
    CHECK_INT_EQ(snapshot_live() - live0, 2);
    snapshot_release(held);
    CHECK_INT_EQ(snapshot_live() - live0, 1);
    snapshot_slot_clear(&slot);
    CHECK_INT_EQ(snapshot_live() - live0, 0);
    features_free(f);
}

unsigned long alloc_hook_count(void); /* tests/unit/alloc_hook.c */

/* Serving's per-request path allocates nothing: parsing features into a caller's record and
 * scoring it with a snapshot. */
void test_snapshot_score_allocates_nothing(void)
{
    unsigned char *data;
    struct learner *l = trained_learner(&data, 200);
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    struct snapshot *s = learner_snapshot(l, 1, 0);
    json_t *o =
        json_loads("{\"x0\": 0.5, \"c\": 3, \"b\": \"TRUE\", \"x1\": 7, \"zz\": 1}", 0, NULL);
    CHECK(o != NULL);
    unsigned char rec[256];
    CHECK(stride <= sizeof rec);
    struct example *e = (struct example *)(void *)rec;
    features_example_init(f, e);
    uint32_t unknown = 0;
    float sum = 0;
    unsigned long before = alloc_hook_count();
    for (int i = 0; i < 1000; i++) {
        CHECK_INT_EQ(features_from_json(s->features, o, e, &unknown, NULL, 0, NULL), 0);
        sum += snapshot_score(s, e);
        sum += snapshot_score(s, example_at(data, stride, (size_t)i % 200));
    }
    unsigned long after = alloc_hook_count();
    printf("%lu allocations in 1000 parses and 2000 scores (sum %g)\n", after - before, sum);
    CHECK_INT_EQ(after - before, 0);
    CHECK_INT_EQ(unknown, 1000);
    CHECK(sum > 0);
    json_decref(o);
    snapshot_release(s);
    learner_free(l);
    free(data);
}
