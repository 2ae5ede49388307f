/* model.c — see model.h.
 *
 * Layers follow llm.c's pattern: the batch buffers are allocated once in model_new for the
 * batch capacity, so a training step allocates nothing.  Dense products go through
 * cblas_sgemm / cblas_sgemv (row-major, one BLAS thread); the element-wise loops (bias +
 * activation, dropout, the embedding bag, the optimizer updates) are small kernels compiled
 * for several instruction sets (target_clones) because that is where -O2 loses to
 * -march=native.  The build uses -std=c11, which turns floating-point contraction off, so
 * every clone rounds identically and results do not depend on the CPU.
 */
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "config.h"

/* No ifunc clones in sanitizer builds (the Makefile defines INTENTD_NO_CLONES there): the
 * resolvers run before the sanitizer runtime is up, and ThreadSanitizer crashes in them. */
#if defined(__x86_64__) && !defined(INTENTD_NO_CLONES) && !defined(__SANITIZE_THREAD__)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

/* openblas's cblas.h declares it, the reference cblas.h does not. */
extern void openblas_set_num_threads(int num_threads);

#define STATE_MAGIC   "INTDMDL1"
#define STATE_VERSION 1u

struct model {
    struct model_shape shape;
    size_t nparams;                     /* floats in params */
    size_t ngrad;                       /* floats in grad: nparams without E */
    size_t off_w[MODEL_MAX_LAYERS + 1]; /* params offset of layer l's W (l = 1..nlayers) */
    size_t off_b[MODEL_MAX_LAYERS + 1]; /* params offset of layer l's bias */
    size_t off_e;                       /* params offset of E */
    size_t maxw;                        /* widest layer output (>= 1) */

    int optimizer; /* enum optimizer_name */
    float lr;      /* learning rate */
    double beta1, beta2;
    float eps, momentum, l2;
    float dropout; /* drop probability of hidden units, [0, 1) */
    size_t cap;    /* batch capacity (training.batch_size) */

    float *params;   /* nparams, the model.h layout */
    float *moments;  /* Adam: m (nparams) then v (nparams); SGD: velocity (nparams) */
    size_t nmoments; /* floats in moments */
    float *grad;     /* ngrad: [gW1 | gb1 | gW2 | gb2 | ...], params layout minus E */

    /* Batch buffers, (cap, width[l]) each.  h[l] is the activation of layer l (the logits
     * for l = nlayers); with dropout, hd[l] = h[l] · mask[l] is what the next layer reads. */
    float *h[MODEL_MAX_LAYERS + 1];
    float *hd[MODEL_MAX_LAYERS + 1];
    float *mask[MODEL_MAX_LAYERS + 1];
    float *dz, *da; /* (cap, maxw) backward scratch, swapped layer by layer */
    float *ge;      /* (cap * ncat, H1) gradient rows of the touched E rows */
    uint32_t *uniq; /* (cap * ncat) touched E rows, in order of first appearance */
    uint32_t *slot; /* (nsparse) slot[r] = position of row r in uniq when uniq says so */
    void *block;    /* the single allocation holding the batch buffers above */

    uint64_t t;      /* optimizer steps taken */
    uint64_t rng[4]; /* xoshiro256** state: init, then dropout */

    /* The last forward, borrowed until model_step (see model.h). */
    const float *x;
    const uint32_t *cat;
    size_t lastB; /* 0: no forward pending */
    int dropped;  /* the last forward applied dropout */
};

/* ---- deterministic RNG: splitmix64 seeds xoshiro256** ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in (0, 1), never 0 (Box-Muller takes its log). */
static double rng_uniform(uint64_t s[4])
{
    return ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53;
}

/* ---- element-wise kernels (shared by the batch forward and model_predict, so both round
 * identically outside the dot products) ---- */

/* The loops below run in blocks of 16 with a fixed inner trip count, then a scalar tail:
 * GCC's -O2 vectorises only loops whose vector code replaces the scalar code entirely (the
 * "very cheap" cost model), which a loop of unknown length never is. */

/* y += x; inlined into the clones below, which loop over many short rows. */
static inline void add_n(float *restrict y, const float *restrict x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t k = i; k < i + 16; k++) y[k] += x[k];
    for (; i < n; i++) y[i] += x[i];
}

HOT static void vec_add(float *restrict y, const float *restrict x, size_t n)
{
    add_n(y, x, n);
}

/* y = a · x */
HOT static void vec_scale(float *restrict y, const float *restrict x, float a, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t k = i; k < i + 16; k++) y[k] = a * x[k];
    for (; i < n; i++) y[i] = a * x[i];
}

static float sigmoidf(float z)
{
    if (z >= 0) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

HOT static void act_relu(float *z, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t k = i; k < i + 16; k++) z[k] = z[k] > 0.0f ? z[k] : 0.0f;
    for (; i < n; i++) z[i] = z[i] > 0.0f ? z[i] : 0.0f;
}

static void act_apply(float *z, size_t n, int act)
{
    switch (act) {
    case ACTIVATION_RELU:
        act_relu(z, n);
        break;
    case ACTIVATION_TANH:
        for (size_t i = 0; i < n; i++) z[i] = tanhf(z[i]);
        break;
    default:
        for (size_t i = 0; i < n; i++) z[i] = sigmoidf(z[i]);
        break;
    }
}

/* z (B, n) += bias (n) row by row, then the activation (act < 0: none). */
HOT static void bias_act(float *restrict z, const float *restrict b, size_t B, size_t n, int act)
{
    for (size_t r = 0; r < B; r++) {
        float *zr = z + r * n;
        size_t i = 0;
        if (act == ACTIVATION_RELU) {
            for (; i + 16 <= n; i += 16)
                for (size_t k = i; k < i + 16; k++) {
                    float v = zr[k] + b[k];
                    zr[k] = v > 0.0f ? v : 0.0f;
                }
            for (; i < n; i++) {
                float v = zr[i] + b[i];
                zr[i] = v > 0.0f ? v : 0.0f;
            }
        } else {
            vec_add(zr, b, n);
            if (act >= 0) act_apply(zr, n, act);
        }
    }
}

/* da (n) becomes dz: times the dropout mask (if any), times act'(z) written in terms of the
 * activation h = act(z). */
HOT static void act_backward(float *restrict d, const float *restrict h, const float *restrict mask,
                             size_t n, int act)
{
    size_t i = 0;
    if (mask) {
        for (; i + 16 <= n; i += 16)
            for (size_t k = i; k < i + 16; k++) d[k] *= mask[k];
        for (; i < n; i++) d[i] *= mask[i];
        i = 0;
    }
    switch (act) {
    case ACTIVATION_RELU:
        for (; i + 16 <= n; i += 16)
            for (size_t k = i; k < i + 16; k++) d[k] = h[k] > 0.0f ? d[k] : 0.0f;
        for (; i < n; i++) d[i] = h[i] > 0.0f ? d[i] : 0.0f;
        break;
    case ACTIVATION_TANH:
        for (; i + 16 <= n; i += 16)
            for (size_t k = i; k < i + 16; k++) d[k] *= 1.0f - h[k] * h[k];
        for (; i < n; i++) d[i] *= 1.0f - h[i] * h[i];
        break;
    default:
        for (; i + 16 <= n; i += 16)
            for (size_t k = i; k < i + 16; k++) d[k] *= h[k] * (1.0f - h[k]);
        for (; i < n; i++) d[i] *= h[i] * (1.0f - h[i]);
        break;
    }
}

/* Dot product with 16 independent partial sums (vectorisable without reassociation). */
HOT static float dot(const float *restrict a, const float *restrict b, size_t n)
{
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[i + k] * b[i + k];
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += acc[k];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* PyTorch's Adam (torch/optim/adam.py, _single_tensor_adam) on n parameters, operation for
 * operation: g += l2·p; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g·g;
 * p += -step · m / (sqrt(v) / sqrt(bc2) + eps).  (model.o is built with -fno-math-errno, or
 * sqrtf's errno branch would keep this loop scalar.) */
#define ADAM_ONE(k)                                                                                \
    do {                                                                                           \
        float gi = g[k] + l2 * p[k];                                                               \
        float mi = m[k] * b1 + a1 * gi;                                                            \
        float vi = v[k] * b2 + a2 * gi * gi;                                                       \
        m[k] = mi;                                                                                 \
        v[k] = vi;                                                                                 \
        p[k] = p[k] + neg_step * mi / (sqrtf(vi) / bc2s + eps);                                    \
    } while (0)

struct adam_k {
    float l2, b1, a1, b2, a2, neg_step, bc2s, eps; /* a1 = 1 - b1, a2 = 1 - b2 */
};

static inline void adam_n(float *restrict p, const float *restrict g, float *restrict m,
                          float *restrict v, size_t n, const struct adam_k *c)
{
    const float l2 = c->l2, b1 = c->b1, a1 = c->a1, b2 = c->b2, a2 = c->a2;
    const float neg_step = c->neg_step, bc2s = c->bc2s, eps = c->eps;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t k = i; k < i + 16; k++) ADAM_ONE(k);
    for (; i < n; i++) ADAM_ONE(i);
}

HOT static void adam_update(float *restrict p, const float *restrict g, float *restrict m,
                            float *restrict v, size_t n, const struct adam_k *c)
{
    adam_n(p, g, m, v, n, c);
}

/* Prefetches the n floats at p (a row of E or of its moments) for an update soon. */
static inline void prefetch_row(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 1);
}

/* Lazy Adam over the touched rows of E: row uniq[i] (H floats at p + uniq[i]·H, moments at
 * m and v likewise) from gradient row g + i·H.  Rows are cold in a large E: fetch ahead. */
HOT static void adam_rows(float *p, float *m, float *v, const float *g, const uint32_t *uniq,
                          size_t nu, size_t H, const struct adam_k *c)
{
    for (size_t i = 0; i < nu; i++) {
        if (i + 4 < nu) {
            size_t a = (size_t)uniq[i + 4] * H;
            prefetch_row(p + a, H), prefetch_row(m + a, H), prefetch_row(v + a, H);
        }
        size_t o = (size_t)uniq[i] * H;
        adam_n(p + o, g + i * H, m + o, v + o, H, c);
    }
}

/* PyTorch's SGD with momentum, dampening 0: g += l2·p; u = mom·u + g; p += -lr·u. */
#define SGD_ONE(k)                                                                                 \
    do {                                                                                           \
        float gi = g[k] + l2 * p[k];                                                               \
        float ui = u[k] * mom + gi;                                                                \
        u[k] = ui;                                                                                 \
        p[k] = p[k] + neg_lr * ui;                                                                 \
    } while (0)

static inline void sgd_n(float *restrict p, const float *restrict g, float *restrict u, size_t n,
                         float l2, float mom, float neg_lr)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (size_t k = i; k < i + 16; k++) SGD_ONE(k);
    for (; i < n; i++) SGD_ONE(i);
}

HOT static void sgd_update(float *restrict p, const float *restrict g, float *restrict u, size_t n,
                           float l2, float mom, float neg_lr)
{
    sgd_n(p, g, u, n, l2, mom, neg_lr);
}

/* Lazy SGD over the touched rows of E, as adam_rows. */
HOT static void sgd_rows(float *p, float *u, const float *g, const uint32_t *uniq, size_t nu,
                         size_t H, float l2, float mom, float neg_lr)
{
    for (size_t i = 0; i < nu; i++) {
        if (i + 4 < nu) {
            size_t a = (size_t)uniq[i + 4] * H;
            prefetch_row(p + a, H), prefetch_row(u + a, H);
        }
        size_t o = (size_t)uniq[i] * H;
        sgd_n(p + o, g + i * H, u + o, H, l2, mom, neg_lr);
    }
}

/* The first layer's embedding bag over a batch: z (B, n) += bias, then += the named rows of
 * E (nsparse, n), in predict's order.  Rows two examples ahead are prefetched (a large E is
 * cold). */
HOT static void bag_forward(float *restrict z, const float *restrict b, const float *restrict e,
                            const uint32_t *restrict cat, size_t B, uint32_t ncat, size_t n)
{
    for (size_t r = 0; r < B; r++) {
        float *zr = z + r * n;
        if (r + 2 < B)
            for (uint32_t c = 0; c < ncat; c++) {
                uint32_t j = cat[(r + 2) * ncat + c];
                if (j == MODEL_NO_INDEX) continue;
                for (size_t i = 0; i < n; i += 16) __builtin_prefetch(e + (size_t)j * n + i);
            }
        add_n(zr, b, n);
        for (uint32_t c = 0; c < ncat; c++) {
            uint32_t j = cat[r * ncat + c];
            if (j != MODEL_NO_INDEX) add_n(zr, e + (size_t)j * n, n);
        }
    }
}

/* ---- layout ---- */

static size_t layer_in(const struct model_shape *s, uint32_t l)
{
    return l == 1 ? s->ndense : s->width[l - 1];
}

/* Fills the offsets of every layer's W and b and of E; returns nparams. */
static size_t layout(const struct model_shape *s, size_t *off_w, size_t *off_b, size_t *off_e)
{
    size_t off = 0;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        off_w[l] = off;
        off += (size_t)s->width[l] * layer_in(s, l);
        if (l == 1) {
            *off_e = off;
            off += (size_t)s->nsparse * s->width[1];
        }
        off_b[l] = off;
        off += s->width[l];
    }
    return off;
}

size_t model_nparams(const struct model_shape *s)
{
    size_t w[MODEL_MAX_LAYERS + 1], b[MODEL_MAX_LAYERS + 1], e;
    return layout(s, w, b, &e);
}

const struct model_shape *model_shape(const struct model *m)
{
    return &m->shape;
}

float *model_params(struct model *m)
{
    return m->params;
}

uint64_t model_steps(const struct model *m)
{
    return m->t;
}

static int shape_equal(const struct model_shape *a, const struct model_shape *b)
{
    if (a->ndense != b->ndense || a->nsparse != b->nsparse || a->ncat != b->ncat ||
        a->nlayers != b->nlayers || a->activation != b->activation)
        return 0;
    for (uint32_t l = 0; l <= a->nlayers; l++)
        if (a->width[l] != b->width[l]) return 0;
    return 1;
}

/* ---- construction ---- */

static void init_params(struct model *m)
{
    const struct model_shape *s = &m->shape;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        size_t out = s->width[l], in = layer_in(s, l);
        size_t fan_in = l == 1 ? (size_t)s->ndense + s->ncat : in;
        if (fan_in == 0) fan_in = 1;
        size_t n = out * in + (l == 1 ? (size_t)s->nsparse * out : 0);
        float *w = m->params + m->off_w[l]; /* W1 and E are adjacent: one fill */
        int he = s->activation == ACTIVATION_RELU && l < s->nlayers;
        if (he) {
            double sd = sqrt(2.0 / (double)fan_in);
            for (size_t i = 0; i < n; i += 2) {
                double r = sqrt(-2.0 * log(rng_uniform(m->rng)));
                double a = 2.0 * M_PI * rng_uniform(m->rng);
                w[i] = (float)(sd * r * cos(a));
                if (i + 1 < n) w[i + 1] = (float)(sd * r * sin(a));
            }
        } else {
            double lim = sqrt(6.0 / (double)(fan_in + out));
            for (size_t i = 0; i < n; i++) w[i] = (float)(lim * (2.0 * rng_uniform(m->rng) - 1.0));
        }
        memset(m->params + m->off_b[l], 0, out * sizeof(float));
    }
}

/* Large blocks (a big E and its moments) are touched at random rows: transparent huge pages
 * spare most TLB misses.  calloc's zero pages stay lazy, now 2 MiB at a time.  Advice only. */
static void advise_huge(void *p, size_t bytes)
{
    const uintptr_t page = 4096;
    if (!p || bytes < (8u << 20)) return;
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return 0;
}

struct model *model_new(const struct config *cfg, uint32_t ndense, uint32_t nsparse, uint32_t ncat,
                        char *err, size_t errlen)
{
    char msg[256];
    if (cfg->model.nhidden > CONFIG_MAX_HIDDEN) {
        fail(err, errlen, "model.hidden: at most 8 layers");
        return NULL;
    }
    for (size_t i = 0; i < cfg->model.nhidden; i++)
        if (cfg->model.hidden[i] < 1 || cfg->model.hidden[i] > MODEL_MAX_WIDTH) {
            snprintf(msg, sizeof msg, "model.hidden[%zu]: %u units, expected 1 to %d", i,
                     cfg->model.hidden[i], MODEL_MAX_WIDTH);
            fail(err, errlen, msg);
            return NULL;
        }
    if (ndense + (uint64_t)ncat == 0 || (ncat > 0 && nsparse == 0)) {
        fail(err, errlen, "model: no inputs (no dense column and no categorical slot)");
        return NULL;
    }
    int act = cfg->model.activation;
    if (act != ACTIVATION_RELU && act != ACTIVATION_TANH && act != ACTIVATION_SIGMOID) {
        fail(err, errlen, "model.activation: expected relu, tanh or sigmoid");
        return NULL;
    }
    if (!(cfg->model.dropout >= 0.0 && cfg->model.dropout < 1.0)) {
        fail(err, errlen, "model.dropout: expected a value in [0, 1)");
        return NULL;
    }
    if (cfg->optimizer.name != OPTIMIZER_ADAM && cfg->optimizer.name != OPTIMIZER_SGD) {
        fail(err, errlen, "optimizer.name: expected adam or sgd");
        return NULL;
    }
    if (cfg->training.batch_size < 1 || cfg->training.batch_size > (1u << 20)) {
        fail(err, errlen, "training.batch_size: expected 1 to 1048576");
        return NULL;
    }
    if (ndense > (1u << 24) || ncat > (1u << 16) || nsparse > (1u << 30)) {
        fail(err, errlen, "model: too many inputs");
        return NULL;
    }

    struct model *m = calloc(1, sizeof *m);
    if (!m) {
        fail(err, errlen, "model: out of memory");
        return NULL;
    }
    struct model_shape *s = &m->shape;
    s->ndense = ndense;
    s->nsparse = nsparse;
    s->ncat = ncat;
    s->nlayers = (uint32_t)cfg->model.nhidden + 1;
    s->width[0] = ndense + nsparse;
    for (uint32_t l = 1; l < s->nlayers; l++) s->width[l] = cfg->model.hidden[l - 1];
    s->width[s->nlayers] = 1;
    s->activation = act;

    m->nparams = layout(s, m->off_w, m->off_b, &m->off_e);
    m->ngrad = m->nparams - (size_t)nsparse * s->width[1];
    m->maxw = 1;
    for (uint32_t l = 1; l <= s->nlayers; l++)
        if (s->width[l] > m->maxw) m->maxw = s->width[l];
    m->optimizer = cfg->optimizer.name;
    m->lr = (float)cfg->optimizer.learning_rate;
    m->beta1 = cfg->optimizer.beta1;
    m->beta2 = cfg->optimizer.beta2;
    m->eps = (float)cfg->optimizer.epsilon;
    m->momentum = (float)cfg->optimizer.momentum;
    m->l2 = (float)cfg->model.l2;
    m->dropout = (float)cfg->model.dropout;
    m->cap = cfg->training.batch_size;

    m->nmoments = (m->optimizer == OPTIMIZER_ADAM ? 2 : 1) * m->nparams;
    m->params = malloc(m->nparams * sizeof(float));
    /* calloc: for large E the untouched rows' moments stay zero pages that cost no memory */
    m->moments = calloc(m->nmoments, sizeof(float));
    m->grad = calloc(m->ngrad, sizeof(float));
    advise_huge(m->params, m->nparams * sizeof(float));
    advise_huge(m->moments, m->nmoments * sizeof(float));
    m->slot = calloc(nsparse ? nsparse : 1, sizeof(uint32_t));

    size_t cap = m->cap, acts = 0;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        int drop = m->dropout > 0.0f && l < s->nlayers;
        acts += cap * s->width[l] * (drop ? 3 : 1);
    }
    size_t nfloat = acts + 2 * cap * m->maxw + cap * ncat * (size_t)s->width[1];
    m->block = calloc(1, nfloat * sizeof(float) + cap * ncat * sizeof(uint32_t) + 64);
    if (!m->params || !m->moments || !m->grad || !m->slot || !m->block) {
        fail(err, errlen, "model: out of memory");
        return model_free(m);
    }
    float *p = m->block;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        size_t n = cap * s->width[l];
        m->h[l] = p, p += n;
        if (m->dropout > 0.0f && l < s->nlayers) {
            m->hd[l] = p, p += n;
            m->mask[l] = p, p += n;
        }
    }
    m->dz = p, p += cap * m->maxw;
    m->da = p, p += cap * m->maxw;
    m->ge = p, p += cap * ncat * (size_t)s->width[1];
    m->uniq = (uint32_t *)p;

    uint64_t seed = cfg->model.seed;
    for (int i = 0; i < 4; i++) m->rng[i] = splitmix64(&seed);
    init_params(m);
    /* One BLAS thread: deterministic arithmetic, and the other core serves (DESIGN.md §6). */
    openblas_set_num_threads(1);
    return m;
}

struct model *model_free(struct model *m)
{
    if (!m) return NULL;
    free(m->params);
    free(m->moments);
    free(m->grad);
    free(m->slot);
    free(m->block);
    free(m);
    return NULL;
}

void model_set_learning_rate(struct model *m, double lr)
{
    m->lr = (float)lr;
}

/* ---- forward ---- */

/* z (B, out) = in (B, k) · Wᵀ with W (out, k); plain zeros when k is 0. */
static void dense_forward(float *z, const float *in, const float *w, size_t B, size_t out, size_t k)
{
    if (k == 0) {
        memset(z, 0, B * out * sizeof(float));
    } else if (out == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)B, (int)k, 1.0f, in, (int)k, w, 1, 0.0f, z,
                    1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)out, (int)k, 1.0f, in,
                    (int)k, w, (int)k, 0.0f, z, (int)out);
    }
}

/* Inverted dropout of n activations: hd = h · mask, mask 0 (probability p) or 1/(1-p). */
static void dropout_forward(struct model *m, float *hd, float *mask, const float *h, size_t n)
{
    uint32_t thresh = (uint32_t)((double)m->dropout * 4294967296.0);
    float scale = 1.0f / (1.0f - m->dropout);
    for (size_t i = 0; i < n; i += 2) {
        uint64_t r = rng_next(m->rng);
        mask[i] = (uint32_t)r < thresh ? 0.0f : scale;
        if (i + 1 < n) mask[i + 1] = (uint32_t)(r >> 32) < thresh ? 0.0f : scale;
    }
    for (size_t i = 0; i < n; i++) hd[i] = h[i] * mask[i];
}

int model_forward(struct model *m, const float *x, const uint32_t *cat, size_t B, int training,
                  float *prob)
{
    const struct model_shape *s = &m->shape;
    if (B == 0 || B > m->cap || (s->ndense && !x) || (s->ncat && !cat)) return -EINVAL;
    for (size_t i = 0; i < B * s->ncat; i++)
        if (cat[i] >= s->nsparse && cat[i] != MODEL_NO_INDEX) return -EINVAL;

    int drop = training && m->dropout > 0.0f;
    const float *in = x;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        size_t out = s->width[l], k = layer_in(s, l);
        float *z = m->h[l];
        const float *w = m->params + m->off_w[l], *b = m->params + m->off_b[l];
        dense_forward(z, in, w, B, out, k);
        int act = l < s->nlayers ? s->activation : -1;
        if (l == 1 && s->ncat) {
            bag_forward(z, b, m->params + m->off_e, cat, B, s->ncat, out);
            if (act >= 0) act_apply(z, B * out, act);
        } else {
            bias_act(z, b, B, out, act);
        }
        if (l < s->nlayers && drop) {
            dropout_forward(m, m->hd[l], m->mask[l], z, B * out);
            in = m->hd[l];
        } else {
            in = z;
        }
    }
    if (prob)
        for (size_t r = 0; r < B; r++) prob[r] = sigmoidf(m->h[s->nlayers][r]);
    m->x = x;
    m->cat = cat;
    m->lastB = B;
    m->dropped = drop;
    return 0;
}

/* ---- backward and update ---- */

/* gW (out, k) = dzᵀ · in, dz (B, out), in (B, k).  OpenBLAS 0.3.21 runs products of up to
 * 100³ multiply-adds through its small-matrix kernels, without packing the operands; in
 * blocks of columns under that size the first layer's gradient (64 × 128 × 128 by default)
 * measured about 15% faster than one call.  Each element is still one K-sum. */
static void weight_grad(float *gw, const float *dz, const float *in, size_t B, size_t out, size_t k)
{
    size_t kc = k;
    while (kc > 16 && (double)out * (double)kc * (double)B > 1e6) kc = (kc + 1) / 2;
    for (size_t j = 0; j < k; j += kc) {
        size_t n = k - j < kc ? k - j : kc;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)n, (int)B, 1.0f, dz,
                    (int)out, in + j, (int)k, 0.0f, gw + j, (int)k);
    }
}

/* Accumulates the first layer's gradient rows for E: dz1 (B, H1) scattered to the rows the
 * batch named; m->uniq (nu) lists them in order of first appearance, m->ge their sums. */
HOT static size_t embedding_backward(struct model *m, const float *dz1, size_t B)
{
    const struct model_shape *s = &m->shape;
    size_t H = s->width[1], nu = 0;
    for (size_t r = 0; r < B; r++)
        for (uint32_t c = 0; c < s->ncat; c++) {
            uint32_t j = m->cat[r * s->ncat + c];
            if (j == MODEL_NO_INDEX) continue;
            uint32_t pos = m->slot[j];
            if (pos < nu && m->uniq[pos] == j) {
                add_n(m->ge + pos * H, dz1 + r * H, H);
            } else {
                m->slot[j] = (uint32_t)nu;
                m->uniq[nu] = j;
                memcpy(m->ge + nu * H, dz1 + r * H, H * sizeof(float));
                nu++;
            }
        }
    return nu;
}

static struct adam_k adam_consts(const struct model *m, float l2, float neg_step, float bc2s)
{
    return (struct adam_k){l2,
                           (float)m->beta1,
                           (float)(1.0 - m->beta1),
                           (float)m->beta2,
                           (float)(1.0 - m->beta2),
                           neg_step,
                           bc2s,
                           m->eps};
}

/* One optimizer update of n parameters at p (moments at the same offset) from gradient g. */
static void update(struct model *m, size_t off, const float *g, size_t n, float l2, float neg_step,
                   float bc2s)
{
    float *p = m->params + off;
    if (m->optimizer == OPTIMIZER_ADAM) {
        struct adam_k c = adam_consts(m, l2, neg_step, bc2s);
        adam_update(p, g, m->moments + off, m->moments + m->nparams + off, n, &c);
    } else {
        sgd_update(p, g, m->moments + off, n, l2, m->momentum, neg_step);
    }
}

double model_step(struct model *m, const float *label, const float *weight, size_t B)
{
    const struct model_shape *s = &m->shape;
    if (B == 0 || B != m->lastB) return NAN;
    uint32_t L = s->nlayers;

    /* Output: loss and dL/dz from the logits, stable for any z. */
    const float *zl = m->h[L];
    float *dz = m->dz, *da = m->da;
    double loss = 0.0;
    float invb = 1.0f / (float)B;
    for (size_t r = 0; r < B; r++) {
        float z = zl[r], y = label[r], w = weight[r];
        float e = expf(-fabsf(z)); /* sigmoidf's own exponential, shared with the loss */
        float p = z >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
        float bce = (z > 0.0f ? z : 0.0f) - z * y + log1pf(e);
        loss += (double)w * (double)bce;
        dz[r] = w * (p - y) * invb;
    }
    loss /= (double)B;

    size_t goff = 0, goffs_w[MODEL_MAX_LAYERS + 1], goffs_b[MODEL_MAX_LAYERS + 1];
    for (uint32_t l = 1; l <= L; l++) {
        goffs_w[l] = goff;
        goff += (size_t)s->width[l] * layer_in(s, l);
        goffs_b[l] = goff;
        goff += s->width[l];
    }
    size_t nu = 0;
    for (uint32_t l = L; l >= 1; l--) {
        size_t out = s->width[l], k = layer_in(s, l);
        const float *in = l == 1 ? m->x : (m->dropped ? m->hd[l - 1] : m->h[l - 1]);
        float *gw = m->grad + goffs_w[l], *gb = m->grad + goffs_b[l];
        /* gW (out, k) = dzᵀ · in */
        if (k > 0) {
            if (out == 1)
                cblas_sgemv(CblasRowMajor, CblasTrans, (int)B, (int)k, 1.0f, in, (int)k, dz, 1,
                            0.0f, gw, 1);
            else
                weight_grad(gw, dz, in, B, out, k);
        }
        memcpy(gb, dz, out * sizeof(float));
        for (size_t r = 1; r < B; r++) vec_add(gb, dz + r * out, out);
        if (l == 1) {
            if (s->ncat) nu = embedding_backward(m, dz, B);
            break; /* no gradient for the inputs */
        }
        /* da (B, k) = dz · W, then through dropout and the activation of layer l - 1 */
        const float *w = m->params + m->off_w[l];
        if (out == 1) {
            for (size_t r = 0; r < B; r++) vec_scale(da + r * k, w, dz[r], k);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)k, (int)out, 1.0f,
                        dz, (int)out, w, (int)k, 0.0f, da, (int)k);
        }
        act_backward(da, m->h[l - 1], m->dropped ? m->mask[l - 1] : NULL, B * k, s->activation);
        float *t = dz;
        dz = da;
        da = t;
    }

    /* Update: dense parameters as two contiguous runs around E, then the touched E rows. */
    m->t++;
    float neg_step, bc2s = 1.0f;
    if (m->optimizer == OPTIMIZER_ADAM) {
        double bc1 = 1.0 - pow(m->beta1, (double)m->t), bc2 = 1.0 - pow(m->beta2, (double)m->t);
        neg_step = (float)-((double)m->lr / bc1);
        bc2s = (float)sqrt(bc2);
    } else {
        neg_step = -m->lr;
    }
    for (uint32_t l = 1; l <= L; l++) {
        size_t out = s->width[l], k = layer_in(s, l);
        update(m, m->off_w[l], m->grad + goffs_w[l], out * k, m->l2, neg_step, bc2s);
        update(m, m->off_b[l], m->grad + goffs_b[l], out, 0.0f, neg_step, bc2s);
    }
    size_t H = s->width[1], oe = m->off_e;
    if (nu && m->optimizer == OPTIMIZER_ADAM) {
        struct adam_k c = adam_consts(m, m->l2, neg_step, bc2s);
        adam_rows(m->params + oe, m->moments + oe, m->moments + m->nparams + oe, m->ge, m->uniq, nu,
                  H, &c);
    } else if (nu) {
        sgd_rows(m->params + oe, m->moments + oe, m->ge, m->uniq, nu, H, m->l2, m->momentum,
                 neg_step);
    }
    m->lastB = 0;
    return loss;
}

/* ---- single-example predict ---- */

float model_predict(const struct model_shape *s, const float *params, const float *x,
                    const uint32_t *cat)
{
    float buf[2][MODEL_MAX_WIDTH];
    const float *in = x;
    size_t off = 0;
    float *z = buf[0];
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        size_t out = s->width[l], k = layer_in(s, l);
        z = buf[l & 1];
        const float *w = params + off;
        off += out * k;
        for (size_t o = 0; o < out; o++) z[o] = k ? dot(w + o * k, in, k) : 0.0f;
        const float *e = params + off;
        if (l == 1) off += (size_t)s->nsparse * out;
        vec_add(z, params + off, out);
        off += out;
        if (l == 1)
            for (uint32_t c = 0; c < s->ncat; c++)
                if (cat[c] < s->nsparse) vec_add(z, e + (size_t)cat[c] * out, out);
        if (l < s->nlayers) act_apply(z, out, s->activation);
        in = z;
    }
    return sigmoidf(z[0]);
}

/* ---- checkpoint state ---- */

struct state_header {
    char magic[8];
    uint32_t version;
    uint32_t optimizer;
    struct model_shape shape;
    uint32_t pad;
    uint64_t nparams;
    uint64_t nmoments;
    uint64_t t;
    uint64_t rng[4];
};

size_t model_state_size(const struct model *m)
{
    return sizeof(struct state_header) + (m->nparams + m->nmoments) * sizeof(float);
}

void model_state_save(const struct model *m, void *buf)
{
    struct state_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, STATE_MAGIC, 8);
    h.version = STATE_VERSION;
    h.optimizer = (uint32_t)m->optimizer;
    h.shape = m->shape;
    h.nparams = m->nparams;
    h.nmoments = m->nmoments;
    h.t = m->t;
    memcpy(h.rng, m->rng, sizeof h.rng);
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    memcpy(p, m->params, m->nparams * sizeof(float));
    p += m->nparams * sizeof(float);
    memcpy(p, m->moments, m->nmoments * sizeof(float));
}

int model_state_load(struct model *m, const void *buf, size_t len)
{
    struct state_header h;
    if (!buf || len != model_state_size(m)) return -EINVAL;
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, STATE_MAGIC, 8) != 0 || h.version != STATE_VERSION ||
        h.optimizer != (uint32_t)m->optimizer || !shape_equal(&h.shape, &m->shape) ||
        h.nparams != m->nparams || h.nmoments != m->nmoments)
        return -EINVAL;
    const char *p = (const char *)buf + sizeof h;
    memcpy(m->params, p, m->nparams * sizeof(float));
    p += m->nparams * sizeof(float);
    memcpy(m->moments, p, m->nmoments * sizeof(float));
    m->t = h.t;
    memcpy(m->rng, h.rng, sizeof m->rng);
    m->lastB = 0;
    return 0;
}
