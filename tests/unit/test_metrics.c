/* Tests of the progressive metrics against brute-force definitions. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "reservoir.h"
#include "unit.h"

/* AUC by definition: over every (positive, negative) pair, 1 if the positive scores
 * higher, 1/2 on a tie. */
static double brute_auc(const float *p, const float *y, size_t n)
{
    double s = 0, pairs = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] < 0.5f) continue;
        for (size_t j = 0; j < n; j++) {
            if (y[j] > 0.5f) continue;
            pairs++;
            s += p[i] > p[j] ? 1.0 : p[i] == p[j] ? 0.5 : 0.0;
        }
    }
    return pairs ? s / pairs : NAN;
}

/* Scores correlated with the label, with deliberate ties (rounded to `levels`). */
static void make_data(float *p, float *y, size_t n, uint64_t seed, int levels)
{
    struct reservoir_rng g;
    reservoir_rng_seed(&g, seed);
    for (size_t i = 0; i < n; i++) {
        y[i] = reservoir_rng_uniform(&g) < 0.2 ? 1.0f : 0.0f;
        double z = reservoir_rng_uniform(&g) + 0.4 * y[i];
        double q = 1.0 / (1.0 + exp(-6 * (z - 0.7)));
        if (levels) q = round(q * levels) / levels;
        if (q <= 0) q = 1e-4;
        if (q >= 1) q = 1 - 1e-4;
        p[i] = (float)q;
    }
}

void test_metrics_auc_exact_vs_brute(void)
{
    enum { N = 3000 };
    static float p[N], y[N];
    for (int levels = 0; levels <= 20; levels += 20) {
        make_data(p, y, N, 11 + levels, levels);
        double want = brute_auc(p, y, N);
        double got = metrics_auc_exact(p, y, N, NULL);
        printf("exact AUC %.9f, brute force %.9f (levels %d)\n", got, want, levels);
        CHECK_NEAR(got, want, 1e-12);
    }
    float yp[] = {1, 1}, yn[] = {0, 0}, pp[] = {0.2f, 0.4f};
    CHECK(isnan(metrics_auc_exact(pp, yp, 2, NULL)));
    CHECK(isnan(metrics_auc_exact(pp, yn, 2, NULL)));
    float perfect_y[] = {0, 1, 0, 1}, perfect_p[] = {0.1f, 0.9f, 0.2f, 0.8f};
    CHECK_NEAR(metrics_auc_exact(perfect_p, perfect_y, 4, NULL), 1.0, 0);
}

void test_metrics_window_and_cumulative(void)
{
    enum { N = 20000, W = 5000 };
    static float p[N], y[N];
    make_data(p, y, N, 5, 0);
    struct metrics *m = metrics_new(W, 0.5, 0);
    CHECK(m != NULL);
    struct metrics_summary s;
    metrics_window(m, &s);
    CHECK_INT_EQ(s.n, 0);
    CHECK(isnan(s.auc) && isnan(s.logloss));
    for (size_t i = 0; i < N; i++) metrics_add(m, p[i], y[i]);

    /* The window is exactly the last W examples. */
    metrics_window(m, &s);
    const float *wp = p + N - W, *wy = y + N - W;
    double ll = 0, sp = 0;
    uint64_t tp = 0, fp = 0, pos = 0, correct = 0;
    for (size_t i = 0; i < W; i++) {
        int yy = wy[i] > 0.5f, pred = wp[i] >= 0.5f;
        ll += yy ? -log(wp[i]) : -log(1 - wp[i]);
        sp += wp[i];
        pos += (uint64_t)yy;
        tp += (uint64_t)(pred && yy);
        fp += (uint64_t)(pred && !yy);
        correct += (uint64_t)(pred == yy);
    }
    CHECK_INT_EQ(s.n, W);
    CHECK_INT_EQ(s.positives, pos);
    CHECK_NEAR(s.auc, brute_auc(wp, wy, W), 1e-12);
    CHECK_NEAR(s.logloss, ll / W, 1e-9);
    CHECK_NEAR(s.mean_prediction, sp / W, 1e-9);
    CHECK_NEAR(s.positive_rate, (double)pos / W, 1e-12);
    CHECK_NEAR(s.accuracy, (double)correct / W, 1e-12);
    CHECK_NEAR(s.precision, (double)tp / (double)(tp + fp), 1e-12);
    CHECK_NEAR(s.recall, (double)tp / (double)pos, 1e-12);

    /* Cumulative: binned AUC within 0.001 of the exact figure. */
    struct metrics_summary c;
    metrics_cumulative(m, &c);
    double exact = metrics_auc_exact(p, y, N, NULL);
    printf("cumulative binned AUC %.6f, exact %.6f, diff %.2g\n", c.auc, exact,
           fabs(c.auc - exact));
    CHECK_INT_EQ(c.n, N);
    CHECK_NEAR(c.auc, exact, 0.001);

    /* Exact mode matches to rounding. */
    struct metrics *e = metrics_new(W, 0.5, 1);
    for (size_t i = 0; i < N; i++) metrics_add(e, p[i], y[i]);
    metrics_cumulative(e, &c);
    CHECK_NEAR(c.auc, exact, 1e-12);

    /* A threshold change applies to the window at once. */
    metrics_set_threshold(m, 0.99);
    metrics_window(m, &s);
    CHECK(isnan(s.precision) || s.precision >= 0);
    CHECK_NEAR(s.recall, 0.0, 0.05);
    metrics_free(m);
    metrics_free(e);
}

void test_metrics_state(void)
{
    enum { N = 3000 };
    static float p[N], y[N];
    make_data(p, y, N, 8, 0);
    struct metrics *a = metrics_new(1000, 0.5, 1);
    for (size_t i = 0; i < N / 2; i++) metrics_add(a, p[i], y[i]);
    size_t sz = metrics_state_size(a);
    void *buf = malloc(sz);
    metrics_save(a, buf);
    struct metrics *b = metrics_new(1000, 0.5, 0);
    CHECK_INT_EQ(metrics_load(b, buf, sz), 0);
    for (size_t i = N / 2; i < N; i++) {
        metrics_add(a, p[i], y[i]);
        metrics_add(b, p[i], y[i]);
    }
    struct metrics_summary sa, sb;
    metrics_window(a, &sa);
    metrics_window(b, &sb);
    CHECK(memcmp(&sa, &sb, sizeof sa) == 0);
    metrics_cumulative(a, &sa);
    metrics_cumulative(b, &sb);
    CHECK(memcmp(&sa, &sb, sizeof sa) == 0);
    /* Another window keeps the most recent scores that fit. */
    struct metrics *c = metrics_new(100, 0.5, 0);
    CHECK_INT_EQ(metrics_load(c, buf, sz), 0);
    metrics_window(c, &sb);
    CHECK_INT_EQ(sb.n, 100);
    CHECK_NEAR(sb.auc, metrics_auc_exact(p + N / 2 - 100, y + N / 2 - 100, 100, NULL), 1e-12);
    metrics_cumulative(c, &sb);
    CHECK_INT_EQ(sb.n, N / 2);
    CHECK_INT_EQ(metrics_load(b, buf, sz - 4), -EINVAL);
    free(buf);
    metrics_free(a);
    metrics_free(b);
    metrics_free(c);
}
