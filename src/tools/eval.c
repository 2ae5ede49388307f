/* intentd-eval — offline learning on a CSV file (or synthetic data) through exactly the
 * daemon's feature pipeline and trainer (features.c, learner.c, model.c): no Kafka, no HTTP.
 *
 * Prints one JSON object on stdout (DESIGN.md §4).  Errors go to stderr: exit 2 for a bad
 * command line, 1 for anything else (configuration, file, data).
 *
 * The learner's own holdout (snapshot.holdout_fraction, which gates the daemon's snapshots)
 * is set to 0 here: nothing is gated offline, so every training row is learned from; the
 * evaluation holdout is --holdout-fraction's, scored by the final model — the snapshot the
 * daemon would serve (EMA weights when model.ema_decay > 0).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "features.h"
#include "learner.h"
#include "metrics.h"
#include "reservoir.h"
#include "snapshot.h"

#define MAX_FIELDS 1024

struct options {
    const char *config;
    const char *csv;
    const char *label;
    const char *positive;
    double holdout_fraction;
    uint64_t seed;
    unsigned passes;
    unsigned folds;
    uint64_t synthetic;
    unsigned inputs;
};

/* The data set in memory: n records of the learner's stride. */
struct dataset {
    unsigned char *rows;
    size_t n, cap, stride;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: intentd-eval --config FILE --csv FILE --label COLUMN [--positive VALUE]\n"
                 "                    [--holdout-fraction F --seed S] [--passes N] [--folds K]\n"
                 "       intentd-eval --config FILE --synthetic N --inputs D [--seed S]\n"
                 "Trains the configured model on the file in file order with the daemon's own\n"
                 "pipeline and prints {\"examples\", \"progressive\", \"holdout\","
                 " \"examples_per_second\"}\n"
                 "(or, with --folds K, stratified K-fold figures) as JSON on stdout.\n");
}

static int die_usage(const char *msg)
{
    fprintf(stderr, "intentd-eval: %s\n", msg);
    usage(stderr);
    return 2;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') return -1;
    *out = v;
    return 0;
}

static struct example *row(const struct dataset *d, size_t i)
{
    return (struct example *)(void *)(d->rows + i * d->stride);
}

static struct example *dataset_append(struct dataset *d)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        unsigned char *r = realloc(d->rows, cap * d->stride);
        if (!r) return NULL;
        d->rows = r;
        d->cap = cap;
    }
    return row(d, d->n++);
}

/* The label of a cell: equal to --positive, or (without it) a boolean / 0-1 cell. */
static int label_of(const char *cell, const char *positive)
{
    if (positive) return strcmp(cell, positive) == 0;
    int b = features_parse_bool(cell, strlen(cell));
    return b;
}

static int read_csv(const struct options *o, const struct features *f, struct dataset *d)
{
    FILE *in = fopen(o->csv, "r");
    if (!in) {
        fprintf(stderr, "intentd-eval: %s: %s\n", o->csv, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    char *fields[MAX_FIELDS];
    int colmap[MAX_FIELDS];
    int label_col = -1, nheader = 0, rc = -1;
    size_t lineno = 0;
    char err[256];
    d->stride = features_example_size(f);
    while (getline(&line, &cap, in) >= 0) {
        lineno++;
        int n = features_csv_split(line, fields, MAX_FIELDS);
        if (n < 0) {
            fprintf(stderr, "intentd-eval: %s:%zu: more than %d fields\n", o->csv, lineno,
                    MAX_FIELDS);
            goto out;
        }
        if (lineno == 1) {
            nheader = n;
            for (int i = 0; i < n; i++)
                if (strcmp(fields[i], o->label) == 0) label_col = i;
            if (label_col < 0) {
                fprintf(stderr, "intentd-eval: %s: no column \"%s\" (--label) in the header\n",
                        o->csv, o->label);
                goto out;
            }
            if (features_csv_map(f, fields, (size_t)n, colmap, err, sizeof err) < 0) {
                fprintf(stderr, "intentd-eval: %s: %s\n", o->csv, err);
                goto out;
            }
            if (colmap[label_col] >= 0) {
                fprintf(stderr, "intentd-eval: the label column \"%s\" is also a feature\n",
                        o->label);
                goto out;
            }
            continue;
        }
        if (n == 1 && fields[0][0] == '\0') continue; /* blank line */
        if (n != nheader) {
            fprintf(stderr, "intentd-eval: %s:%zu: %d fields, the header has %d\n", o->csv, lineno,
                    n, nheader);
            goto out;
        }
        int y = label_of(fields[label_col], o->positive);
        if (y < 0) {
            fprintf(stderr,
                    "intentd-eval: %s:%zu: label \"%s\" is not TRUE/FALSE or 1/0 "
                    "(use --positive VALUE)\n",
                    o->csv, lineno, fields[label_col]);
            goto out;
        }
        struct example *e = dataset_append(d);
        if (!e) {
            fprintf(stderr, "intentd-eval: out of memory\n");
            goto out;
        }
        features_example_init(f, e);
        if (features_from_csv_row(f, colmap, fields, (size_t)n, e, err, sizeof err, NULL) < 0) {
            fprintf(stderr, "intentd-eval: %s:%zu: %s\n", o->csv, lineno, err);
            goto out;
        }
        e->label = (float)y;
        e->seq = lineno;
    }
    if (ferror(in)) {
        fprintf(stderr, "intentd-eval: %s: read error\n", o->csv);
        goto out;
    }
    if (lineno == 0) {
        fprintf(stderr, "intentd-eval: %s: empty file\n", o->csv);
        goto out;
    }
    rc = 0;
out:
    free(line);
    fclose(in);
    return rc;
}

static void shuffle(size_t *a, size_t n, struct reservoir_rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)reservoir_rng_below(rng, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* Stratified assignment: group[i] in [0, k) for each row; for a holdout (k = 2) the first
 * round(fraction · n_class) shuffled rows of each class go to group 1, for folds the
 * shuffled rows of each class are dealt round-robin. */
static int stratify(const struct dataset *d, uint64_t seed, unsigned k, double fraction,
                    unsigned char *group)
{
    size_t *idx = malloc((d->n ? d->n : 1) * sizeof *idx);
    if (!idx) return -1;
    struct reservoir_rng rng;
    reservoir_rng_seed(&rng, seed);
    for (int cls = 0; cls <= 1; cls++) {
        size_t m = 0;
        for (size_t i = 0; i < d->n; i++)
            if ((row(d, i)->label > 0.5f) == cls) idx[m++] = i;
        shuffle(idx, m, &rng);
        size_t nh = (size_t)llround(fraction * (double)m);
        for (size_t j = 0; j < m; j++)
            group[idx[j]] = fraction > 0 ? (j < nh) : (unsigned char)(j % k);
    }
    free(idx);
    return 0;
}

struct run {
    uint64_t examples;
    struct metrics_summary progressive;
    double holdout_auc, holdout_logloss;
    size_t holdout_n;
    double seconds;
};

/* Trains a fresh learner on the rows whose group != test (in file order, `passes` times)
 * and scores the rows whose group == test with its final snapshot (test < 0: none). */
static int train_and_score(const struct config *cfg, const struct dataset *d,
                           const unsigned char *group, int test, unsigned passes, struct run *r)
{
    char err[512];
    struct learner *l = learner_new(cfg, err, sizeof err);
    if (!l) {
        fprintf(stderr, "intentd-eval: %s\n", err);
        return -1;
    }
    learner_exact_metrics(l);
    double t0 = now_s();
    for (unsigned p = 0; p < passes; p++) {
        for (size_t i = 0; i < d->n; i++) {
            if (group && group[i] == test) continue;
            learner_push(l, row(d, i));
        }
    }
    learner_flush(l);
    r->seconds = now_s() - t0;
    struct learner_counters c;
    learner_counters(l, &c);
    r->examples = c.examples_trained;
    learner_metrics(l, NULL, &r->progressive);
    r->holdout_n = 0;
    r->holdout_auc = r->holdout_logloss = NAN;
    if (group && test >= 0) {
        struct snapshot *s = learner_snapshot(l, 1, 0);
        float *p = malloc((d->n ? d->n : 1) * sizeof(float));
        float *y = malloc((d->n ? d->n : 1) * sizeof(float));
        if (!s || !p || !y) {
            fprintf(stderr, "intentd-eval: out of memory\n");
            snapshot_release(s);
            free(p);
            free(y);
            learner_free(l);
            return -1;
        }
        double sum = 0;
        size_t n = 0;
        for (size_t i = 0; i < d->n; i++) {
            if (group[i] != test) continue;
            const struct example *e = row(d, i);
            float q = snapshot_score(s, e);
            double qc = q < 1e-7f ? 1e-7 : q > 1 - 1e-7 ? 1 - 1e-7 : q;
            sum += e->label > 0.5f ? -log(qc) : -log1p(-qc);
            p[n] = q;
            y[n] = e->label;
            n++;
        }
        r->holdout_n = n;
        r->holdout_logloss = n ? sum / (double)n : NAN;
        r->holdout_auc = metrics_auc_exact(p, y, n, NULL);
        free(p);
        free(y);
        snapshot_release(s);
    }
    learner_free(l);
    return 0;
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *auc_loss(double auc, double loss)
{
    json_t *o = json_object();
    json_object_set_new(o, "auc", num(auc));
    json_object_set_new(o, "logloss", num(loss));
    return o;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_REAL_PRECISION(6));
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(o);
}

static json_t *run_json(const struct run *r, int with_holdout)
{
    json_t *o = json_object();
    json_object_set_new(o, "examples", json_integer((json_int_t)r->examples));
    json_object_set_new(o, "progressive", auc_loss(r->progressive.auc, r->progressive.logloss));
    if (with_holdout) {
        json_t *h = auc_loss(r->holdout_auc, r->holdout_logloss);
        json_object_set_new(h, "n", json_integer((json_int_t)r->holdout_n));
        json_object_set_new(o, "holdout", h);
    } else {
        json_object_set_new(o, "holdout", json_null());
    }
    double rate = r->seconds > 0 ? (double)r->examples / r->seconds : 0;
    json_object_set_new(o, "examples_per_second", json_integer((json_int_t)llround(rate)));
    return o;
}

/* --synthetic: D standard-normal inputs, labels from a random linear teacher with noise;
 * a pool of records is generated before the clock starts and cycled through. */
static int synthetic(struct config *cfg, const struct options *o)
{
    struct config_feature *cols = calloc(o->inputs, sizeof *cols);
    char(*names)[16] = calloc(o->inputs, sizeof *names);
    if (!cols || !names) {
        fprintf(stderr, "intentd-eval: out of memory\n");
        free(cols);
        free(names);
        return 1;
    }
    for (unsigned i = 0; i < o->inputs; i++) {
        snprintf(names[i], sizeof names[i], "x%u", i);
        cols[i] = (struct config_feature){.name = names[i], .type = FEATURE_NUMERIC};
    }
    struct config_feature *saved = cfg->features;
    size_t nsaved = cfg->nfeatures;
    cfg->features = cols;
    cfg->nfeatures = o->inputs;
    char err[512];
    struct learner *l = learner_new(cfg, err, sizeof err);
    cfg->features = saved;
    cfg->nfeatures = nsaved;
    int rc = 1;
    unsigned char *pool = NULL;
    float *w = NULL;
    if (!l) {
        fprintf(stderr, "intentd-eval: %s\n", err);
        goto out;
    }
    const struct features *f = learner_features(l);
    size_t stride = features_example_size(f);
    size_t npool = o->synthetic < 65536 ? (size_t)o->synthetic : 65536;
    pool = malloc((npool ? npool : 1) * stride);
    w = malloc(o->inputs * sizeof(float));
    if (!pool || !w) {
        fprintf(stderr, "intentd-eval: out of memory\n");
        goto out;
    }
    struct reservoir_rng rng;
    reservoir_rng_seed(&rng, o->seed);
    /* Box-Muller normals. */
#define NORMAL()                                                                                   \
    (sqrt(-2.0 * log(1.0 - reservoir_rng_uniform(&rng))) *                                         \
     cos(6.283185307179586 * reservoir_rng_uniform(&rng)))
    for (unsigned j = 0; j < o->inputs; j++) w[j] = (float)(NORMAL() / sqrt((double)o->inputs));
    for (size_t i = 0; i < npool; i++) {
        struct example *e = (struct example *)(void *)(pool + i * stride);
        features_example_init(f, e);
        double z = 0;
        for (unsigned j = 0; j < o->inputs; j++) {
            e->dense[j] = (float)NORMAL();
            z += w[j] * e->dense[j];
        }
        e->label = z + 0.5 * NORMAL() > 0 ? 1.0f : 0.0f;
        e->seq = i;
    }
#undef NORMAL
    double t0 = now_s();
    for (uint64_t i = 0; i < o->synthetic; i++)
        learner_push(l, (const struct example *)(void *)(pool + (i % npool) * stride));
    learner_flush(l);
    struct run r = {.seconds = now_s() - t0};
    struct learner_counters c;
    learner_counters(l, &c);
    r.examples = c.examples_trained;
    learner_metrics(l, NULL, &r.progressive);
    print_json(run_json(&r, 0));
    rc = 0;
out:
    learner_free(l);
    free(pool);
    free(w);
    free(cols);
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.passes = 1, .seed = 1};
    enum {
        OPT_CONFIG = 1,
        OPT_CSV,
        OPT_LABEL,
        OPT_POSITIVE,
        OPT_HOLDOUT,
        OPT_SEED,
        OPT_PASSES,
        OPT_FOLDS,
        OPT_SYNTHETIC,
        OPT_INPUTS,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"csv", required_argument, NULL, OPT_CSV},
        {"label", required_argument, NULL, OPT_LABEL},
        {"positive", required_argument, NULL, OPT_POSITIVE},
        {"holdout-fraction", required_argument, NULL, OPT_HOLDOUT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"passes", required_argument, NULL, OPT_PASSES},
        {"folds", required_argument, NULL, OPT_FOLDS},
        {"synthetic", required_argument, NULL, OPT_SYNTHETIC},
        {"inputs", required_argument, NULL, OPT_INPUTS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    uint64_t v;
    char *end;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG:
            o.config = optarg;
            break;
        case OPT_CSV:
            o.csv = optarg;
            break;
        case OPT_LABEL:
            o.label = optarg;
            break;
        case OPT_POSITIVE:
            o.positive = optarg;
            break;
        case OPT_HOLDOUT:
            o.holdout_fraction = strtod(optarg, &end);
            if (end == optarg || *end || !(o.holdout_fraction >= 0 && o.holdout_fraction < 1))
                return die_usage("--holdout-fraction wants a number in [0, 1)");
            break;
        case OPT_SEED:
            if (parse_u64(optarg, &o.seed) < 0) return die_usage("--seed wants an integer");
            break;
        case OPT_PASSES:
            if (parse_u64(optarg, &v) < 0 || v < 1 || v > 100000)
                return die_usage("--passes wants an integer >= 1");
            o.passes = (unsigned)v;
            break;
        case OPT_FOLDS:
            if (parse_u64(optarg, &v) < 0 || v < 2 || v > 100)
                return die_usage("--folds wants an integer in [2, 100]");
            o.folds = (unsigned)v;
            break;
        case OPT_SYNTHETIC:
            if (parse_u64(optarg, &o.synthetic) < 0 || o.synthetic < 1)
                return die_usage("--synthetic wants an integer >= 1");
            break;
        case OPT_INPUTS:
            if (parse_u64(optarg, &v) < 0 || v < 1 || v > CONFIG_MAX_FEATURES)
                return die_usage("--inputs wants an integer in [1, 256]");
            o.inputs = (unsigned)v;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) return die_usage("unexpected argument");
    if (!o.config) return die_usage("--config FILE is required");
    if (o.synthetic) {
        if (!o.inputs) return die_usage("--synthetic N needs --inputs D");
        if (o.csv || o.folds || o.holdout_fraction > 0)
            return die_usage(
                "--synthetic does not combine with --csv, --folds or --holdout-fraction");
    } else {
        if (!o.csv || !o.label) return die_usage("--csv FILE and --label COLUMN are required");
        if (o.inputs) return die_usage("--inputs goes with --synthetic");
        if (o.folds && o.holdout_fraction > 0)
            return die_usage("--folds and --holdout-fraction do not combine");
    }

    char err[1024];
    struct config *cfg = config_new();
    if (!cfg) {
        fprintf(stderr, "intentd-eval: out of memory\n");
        return 1;
    }
    if (config_load(cfg, o.config, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        config_free(cfg);
        return 1;
    }
    cfg->snapshot.holdout_fraction = 0; /* nothing is gated offline; see the top */
    if (o.synthetic) {
        int rc = synthetic(cfg, &o);
        config_free(cfg);
        return rc;
    }

    int rc = 1;
    struct dataset d = {0};
    unsigned char *group = NULL;
    struct features *f = features_new(cfg->features, cfg->nfeatures, err, sizeof err);
    if (!f) {
        fprintf(stderr, "intentd-eval: %s: %s\n", o.config, err);
        goto out;
    }
    if (read_csv(&o, f, &d) < 0) goto out;
    if (d.n == 0) {
        fprintf(stderr, "intentd-eval: %s: no data rows\n", o.csv);
        goto out;
    }
    group = calloc(d.n, 1);
    if (!group) goto out;

    if (o.folds) {
        if (stratify(&d, o.seed, o.folds, 0, group) < 0) goto out;
        json_t *folds = json_array();
        double sa = 0, sl = 0, sa2 = 0, sl2 = 0;
        for (unsigned k = 0; k < o.folds; k++) {
            struct run r;
            if (train_and_score(cfg, &d, group, (int)k, o.passes, &r) < 0) {
                json_decref(folds);
                goto out;
            }
            json_t *fo = auc_loss(r.holdout_auc, r.holdout_logloss);
            json_object_set_new(fo, "n", json_integer((json_int_t)r.holdout_n));
            json_array_append_new(folds, fo);
            sa += r.holdout_auc;
            sl += r.holdout_logloss;
            sa2 += r.holdout_auc * r.holdout_auc;
            sl2 += r.holdout_logloss * r.holdout_logloss;
        }
        double k = o.folds, ma = sa / k, ml = sl / k;
        /* Sample standard deviation over the folds. */
        double va = (sa2 - k * ma * ma) / (k - 1), vl = (sl2 - k * ml * ml) / (k - 1);
        json_t *out = json_object();
        json_object_set_new(out, "folds", folds);
        json_object_set_new(out, "mean", auc_loss(ma, ml));
        json_object_set_new(out, "std", auc_loss(sqrt(va > 0 ? va : 0), sqrt(vl > 0 ? vl : 0)));
        print_json(out);
    } else {
        int test = -1;
        if (o.holdout_fraction > 0) {
            if (stratify(&d, o.seed, 2, o.holdout_fraction, group) < 0) goto out;
            test = 1;
        }
        struct run r;
        if (train_and_score(cfg, &d, test >= 0 ? group : NULL, test, o.passes, &r) < 0) goto out;
        print_json(run_json(&r, test >= 0));
    }
    rc = 0;
out:
    free(group);
    free(d.rows);
    features_free(f);
    config_free(cfg);
    return rc;
}
