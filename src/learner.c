/* learner.c — the trainer core (see learner.h for what one push does). */
#include "learner.h"
#include "errmsg.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "model.h"
#include "reservoir.h"

/* Distinct streams of the model seed for the learner's RNGs. */
#define SEED_ROUTE     UINT64_C(0x686f6c646f757431) /* "holdout1" */
#define SEED_REPLAY    UINT64_C(0x7265706c61793031) /* "replay01" */
#define SEED_RESERVOIR UINT64_C(0x7265737276723031)
#define STATE_FORMAT   1

struct learner {
    struct features *f;
    struct model *m;
    struct model_shape shape;
    size_t nparams;
    size_t stride;
    uint32_t ndense, ncat, batch;

    /* settings (config, or SIGHUP) */
    double holdout_fraction, replay_ratio, positive_weight, ema_decay;
    double max_regression, learning_rate;
    uint32_t min_holdout;

    struct features_norm *norm;
    float *mean, *inv_std; /* (ndense) the normaliser frozen for the batch at hand */
    float *mom;            /* (3 · ndense) the fresh batch's moments about mean */

    unsigned char *pending; /* (batch) raw records of the partial minibatch */
    size_t npending;

    /* The batch handed to the model; x and cat are borrowed by model_forward until the
     * step, so they are only rewritten for the next batch. */
    float *x;                     /* (batch, ndense) standardised */
    uint32_t *cat;                /* (batch, ncat) */
    float *label, *weight, *prob; /* (batch) */
    unsigned char *replay_batch;  /* (batch) records drawn from the replay reservoir */

    struct reservoir *replay;  /* RESERVOIR_SAMPLE over everything trained */
    struct reservoir *holdout; /* RESERVOIR_RECENT of routed examples */
    struct reservoir_rng route_rng, replay_rng;
    double replay_acc;

    struct metrics *metrics;
    double threshold;
    uint32_t window;

    /* EMA of the weights.  Dense parts advance every step; a row of E changes only on the
     * steps whose batch touches it (lazy updates), so its EMA is caught up in closed form,
     * e ← p + d^k (e - p) over the k steps it sat still, when it is next touched or read. */
    float *ema;           /* (nparams), NULL when off */
    uint64_t *ema_last;   /* (nsparse) step count at which row's EMA was last current */
    uint64_t *row_mark;   /* (nsparse) scratch: batch stamp, to list touched rows once */
    uint32_t *touched;    /* (batch · ncat) scratch: rows the batch touches */
    uint64_t ema_steps;   /* EMA updates so far */
    uint64_t batch_stamp; /* increments per step, for row_mark */
    size_t e_off, e_len;  /* E's offset and length (floats) in the parameter block */

    float *hold_p, *hold_y; /* (holdout capacity) gate scratch */
    /* The last learner_snapshot's holdout loss, reused by the gate while the holdout has not
     * changed (the trainer gates right after making a candidate). */
    char last_fp[SNAPSHOT_FINGERPRINT_LEN + 1];
    uint64_t last_fp_seen;
    double last_fp_loss;

    struct learner_counters c;
};

static struct example *rec(unsigned char *base, size_t stride, size_t i)
{
    return (struct example *)(void *)(base + i * stride);
}

static uint32_t holdout_capacity(const struct config *cfg)
{
    uint32_t c = cfg->evaluation.window;
    if (c < cfg->snapshot.min_holdout) c = cfg->snapshot.min_holdout;
    return c ? c : 1;
}

struct learner *learner_new(const struct config *cfg, char *err, size_t errlen)
{
    struct learner *l = calloc(1, sizeof *l);
    if (!l) goto oom;
    l->f = features_new(cfg->features, cfg->nfeatures, err, errlen);
    if (!l->f) return learner_free(l);
    l->ndense = features_ndense(l->f);
    l->ncat = features_ncat(l->f);
    l->stride = features_example_size(l->f);
    l->batch = cfg->training.batch_size ? cfg->training.batch_size : 1;
    l->m = model_new(cfg, l->ndense, features_nsparse(l->f), l->ncat, err, errlen);
    if (!l->m) return learner_free(l);
    l->shape = *model_shape(l->m);
    l->nparams = model_nparams(&l->shape);

    l->holdout_fraction = cfg->snapshot.holdout_fraction;
    l->replay_ratio = cfg->training.replay_ratio;
    l->positive_weight = cfg->training.positive_weight;
    l->ema_decay = cfg->model.ema_decay;
    l->max_regression = cfg->snapshot.max_regression;
    l->min_holdout = cfg->snapshot.min_holdout;
    l->learning_rate = cfg->optimizer.learning_rate;
    l->threshold = cfg->evaluation.threshold;
    l->window = cfg->evaluation.window ? cfg->evaluation.window : 1;

    size_t nd = l->ndense ? l->ndense : 1, nc = l->ncat ? l->ncat : 1;
    l->norm = features_norm_new(l->ndense);
    l->mean = malloc(nd * sizeof(float));
    l->inv_std = malloc(nd * sizeof(float));
    l->mom = malloc(3 * nd * sizeof(float));
    l->pending = malloc(l->batch * l->stride);
    l->replay_batch = malloc(l->batch * l->stride);
    l->x = malloc(l->batch * nd * sizeof(float));
    l->cat = malloc(l->batch * nc * sizeof(uint32_t));
    l->label = malloc(l->batch * sizeof(float));
    l->weight = malloc(l->batch * sizeof(float));
    l->prob = malloc(l->batch * sizeof(float));
    uint64_t seed = cfg->model.seed;
    uint32_t hcap = holdout_capacity(cfg);
    uint32_t rcap = cfg->training.replay_capacity ? cfg->training.replay_capacity : 1;
    l->replay = reservoir_new(l->stride, rcap, RESERVOIR_SAMPLE, seed ^ SEED_RESERVOIR);
    l->holdout = reservoir_new(l->stride, hcap, RESERVOIR_RECENT, seed ^ SEED_RESERVOIR);
    l->hold_p = malloc(hcap * sizeof(float));
    l->hold_y = malloc(hcap * sizeof(float));
    l->metrics = metrics_new(l->window, l->threshold, 0);
    if (!l->norm || !l->mean || !l->inv_std || !l->mom || !l->pending || !l->replay_batch ||
        !l->x || !l->cat || !l->label || !l->weight || !l->prob || !l->replay || !l->holdout ||
        !l->hold_p || !l->hold_y || !l->metrics)
        goto oom;
    reservoir_rng_seed(&l->route_rng, seed ^ SEED_ROUTE);
    reservoir_rng_seed(&l->replay_rng, seed ^ SEED_REPLAY);

    /* E follows W1 (H1, ndense) in the block (model.h). */
    uint32_t h1 = l->shape.width[1];
    l->e_off = (size_t)h1 * l->ndense;
    l->e_len = (size_t)features_nsparse(l->f) * h1;
    if (l->ema_decay > 0) {
        size_t ns = features_nsparse(l->f) ? features_nsparse(l->f) : 1;
        l->ema = malloc(l->nparams * sizeof(float));
        l->ema_last = calloc(ns, sizeof(uint64_t));
        l->row_mark = calloc(ns, sizeof(uint64_t));
        l->touched = malloc(l->batch * nc * sizeof(uint32_t));
        if (!l->ema || !l->ema_last || !l->row_mark || !l->touched) goto oom;
        memcpy(l->ema, model_params(l->m), l->nparams * sizeof(float));
    }
    return l;
oom:
    errmsg_set(err, errlen, "out of memory creating the learner");
    return learner_free(l);
}

struct learner *learner_free(struct learner *l)
{
    if (!l) return NULL;
    features_free(l->f);
    model_free(l->m);
    features_norm_free(l->norm);
    free(l->mean);
    free(l->inv_std);
    free(l->mom);
    free(l->pending);
    free(l->replay_batch);
    free(l->x);
    free(l->cat);
    free(l->label);
    free(l->weight);
    free(l->prob);
    reservoir_free(l->replay);
    reservoir_free(l->holdout);
    free(l->hold_p);
    free(l->hold_y);
    metrics_free(l->metrics);
    free(l->ema);
    free(l->ema_last);
    free(l->row_mark);
    free(l->touched);
    free(l);
    return NULL;
}

const struct features *learner_features(const struct learner *l)
{
    return l->f;
}

const struct model_shape *learner_shape(const struct learner *l)
{
    return &l->shape;
}

int learner_exact_metrics(struct learner *l)
{
    if (l->c.examples_trained) return -EBUSY;
    struct metrics *m = metrics_new(l->window, l->threshold, 1);
    if (!m) return -ENOMEM;
    metrics_free(l->metrics);
    l->metrics = m;
    return 0;
}

/* ---- EMA ---- */

static double powi(double d, uint64_t k)
{
    double r = 1.0;
    while (k) {
        if (k & 1) r *= d;
        d *= d;
        k >>= 1;
    }
    return r;
}

/* Brings row r's EMA up to date with the current step count (its parameters have not
 * changed since ema_last[r]). */
static void ema_catch_up_row(const struct learner *l, const float *p, float *e, uint32_t r,
                             uint64_t now, uint64_t last)
{
    if (now == last) return;
    uint32_t h1 = l->shape.width[1];
    float dk = (float)powi(l->ema_decay, now - last);
    const float *pr = p + l->e_off + (size_t)r * h1;
    float *er = e + l->e_off + (size_t)r * h1;
    for (uint32_t j = 0; j < h1; j++) er[j] = pr[j] + dk * (er[j] - pr[j]);
}

/* Before a step: lists the distinct rows the batch touches and catches their EMA up. */
static size_t ema_before_step(struct learner *l, const uint32_t *cat, size_t B)
{
    size_t nt = 0;
    l->batch_stamp++;
    const float *p = model_params(l->m);
    for (size_t i = 0; i < B * l->ncat; i++) {
        uint32_t r = cat[i];
        if (r == MODEL_NO_INDEX || l->row_mark[r] == l->batch_stamp) continue;
        l->row_mark[r] = l->batch_stamp;
        l->touched[nt++] = r;
        ema_catch_up_row(l, p, l->ema, r, l->ema_steps, l->ema_last[r]);
        l->ema_last[r] = l->ema_steps;
    }
    return nt;
}

/* The EMA pass touches every dense parameter each step: worth the wider vector units where
 * the CPU has them.  No ifunc clones in sanitizer builds: their resolvers run before the
 * sanitizer run time is up (ThreadSanitizer crashes there). */
#if defined(INTENTD_NO_CLONES) || defined(__SANITIZE_THREAD__)
#define EMA_CLONES
#else
#define EMA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

typedef float ema_vec __attribute__((vector_size(64)));

EMA_CLONES static void ema_axpy(float *e, const float *p, size_t n, float d)
{
    /* GCC's vector extensions (the -O2 vectoriser leaves this loop scalar), lowered to the
     * clone's width; the same IEEE operations as the scalar tail. */
    float od = 1.0f - d;
    ema_vec vd, vod;
    for (int t = 0; t < 16; t++) vd[t] = d, vod[t] = od;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        ema_vec ve, vp;
        memcpy(&ve, e + i, sizeof ve);
        memcpy(&vp, p + i, sizeof vp);
        ve = vd * ve + vod * vp;
        memcpy(e + i, &ve, sizeof ve);
    }
    for (; i < n; i++) e[i] = d * e[i] + od * p[i];
}

/* After a step: every dense parameter and the touched rows advance one EMA step. */
static void ema_after_step(struct learner *l, size_t nt)
{
    const float *p = model_params(l->m);
    float d = (float)l->ema_decay;
    ema_axpy(l->ema, p, l->e_off, d);
    size_t tail = l->e_off + l->e_len;
    ema_axpy(l->ema + tail, p + tail, l->nparams - tail, d);
    uint32_t h1 = l->shape.width[1];
    l->ema_steps++;
    for (size_t t = 0; t < nt; t++) {
        size_t off = l->e_off + (size_t)l->touched[t] * h1;
        ema_axpy(l->ema + off, p + off, h1, d);
        l->ema_last[l->touched[t]] = l->ema_steps;
    }
}

/* ---- training ---- */

/* Fills x, cat, label, weight from B records (standardised with l->mean / l->inv_std) and,
 * when mom is not NULL, the batch's moments for the normaliser. */
static void build_batch(struct learner *l, unsigned char *records, size_t B, float *mom)
{
    features_standardise_examples(l->ndense, l->mean, l->inv_std, records, l->stride, B, l->x, mom);
    for (size_t i = 0; i < B; i++) {
        const struct example *e = rec(records, l->stride, i);
        if (l->ncat)
            memcpy(l->cat + i * l->ncat, example_cat_at_c(e, l->ndense),
                   l->ncat * sizeof(uint32_t));
        l->label[i] = e->label;
        l->weight[i] = e->weight * (e->label > 0.5f ? (float)l->positive_weight : 1.0f);
    }
}

/* One optimizer step on the batch in x/cat/label/weight after its forward pass. */
static void step(struct learner *l, size_t B)
{
    size_t nt = l->ema ? ema_before_step(l, l->cat, B) : 0;
    model_step(l->m, l->label, l->weight, B);
    if (l->ema) ema_after_step(l, nt);
    l->c.steps++;
}

static int train_replay(struct learner *l)
{
    int steps = 0;
    if (l->replay_ratio <= 0) return 0;
    if (reservoir_size(l->replay) < l->batch) {
        l->replay_acc = 0; /* no debt builds up before replay can start */
        return 0;
    }
    l->replay_acc += l->replay_ratio;
    if (l->replay_acc < 1.0) return 0;
    features_norm_freeze(l->norm, l->mean, l->inv_std);
    while (l->replay_acc >= 1.0) {
        l->replay_acc -= 1.0;
        for (uint32_t i = 0; i < l->batch; i++) {
            uint64_t j = reservoir_rng_below(&l->replay_rng, reservoir_size(l->replay));
            memcpy(rec(l->replay_batch, l->stride, i), reservoir_get(l->replay, (size_t)j),
                   l->stride);
        }
        build_batch(l, l->replay_batch, l->batch, NULL);
        if (model_forward(l->m, l->x, l->cat, l->batch, 1, NULL) < 0) continue;
        step(l, l->batch);
        l->c.replay_batches++;
        steps++;
    }
    return steps;
}

/* Trains the partial minibatch (npending ≥ 1): progressive scores first, then the step. */
static int train_pending(struct learner *l)
{
    size_t B = l->npending;
    features_norm_freeze(l->norm, l->mean, l->inv_std);
    build_batch(l, l->pending, B, l->mom);
    if (model_forward(l->m, l->x, l->cat, B, 1, l->prob) < 0) {
        l->npending = 0;
        return -EINVAL;
    }
    for (size_t i = 0; i < B; i++) metrics_add(l->metrics, l->prob[i], l->label[i]);
    features_norm_merge(l->norm, l->mean, l->mom); /* after scoring, before the step */
    step(l, B);
    l->c.fresh_batches++;
    l->c.examples_trained += B;
    /* Into the replay memory only after it was learned from once, fresh. */
    if (l->replay_ratio > 0)
        for (size_t i = 0; i < B; i++) reservoir_add(l->replay, rec(l->pending, l->stride, i));
    l->npending = 0;
    return 1 + train_replay(l);
}

int learner_push(struct learner *l, const struct example *e)
{
    if (!(e->label == 0.0f || e->label == 1.0f) || !(e->weight > 0.0f) || !isfinite(e->weight))
        return -EINVAL;
    l->c.examples_pushed++;
    /* One draw per example whatever the fraction, so the stream of choices does not
     * depend on it. */
    double u = reservoir_rng_uniform(&l->route_rng);
    if (u < l->holdout_fraction) {
        reservoir_add(l->holdout, e);
        l->c.holdout_examples++;
        return 0;
    }
    memcpy(rec(l->pending, l->stride, l->npending++), e, l->stride);
    if (l->npending < l->batch) return 0;
    return train_pending(l);
}

int learner_flush(struct learner *l)
{
    return l->npending ? train_pending(l) : 0;
}

size_t learner_pending(const struct learner *l)
{
    return l->npending;
}

float learner_predict(const struct learner *l, const struct example *e)
{
    float mean[CONFIG_MAX_FEATURES], inv_std[CONFIG_MAX_FEATURES], x[CONFIG_MAX_FEATURES];
    features_norm_freeze(l->norm, mean, inv_std);
    features_standardise(l->ndense, mean, inv_std, e->dense, x);
    return model_predict(&l->shape, model_params(l->m), x, example_cat_at_c(e, l->ndense));
}

void learner_metrics(const struct learner *l, struct metrics_summary *window,
                     struct metrics_summary *cumulative)
{
    if (window) metrics_window(l->metrics, window);
    if (cumulative) metrics_cumulative(l->metrics, cumulative);
}

void learner_counters(const struct learner *l, struct learner_counters *out)
{
    *out = l->c;
}

size_t learner_holdout_size(const struct learner *l)
{
    return reservoir_size(l->holdout);
}

/* Scores the holdout reservoir with s: mean log loss and AUC (NaN when empty). */
static void holdout_eval(struct learner *l, const struct snapshot *s, double *loss, double *auc)
{
    size_t n = reservoir_size(l->holdout);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        const struct example *e = reservoir_get(l->holdout, i);
        float p = snapshot_score(s, e);
        double q = p < 1e-7f ? 1e-7 : p > 1 - 1e-7 ? 1 - 1e-7 : p;
        sum += e->label > 0.5f ? -log(q) : -log1p(-q);
        l->hold_p[i] = p;
        l->hold_y[i] = e->label;
    }
    if (loss) *loss = n ? sum / (double)n : NAN;
    if (auc) *auc = n ? metrics_auc_exact(l->hold_p, l->hold_y, n, NULL) : NAN;
}

struct snapshot *learner_snapshot(struct learner *l, uint64_t version, int64_t now_ms)
{
    float mean[CONFIG_MAX_FEATURES], inv_std[CONFIG_MAX_FEATURES];
    features_norm_freeze(l->norm, mean, inv_std);
    struct metrics_summary w;
    metrics_window(l->metrics, &w);
    struct snapshot_meta meta = {
        .version = version,
        .created_at_ms = now_ms,
        .trained_examples = l->c.examples_trained,
        .progressive = {.auc = w.auc, .logloss = w.logloss, .n = w.n},
        .holdout = {.auc = NAN, .logloss = NAN, .n = 0},
    };
    const float *params = model_params(l->m);
    float *tmp = NULL;
    if (l->ema) {
        /* The EMA with every row brought up to date — in a copy, so taking a snapshot
         * does not change the learning state (bit-identical continuation). */
        tmp = malloc(l->nparams * sizeof(float));
        if (!tmp) return NULL;
        memcpy(tmp, l->ema, l->nparams * sizeof(float));
        uint32_t ns = features_nsparse(l->f);
        for (uint32_t r = 0; r < ns; r++)
            ema_catch_up_row(l, params, tmp, r, l->ema_steps, l->ema_last[r]);
        params = tmp;
    }
    struct snapshot *s = snapshot_new(l->f, &l->shape, params, mean, inv_std, &meta);
    free(tmp);
    if (!s) return NULL;
    /* Not shared yet, so still ours to fill in. */
    double loss, auc;
    holdout_eval(l, s, &loss, &auc);
    s->holdout.logloss = loss;
    s->holdout.auc = auc;
    s->holdout.n = reservoir_size(l->holdout);
    memcpy(l->last_fp, s->fingerprint, sizeof l->last_fp);
    l->last_fp_seen = reservoir_seen(l->holdout);
    l->last_fp_loss = loss;
    return s;
}

int learner_gate(struct learner *l, const struct snapshot *candidate, const struct snapshot *served,
                 double *cand_loss, double *served_loss)
{
    double cl = NAN, sl = NAN;
    int accept = 1;
    if (reservoir_size(l->holdout) >= l->min_holdout && reservoir_size(l->holdout) > 0) {
        if (candidate && reservoir_seen(l->holdout) == l->last_fp_seen &&
            strcmp(candidate->fingerprint, l->last_fp) == 0)
            cl = l->last_fp_loss; /* same weights, same holdout: same loss */
        else if (candidate)
            holdout_eval(l, candidate, &cl, NULL);
        if (served) holdout_eval(l, served, &sl, NULL);
        if (candidate && served) accept = !(cl > sl + l->max_regression);
    }
    if (cand_loss) *cand_loss = cl;
    if (served_loss) *served_loss = sl;
    return accept;
}

void learner_set_learning_rate(struct learner *l, double lr)
{
    l->learning_rate = lr;
    model_set_learning_rate(l->m, lr);
}

void learner_set_replay_ratio(struct learner *l, double ratio)
{
    l->replay_ratio = ratio;
}

void learner_set_threshold(struct learner *l, double threshold)
{
    l->threshold = threshold;
    metrics_set_threshold(l->metrics, threshold);
}

void learner_set_positive_weight(struct learner *l, double positive_weight)
{
    l->positive_weight = positive_weight;
}

void learner_set_gate(struct learner *l, double max_regression, uint32_t min_holdout)
{
    l->max_regression = max_regression;
    l->min_holdout = min_holdout;
}

/* ---- state ---- */

/* A growable byte buffer for learner_save. */
struct out {
    unsigned char *buf;
    size_t len, cap;
    int oom;
};

static void *out_reserve(struct out *o, size_t n)
{
    if (o->oom) return NULL;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n) cap *= 2;
        unsigned char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return NULL;
        }
        o->buf = b;
        o->cap = cap;
    }
    void *p = o->buf + o->len;
    o->len += n;
    return p;
}

static void out_put(struct out *o, const void *p, size_t n)
{
    void *d = out_reserve(o, n);
    if (d && n) memcpy(d, p, n);
}

static void out_u64(struct out *o, uint64_t v)
{
    out_put(o, &v, 8);
}

/* A length-prefixed section. */
static void *out_section(struct out *o, size_t n)
{
    out_u64(o, n);
    return out_reserve(o, n);
}

/* The schema and shape, as the first section (checked before anything else is read). */
static void out_schema(struct out *o, const struct learner *l)
{
    uint32_t n = features_ncolumns(l->f);
    out_u64(o, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct features_column *c = features_column(l->f, i);
        uint64_t len = strlen(c->name);
        out_u64(o, ((uint64_t)c->type) | ((uint64_t)c->transform << 8) |
                       ((uint64_t)c->buckets << 16) | (len << 48));
        out_put(o, c->name, len);
    }
    out_put(o, &l->shape, sizeof l->shape);
    out_u64(o, FEATURES_HASH_SEED);
}

int learner_save(const struct learner *l, void **buf, size_t *len)
{
    struct out o = {0};
    out_put(&o, LEARNER_STATE_MAGIC, 8);
    out_u64(&o, STATE_FORMAT);
    out_schema(&o, l);
    out_put(&o, &l->c, sizeof l->c);
    out_put(&o, &l->replay_acc, sizeof l->replay_acc);
    out_put(&o, &l->route_rng, sizeof l->route_rng);
    out_put(&o, &l->replay_rng, sizeof l->replay_rng);

    void *p = out_section(&o, model_state_size(l->m));
    if (p) model_state_save(l->m, p);
    p = out_section(&o, features_norm_state_size(l->norm));
    if (p) features_norm_save(l->norm, p);
    out_u64(&o, l->npending);
    out_put(&o, l->pending, l->npending * l->stride);
    p = out_section(&o, reservoir_state_size(l->replay));
    if (p) reservoir_save(l->replay, p);
    p = out_section(&o, reservoir_state_size(l->holdout));
    if (p) reservoir_save(l->holdout, p);
    p = out_section(&o, metrics_state_size(l->metrics));
    if (p) metrics_save(l->metrics, p);
    if (l->ema) {
        uint32_t ns = features_nsparse(l->f);
        out_u64(&o, 1);
        out_u64(&o, l->ema_steps);
        out_put(&o, l->ema, l->nparams * sizeof(float));
        out_put(&o, l->ema_last, ns * sizeof(uint64_t));
    } else {
        out_u64(&o, 0);
    }
    if (!o.oom) {
        uint64_t sum = XXH3_64bits(o.buf, o.len);
        out_u64(&o, sum);
    }
    if (o.oom) {
        free(o.buf);
        return -ENOMEM;
    }
    *buf = o.buf;
    *len = o.len;
    return 0;
}

struct in {
    const unsigned char *p;
    size_t len, pos;
    int bad;
};

static const void *in_get(struct in *in, size_t n)
{
    if (in->bad || in->len - in->pos < n) {
        in->bad = 1;
        return NULL;
    }
    const void *p = in->p + in->pos;
    in->pos += n;
    return p;
}

static void in_copy(struct in *in, void *dst, size_t n)
{
    const void *p = in_get(in, n);
    if (p)
        memcpy(dst, p, n);
    else
        memset(dst, 0, n);
}

static uint64_t in_u64(struct in *in)
{
    uint64_t v;
    in_copy(in, &v, 8);
    return v;
}

static const void *in_section(struct in *in, size_t *n)
{
    uint64_t len = in_u64(in);
    *n = (size_t)len;
    return in_get(in, (size_t)len);
}

/* Reads the schema section into an encoder and a shape; NULL with err on a bad buffer. */
static struct features *in_schema(struct in *in, struct model_shape *shape, char *err,
                                  size_t errlen)
{
    uint64_t n = in_u64(in);
    if (in->bad || n == 0 || n > CONFIG_MAX_FEATURES) {
        errmsg_set(err, errlen, "the learner state is corrupt (schema of %" PRIu64 " features)", n);
        return NULL;
    }
    struct config_feature cols[CONFIG_MAX_FEATURES];
    char *names = malloc(in->len);
    if (!names) {
        errmsg_set(err, errlen, "out of memory");
        return NULL;
    }
    char *np = names;
    for (uint64_t i = 0; i < n && !in->bad; i++) {
        uint64_t v = in_u64(in);
        size_t len = (size_t)(v >> 48);
        cols[i].type = (enum feature_type)(v & 0xff);
        cols[i].transform = (enum feature_transform)((v >> 8) & 0xff);
        cols[i].buckets = (uint32_t)((v >> 16) & 0xffffffffu);
        in_copy(in, np, len);
        np[len] = '\0';
        cols[i].name = np;
        np += len + 1;
    }
    in_copy(in, shape, sizeof *shape);
    uint64_t seed = in_u64(in);
    struct features *f = NULL;
    if (in->bad) {
        errmsg_set(err, errlen, "the learner state is truncated");
    } else if (seed != FEATURES_HASH_SEED) {
        errmsg_set(err, errlen, "the learner state was made with another categorical hash seed");
    } else {
        char ferr[200];
        f = features_new(cols, (size_t)n, ferr, sizeof ferr);
        if (!f) errmsg_set(err, errlen, "the learner state's schema is invalid: %s", ferr);
    }
    free(names);
    return f;
}

int learner_load(struct learner *l, const void *buf, size_t len, char *err, size_t errlen)
{
    uint64_t sum;
    if (len < 16) {
        errmsg_set(err, errlen, "not a learner state (%zu bytes)", len);
        return -EINVAL;
    }
    memcpy(&sum, (const char *)buf + len - 8, 8);
    struct in in = {.p = buf, .len = len - 8};
    const void *magic = in_get(&in, 8);
    if (!magic || memcmp(magic, LEARNER_STATE_MAGIC, 8) != 0) {
        errmsg_set(err, errlen, "not a learner state (bad magic)");
        return -EINVAL;
    }
    uint64_t format = in_u64(&in);
    if (format != STATE_FORMAT) {
        errmsg_set(err, errlen,
                "learner state format %" PRIu64 " is not supported (this build "
                "reads %d)",
                format, STATE_FORMAT);
        return -EINVAL;
    }
    if (XXH3_64bits(buf, len - 8) != sum) {
        errmsg_set(err, errlen, "the learner state is corrupt (checksum mismatch)");
        return -EINVAL;
    }
    struct model_shape shape;
    struct features *f = in_schema(&in, &shape, err, errlen);
    if (!f) return -EINVAL;
    char why[256];
    int rc = snapshot_check_compatible(l->f, &l->shape, f, &shape, why, sizeof why);
    features_free(f);
    if (rc < 0) {
        errmsg_set(err, errlen,
                "the saved state is for another feature schema or model shape: "
                "%s (start afresh by moving the state aside)",
                why);
        return -EINVAL;
    }
    in.len = len - 8;

    struct learner_counters c;
    double acc;
    struct reservoir_rng route, replay;
    in_copy(&in, &c, sizeof c);
    in_copy(&in, &acc, sizeof acc);
    in_copy(&in, &route, sizeof route);
    in_copy(&in, &replay, sizeof replay);
    size_t model_len, norm_len, rep_len, hold_len, met_len;
    const void *model_state = in_section(&in, &model_len);
    const void *norm_state = in_section(&in, &norm_len);
    uint64_t npending = in_u64(&in);
    const void *pending = npending <= l->batch ? in_get(&in, npending * l->stride) : NULL;
    const void *rep_state = in_section(&in, &rep_len);
    const void *hold_state = in_section(&in, &hold_len);
    const void *met_state = in_section(&in, &met_len);
    uint64_t has_ema = in_u64(&in);
    uint64_t ema_steps = 0;
    const void *ema = NULL, *ema_last = NULL;
    uint32_t ns = features_nsparse(l->f);
    if (has_ema == 1) {
        ema_steps = in_u64(&in);
        ema = in_get(&in, l->nparams * sizeof(float));
        ema_last = in_get(&in, ns * sizeof(uint64_t));
    }
    if (in.bad || !pending || has_ema > 1 || in.pos != in.len) {
        errmsg_set(err, errlen, "the learner state is truncated or corrupt");
        return -EINVAL;
    }

    /* Load into fresh objects first, so that a failure leaves l as it was. */
    struct features_norm *norm = features_norm_new(l->ndense);
    struct reservoir *rr =
        reservoir_new(l->stride, reservoir_capacity(l->replay), RESERVOIR_SAMPLE, 0);
    struct reservoir *hr =
        reservoir_new(l->stride, reservoir_capacity(l->holdout), RESERVOIR_RECENT, 0);
    struct metrics *m = metrics_new(l->window, l->threshold, 0);
    rc = -ENOMEM;
    if (norm && rr && hr && m) {
        rc = features_norm_load(norm, norm_state, norm_len);
        if (rc == 0) rc = reservoir_load(rr, rep_state, rep_len);
        if (rc == 0) rc = reservoir_load(hr, hold_state, hold_len);
        if (rc == 0) rc = metrics_load(m, met_state, met_len);
        if (rc == 0) rc = model_state_load(l->m, model_state, model_len);
        if (rc == -EINVAL)
            errmsg_set(err, errlen,
                    "the learner state does not fit this configuration "
                    "(the optimizer changed?) or is corrupt");
    }
    if (rc == -ENOMEM) errmsg_set(err, errlen, "out of memory loading the learner state");
    if (rc < 0) {
        features_norm_free(norm);
        reservoir_free(rr);
        reservoir_free(hr);
        metrics_free(m);
        return rc;
    }
    model_set_learning_rate(l->m, l->learning_rate);
    features_norm_free(l->norm);
    l->norm = norm;
    reservoir_free(l->replay);
    l->replay = rr;
    reservoir_free(l->holdout);
    l->holdout = hr;
    metrics_free(l->metrics);
    metrics_set_threshold(m, l->threshold);
    l->metrics = m;
    l->c = c;
    l->replay_acc = acc;
    l->route_rng = route;
    l->replay_rng = replay;
    l->npending = (size_t)npending;
    memcpy(l->pending, pending, npending * l->stride);
    if (l->ema) {
        if (ema) {
            memcpy(l->ema, ema, l->nparams * sizeof(float));
            memcpy(l->ema_last, ema_last, ns * sizeof(uint64_t));
            l->ema_steps = ema_steps;
        } else {
            /* The state had no EMA: start one from the loaded weights. */
            memcpy(l->ema, model_params(l->m), l->nparams * sizeof(float));
            memset(l->ema_last, 0, (ns ? ns : 1) * sizeof(uint64_t));
            l->ema_steps = 0;
        }
    }
    return 0;
}
