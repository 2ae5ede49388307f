/* metrics.c — progressive evaluation: exact sliding-window figures, cumulative sums and a
 * logit histogram for the cumulative AUC. */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_STATE_MAGIC UINT64_C(0x3153434952544d49) /* "IMTRICS1" */
#define AUC_BINS            32768
#define LOGIT_RANGE         16.0 /* bins cover logits in [-16, 16]; beyond that they saturate */
#define P_CLAMP             1e-7

struct metrics {
    uint32_t window;
    double threshold;
    int exact;

    /* the window: a ring of the last `window` scores */
    float *ring_p, *ring_y;
    uint32_t ring_n, ring_head;

    /* cumulative */
    uint64_t n, positives;
    uint64_t tp, fp; /* at the threshold in force when each example came */
    uint64_t correct;
    double sum_logloss, sum_p;
    uint64_t *bin_pos, *bin_neg; /* (AUC_BINS) */
    float *all_p, *all_y;        /* exact mode: every score */
    size_t all_n, all_cap;
};

struct metrics *metrics_new(uint32_t window, double threshold, int exact_cumulative)
{
    if (window == 0) return NULL;
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->window = window;
    m->threshold = threshold;
    m->exact = exact_cumulative != 0;
    m->ring_p = malloc(window * sizeof(float));
    m->ring_y = malloc(window * sizeof(float));
    m->bin_pos = calloc(AUC_BINS, sizeof(uint64_t));
    m->bin_neg = calloc(AUC_BINS, sizeof(uint64_t));
    if (!m->ring_p || !m->ring_y || !m->bin_pos || !m->bin_neg) return metrics_free(m);
    return m;
}

struct metrics *metrics_free(struct metrics *m)
{
    if (m) {
        free(m->ring_p);
        free(m->ring_y);
        free(m->bin_pos);
        free(m->bin_neg);
        free(m->all_p);
        free(m->all_y);
        free(m);
    }
    return NULL;
}

static double clamp_p(double p)
{
    if (!(p >= P_CLAMP)) return P_CLAMP; /* NaN too */
    if (p > 1.0 - P_CLAMP) return 1.0 - P_CLAMP;
    return p;
}

static double logloss_of(double p, int y)
{
    p = clamp_p(p);
    return y ? -log(p) : -log1p(-p);
}

/* The log loss of one example and its histogram bin, from the same two logarithms. */
static double loss_and_bin(float p, int y, uint32_t *bin)
{
    double q = clamp_p(p);
    double lp = log(q), lq = log1p(-q);
    double b = (lp - lq + LOGIT_RANGE) * (AUC_BINS / (2.0 * LOGIT_RANGE));
    *bin = b < 0 ? 0 : b >= AUC_BINS ? AUC_BINS - 1 : (uint32_t)b;
    return y ? -lp : -lq;
}

void metrics_add(struct metrics *m, float p, float label)
{
    int y = label > 0.5f;
    uint32_t slot;
    if (m->ring_n < m->window) {
        slot = m->ring_n++;
    } else {
        slot = m->ring_head;
        m->ring_head = (m->ring_head + 1) % m->window;
    }
    m->ring_p[slot] = p;
    m->ring_y[slot] = (float)y;

    m->n++;
    m->positives += (uint64_t)y;
    int pred = p >= m->threshold;
    if (pred) {
        if (y)
            m->tp++;
        else
            m->fp++;
    }
    m->correct += (uint64_t)(pred == y);
    uint32_t bin;
    m->sum_logloss += loss_and_bin(p, y, &bin);
    m->sum_p += p;
    if (y)
        m->bin_pos[bin]++;
    else
        m->bin_neg[bin]++;
    if (m->exact) {
        if (m->all_n == m->all_cap) {
            size_t cap = m->all_cap ? m->all_cap * 2 : 4096;
            float *np = realloc(m->all_p, cap * sizeof(float));
            if (np) m->all_p = np;
            float *ny = np ? realloc(m->all_y, cap * sizeof(float)) : NULL;
            if (ny) m->all_y = ny;
            if (!np || !ny) {
                m->exact = 0; /* out of memory: fall back to the histogram */
                return;
            }
            m->all_cap = cap;
        }
        m->all_p[m->all_n] = p;
        m->all_y[m->all_n] = (float)y;
        m->all_n++;
    }
}

void metrics_set_threshold(struct metrics *m, double threshold)
{
    m->threshold = threshold;
}

struct scored {
    float p;
    float y;
};

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const struct scored *)a)->p, y = ((const struct scored *)b)->p;
    return (x > y) - (x < y);
}

double metrics_auc_exact(const float *p, const float *label, size_t n, float *scratch)
{
    struct scored *s = (struct scored *)(void *)scratch;
    int own = 0;
    if (!s) {
        s = malloc((n ? n : 1) * sizeof *s);
        if (!s) return NAN;
        own = 1;
    }
    for (size_t i = 0; i < n; i++) {
        s[i].p = p[i] == p[i] ? p[i] : 0.0f;
        s[i].y = label[i] > 0.5f ? 1.0f : 0.0f;
    }
    qsort(s, n, sizeof *s, cmp_scored);
    /* Mann-Whitney: sum of the positives' ranks, tied groups sharing their mean rank. */
    double rank_sum = 0, npos = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        double pos = 0;
        while (j < n && s[j].p == s[i].p) pos += s[j++].y;
        double mean_rank = (double)(i + 1 + j) / 2.0; /* ranks i+1 .. j */
        rank_sum += pos * mean_rank;
        npos += pos;
        i = j;
    }
    if (own) free(s);
    double nneg = (double)n - npos;
    if (npos == 0 || nneg == 0) return NAN;
    return (rank_sum - npos * (npos + 1) / 2.0) / (npos * nneg);
}

static void finish(struct metrics_summary *o, uint64_t n, uint64_t pos, uint64_t tp, uint64_t fp,
                   uint64_t correct, double sum_ll, double sum_p)
{
    o->n = n;
    o->positives = pos;
    if (n == 0) {
        o->logloss = o->accuracy = o->mean_prediction = o->positive_rate = NAN;
        o->precision = o->recall = NAN;
        return;
    }
    o->logloss = sum_ll / (double)n;
    o->accuracy = (double)correct / (double)n;
    o->mean_prediction = sum_p / (double)n;
    o->positive_rate = (double)pos / (double)n;
    o->precision = tp + fp ? (double)tp / (double)(tp + fp) : NAN;
    o->recall = pos ? (double)tp / (double)pos : NAN;
}

void metrics_window(const struct metrics *m, struct metrics_summary *out)
{
    uint64_t pos = 0, tp = 0, fp = 0, correct = 0;
    double sum_ll = 0, sum_p = 0;
    for (uint32_t i = 0; i < m->ring_n; i++) {
        float p = m->ring_p[i];
        int y = m->ring_y[i] > 0.5f;
        int pred = p >= m->threshold;
        pos += (uint64_t)y;
        tp += (uint64_t)(pred && y);
        fp += (uint64_t)(pred && !y);
        correct += (uint64_t)(pred == y);
        sum_ll += logloss_of(p, y);
        sum_p += p;
    }
    finish(out, m->ring_n, pos, tp, fp, correct, sum_ll, sum_p);
    out->auc = m->ring_n ? metrics_auc_exact(m->ring_p, m->ring_y, m->ring_n, NULL) : NAN;
}

void metrics_cumulative(const struct metrics *m, struct metrics_summary *out)
{
    finish(out, m->n, m->positives, m->tp, m->fp, m->correct, m->sum_logloss, m->sum_p);
    if (m->exact && m->all_n == m->n) {
        out->auc = m->n ? metrics_auc_exact(m->all_p, m->all_y, m->all_n, NULL) : NAN;
        return;
    }
    double npos = (double)m->positives, nneg = (double)(m->n - m->positives);
    if (npos == 0 || nneg == 0) {
        out->auc = NAN;
        return;
    }
    double below = 0, acc = 0;
    for (uint32_t b = 0; b < AUC_BINS; b++) {
        acc += (double)m->bin_pos[b] * (below + 0.5 * (double)m->bin_neg[b]);
        below += (double)m->bin_neg[b];
    }
    out->auc = acc / (npos * nneg);
}

/* State: a header, the ring, the bins, and in exact mode every score. */
struct metrics_state_header {
    uint64_t magic;
    uint64_t window;
    uint64_t exact;
    uint64_t ring_n, ring_head;
    uint64_t n, positives, tp, fp, correct;
    double sum_logloss, sum_p;
    uint64_t all_n;
};

size_t metrics_state_size(const struct metrics *m)
{
    return sizeof(struct metrics_state_header) + 2 * sizeof(float) * (size_t)m->ring_n +
           2 * sizeof(uint64_t) * AUC_BINS + (m->exact ? 2 * sizeof(float) * m->all_n : 0);
}

void metrics_save(const struct metrics *m, void *buf)
{
    struct metrics_state_header h = {
        .magic = METRICS_STATE_MAGIC,
        .window = m->window,
        .exact = (uint64_t)m->exact,
        .ring_n = m->ring_n,
        .ring_head = m->ring_head,
        .n = m->n,
        .positives = m->positives,
        .tp = m->tp,
        .fp = m->fp,
        .correct = m->correct,
        .sum_logloss = m->sum_logloss,
        .sum_p = m->sum_p,
        .all_n = m->exact ? m->all_n : 0,
    };
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    memcpy(p, m->ring_p, sizeof(float) * m->ring_n);
    p += sizeof(float) * m->ring_n;
    memcpy(p, m->ring_y, sizeof(float) * m->ring_n);
    p += sizeof(float) * m->ring_n;
    memcpy(p, m->bin_pos, sizeof(uint64_t) * AUC_BINS);
    p += sizeof(uint64_t) * AUC_BINS;
    memcpy(p, m->bin_neg, sizeof(uint64_t) * AUC_BINS);
    p += sizeof(uint64_t) * AUC_BINS;
    if (h.all_n) {
        memcpy(p, m->all_p, sizeof(float) * h.all_n);
        p += sizeof(float) * h.all_n;
        memcpy(p, m->all_y, sizeof(float) * h.all_n);
    }
}

int metrics_load(struct metrics *m, const void *buf, size_t len)
{
    struct metrics_state_header h;
    if (len < sizeof h) return -EINVAL;
    memcpy(&h, buf, sizeof h);
    if (h.magic != METRICS_STATE_MAGIC || h.window == 0 || h.ring_n > h.window ||
        h.ring_head >= h.window || h.positives > h.n || h.exact > 1)
        return -EINVAL;
    size_t want = sizeof h + 2 * sizeof(float) * h.ring_n + 2 * sizeof(uint64_t) * AUC_BINS +
                  2 * sizeof(float) * h.all_n;
    if (len != want) return -EINVAL;
    float *ap = NULL, *ay = NULL;
    size_t cap = 0;
    if (h.all_n) {
        cap = h.all_n;
        ap = malloc(cap * sizeof(float));
        ay = malloc(cap * sizeof(float));
        if (!ap || !ay) {
            free(ap);
            free(ay);
            return -ENOMEM;
        }
    }
    const char *p = (const char *)buf + sizeof h;
    const float *rp = (const float *)(const void *)p;
    const float *ry = rp + h.ring_n;
    if (h.window == m->window) {
        memcpy(m->ring_p, rp, sizeof(float) * h.ring_n);
        memcpy(m->ring_y, ry, sizeof(float) * h.ring_n);
        m->ring_n = (uint32_t)h.ring_n;
        m->ring_head = (uint32_t)h.ring_head;
    } else {
        /* Another evaluation.window: keep the most recent scores that fit, oldest first. */
        size_t n = (size_t)h.ring_n, keep = n < m->window ? n : m->window;
        size_t oldest = n == h.window ? (size_t)h.ring_head : 0;
        for (size_t i = 0; i < keep; i++) {
            size_t k = (oldest + n - keep + i) % n;
            memcpy(&m->ring_p[i], rp + k, sizeof(float));
            memcpy(&m->ring_y[i], ry + k, sizeof(float));
        }
        m->ring_n = (uint32_t)keep;
        m->ring_head = 0;
    }
    p += 2 * sizeof(float) * h.ring_n;
    memcpy(m->bin_pos, p, sizeof(uint64_t) * AUC_BINS);
    p += sizeof(uint64_t) * AUC_BINS;
    memcpy(m->bin_neg, p, sizeof(uint64_t) * AUC_BINS);
    p += sizeof(uint64_t) * AUC_BINS;
    if (h.all_n) {
        memcpy(ap, p, sizeof(float) * h.all_n);
        p += sizeof(float) * h.all_n;
        memcpy(ay, p, sizeof(float) * h.all_n);
    }
    free(m->all_p);
    free(m->all_y);
    m->all_p = ap;
    m->all_y = ay;
    m->all_n = h.all_n;
    m->all_cap = cap;
    m->exact = (int)h.exact;
    m->n = h.n;
    m->positives = h.positives;
    m->tp = h.tp;
    m->fp = h.fp;
    m->correct = h.correct;
    m->sum_logloss = h.sum_logloss;
    m->sum_p = h.sum_p;
    return 0;
}
