/* test_model.c — the MLP against a plain-loop double-precision reference (forward, backward,
 * finite differences), against PyTorch 1.13 (tests/unit/model_fixtures.h, written by
 * tests/unit/torch_fixtures.py), and the optimizer, weight, dropout, predict and checkpoint
 * contracts of model.h.
 *
 * Tolerances, float32 against exact or double references:
 *   forward probabilities, BLAS vs reference:   |Δ| <= 1e-6
 *   gradients, BLAS vs reference:                |Δ| <= 1e-6 + 1e-4·|g|
 *   reference analytic vs central differences:   |Δ| <= 1e-7 + 1e-5·|g|   (double, h = 1e-6)
 *   model gradient vs float finite differences:  |Δ| <= 2e-4 + 2e-2·|g|   (float, h = 1e-2)
 *   PyTorch: probabilities, loss, params after one and two steps:  |Δ| <= 1e-5·(1 + |torch|)
 *   model_predict vs the eval batch forward:     |Δ| <= 1e-6 (probabilities)
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "model_fixtures.h"
#include "unit.h"

unsigned long alloc_hook_count(void); /* tests/unit/alloc_hook.c */

/* ---- helpers ---- */

static struct config test_cfg(const unsigned *hidden, size_t nhidden, int act, int opt)
{
    struct config c;
    memset(&c, 0, sizeof c);
    for (size_t i = 0; i < nhidden; i++) c.model.hidden[i] = hidden[i];
    c.model.nhidden = nhidden;
    c.model.activation = act;
    c.model.seed = 1;
    c.optimizer.name = opt;
    c.optimizer.learning_rate = 0.01;
    c.optimizer.beta1 = 0.9;
    c.optimizer.beta2 = 0.999;
    c.optimizer.epsilon = 1e-8;
    c.optimizer.momentum = 0.9;
    c.training.batch_size = 32;
    return c;
}

static struct model *new_model(const struct config *c, uint32_t nd, uint32_t ns, uint32_t nc)
{
    char err[256] = "";
    struct model *m = model_new(c, nd, ns, nc, err, sizeof err);
    if (!m) unit_fail(__FILE__, __LINE__, "model_new: %s", err);
    return m;
}

static uint64_t rs = 0x1234567;
static double urand(void) /* [0, 1) */
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rs >> 11) * 0x1p-53;
}

static void fill_batch(float *x, uint32_t *cat, float *y, float *w, size_t B, uint32_t nd,
                       const uint32_t *buckets, uint32_t nc)
{
    for (size_t i = 0; i < B * nd; i++) x[i] = (float)(4.0 * urand() - 2.0);
    for (size_t r = 0; r < B; r++) {
        uint32_t off = 0;
        for (uint32_t c = 0; c < nc; c++) {
            cat[r * nc + c] =
                urand() < 0.1 ? MODEL_NO_INDEX : off + (uint32_t)(urand() * buckets[c]);
            off += buckets[c];
        }
        y[r] = urand() < 0.4 ? 1.0f : 0.0f;
        w[r] = (float)(0.5 + urand());
    }
}

/* ---- the plain-loop reference, in double ---- */

struct ref_layout {
    size_t w[MODEL_MAX_LAYERS + 1], b[MODEL_MAX_LAYERS + 1], e, n;
};

/* Written from model.h's comment, independently of model.c. */
static struct ref_layout ref_layout(const struct model_shape *s)
{
    struct ref_layout L;
    size_t off = 0;
    for (uint32_t l = 1; l <= s->nlayers; l++) {
        size_t in = l == 1 ? s->ndense : s->width[l - 1];
        L.w[l] = off;
        off += s->width[l] * in;
        if (l == 1) L.e = off, off += (size_t)s->nsparse * s->width[1];
        L.b[l] = off;
        off += s->width[l];
    }
    L.n = off;
    return L;
}

static double ref_act(double z, int act)
{
    if (act == ACTIVATION_RELU) return z > 0 ? z : 0;
    if (act == ACTIVATION_TANH) return tanh(z);
    return 1.0 / (1.0 + exp(-z));
}

static double ref_dact(double h, int act) /* in terms of h = act(z) */
{
    if (act == ACTIVATION_RELU) return h > 0 ? 1 : 0;
    if (act == ACTIVATION_TANH) return 1 - h * h;
    return h * (1 - h);
}

/* Loss mean_b(w·bce) of a batch; fills prob (B) and, if grad, dLoss/dparams (n, zeroed
 * here) and adds l2·W of every weight (W and E, E only on rows the batch touches). */
static double ref_loss(const struct model_shape *s, const double *p, const float *x,
                       const uint32_t *cat, const float *y, const float *w, size_t B, double l2,
                       double *prob, double *grad)
{
    struct ref_layout L = ref_layout(s);
    uint32_t nl = s->nlayers;
    double h[MODEL_MAX_LAYERS + 1][64], d[64], dprev[64];
    double loss = 0;
    if (grad) memset(grad, 0, L.n * sizeof *grad);
    for (size_t r = 0; r < B; r++) {
        for (uint32_t l = 1; l <= nl; l++) {
            size_t in = l == 1 ? s->ndense : s->width[l - 1];
            for (size_t o = 0; o < s->width[l]; o++) {
                double z = p[L.b[l] + o];
                for (size_t i = 0; i < in; i++)
                    z += p[L.w[l] + o * in + i] * (l == 1 ? x[r * in + i] : h[l - 1][i]);
                if (l == 1)
                    for (uint32_t c = 0; c < s->ncat; c++) {
                        uint32_t j = cat[r * s->ncat + c];
                        if (j != MODEL_NO_INDEX) z += p[L.e + (size_t)j * s->width[1] + o];
                    }
                h[l][o] = l < nl ? ref_act(z, s->activation) : z;
            }
        }
        double z = h[nl][0];
        double pr = 1.0 / (1.0 + exp(-z));
        prob[r] = pr;
        loss += w[r] * (fmax(z, 0) - z * y[r] + log1p(exp(-fabs(z))));
        if (!grad) continue;
        d[0] = w[r] * (pr - y[r]) / (double)B;
        for (uint32_t l = nl; l >= 1; l--) {
            size_t in = l == 1 ? s->ndense : s->width[l - 1], out = s->width[l];
            for (size_t o = 0; o < out; o++) {
                grad[L.b[l] + o] += d[o];
                for (size_t i = 0; i < in; i++)
                    grad[L.w[l] + o * in + i] += d[o] * (l == 1 ? x[r * in + i] : h[l - 1][i]);
            }
            if (l == 1) {
                for (uint32_t c = 0; c < s->ncat; c++) {
                    uint32_t j = cat[r * s->ncat + c];
                    if (j == MODEL_NO_INDEX) continue;
                    for (size_t o = 0; o < out; o++) grad[L.e + (size_t)j * out + o] += d[o];
                }
                break;
            }
            for (size_t i = 0; i < in; i++) {
                double a = 0;
                for (size_t o = 0; o < out; o++) a += d[o] * p[L.w[l] + o * in + i];
                dprev[i] = a * ref_dact(h[l - 1][i], s->activation);
            }
            memcpy(d, dprev, in * sizeof *d);
        }
    }
    if (grad && l2 > 0) {
        for (uint32_t l = 1; l <= nl; l++) {
            size_t in = l == 1 ? s->ndense : s->width[l - 1];
            for (size_t i = 0; i < s->width[l] * in; i++) grad[L.w[l] + i] += l2 * p[L.w[l] + i];
        }
        for (uint32_t j = 0; j < s->nsparse; j++) {
            int touched = 0;
            for (size_t i = 0; i < B * s->ncat; i++) touched |= cat[i] == j;
            if (touched)
                for (size_t o = 0; o < s->width[1]; o++)
                    grad[L.e + (size_t)j * s->width[1] + o] += l2 * p[L.e + j * s->width[1] + o];
        }
    }
    return loss / (double)B;
}

static double *to_double(const float *f, size_t n)
{
    double *d = malloc(n * sizeof *d);
    CHECK(d != NULL);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* The model's gradient, read back from one SGD step with lr 1 and no momentum:
 * g = p_before - p_after (exact up to one rounding of p). */
static double model_grad(struct model *m, const float *x, const uint32_t *cat, const float *y,
                         const float *w, size_t B, double *g)
{
    size_t n = model_nparams(model_shape(m));
    float *before = malloc(n * sizeof *before);
    CHECK(before != NULL);
    memcpy(before, model_params(m), n * sizeof *before);
    CHECK_INT_EQ(model_forward(m, x, cat, B, 0, NULL), 0);
    double loss = model_step(m, y, w, B);
    for (size_t i = 0; i < n; i++) g[i] = (double)before[i] - (double)model_params(m)[i];
    memcpy(model_params(m), before, n * sizeof *before);
    free(before);
    return loss;
}

static struct config grad_cfg(const unsigned *hidden, size_t nh, int act)
{
    struct config c = test_cfg(hidden, nh, act, OPTIMIZER_SGD);
    c.optimizer.learning_rate = 1.0;
    c.optimizer.momentum = 0.0;
    return c;
}

/* Forward and gradient of the BLAS model against the reference; finite differences of the
 * reference (double) and of the model itself (float) against both. */
static void gradient_check(const unsigned *hidden, size_t nh, int act, double l2)
{
    enum { B = 12, ND = 7, NC = 3 };
    const uint32_t buckets[NC] = {4, 5, 3};
    struct config c = grad_cfg(hidden, nh, act);
    c.model.l2 = l2;
    struct model *m = new_model(&c, ND, 12, NC);
    const struct model_shape *s = model_shape(m);
    size_t n = model_nparams(s);
    CHECK_INT_EQ(n, ref_layout(s).n);
    /* move the biases off 0 so every activation is tested away from its centre */
    for (uint32_t l = 1; l <= s->nlayers; l++)
        for (size_t o = 0; o < s->width[l]; o++)
            model_params(m)[ref_layout(s).b[l] + o] = (float)(0.2 * urand() - 0.1);
    float x[B * ND], y[B], w[B], prob[B];
    uint32_t cat[B * NC];
    fill_batch(x, cat, y, w, B, ND, buckets, NC);

    double *p = to_double(model_params(m), n);
    double *g = malloc(n * sizeof *g), *gr = malloc(n * sizeof *gr), rprob[B];
    CHECK(g && gr);
    double rloss = ref_loss(s, p, x, cat, y, w, B, l2, rprob, gr);

    CHECK_INT_EQ(model_forward(m, x, cat, B, 0, prob), 0);
    double maxp = 0;
    for (size_t r = 0; r < B; r++) maxp = fmax(maxp, fabs(prob[r] - rprob[r]));
    if (maxp > 1e-6) unit_fail(__FILE__, __LINE__, "forward: max |Δp| %.3g > 1e-6", maxp);

    double loss = model_grad(m, x, cat, y, w, B, g);
    CHECK_NEAR(loss, rloss, 1e-6);
    double maxg = 0, maxfd = 0, maxffd = 0;
    size_t kinks = 0;
    for (size_t i = 0; i < n; i++) {
        double dg = fabs(g[i] - gr[i]);
        if (dg > 1e-6 + 1e-4 * fabs(gr[i]))
            unit_fail(__FILE__, __LINE__, "gradient[%zu]: model %.9g reference %.9g", i, g[i],
                      gr[i]);
        maxg = fmax(maxg, dg);
    }
    /* central differences of the reference loss; L2 enters as l2/2·W² */
    struct ref_layout L = ref_layout(s);
    for (size_t i = 0; i < n; i++) {
        double h = 1e-6, keep = p[i], lp, lm, pen = 0;
        int weight = 1; /* not a bias */
        for (uint32_t l = 1; l <= s->nlayers && weight; l++)
            if (i >= L.b[l] && i < L.b[l] + s->width[l]) weight = 0;
        int erow_touched = 1;
        if (i >= L.e && i < L.b[1]) {
            uint32_t j = (uint32_t)((i - L.e) / s->width[1]);
            erow_touched = 0;
            for (size_t k = 0; k < B * NC; k++) erow_touched |= cat[k] == j;
        }
        p[i] = keep + h;
        lp = ref_loss(s, p, x, cat, y, w, B, 0, rprob, NULL);
        p[i] = keep - h;
        lm = ref_loss(s, p, x, cat, y, w, B, 0, rprob, NULL);
        p[i] = keep;
        if (weight && erow_touched) pen = l2 * keep;
        double fd = (lp - lm) / (2 * h) + pen;
        double d = fabs(fd - gr[i]);
        if (d > 1e-7 + 1e-5 * fabs(gr[i]))
            unit_fail(__FILE__, __LINE__, "reference gradient[%zu]: %.9g, differences %.9g", i,
                      gr[i], fd);
        maxfd = fmax(maxfd, d);
    }
    /* float finite differences on the model itself, through model_forward and the loss
     * model_step returns (lr 0 leaves the parameters alone) */
    model_set_learning_rate(m, 0.0);
    double *g0 = malloc(n * sizeof *g0); /* the data term only: the loss has no L2 in it */
    CHECK(g0 != NULL);
    ref_loss(s, p, x, cat, y, w, B, 0, rprob, g0);
    for (size_t i = 0; i < n; i += 3) {
        float keep = model_params(m)[i], h = 1e-2f;
        model_params(m)[i] = keep + h;
        model_forward(m, x, cat, B, 0, NULL);
        double lp = model_step(m, y, w, B);
        model_params(m)[i] = keep - h;
        model_forward(m, x, cat, B, 0, NULL);
        double lm = model_step(m, y, w, B);
        model_params(m)[i] = keep;
        double fd = (lp - lm) / (2.0 * (double)h);
        double d = fabs(fd - g0[i]);
        /* a relu kink within ±h makes the secant differ from the slope: the double
         * reference's own secant shows it, and such a coordinate is skipped */
        double keepd = p[i], rp, rm;
        p[i] = keepd + h;
        rp = ref_loss(s, p, x, cat, y, w, B, 0, rprob, NULL);
        p[i] = keepd - h;
        rm = ref_loss(s, p, x, cat, y, w, B, 0, rprob, NULL);
        p[i] = keepd;
        if (fabs((rp - rm) / (2.0 * (double)h) - g0[i]) > 1e-4 + 1e-2 * fabs(g0[i])) {
            kinks++;
            continue;
        }
        if (d > 2e-4 + 2e-2 * fabs(g0[i]))
            unit_fail(__FILE__, __LINE__, "float differences[%zu]: %.9g, analytic %.9g", i, fd,
                      g0[i]);
        maxffd = fmax(maxffd, d);
    }
    free(g0);
    if (kinks * 10 > n / 3) unit_fail(__FILE__, __LINE__, "%zu of %zu skipped", kinks, n / 3);
    printf("  act %d hidden %zu l2 %g: max |Δp| %.2g, |Δloss| %.2g, |Δg| %.2g, "
           "reference vs differences %.2g, float differences %.2g (%zu kinks skipped)\n",
           act, nh, l2, maxp, fabs(loss - rloss), maxg, maxfd, maxffd, kinks);
    free(p);
    free(g);
    free(gr);
    model_free(m);
}

void test_model_gradient_relu(void)
{
    const unsigned h[] = {9, 6};
    gradient_check(h, 2, ACTIVATION_RELU, 0.0);
    gradient_check(h, 2, ACTIVATION_RELU, 0.05);
}

void test_model_gradient_tanh(void)
{
    const unsigned h[] = {8, 5, 4};
    gradient_check(h, 3, ACTIVATION_TANH, 0.0);
    gradient_check(h, 3, ACTIVATION_TANH, 0.05);
}

void test_model_gradient_sigmoid(void)
{
    const unsigned h[] = {10};
    gradient_check(h, 1, ACTIVATION_SIGMOID, 0.0);
    gradient_check(h, 1, ACTIVATION_SIGMOID, 0.05);
}

void test_model_gradient_no_hidden_layer(void)
{
    gradient_check(NULL, 0, ACTIVATION_RELU, 0.0);
}

/* The BLAS path against the reference on a wider model with a full batch (sgemm's blocked
 * paths), and on a batch of one. */
void test_model_blas_vs_reference(void)
{
    enum { ND = 40, NC = 2 };
    const uint32_t buckets[NC] = {30, 20};
    const unsigned hidden[] = {64, 32};
    struct config c = grad_cfg(hidden, 2, ACTIVATION_RELU);
    c.training.batch_size = 128;
    struct model *m = new_model(&c, ND, 50, NC);
    const struct model_shape *s = model_shape(m);
    size_t n = model_nparams(s);
    static float x[128 * ND], y[128], w[128], prob[128];
    static uint32_t cat[128 * NC];
    static double rprob[128];
    double *g = malloc(n * sizeof *g), *gr = malloc(n * sizeof *gr);
    CHECK(g && gr);
    const size_t sizes[] = {128, 1, 77};
    for (int t = 0; t < 3; t++) {
        size_t B = sizes[t];
        fill_batch(x, cat, y, w, B, ND, buckets, NC);
        double *p = to_double(model_params(m), n);
        double rl = ref_loss(s, p, x, cat, y, w, B, 0, rprob, gr);
        CHECK_INT_EQ(model_forward(m, x, cat, B, 0, prob), 0);
        double maxp = 0, maxg = 0;
        for (size_t r = 0; r < B; r++) maxp = fmax(maxp, fabs(prob[r] - rprob[r]));
        double l = model_grad(m, x, cat, y, w, B, g);
        for (size_t i = 0; i < n; i++) {
            double d = fabs(g[i] - gr[i]);
            if (d > 1e-6 + 1e-4 * fabs(gr[i]))
                unit_fail(__FILE__, __LINE__,
                          "B %zu gradient[%zu]: %.9g vs %.9g (max so far "
                          "%.3g)",
                          B, i, g[i], gr[i], maxg);
            maxg = fmax(maxg, d);
        }
        printf("  B %zu: max |Δp| %.2g, |Δloss| %.2g, max |Δg| %.2g\n", B, maxp, fabs(l - rl),
               maxg);
        if (maxp > 1e-6) unit_fail(__FILE__, __LINE__, "max |Δp| %.3g > 1e-6", maxp);
        CHECK_NEAR(l, rl, 1e-6);
        free(p);
    }
    free(g);
    free(gr);
    model_free(m);
}

/* ---- PyTorch 1.13 ---- */

static double torch_case(const char *name, const unsigned *hidden, size_t nh, int act, int opt,
                         double lr, double l2, double mom, const float *init,
                         const float *const prob_exp[2], const double loss_exp[2],
                         const float *const after[2])
{
    struct config c = test_cfg(hidden, nh, act, opt);
    c.optimizer.learning_rate = lr;
    c.optimizer.momentum = mom;
    c.model.l2 = l2;
    c.training.batch_size = FX_B;
    struct model *m = new_model(&c, FX_NDENSE, FX_NSPARSE, FX_NCAT);
    size_t n = model_nparams(model_shape(m));
    memcpy(model_params(m), init, n * sizeof(float));
    double worst = 0;
    for (int step = 0; step < 2; step++) {
        float prob[FX_B];
        CHECK_INT_EQ(model_forward(m, fx_x, fx_cat, FX_B, 1, prob), 0);
        for (int r = 0; r < FX_B; r++) {
            double d = fabs(prob[r] - prob_exp[step][r]);
            worst = fmax(worst, d / (1 + fabs(prob_exp[step][r])));
            if (d > 1e-5 * (1 + fabs(prob_exp[step][r])))
                unit_fail(__FILE__, __LINE__, "%s step %d prob[%d]: %.9g torch %.9g", name,
                          step + 1, r, prob[r], prob_exp[step][r]);
        }
        double loss = model_step(m, fx_y, fx_w, FX_B);
        if (fabs(loss - loss_exp[step]) > 1e-5 * (1 + fabs(loss_exp[step])))
            unit_fail(__FILE__, __LINE__, "%s step %d loss %.9g torch %.9g", name, step + 1, loss,
                      loss_exp[step]);
        worst = fmax(worst, fabs(loss - loss_exp[step]) / (1 + fabs(loss_exp[step])));
        for (size_t i = 0; i < n; i++) {
            double d = fabs(model_params(m)[i] - after[step][i]);
            worst = fmax(worst, d / (1 + fabs(after[step][i])));
            if (d > 1e-5 * (1 + fabs(after[step][i])))
                unit_fail(__FILE__, __LINE__, "%s after step %d param[%zu]: %.9g torch %.9g", name,
                          step + 1, i, model_params(m)[i], after[step][i]);
        }
    }
    printf("  %s: max |Δ|/(1+|torch|) %.2g over probabilities, losses and parameters\n", name,
           worst);
    model_free(m);
    return worst;
}

#define TORCH_CASE(lc, UC)                                                                         \
    do {                                                                                           \
        const float *const probs[2] = {fx_##lc##_prob1, fx_##lc##_prob2};                          \
        const double losses[2] = {FX_##UC##_LOSS1, FX_##UC##_LOSS2};                               \
        const float *const after[2] = {fx_##lc##_step1, fx_##lc##_step2};                          \
        torch_case(#lc, fx_##lc##_hidden, sizeof fx_##lc##_hidden / sizeof fx_##lc##_hidden[0],    \
                   FX_##UC##_ACT, FX_##UC##_OPT, FX_##UC##_LR, FX_##UC##_L2, FX_##UC##_MOMENTUM,   \
                   fx_##lc##_init, probs, losses, after);                                          \
    } while (0)

void test_model_torch_relu_adam(void)
{
    TORCH_CASE(relu_adam, RELU_ADAM);
}

void test_model_torch_tanh_sgd_momentum(void)
{
    TORCH_CASE(tanh_sgd, TANH_SGD);
}

void test_model_torch_sigmoid_adam(void)
{
    TORCH_CASE(sigmoid_adam, SIGMOID_ADAM);
}

/* ---- optimizer contracts ---- */

/* Lazy Adam: the touched rows of E move exactly as a dense Adam on them would (double
 * reference of the same formulas, over three steps with different rows), the untouched rows
 * and their moments stay bit-identical. */
void test_model_lazy_adam_embedding(void)
{
    enum { ND = 3, NC = 2, NS = 1000, B = 4 };
    const unsigned hidden[] = {5};
    struct config c = test_cfg(hidden, 1, ACTIVATION_TANH, OPTIMIZER_ADAM);
    c.model.l2 = 0.01;
    c.optimizer.learning_rate = 0.05;
    c.training.batch_size = B;
    struct model *m = new_model(&c, ND, NS, NC);
    const struct model_shape *s = model_shape(m);
    struct ref_layout L = ref_layout(s);
    size_t n = model_nparams(s), H = 5;
    double *mo = calloc(n, sizeof *mo), *vo = calloc(n, sizeof *vo), *g = malloc(n * 8);
    double *p = to_double(model_params(m), n), rprob[B];
    float *prev = malloc(n * sizeof *prev);
    CHECK(mo && vo && g && prev);
    float x[B * ND], y[B] = {1, 0, 1, 0}, w[B] = {1, 1, 2, 1};
    for (int i = 0; i < B * ND; i++) x[i] = (float)(urand() - 0.5);
    const uint32_t cats[3][B * NC] = {
        {3, 500, 3, 501, 7, 500, MODEL_NO_INDEX, 999},
        {3, 600, 8, 601, 8, 600, 9, 999},
        {10, 700, 11, 701, 12, 702, 13, 703}, /* rows of steps 1-2 untouched here */
    };
    int touched_ever[NS] = {0};
    double maxd = 0;
    for (int t = 1; t <= 3; t++) {
        memcpy(prev, model_params(m), n * sizeof *prev);
        ref_loss(s, p, x, cats[t - 1], y, w, B, 0.01, rprob, g);
        CHECK_INT_EQ(model_forward(m, x, cats[t - 1], B, 1, NULL), 0);
        model_step(m, y, w, B);
        double bc1 = 1 - pow(0.9, t), bc2 = 1 - pow(0.999, t);
        int touched[NS] = {0};
        for (int i = 0; i < B * NC; i++)
            if (cats[t - 1][i] != MODEL_NO_INDEX)
                touched[cats[t - 1][i]] = touched_ever[cats[t - 1][i]] = 1;
        for (size_t i = 0; i < n; i++) {
            int in_e = i >= L.e && i < L.e + (size_t)NS * H;
            if (in_e && !touched[(i - L.e) / H]) {
                /* untouched: bit-identical, and the reference keeps its moments too */
                if (memcmp(&prev[i], &model_params(m)[i], sizeof(float)) != 0)
                    unit_fail(__FILE__, __LINE__, "step %d: untouched E[%zu] changed", t,
                              (i - L.e) / H);
                continue;
            }
            mo[i] = 0.9 * mo[i] + 0.1 * g[i];
            vo[i] = 0.999 * vo[i] + 0.001 * g[i] * g[i];
            p[i] -= 0.05 / bc1 * mo[i] / (sqrt(vo[i]) / sqrt(bc2) + 1e-8);
            double d = fabs(p[i] - model_params(m)[i]);
            maxd = fmax(maxd, d);
            if (d > 1e-5)
                unit_fail(__FILE__, __LINE__, "step %d param[%zu]: %.9g, dense Adam %.9g", t, i,
                          model_params(m)[i], p[i]);
        }
        /* keep the reference on the model's float values (no drift from rounding) */
        for (size_t i = 0; i < n; i++) p[i] = model_params(m)[i];
    }
    /* never-touched rows still hold their initial values and zero moments */
    size_t ssz = model_state_size(m);
    char *st = malloc(ssz);
    CHECK(st != NULL);
    model_state_save(m, st);
    const float *mom = (const float *)(st + ssz - 2 * n * sizeof(float));
    size_t zero_rows = 0;
    for (uint32_t j = 0; j < NS; j++) {
        if (touched_ever[j]) continue;
        for (size_t o = 0; o < H; o++) {
            CHECK(mom[L.e + j * H + o] == 0.0f);
            CHECK(mom[n + L.e + j * H + o] == 0.0f);
        }
        zero_rows++;
    }
    CHECK(zero_rows > 900);
    printf("  lazy Adam vs dense Adam on touched rows: max |Δ| %.2g\n", maxd);
    free(st);
    free(mo), free(vo), free(g), free(p), free(prev);
    model_free(m);
}

/* SGD with momentum over three steps against u = μu + g, p -= lr·u from reference gradients;
 * E rows lazily (a row absent from a step keeps its velocity and value). */
void test_model_sgd_momentum(void)
{
    enum { ND = 4, NC = 1, NS = 6, B = 3 };
    const unsigned hidden[] = {4};
    struct config c = test_cfg(hidden, 1, ACTIVATION_SIGMOID, OPTIMIZER_SGD);
    c.optimizer.learning_rate = 0.1;
    c.optimizer.momentum = 0.8;
    c.training.batch_size = B;
    struct model *m = new_model(&c, ND, NS, NC);
    const struct model_shape *s = model_shape(m);
    struct ref_layout L = ref_layout(s);
    size_t n = model_nparams(s);
    double *u = calloc(n, sizeof *u), *g = malloc(n * sizeof *g), rprob[B];
    double *p = to_double(model_params(m), n);
    CHECK(u && g);
    float x[B * ND], y[B] = {1, 0, 1}, w[B] = {1, 1, 1};
    for (int i = 0; i < B * ND; i++) x[i] = (float)(urand() - 0.5);
    const uint32_t cats[3][B] = {{0, 1, 2}, {0, 3, 3}, {4, 4, 4}};
    double maxd = 0;
    for (int t = 0; t < 3; t++) {
        ref_loss(s, p, x, cats[t], y, w, B, 0, rprob, g);
        CHECK_INT_EQ(model_forward(m, x, cats[t], B, 1, NULL), 0);
        model_step(m, y, w, B);
        for (size_t i = 0; i < n; i++) {
            int in_e = i >= L.e && i < L.b[1];
            int touched = 0;
            for (int k = 0; k < B && in_e; k++) touched |= cats[t][k] == (i - L.e) / 4;
            if (!in_e || touched) {
                u[i] = 0.8 * u[i] + g[i];
                p[i] -= 0.1 * u[i];
            }
            double d = fabs(p[i] - model_params(m)[i]);
            maxd = fmax(maxd, d);
            if (d > 1e-6)
                unit_fail(__FILE__, __LINE__, "step %d param[%zu]: %.9g, reference %.9g", t + 1, i,
                          model_params(m)[i], p[i]);
        }
    }
    printf("  SGD momentum vs reference: max |Δ| %.2g\n", maxd);
    free(u), free(g), free(p);
    model_free(m);
}

/* L2 alone (every example weight 0, so the data gradient is exactly 0): one SGD step scales
 * every weight by (1 - lr·l2), leaves the biases and the untouched E rows alone. */
void test_model_l2_decays_weights_not_biases(void)
{
    enum { ND = 3, NC = 1, NS = 4, B = 2 };
    const unsigned hidden[] = {3};
    struct config c = test_cfg(hidden, 1, ACTIVATION_RELU, OPTIMIZER_SGD);
    c.optimizer.learning_rate = 0.5;
    c.optimizer.momentum = 0.0;
    c.model.l2 = 0.1;
    c.training.batch_size = B;
    struct model *m = new_model(&c, ND, NS, NC);
    const struct model_shape *s = model_shape(m);
    struct ref_layout L = ref_layout(s);
    size_t n = model_nparams(s);
    for (uint32_t l = 1; l <= s->nlayers; l++)
        for (size_t o = 0; o < s->width[l]; o++) model_params(m)[L.b[l] + o] = 0.25f;
    float *before = malloc(n * sizeof *before);
    CHECK(before != NULL);
    memcpy(before, model_params(m), n * sizeof *before);
    float x[B * ND] = {1, 2, 3, -1, 0.5f, 2}, y[B] = {1, 0}, w[B] = {0, 0};
    uint32_t cat[B] = {1, 1};
    CHECK_INT_EQ(model_forward(m, x, cat, B, 1, NULL), 0);
    model_step(m, y, w, B);
    int decayed = 0;
    for (size_t i = 0; i < n; i++) {
        int bias = 0;
        for (uint32_t l = 1; l <= s->nlayers; l++) bias |= i >= L.b[l] && i < L.b[l] + s->width[l];
        int erow = i >= L.e && i < L.b[1] ? (int)((i - L.e) / 3) : -1;
        float want = before[i];
        if (!bias && (erow < 0 || erow == 1)) want = before[i] + (-0.5f) * (0.1f * before[i]);
        CHECK(model_params(m)[i] == want);
        decayed += want != before[i];
    }
    CHECK(decayed > 10);
    free(before);
    model_free(m);
}

/* Weight 0 removes an example (the update does not depend on it); weight 2 is the same
 * gradient as the example twice. */
void test_model_example_weights(void)
{
    enum { ND = 6, NC = 2, NS = 8 };
    const unsigned hidden[] = {7, 4};
    struct config c = grad_cfg(hidden, 2, ACTIVATION_TANH);
    c.training.batch_size = 8;
    struct model *m = new_model(&c, ND, NS, NC);
    size_t n = model_nparams(model_shape(m));
    double *g1 = malloc(n * 8), *g2 = malloc(n * 8);
    CHECK(g1 && g2);
    float x[4 * ND], y[4] = {1, 0, 1, 0}, w[4] = {1, 1, 0, 0};
    uint32_t cat[4 * NC] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int i = 0; i < 4 * ND; i++) x[i] = (float)(2 * urand() - 1);
    /* examples 0, 1 and a zero-weight third; then the third replaced by something else */
    model_grad(m, x, cat, y, w, 3, g1);
    float x2[4 * ND];
    memcpy(x2, x, sizeof x);
    for (int i = 2 * ND; i < 3 * ND; i++) x2[i] = 5.0f * x2[i] + 1.0f;
    uint32_t cat2[4 * NC];
    memcpy(cat2, cat, sizeof cat);
    cat2[4] = 3;
    float y2[4] = {1, 0, 0, 0};
    model_grad(m, x2, cat2, y2, w, 3, g2);
    for (size_t i = 0; i < n; i++) CHECK(g1[i] == g2[i]);

    /* [e0 (weight 2), e1] over B 2 against [e0, e0, e1] over B 3: loss·B and gradient·B agree */
    float xa[2 * ND], xb[3 * ND], ya[2] = {1, 0}, yb[3] = {1, 1, 0}, wa[2] = {2, 1},
                                  wb[3] = {1, 1, 1};
    uint32_t ca[2 * NC] = {0, 4, 1, 5}, cb[3 * NC] = {0, 4, 0, 4, 1, 5};
    memcpy(xa, x, 2 * ND * sizeof(float));
    memcpy(xb, x, ND * sizeof(float));
    memcpy(xb + ND, x, 2 * ND * sizeof(float));
    double la = model_grad(m, xa, ca, ya, wa, 2, g1);
    double lb = model_grad(m, xb, cb, yb, wb, 3, g2);
    CHECK_NEAR(2 * la, 3 * lb, 1e-6);
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(2 * g1[i] - 3 * g2[i]);
        maxd = fmax(maxd, d);
        if (d > 1e-6 + 1e-5 * fabs(2 * g1[i]))
            unit_fail(__FILE__, __LINE__, "grad[%zu]: weight 2 %.9g, duplicated %.9g", i, 2 * g1[i],
                      3 * g2[i]);
    }
    printf("  weight 2 vs duplicate: max |Δ(B·g)| %.2g\n", maxd);
    free(g1), free(g2);
    model_free(m);
}

/* ---- dropout, predict ---- */

void test_model_dropout_training_only(void)
{
    enum { ND = 10, B = 16 };
    const unsigned hidden[] = {32, 16};
    struct config c = test_cfg(hidden, 2, ACTIVATION_RELU, OPTIMIZER_ADAM);
    c.model.dropout = 0.5;
    c.training.batch_size = B;
    struct model *m = new_model(&c, ND, 0, 0);
    float x[B * ND], p1[B], p2[B], pt[B], pt2[B];
    for (int i = 0; i < B * ND; i++) x[i] = (float)(2 * urand() - 1);
    CHECK_INT_EQ(model_forward(m, x, NULL, B, 0, p1), 0);
    CHECK_INT_EQ(model_forward(m, x, NULL, B, 1, pt), 0);
    CHECK_INT_EQ(model_forward(m, x, NULL, B, 1, pt2), 0);
    CHECK_INT_EQ(model_forward(m, x, NULL, B, 0, p2), 0);
    int differ = 0, differ2 = 0;
    for (int r = 0; r < B; r++) {
        CHECK(p1[r] == p2[r]); /* eval mode is deterministic ... */
        float pr = model_predict(model_shape(m), model_params(m), x + r * ND, NULL);
        CHECK_NEAR(pr, p1[r], 1e-6); /* ... and is what predict computes */
        differ += pt[r] != p1[r];    /* training mode drops units */
        differ2 += pt[r] != pt2[r];  /* with a fresh mask each forward */
    }
    CHECK(differ > B / 2);
    CHECK(differ2 > B / 2);
    /* same seed, same masks */
    struct model *m2 = new_model(&c, ND, 0, 0);
    CHECK_INT_EQ(model_forward(m2, x, NULL, B, 1, p2), 0);
    for (int r = 0; r < B; r++) CHECK(p2[r] == pt[r]);
    model_free(m2);
    model_free(m);
}

/* Inverted dropout keeps the expected activation: with p = 0.5, the mean over many masks of
 * a one-hidden-layer identity-like model equals the eval output. */
void test_model_dropout_is_inverted(void)
{
    enum { B = 256 };
    const unsigned hidden[] = {200};
    struct config c = test_cfg(hidden, 1, ACTIVATION_RELU, OPTIMIZER_SGD);
    c.model.dropout = 0.5;
    c.training.batch_size = B;
    struct model *m = new_model(&c, 1, 0, 0);
    const struct model_shape *s = model_shape(m);
    struct ref_layout L = ref_layout(s);
    float *p = model_params(m);
    for (int o = 0; o < 200; o++) p[L.w[1] + o] = 1.0f, p[L.w[2] + o] = 0.01f;
    float x[B], prob[B];
    for (int r = 0; r < B; r++) x[r] = 1.0f;
    CHECK_INT_EQ(model_forward(m, x, NULL, B, 1, prob), 0);
    double mean_logit = 0;
    for (int r = 0; r < B; r++) mean_logit += log(prob[r] / (1 - prob[r]));
    mean_logit /= B;
    CHECK_NEAR(mean_logit, 2.0, 0.02); /* 200 · 1 · 0.01 = 2; sd of the mean ≈ 0.009 */
    model_free(m);
}

void test_model_predict_equals_batch_forward(void)
{
    enum { ND = 33, NC = 3, B = 100 };
    const uint32_t buckets[NC] = {16, 1000, 7};
    const int acts[3] = {ACTIVATION_RELU, ACTIVATION_TANH, ACTIVATION_SIGMOID};
    const unsigned hidden[] = {64, 40, 17};
    for (int a = 0; a < 3; a++) {
        struct config c = test_cfg(hidden, 3, acts[a], OPTIMIZER_ADAM);
        c.training.batch_size = 128;
        struct model *m = new_model(&c, ND, 1023, NC);
        static float x[B * ND], y[B], w[B], prob[B];
        static uint32_t cat[B * NC];
        /* train a few steps so biases and E rows are not at their initial values */
        for (int t = 0; t < 5; t++) {
            fill_batch(x, cat, y, w, B, ND, buckets, NC);
            CHECK_INT_EQ(model_forward(m, x, cat, B, 1, NULL), 0);
            model_step(m, y, w, B);
        }
        fill_batch(x, cat, y, w, B, ND, buckets, NC);
        CHECK_INT_EQ(model_forward(m, x, cat, B, 0, prob), 0);
        double maxd = 0;
        int same = 0;
        for (int r = 0; r < B; r++) {
            float pr = model_predict(model_shape(m), model_params(m), x + r * ND, cat + r * NC);
            maxd = fmax(maxd, fabs(pr - prob[r]));
            same += pr == prob[r];
        }
        printf("  act %d: predict vs batch forward max |Δp| %.2g, %d of %d bit-identical\n",
               acts[a], maxd, same, B);
        if (maxd > 1e-6) unit_fail(__FILE__, __LINE__, "max |Δp| %.3g > 1e-6", maxd);
        model_free(m);
    }
}

struct predict_job {
    const struct model_shape *s;
    const float *params, *x;
    const uint32_t *cat;
    float out[64];
};

static void *predict_thread(void *arg)
{
    struct predict_job *j = arg;
    for (int rep = 0; rep < 3; rep++)
        for (int r = 0; r < 64; r++)
            j->out[r] = model_predict(j->s, j->params, j->x + r * 20, j->cat + r * 2);
    return NULL;
}

/* model_predict allocates nothing (counting hook around malloc & co, tests/unit/alloc_hook.c)
 * and gives the same answers from several threads at once. */
void test_model_predict_allocates_nothing(void)
{
    enum { ND = 20, NC = 2, B = 64 };
    const uint32_t buckets[NC] = {50, 50};
    const unsigned hidden[] = {MODEL_MAX_WIDTH, 64, 32};
    struct config c = test_cfg(hidden, 3, ACTIVATION_TANH, OPTIMIZER_ADAM);
    struct model *m = new_model(&c, ND, 100, NC);
    static float x[B * ND], y[B], w[B], want[B];
    static uint32_t cat[B * NC];
    fill_batch(x, cat, y, w, B, ND, buckets, NC);

    unsigned long before = alloc_hook_count();
    void *volatile probe = malloc(16); /* the hook is live: this one is counted */
    CHECK(alloc_hook_count() == before + 1);
    free(probe);

    before = alloc_hook_count();
    for (int r = 0; r < B; r++)
        want[r] = model_predict(model_shape(m), model_params(m), x + r * ND, cat + r * NC);
    unsigned long after = alloc_hook_count();
    CHECK_INT_EQ(after - before, 0);

    struct predict_job jobs[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (struct predict_job){model_shape(m), model_params(m), x, cat, {0}};
        CHECK_INT_EQ(pthread_create(&th[t], NULL, predict_thread, &jobs[t]), 0);
    }
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < B; r++) CHECK(jobs[t].out[r] == want[r]);
    model_free(m);
}

/* ---- construction, arguments, checkpoints ---- */

void test_model_new_rejects_bad_shapes(void)
{
    char err[256];
    unsigned hidden[9] = {8, 8, 8, 8, 8, 8, 8, 8, 8};
    struct config c = test_cfg(hidden, 8, ACTIVATION_RELU, OPTIMIZER_ADAM);
    struct model *m = model_new(&c, 4, 0, 0, err, sizeof err);
    CHECK(m != NULL); /* 8 hidden layers is the maximum */
    model_free(m);
    c.model.nhidden = 9;
    CHECK(model_new(&c, 4, 0, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "model.hidden");
    c.model.nhidden = 2;
    c.model.hidden[1] = 0;
    CHECK(model_new(&c, 4, 0, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "model.hidden[1]");
    c.model.hidden[1] = MODEL_MAX_WIDTH + 1;
    CHECK(model_new(&c, 4, 0, 0, err, sizeof err) == NULL);
    c.model.hidden[1] = 8;
    CHECK(model_new(&c, 0, 0, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "no inputs");
    CHECK(model_new(&c, 0, 0, 2, err, sizeof err) == NULL);
    c.model.dropout = 1.0;
    CHECK(model_new(&c, 4, 0, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "model.dropout");
    c.model.dropout = 0;
    c.training.batch_size = 0;
    CHECK(model_new(&c, 4, 0, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "batch_size");
    CHECK(model_free(NULL) == NULL);
}

void test_model_shape_and_init(void)
{
    const unsigned hidden[] = {64, 32};
    struct config c = test_cfg(hidden, 2, ACTIVATION_RELU, OPTIMIZER_ADAM);
    c.model.seed = 42;
    struct model *a = new_model(&c, 100, 5000, 4), *b = new_model(&c, 100, 5000, 4);
    const struct model_shape *s = model_shape(a);
    CHECK_INT_EQ(s->nlayers, 3);
    CHECK_INT_EQ(s->width[0], 5100);
    CHECK_INT_EQ(s->width[1], 64);
    CHECK_INT_EQ(s->width[2], 32);
    CHECK_INT_EQ(s->width[3], 1);
    size_t n = model_nparams(s);
    CHECK_INT_EQ(n, 64 * 100 + 5000 * 64 + 64 + 32 * 64 + 32 + 32 + 1);
    CHECK(memcmp(model_params(a), model_params(b), n * sizeof(float)) == 0);
    c.model.seed = 43;
    struct model *d = new_model(&c, 100, 5000, 4);
    CHECK(memcmp(model_params(a), model_params(d), n * sizeof(float)) != 0);
    struct ref_layout L = ref_layout(s);
    /* He: sd sqrt(2/fan_in), fan_in of layer 1 = ndense + ncat; biases 0 */
    double ss = 0, s2 = 0;
    for (size_t i = L.w[1]; i < L.b[1]; i++) ss += model_params(a)[i] * model_params(a)[i];
    CHECK_NEAR(sqrt(ss / (L.b[1] - L.w[1])), sqrt(2.0 / 104), 0.01 * sqrt(2.0 / 104));
    for (size_t i = L.w[2]; i < L.b[2]; i++) s2 += model_params(a)[i] * model_params(a)[i];
    CHECK_NEAR(sqrt(s2 / (32 * 64)), sqrt(2.0 / 64), 0.05 * sqrt(2.0 / 64));
    for (uint32_t l = 1; l <= 3; l++)
        for (size_t o = 0; o < s->width[l]; o++) CHECK(model_params(a)[L.b[l] + o] == 0.0f);
    model_free(a), model_free(b), model_free(d);

    /* Xavier for tanh: U(±sqrt(6/(in+out))) */
    c.model.activation = ACTIVATION_TANH;
    a = new_model(&c, 100, 0, 0);
    L = ref_layout(model_shape(a));
    double lim = sqrt(6.0 / (64 + 32)), sq = 0;
    for (size_t i = L.w[2]; i < L.b[2]; i++) {
        CHECK(fabs(model_params(a)[i]) <= lim);
        sq += model_params(a)[i] * model_params(a)[i];
    }
    CHECK_NEAR(sqrt(sq / (32 * 64)), lim / sqrt(3.0), 0.05 * lim / sqrt(3.0));
    model_free(a);
}

void test_model_forward_rejects_bad_arguments(void)
{
    const unsigned hidden[] = {4};
    struct config c = test_cfg(hidden, 1, ACTIVATION_RELU, OPTIMIZER_ADAM);
    c.training.batch_size = 4;
    struct model *m = new_model(&c, 2, 10, 1);
    float x[10] = {0}, y[5] = {0}, w[5] = {1, 1, 1, 1, 1}, p[5];
    uint32_t cat[5] = {0, 9, MODEL_NO_INDEX, 3, 4};
    CHECK(isnan(model_step(m, y, w, 4)));                     /* no forward yet */
    CHECK_INT_EQ(model_forward(m, x, cat, 5, 0, p), -EINVAL); /* over capacity */
    CHECK_INT_EQ(model_forward(m, x, cat, 0, 0, p), -EINVAL);
    CHECK_INT_EQ(model_forward(m, NULL, cat, 2, 0, p), -EINVAL);
    CHECK_INT_EQ(model_forward(m, x, NULL, 2, 0, p), -EINVAL);
    cat[1] = 10; /* == nsparse */
    CHECK_INT_EQ(model_forward(m, x, cat, 4, 0, p), -EINVAL);
    cat[1] = 9;
    CHECK_INT_EQ(model_forward(m, x, cat, 4, 0, p), 0);
    CHECK(isnan(model_step(m, y, w, 3))); /* B differs */
    CHECK(!isnan(model_step(m, y, w, 4)));
    CHECK(isnan(model_step(m, y, w, 4))); /* one step per forward */
    CHECK_INT_EQ(model_steps(m), 1);
    model_free(m);
}

static void train(struct model *m, int steps, uint64_t seed)
{
    enum { ND = 6, NC = 2, B = 16 };
    const uint32_t buckets[NC] = {10, 90};
    float x[B * ND], y[B], w[B];
    uint32_t cat[B * NC];
    rs = seed;
    for (int t = 0; t < steps; t++) {
        fill_batch(x, cat, y, w, B, ND, buckets, NC);
        CHECK_INT_EQ(model_forward(m, x, cat, B, 1, NULL), 0);
        CHECK(isfinite(model_step(m, y, w, B)));
    }
}

/* A checkpoint mid-training, loaded into a fresh model (other seed), continues bit-identically
 * (parameters, moments, step count and the dropout RNG) for Adam and SGD. */
void test_model_state_save_load_continues_identically(void)
{
    const unsigned hidden[] = {12, 8};
    for (int opt = 0; opt < 2; opt++) {
        struct config c = test_cfg(hidden, 2, ACTIVATION_RELU, opt);
        c.model.dropout = 0.2;
        c.model.l2 = 0.001;
        c.training.batch_size = 16;
        struct model *a = new_model(&c, 6, 100, 2);
        train(a, 10, 7);
        size_t sz = model_state_size(a);
        char *st = malloc(sz);
        CHECK(st != NULL);
        model_state_save(a, st);
        train(a, 10, 8);

        c.model.seed = 99;
        struct model *b = new_model(&c, 6, 100, 2);
        CHECK_INT_EQ(model_state_load(b, st, sz), 0);
        CHECK_INT_EQ(model_steps(b), 10);
        train(b, 10, 8);
        size_t n = model_nparams(model_shape(a));
        CHECK(memcmp(model_params(a), model_params(b), n * sizeof(float)) == 0);
        CHECK_INT_EQ(model_steps(b), 20);
        char *sa = malloc(sz), *sb = malloc(sz);
        CHECK(sa && sb);
        model_state_save(a, sa);
        model_state_save(b, sb);
        CHECK(memcmp(sa, sb, sz) == 0);

        /* wrong length, corrupt header, other shape, other optimizer: -EINVAL, b unchanged */
        CHECK_INT_EQ(model_state_load(b, st, sz - 1), -EINVAL);
        st[0] ^= 1;
        CHECK_INT_EQ(model_state_load(b, st, sz), -EINVAL);
        st[0] ^= 1;
        struct model *other = new_model(&c, 6, 101, 2);
        CHECK_INT_EQ(model_state_load(other, st, model_state_size(other)), -EINVAL);
        CHECK_INT_EQ(model_state_load(other, st, sz), -EINVAL);
        c.optimizer.name = 1 - opt;
        struct model *o2 = new_model(&c, 6, 100, 2);
        CHECK_INT_EQ(model_state_load(o2, st, model_state_size(o2)), -EINVAL);
        model_state_save(b, sb);
        CHECK(memcmp(sa, sb, sz) == 0);
        free(st), free(sa), free(sb);
        model_free(a), model_free(b), model_free(other), model_free(o2);
    }
}

/* Learning works at all: a separable problem's loss falls with both optimizers. */
void test_model_learns(void)
{
    enum { ND = 4, NC = 1, B = 32 };
    const unsigned hidden[] = {16, 8};
    for (int opt = 0; opt < 2; opt++) {
        struct config c = test_cfg(hidden, 2, ACTIVATION_RELU, opt);
        c.training.batch_size = B;
        c.optimizer.learning_rate = opt == OPTIMIZER_ADAM ? 0.01 : 0.1;
        struct model *m = new_model(&c, ND, 10, NC);
        float x[B * ND], y[B], w[B];
        uint32_t cat[B];
        double first = 0, last = 0;
        for (int t = 0; t < 300; t++) {
            for (int r = 0; r < B; r++) {
                double s = 0;
                for (int i = 0; i < ND; i++) s += (x[r * ND + i] = (float)(2 * urand() - 1));
                cat[r] = (uint32_t)(urand() * 10);
                y[r] = s + (cat[r] < 5 ? 0.5 : -0.5) > 0 ? 1.0f : 0.0f;
                w[r] = 1;
            }
            CHECK_INT_EQ(model_forward(m, x, cat, B, 1, NULL), 0);
            double l = model_step(m, y, w, B);
            if (t < 10) first += l / 10;
            if (t >= 290) last += l / 10;
        }
        printf("  optimizer %d: loss %.3f -> %.3f\n", opt, first, last);
        CHECK(last < 0.5 * first);
        model_free(m);
    }
}

/* model_set_learning_rate: lr 0 leaves every parameter bit-identical (the moments still move),
 * and a rate set later applies from the next step. */
void test_model_set_learning_rate(void)
{
    const unsigned hidden[] = {8};
    for (int opt = 0; opt < 2; opt++) {
        struct config c = test_cfg(hidden, 1, ACTIVATION_RELU, opt);
        c.training.batch_size = 16;
        struct model *m = new_model(&c, 6, 100, 2);
        size_t n = model_nparams(model_shape(m));
        float *before = malloc(n * sizeof *before);
        CHECK(before != NULL);
        memcpy(before, model_params(m), n * sizeof *before);
        model_set_learning_rate(m, 0.0);
        train(m, 3, 5);
        CHECK(memcmp(before, model_params(m), n * sizeof *before) == 0);
        model_set_learning_rate(m, 0.01);
        train(m, 1, 6);
        CHECK(memcmp(before, model_params(m), n * sizeof *before) != 0);
        free(before);
        model_free(m);
    }
}
