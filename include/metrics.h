/* metrics.h — progressive evaluation metrics of a binary classifier: log loss, AUC,
 * accuracy / precision / recall at a threshold, mean prediction against the positive rate.
 *
 * Every figure is UNWEIGHTED: each example counts once whatever its loss weight (weights
 * shape training; the metrics say how well the model ranks and calibrates the stream).
 * Log loss clamps p to [1e-7, 1 - 1e-7].
 *
 * Two views are kept:
 *   window     — the last `window` examples; AUC is exact (sort, ties count one half).
 *   cumulative — everything since the start: sums for log loss and the counts, and AUC from
 *                a histogram of 32768 bins over the logit (accurate to about 0.001, ties
 *                within a bin count one half), or exact when made with exact_cumulative
 *                (keeps every score: intentd-eval, not the daemon).
 * Not thread-safe: owned by the trainer, which copies summaries into struct stats.
 */
#ifndef INTENTD_METRICS_H
#define INTENTD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics_summary {
    uint64_t n;             /* examples covered */
    uint64_t positives;     /* of which labelled 1 */
    double auc;             /* NaN unless both classes are present */
    double logloss;         /* NaN when n == 0 */
    double accuracy;        /* at the threshold; NaN when n == 0 */
    double precision;       /* NaN when nothing is predicted positive */
    double recall;          /* NaN when there is no positive */
    double mean_prediction; /* NaN when n == 0 */
    double positive_rate;   /* NaN when n == 0 */
};

struct metrics;

/* window ≥ 1 examples; threshold in (0, 1).  Returns NULL when out of memory.  The
 * caller owns it (metrics_free). */
struct metrics *metrics_new(uint32_t window, double threshold, int exact_cumulative);
struct metrics *metrics_free(struct metrics *m);

/* Records one scored example: p the predicted probability, label 0 or 1. */
void metrics_add(struct metrics *m, float p, float label);

/* Changes the threshold (SIGHUP).  The window view is recomputed from its scores; the
 * cumulative counts keep what earlier thresholds counted. */
void metrics_set_threshold(struct metrics *m, double threshold);

/* Summaries.  metrics_window costs O(window · log window) (it sorts): call it when the
 * figures are needed (a few times a second at most), not per example. */
void metrics_window(const struct metrics *m, struct metrics_summary *out);
void metrics_cumulative(const struct metrics *m, struct metrics_summary *out);

/* Exact AUC of n scores (Mann-Whitney U, ties one half); NaN unless both classes occur.
 * scratch holds n (score, label) pairs' worth: 2·n floats; it may be NULL (then it
 * allocates, and returns NaN when out of memory). */
double metrics_auc_exact(const float *p, const float *label, size_t n, float *scratch);

/* Everything, for checkpoints: metrics_state_size() bytes written by metrics_save and read
 * back by metrics_load (-EINVAL for a short or inconsistent buffer; a state saved with
 * another window keeps its most recent scores that fit). */
size_t metrics_state_size(const struct metrics *m);
void metrics_save(const struct metrics *m, void *buf);
int metrics_load(struct metrics *m, const void *buf, size_t len);

#endif
