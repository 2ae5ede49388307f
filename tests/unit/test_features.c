/* Tests of the feature encoder, the CSV helpers, the normaliser and the reservoir. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "features.h"
#include "model.h"
#include "reservoir.h"
#include "unit.h"

static const struct config_feature schema[] = {
    {.name = "PageValues", .type = FEATURE_NUMERIC, .transform = TRANSFORM_LOG1P},
    {.name = "Month", .type = FEATURE_CATEGORICAL, .buckets = 16},
    {.name = "Weekend", .type = FEATURE_BOOLEAN},
    {.name = "Rate", .type = FEATURE_NUMERIC, .transform = TRANSFORM_NONE},
    {.name = "Browser", .type = FEATURE_CATEGORICAL, .buckets = 1000},
};
#define NSCHEMA (sizeof schema / sizeof schema[0])

static struct features *make(void)
{
    char err[256];
    struct features *f = features_new(schema, NSCHEMA, err, sizeof err);
    if (!f) unit_fail(__FILE__, __LINE__, "features_new: %s", err);
    return f;
}

static struct example *alloc_example(const struct features *f)
{
    struct example *e = malloc(features_example_size(f));
    CHECK(e != NULL);
    features_example_init(f, e);
    return e;
}

/* Parses JSON text into e; returns features_from_json's result. */
static int parse(const struct features *f, const char *text, struct example *e, uint32_t *unk,
                 char *err, size_t errlen, const char **bad)
{
    json_error_t je;
    json_t *o = json_loads(text, JSON_DECODE_ANY, &je);
    if (!o) unit_fail(__FILE__, __LINE__, "bad test JSON %s: %s", text, je.text);
    int rc = features_from_json(f, o, e, unk, err, errlen, bad);
    json_decref(o);
    return rc;
}

void test_features_layout(void)
{
    struct features *f = make();
    CHECK_INT_EQ(features_ncolumns(f), 5);
    CHECK_INT_EQ(features_ndense(f), 3); /* PageValues, Weekend, Rate */
    CHECK_INT_EQ(features_ncat(f), 2);   /* Month, Browser */
    CHECK_INT_EQ(features_nsparse(f), 1016);
    CHECK_INT_EQ(features_column(f, 0)->slot, 0);
    CHECK_INT_EQ(features_column(f, 2)->slot, 1);
    CHECK_INT_EQ(features_column(f, 3)->slot, 2);
    CHECK_INT_EQ(features_column(f, 1)->slot, 0);
    CHECK_INT_EQ(features_column(f, 1)->offset, 0);
    CHECK_INT_EQ(features_column(f, 4)->offset, 16);
    CHECK_INT_EQ(features_find(f, "Weekend"), 2);
    CHECK_INT_EQ(features_find(f, "weekend"), -1);
    size_t sz = features_example_size(f);
    CHECK_INT_EQ(sz % 8, 0);
    CHECK(sz >= sizeof(struct example) + 3 * 4 + 2 * 4);
    struct example *e = alloc_example(f);
    CHECK((void *)example_cat(f, e) == (void *)(e->dense + 3));
    for (int j = 0; j < 3; j++) CHECK(isnan(e->dense[j]));
    CHECK_INT_EQ(example_cat(f, e)[0], MODEL_NO_INDEX);
    CHECK_INT_EQ(example_cat(f, e)[1], MODEL_NO_INDEX);
    CHECK_NEAR(e->weight, 1.0, 0);
    free(e);
    features_free(f);
    CHECK(features_free(NULL) == NULL);
}

void test_features_bad_schema(void)
{
    char err[256];
    struct config_feature dup[] = {{.name = "a", .type = FEATURE_NUMERIC},
                                   {.name = "a", .type = FEATURE_BOOLEAN}};
    CHECK(features_new(dup, 2, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "\"a\" is named twice");
    struct config_feature zero[] = {{.name = "c", .type = FEATURE_CATEGORICAL, .buckets = 0}};
    CHECK(features_new(zero, 1, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "\"c\": buckets");
    CHECK(features_new(zero, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "empty");
}

void test_features_json_values(void)
{
    struct features *f = make();
    struct example *e = alloc_example(f);
    e->label = 1;
    e->seq = 77;
    uint32_t unknown = 5;
    char err[256];
    CHECK_INT_EQ(parse(f,
                       "{\"PageValues\": 12.5, \"Month\": \"Nov\", \"Weekend\": true, "
                       "\"Rate\": -3, \"Unknown\": 1, \"Other\": \"x\"}",
                       e, &unknown, err, sizeof err, NULL),
                 0);
    CHECK_NEAR(e->dense[0], log1p(12.5), 1e-6);
    CHECK_NEAR(e->dense[1], 1.0, 0);
    CHECK_NEAR(e->dense[2], -3.0, 0); /* transform none */
    uint32_t month = example_cat(f, e)[0];
    CHECK_INT_EQ(month, XXH3_64bits_withSeed("Nov", 3, FEATURES_HASH_SEED) % 16);
    CHECK_INT_EQ(example_cat(f, e)[1], MODEL_NO_INDEX); /* Browser missing */
    CHECK_INT_EQ(unknown, 7);                           /* counted on top of 5 */
    CHECK_NEAR(e->label, 1.0, 0);                       /* left alone */
    CHECK_INT_EQ(e->seq, 77);

    /* Missing features are NaN / no index: re-parsing clears the previous values. */
    CHECK_INT_EQ(parse(f, "{\"Browser\": 2, \"PageValues\": null}", e, NULL, err, sizeof err, NULL),
                 0);
    CHECK(isnan(e->dense[0]) && isnan(e->dense[1]) && isnan(e->dense[2]));
    CHECK_INT_EQ(example_cat(f, e)[0], MODEL_NO_INDEX);
    uint32_t b_int = example_cat(f, e)[1];
    CHECK(b_int >= 16 && b_int < 1016);
    /* "2" and 2 are one value. */
    CHECK_INT_EQ(parse(f, "{\"Browser\": \"2\"}", e, NULL, err, sizeof err, NULL), 0);
    CHECK_INT_EQ(example_cat(f, e)[1], b_int);
    CHECK_INT_EQ(features_hash(f, 1, "2", 1), b_int);
    CHECK_INT_EQ(parse(f, "{\"Browser\": \"3\"}", e, NULL, err, sizeof err, NULL), 0);
    CHECK(example_cat(f, e)[1] != b_int || 1000 == 1); /* different values, almost surely */

    /* log1p keeps the sign. */
    CHECK_INT_EQ(parse(f, "{\"PageValues\": -12.5}", e, NULL, err, sizeof err, NULL), 0);
    CHECK_NEAR(e->dense[0], -log1p(12.5), 1e-6);
    free(e);
    features_free(f);
}

void test_features_json_booleans(void)
{
    struct features *f = make();
    struct example *e = alloc_example(f);
    char err[256];
    const char *yes[] = {"true", "\"TRUE\"", "\"true\"", "\"True\"", "1", "\"1\""};
    const char *no[] = {"false", "\"FALSE\"", "\"false\"", "0", "\"0\""};
    char buf[64];
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        snprintf(buf, sizeof buf, "{\"Weekend\": %s}", yes[i]);
        CHECK_INT_EQ(parse(f, buf, e, NULL, err, sizeof err, NULL), 0);
        CHECK_NEAR(e->dense[1], 1.0, 0);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        snprintf(buf, sizeof buf, "{\"Weekend\": %s}", no[i]);
        CHECK_INT_EQ(parse(f, buf, e, NULL, err, sizeof err, NULL), 0);
        CHECK_NEAR(e->dense[1], 0.0, 0);
    }
    const char *bad[] = {"2", "\"yes\"", "0.5", "[]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(buf, sizeof buf, "{\"Weekend\": %s}", bad[i]);
        const char *field = NULL;
        CHECK_INT_EQ(parse(f, buf, e, NULL, err, sizeof err, &field), -EDOM);
        CHECK_STR_EQ(field, "Weekend");
        CHECK_STR_HAS(err, "feature \"Weekend\"");
    }
    free(e);
    features_free(f);
}

void test_features_json_errors(void)
{
    struct features *f = make();
    struct example *e = alloc_example(f);
    char err[256];
    const char *field = "x";
    CHECK_INT_EQ(parse(f, "[1, 2]", e, NULL, err, sizeof err, &field), -EINVAL);
    CHECK(field == NULL);
    CHECK_STR_HAS(err, "must be an object");

    CHECK_INT_EQ(parse(f, "{\"PageValues\": \"12\"}", e, NULL, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "PageValues");
    CHECK_STR_HAS(err, "expected a number, got a string");
    CHECK_INT_EQ(parse(f, "{\"Rate\": true}", e, NULL, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "Rate");
    CHECK_INT_EQ(parse(f, "{\"Month\": 1.5}", e, NULL, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "Month");
    CHECK_STR_HAS(err, "expected a string or an integer");
    CHECK_INT_EQ(parse(f, "{\"Month\": false}", e, NULL, err, sizeof err, &field), -EDOM);

    /* NaN and infinity cannot be written in JSON text, but can reach us as values built
     * in memory; and a finite double beyond float range becomes infinite. */
    json_t *o = json_object();
    json_object_set_new(o, "Rate", json_real(INFINITY));
    if (json_object_get(o, "Rate")) {
        CHECK_INT_EQ(features_from_json(f, o, e, NULL, err, sizeof err, &field), -EDOM);
        CHECK_STR_EQ(field, "Rate");
    }
    json_decref(o);
    CHECK_INT_EQ(parse(f, "{\"Rate\": 1e300}", e, NULL, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "Rate");
    CHECK_STR_HAS(err, "not finite");
    /* 1e300 is fine through log1p. */
    CHECK_INT_EQ(parse(f, "{\"PageValues\": 1e300}", e, NULL, err, sizeof err, &field), 0);
    CHECK_NEAR(e->dense[0], log1p(1e300), 1e-3);
    free(e);
    features_free(f);
}

void test_features_csv(void)
{
    struct features *f = make();
    struct example *e = alloc_example(f);
    char err[256];
    char header[] = "Rate,Label,Month,PageValues,Weekend,Browser\r\n";
    char *fields[16];
    int n = features_csv_split(header, fields, 16);
    CHECK_INT_EQ(n, 6);
    CHECK_STR_EQ(fields[5], "Browser"); /* CR LF removed */
    int colmap[16];
    CHECK_INT_EQ(features_csv_map(f, fields, (size_t)n, colmap, err, sizeof err), 0);
    CHECK_INT_EQ(colmap[1], -1);
    CHECK_INT_EQ(colmap[0], 3);

    char line[] = "7.50E-05,TRUE,Nov,12.5,FALSE,2\r\n";
    char *row[16];
    CHECK_INT_EQ(features_csv_split(line, row, 16), 6);
    CHECK_INT_EQ(features_from_csv_row(f, colmap, row, 6, e, err, sizeof err, NULL), 0);
    CHECK_NEAR(e->dense[2], 7.5e-5, 1e-10);
    CHECK_NEAR(e->dense[0], log1p(12.5), 1e-6);
    CHECK_NEAR(e->dense[1], 0.0, 0);
    CHECK_INT_EQ(example_cat(f, e)[1], features_hash(f, 1, "2", 1)); /* CSV "2" == JSON 2 */
    CHECK_INT_EQ(example_cat(f, e)[0], features_hash(f, 0, "Nov", 3));

    /* Empty cells are missing; quotes are understood. */
    char line2[] = ",x,\"N,ov\",,,\n";
    CHECK_INT_EQ(features_csv_split(line2, row, 16), 6);
    CHECK_STR_EQ(row[2], "N,ov");
    CHECK_INT_EQ(features_from_csv_row(f, colmap, row, 6, e, err, sizeof err, NULL), 0);
    CHECK(isnan(e->dense[0]) && isnan(e->dense[1]) && isnan(e->dense[2]));
    CHECK_INT_EQ(example_cat(f, e)[1], MODEL_NO_INDEX);
    CHECK_INT_EQ(example_cat(f, e)[0], features_hash(f, 0, "N,ov", 4));

    const char *field = NULL;
    char line3[] = "abc,x,Nov,1,TRUE,2";
    CHECK_INT_EQ(features_csv_split(line3, row, 16), 6);
    CHECK_INT_EQ(features_from_csv_row(f, colmap, row, 6, e, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "Rate");
    CHECK_STR_HAS(err, "\"abc\" is not a number");
    char line4[] = "inf,x,Nov,1,TRUE,2";
    CHECK_INT_EQ(features_csv_split(line4, row, 16), 6);
    CHECK_INT_EQ(features_from_csv_row(f, colmap, row, 6, e, err, sizeof err, &field), -EDOM);
    CHECK_STR_HAS(err, "not finite");
    char line5[] = "1,x,Nov,1,maybe,2";
    CHECK_INT_EQ(features_csv_split(line5, row, 16), 6);
    CHECK_INT_EQ(features_from_csv_row(f, colmap, row, 6, e, err, sizeof err, &field), -EDOM);
    CHECK_STR_EQ(field, "Weekend");

    /* A schema feature missing from the header is named. */
    char h2[] = "Rate,Month,PageValues,Weekend";
    n = features_csv_split(h2, fields, 16);
    CHECK_INT_EQ(features_csv_map(f, fields, (size_t)n, colmap, err, sizeof err), -ENOENT);
    CHECK_STR_HAS(err, "\"Browser\"");
    char h3[] = "a,b,c";
    CHECK_INT_EQ(features_csv_split(h3, fields, 2), -E2BIG);
    free(e);
    features_free(f);
}

void test_features_normaliser(void)
{
    struct features_norm *n = features_norm_new(2);
    CHECK(n != NULL);
    float mean[2], inv[2];
    features_norm_freeze(n, mean, inv);
    CHECK_NEAR(mean[0], 0, 0);
    CHECK_NEAR(inv[0], 1, 0); /* no data: pass through */
    float x[] = {1, NAN, 2, 5, 3, NAN, 4, 5};
    features_norm_update(n, x, 4);
    features_norm_freeze(n, mean, inv);
    CHECK_NEAR(mean[0], 2.5, 1e-6);
    CHECK_NEAR(inv[0], 1.0 / sqrt(1.25), 1e-6); /* population variance of 1..4 */
    CHECK_NEAR(mean[1], 5, 1e-6);
    CHECK_NEAR(inv[1], 1.0, 0); /* no spread: not blown up */
    float in[] = {NAN, 7}, out[2];
    features_standardise(2, mean, inv, in, out);
    CHECK_NEAR(out[0], 0, 0); /* missing = the mean */
    CHECK_NEAR(out[1], 2, 1e-6);

    size_t sz = features_norm_state_size(n);
    void *buf = malloc(sz);
    features_norm_save(n, buf);
    struct features_norm *m = features_norm_new(2);
    CHECK_INT_EQ(features_norm_load(m, buf, sz), 0);
    float mean2[2], inv2[2];
    features_norm_freeze(m, mean2, inv2);
    CHECK(memcmp(mean, mean2, sizeof mean) == 0 && memcmp(inv, inv2, sizeof inv) == 0);
    struct features_norm *w = features_norm_new(3);
    CHECK_INT_EQ(features_norm_load(w, buf, sz), -EINVAL);
    free(buf);
    features_norm_free(n);
    features_norm_free(m);
    features_norm_free(w);
}

void test_reservoir_sampling(void)
{
    /* Algorithm R: after n offers each is held with probability cap/n. */
    const uint32_t cap = 100, n = 1000, trials = 2000;
    static uint32_t held[1000];
    for (uint32_t t = 0; t < trials; t++) {
        struct reservoir *r = reservoir_new(sizeof(uint32_t), cap, RESERVOIR_SAMPLE, t + 1);
        CHECK(r != NULL);
        for (uint32_t i = 0; i < n; i++) CHECK_INT_EQ(reservoir_add(r, &i), 0);
        CHECK_INT_EQ(reservoir_size(r), cap);
        CHECK_INT_EQ(reservoir_seen(r), n);
        for (size_t i = 0; i < cap; i++) held[*(const uint32_t *)reservoir_get(r, i)]++;
        reservoir_free(r);
    }
    /* Expected count per item: trials · cap / n = 200, sd ≈ 13.4; check the first, middle
     * and last tenths have the right mean. */
    for (uint32_t part = 0; part < 10; part += 9) {
        double s = 0;
        for (uint32_t i = part * 100; i < part * 100 + 100; i++) s += held[i];
        CHECK_NEAR(s / 100, 200, 6);
    }
}

void test_reservoir_recent_and_state(void)
{
    struct reservoir *r = reservoir_new(sizeof(uint64_t), 4, RESERVOIR_RECENT, 9);
    for (uint64_t i = 0; i < 10; i++) reservoir_add(r, &i);
    CHECK_INT_EQ(reservoir_size(r), 4);
    uint64_t sum = 0;
    for (size_t i = 0; i < 4; i++) sum += *(const uint64_t *)reservoir_get(r, i);
    CHECK_INT_EQ(sum, 6 + 7 + 8 + 9);

    /* Save, load, continue: both copies give the same samples. */
    struct reservoir *a = reservoir_new(sizeof(uint64_t), 16, RESERVOIR_SAMPLE, 3);
    for (uint64_t i = 0; i < 100; i++) reservoir_add(a, &i);
    size_t sz = reservoir_state_size(a);
    void *buf = malloc(sz);
    reservoir_save(a, buf);
    struct reservoir *b = reservoir_new(sizeof(uint64_t), 16, RESERVOIR_SAMPLE, 999);
    CHECK_INT_EQ(reservoir_load(b, buf, sz), 0);
    for (uint64_t i = 100; i < 200; i++) {
        reservoir_add(a, &i);
        reservoir_add(b, &i);
    }
    for (int k = 0; k < 50; k++)
        CHECK_INT_EQ(*(const uint64_t *)reservoir_sample(a),
                     *(const uint64_t *)reservoir_sample(b));
    /* Another capacity keeps what fits. */
    struct reservoir *c = reservoir_new(sizeof(uint64_t), 8, RESERVOIR_SAMPLE, 3);
    CHECK_INT_EQ(reservoir_load(c, buf, sz), 0);
    CHECK_INT_EQ(reservoir_size(c), 8);
    CHECK_INT_EQ(reservoir_seen(c), 100);
    struct reservoir *c2 = reservoir_new(sizeof(uint64_t), 16, RESERVOIR_RECENT, 3);
    CHECK_INT_EQ(reservoir_load(c2, buf, sz), -EINVAL); /* another policy */
    reservoir_free(c2);
    CHECK_INT_EQ(reservoir_load(b, buf, sz - 1), -EINVAL);
    /* A ring that wrapped, loaded into a smaller one: the most recent, oldest first. */
    size_t rsz = reservoir_state_size(r);
    void *rbuf = malloc(rsz);
    reservoir_save(r, rbuf);
    struct reservoir *small = reservoir_new(sizeof(uint64_t), 2, RESERVOIR_RECENT, 1);
    CHECK_INT_EQ(reservoir_load(small, rbuf, rsz), 0);
    CHECK_INT_EQ(reservoir_size(small), 2);
    uint64_t ten = 10, eleven = 11;
    reservoir_add(small, &ten); /* replaces 8, the oldest of the two kept (8, 9) */
    uint64_t s0 = *(const uint64_t *)reservoir_get(small, 0),
             s1 = *(const uint64_t *)reservoir_get(small, 1);
    CHECK(s0 + s1 == 9 + 10 && (s0 == 9 || s1 == 9));
    reservoir_add(small, &eleven);
    s0 = *(const uint64_t *)reservoir_get(small, 0);
    s1 = *(const uint64_t *)reservoir_get(small, 1);
    CHECK(s0 + s1 == 10 + 11);
    struct reservoir *big = reservoir_new(sizeof(uint64_t), 100, RESERVOIR_RECENT, 1);
    CHECK_INT_EQ(reservoir_load(big, rbuf, rsz), 0);
    CHECK_INT_EQ(reservoir_size(big), 4);
    CHECK_INT_EQ(*(const uint64_t *)reservoir_get(big, 0), 6); /* oldest first */
    CHECK_INT_EQ(*(const uint64_t *)reservoir_get(big, 3), 9);
    free(rbuf);
    reservoir_free(small);
    reservoir_free(big);
    free(buf);
    reservoir_free(a);
    reservoir_free(b);
    reservoir_free(c);
    reservoir_free(r);

    struct reservoir_rng g;
    reservoir_rng_seed(&g, 1);
    for (int i = 0; i < 1000; i++) {
        CHECK(reservoir_rng_below(&g, 7) < 7);
        double u = reservoir_rng_uniform(&g);
        CHECK(u >= 0 && u < 1);
    }
}

/* The training batch kernel standardises value for value as serving does (bit-equal), and
 * its moments feed the same statistics as a plain two-pass computation. */
void test_features_batch_kernel(void)
{
    enum { ND = 37, B = 50 }; /* two blocks of 16 and a tail */
    struct config_feature cols[ND];
    char names[ND][8];
    for (int j = 0; j < ND; j++) {
        snprintf(names[j], sizeof names[j], "n%d", j);
        cols[j] = (struct config_feature){.name = names[j], .type = FEATURE_NUMERIC};
    }
    struct features *f = features_new(cols, ND, NULL, 0);
    CHECK(f != NULL);
    size_t stride = features_example_size(f);
    unsigned char *recs = calloc(B, stride);
    struct reservoir_rng g;
    reservoir_rng_seed(&g, 4);
    for (int b = 0; b < B; b++) {
        struct example *e = example_at(recs, stride, (size_t)b);
        features_example_init(f, e);
        for (int j = 0; j < ND; j++)
            e->dense[j] = (b + j) % 9 == 0 ? NAN : (float)(reservoir_rng_uniform(&g) * 10 + j);
    }
    float mean[ND], inv[ND];
    for (int j = 0; j < ND; j++) mean[j] = (float)j + 4.5f, inv[j] = 0.3f + 0.01f * (float)j;
    static float out[B * ND], mom[3 * ND], one[ND];
    features_standardise_examples(ND, mean, inv, recs, stride, B, out, mom);
    for (int b = 0; b < B; b++) {
        features_standardise(ND, mean, inv, example_at(recs, stride, (size_t)b)->dense, one);
        CHECK(memcmp(one, out + b * ND, sizeof one) == 0);
    }
    /* Merged moments give the two-pass mean and population variance. */
    struct features_norm *n = features_norm_new(ND);
    features_norm_merge(n, mean, mom);
    for (int j = 0; j < ND; j++) {
        double s = 0, c = 0, v = 0;
        for (int b = 0; b < B; b++) {
            float x = example_at(recs, stride, (size_t)b)->dense[j];
            if (x == x) s += x, c++;
        }
        double mu = s / c;
        for (int b = 0; b < B; b++) {
            float x = example_at(recs, stride, (size_t)b)->dense[j];
            if (x == x) v += (x - mu) * (x - mu);
        }
        CHECK_NEAR(n->count[j], c, 0);
        CHECK_NEAR(n->mean[j], mu, 1e-5);
        CHECK_NEAR(n->m2[j] / c, v / c, 1e-4);
    }
    features_norm_free(n);
    free(recs);
    features_free(f);
}
