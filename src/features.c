/* features.c — schema encoder, example records, CSV helpers and the online normaliser. */
#include "features.h"
#include "errmsg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "model.h"

#define NAME_TABLE_MIN 16

struct features {
    uint32_t ncol, ndense, ncat, nsparse;
    struct features_column *cols;  /* (ncol) */
    struct config_feature *schema; /* (ncol) same names as cols */
    char *names;                   /* all names, NUL-separated (owned) */
    /* Open-addressing table of column indices by name (for JSON keys): -1 = empty. */
    int32_t *table;
    uint32_t table_mask;
    size_t example_size;
};

static uint32_t name_hash(const char *s, size_t len)
{
    return (uint32_t)XXH3_64bits(s, len);
}

static int lookup(const struct features *f, const char *name, size_t len)
{
    uint32_t i = name_hash(name, len) & f->table_mask;
    for (;;) {
        int32_t c = f->table[i];
        if (c < 0) return -1;
        const char *n = f->cols[c].name;
        if (strncmp(n, name, len) == 0 && n[len] == '\0') return c;
        i = (i + 1) & f->table_mask;
    }
}

static const char *type_name(enum feature_type t)
{
    switch (t) {
    case FEATURE_NUMERIC:
        return "numeric";
    case FEATURE_CATEGORICAL:
        return "categorical";
    case FEATURE_BOOLEAN:
        return "boolean";
    }
    return "?";
}

struct features *features_new(const struct config_feature *cols, size_t n, char *err, size_t errlen)
{
    if (n == 0) {
        errmsg_set(err, errlen, "the feature schema is empty: configure at least one feature");
        return NULL;
    }
    if (n > CONFIG_MAX_FEATURES) {
        errmsg_set(err, errlen, "%zu features: at most %d are supported", n, CONFIG_MAX_FEATURES);
        return NULL;
    }
    struct features *f = calloc(1, sizeof *f);
    if (!f) goto oom;
    size_t names_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cols[i].name || !cols[i].name[0]) {
            errmsg_set(err, errlen, "feature %zu has an empty name", i + 1);
            return features_free(f);
        }
        names_len += strlen(cols[i].name) + 1;
    }
    f->cols = calloc(n, sizeof *f->cols);
    f->schema = calloc(n, sizeof *f->schema);
    f->names = malloc(names_len);
    uint32_t tsize = NAME_TABLE_MIN;
    while (tsize < 2 * n) tsize *= 2;
    f->table = malloc(tsize * sizeof *f->table);
    if (!f->cols || !f->schema || !f->names || !f->table) goto oom;
    f->table_mask = tsize - 1;
    for (uint32_t i = 0; i < tsize; i++) f->table[i] = -1;
    f->ncol = (uint32_t)n;

    char *p = f->names;
    uint64_t nsparse = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(cols[i].name);
        memcpy(p, cols[i].name, len + 1);
        struct features_column *c = &f->cols[i];
        c->name = p;
        c->type = cols[i].type;
        c->transform = cols[i].type == FEATURE_NUMERIC ? cols[i].transform : TRANSFORM_NONE;
        c->buckets = cols[i].type == FEATURE_CATEGORICAL ? cols[i].buckets : 0;
        p += len + 1;
        if (lookup(f, c->name, len) >= 0) {
            errmsg_set(err, errlen, "feature \"%s\" is named twice in the schema", c->name);
            return features_free(f);
        }
        switch (c->type) {
        case FEATURE_NUMERIC:
        case FEATURE_BOOLEAN:
            c->slot = f->ndense++;
            break;
        case FEATURE_CATEGORICAL:
            if (c->buckets == 0) {
                errmsg_set(err, errlen, "feature \"%s\": buckets must be at least 1", c->name);
                return features_free(f);
            }
            c->slot = f->ncat++;
            c->offset = (uint32_t)nsparse;
            nsparse += c->buckets;
            if (nsparse >= MODEL_NO_INDEX) {
                errmsg_set(err, errlen,
                        "the categorical features have %" PRIu64
                        " buckets in all: fewer than 2^32 - 1 are supported",
                        nsparse);
                return features_free(f);
            }
            break;
        default:
            errmsg_set(err, errlen, "feature \"%s\": unknown type %d", c->name, (int)c->type);
            return features_free(f);
        }
        uint32_t h = name_hash(c->name, len) & f->table_mask;
        while (f->table[h] >= 0) h = (h + 1) & f->table_mask;
        f->table[h] = (int32_t)i;
        f->schema[i] = (struct config_feature){.name = (char *)c->name,
                                               .type = c->type,
                                               .transform = c->transform,
                                               .buckets = c->buckets};
    }
    f->nsparse = (uint32_t)nsparse;
    size_t sz = sizeof(struct example) + 4 * (size_t)f->ndense + 4 * (size_t)f->ncat;
    f->example_size = (sz + 7) & ~(size_t)7;
    return f;
oom:
    errmsg_set(err, errlen, "out of memory building the feature encoder");
    return features_free(f);
}

struct features *features_free(struct features *f)
{
    if (f) {
        free(f->cols);
        free(f->schema);
        free(f->names);
        free(f->table);
        free(f);
    }
    return NULL;
}

uint32_t features_ncolumns(const struct features *f)
{
    return f->ncol;
}
uint32_t features_ndense(const struct features *f)
{
    return f->ndense;
}
uint32_t features_ncat(const struct features *f)
{
    return f->ncat;
}
uint32_t features_nsparse(const struct features *f)
{
    return f->nsparse;
}

const struct features_column *features_column(const struct features *f, uint32_t i)
{
    return i < f->ncol ? &f->cols[i] : NULL;
}

const struct config_feature *features_schema(const struct features *f)
{
    return f->schema;
}

int features_find(const struct features *f, const char *name)
{
    return lookup(f, name, strlen(name));
}

size_t features_example_size(const struct features *f)
{
    return f->example_size;
}

uint32_t *example_cat(const struct features *f, struct example *e)
{
    return example_cat_at(e, f->ndense);
}

const uint32_t *example_cat_c(const struct features *f, const struct example *e)
{
    return example_cat_at_c(e, f->ndense);
}

/* The missing markers only, leaving label, weight and seq. */
static void clear_features(const struct features *f, struct example *e)
{
    for (uint32_t j = 0; j < f->ndense; j++) e->dense[j] = NAN;
    uint32_t *cat = example_cat(f, e);
    for (uint32_t j = 0; j < f->ncat; j++) cat[j] = MODEL_NO_INDEX;
    /* The padding after the indices is zeroed too, so records compare and hash stably. */
    size_t used = sizeof(struct example) + 4 * (size_t)f->ndense + 4 * (size_t)f->ncat;
    if (used < f->example_size) memset((char *)e + used, 0, f->example_size - used);
}

void features_example_init(const struct features *f, struct example *e)
{
    e->label = 0.0f;
    e->weight = 1.0f;
    e->seq = 0;
    clear_features(f, e);
}

uint32_t features_hash(const struct features *f, uint32_t cat, const char *s, size_t len)
{
    /* Column c of the categoricals: find its schema entry through the slot order. */
    const struct features_column *c = NULL;
    for (uint32_t i = 0, k = 0; i < f->ncol; i++) {
        if (f->cols[i].type != FEATURE_CATEGORICAL) continue;
        if (k++ == cat) {
            c = &f->cols[i];
            break;
        }
    }
    if (!c) return MODEL_NO_INDEX;
    return c->offset + (uint32_t)(XXH3_64bits_withSeed(s, len, FEATURES_HASH_SEED) % c->buckets);
}

static inline uint32_t hash_column(const struct features_column *c, const char *s, size_t len)
{
    return c->offset + (uint32_t)(XXH3_64bits_withSeed(s, len, FEATURES_HASH_SEED) % c->buckets);
}

/* Applies the column's transform in double and checks the float result is finite. */
static int numeric_value(const struct features_column *c, double v, float *out)
{
    if (!isfinite(v)) return -EDOM;
    if (c->transform == TRANSFORM_LOG1P) v = copysign(log1p(fabs(v)), v);
    float x = (float)v;
    if (!isfinite(x)) return -EDOM;
    *out = x;
    return 0;
}

int features_parse_bool(const char *s, size_t len)
{
    if (len == 1 && s[0] == '1') return 1;
    if (len == 1 && s[0] == '0') return 0;
    if (len == 4 && strncasecmp(s, "true", 4) == 0) return 1;
    if (len == 5 && strncasecmp(s, "false", 5) == 0) return 0;
    return -1;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static int bad_value(const struct features_column *c, char *err, size_t errlen,
                     const char **bad_field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad_value(const struct features_column *c, char *err, size_t errlen,
                     const char **bad_field, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    errmsg_set(err, errlen, "feature \"%s\": %s", c->name, msg);
    if (bad_field) *bad_field = c->name;
    return -EDOM;
}

/* The decimal string of v exactly as "%" JSON_INTEGER_FORMAT prints it; returns its length.
 * By hand because snprintf takes ~1,500 instructions here (glibc's positional path), which
 * for the UCI row's four integer categoricals was a third of what scoring adds to a request
 * beside jansson's parse (measured with callgrind). */
static size_t decimal(char buf[24], json_int_t v)
{
    char tmp[24];
    size_t n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

int features_from_json(const struct features *f, const json_t *features_obj, struct example *e,
                       uint32_t *unknown_count, char *err, size_t errlen, const char **bad_field)
{
    if (bad_field) *bad_field = NULL;
    if (!json_is_object(features_obj)) {
        errmsg_set(err, errlen, "\"features\" must be an object");
        return -EINVAL;
    }
    clear_features(f, e);
    uint32_t *cat = example_cat(f, e);
    const char *key;
    json_t *v;
    uint32_t unknown = 0;
    json_object_foreach((json_t *)features_obj, key, v)
    {
        int i = lookup(f, key, strlen(key));
        if (i < 0) {
            unknown++;
            continue;
        }
        const struct features_column *c = &f->cols[i];
        if (json_is_null(v)) continue; /* missing, as if absent */
        switch (c->type) {
        case FEATURE_NUMERIC: {
            double d;
            if (json_is_integer(v))
                d = (double)json_integer_value(v);
            else if (json_is_real(v))
                d = json_real_value(v);
            else
                return bad_value(c, err, errlen, bad_field, "expected a number, got %s",
                                 json_kind(v));
            if (numeric_value(c, d, &e->dense[c->slot]) < 0)
                return bad_value(c, err, errlen, bad_field, "%s", "the value is not finite");
            break;
        }
        case FEATURE_BOOLEAN: {
            int b = -1;
            if (json_is_boolean(v))
                b = json_is_true(v);
            else if (json_is_integer(v) &&
                     (json_integer_value(v) == 0 || json_integer_value(v) == 1))
                b = (int)json_integer_value(v);
            else if (json_is_string(v))
                b = features_parse_bool(json_string_value(v), json_string_length(v));
            if (b < 0)
                return bad_value(c, err, errlen, bad_field,
                                 "expected true/false, \"TRUE\"/\"FALSE\" or 0/1, got %s",
                                 json_kind(v));
            e->dense[c->slot] = (float)b;
            break;
        }
        case FEATURE_CATEGORICAL:
            if (json_is_string(v)) {
                cat[c->slot] = hash_column(c, json_string_value(v), json_string_length(v));
            } else if (json_is_integer(v)) {
                /* An integer is the same value as its decimal string. */
                char buf[24];
                size_t len = decimal(buf, json_integer_value(v));
                cat[c->slot] = hash_column(c, buf, len);
            } else {
                return bad_value(c, err, errlen, bad_field,
                                 "expected a string or an integer, got %s", json_kind(v));
            }
            break;
        }
    }
    if (unknown_count) *unknown_count += unknown;
    return 0;
}

int features_csv_split(char *line, char **fields, size_t max)
{
    size_t n = 0;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    char *p = line;
    for (;;) {
        if (n == max) return -E2BIG;
        if (*p == '"') {
            /* Quoted: copy in place, turning "" into ", up to the closing quote. */
            char *out = ++p;
            fields[n++] = out;
            for (;;) {
                if (*p == '\0') break;
                if (*p == '"') {
                    if (p[1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = *p++;
            }
            while (*p && *p != ',') p++; /* anything after the closing quote is dropped */
            char sep = *p;
            *out = '\0';
            if (sep == '\0') break;
            p++;
        } else {
            fields[n++] = p;
            while (*p && *p != ',') p++;
            if (*p == '\0') break;
            *p++ = '\0';
        }
    }
    return (int)n;
}

int features_csv_map(const struct features *f, char *const *header, size_t nfields, int *colmap,
                     char *err, size_t errlen)
{
    char seen[CONFIG_MAX_FEATURES] = {0};
    for (size_t i = 0; i < nfields; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(header[i], header[j]) == 0) {
                errmsg_set(err, errlen, "the CSV header names column \"%s\" twice", header[i]);
                return -EINVAL;
            }
        }
        colmap[i] = lookup(f, header[i], strlen(header[i]));
        if (colmap[i] >= 0) seen[colmap[i]] = 1;
    }
    for (uint32_t c = 0; c < f->ncol; c++) {
        if (!seen[c]) {
            errmsg_set(err, errlen, "feature \"%s\" of the schema is not a column of the CSV header",
                    f->cols[c].name);
            return -ENOENT;
        }
    }
    return 0;
}

int features_from_csv_row(const struct features *f, const int *colmap, char *const *fields,
                          size_t nfields, struct example *e, char *err, size_t errlen,
                          const char **bad_field)
{
    if (bad_field) *bad_field = NULL;
    clear_features(f, e);
    uint32_t *cat = example_cat(f, e);
    for (size_t i = 0; i < nfields; i++) {
        if (colmap[i] < 0) continue;
        const struct features_column *c = &f->cols[colmap[i]];
        const char *s = fields[i];
        size_t len = strlen(s);
        if (len == 0) continue; /* an empty cell is a missing feature */
        switch (c->type) {
        case FEATURE_NUMERIC: {
            char *end;
            errno = 0;
            double d = strtod(s, &end);
            while (*end == ' ') end++;
            if (end == s || *end != '\0')
                return bad_value(c, err, errlen, bad_field, "\"%s\" is not a number", s);
            if (numeric_value(c, d, &e->dense[c->slot]) < 0)
                return bad_value(c, err, errlen, bad_field, "\"%s\" is not finite", s);
            break;
        }
        case FEATURE_BOOLEAN: {
            int b = features_parse_bool(s, len);
            if (b < 0)
                return bad_value(c, err, errlen, bad_field, "\"%s\" is not TRUE/FALSE or 1/0", s);
            e->dense[c->slot] = (float)b;
            break;
        }
        case FEATURE_CATEGORICAL:
            cat[c->slot] = hash_column(c, s, len);
            break;
        }
    }
    return 0;
}

/* ---- the normaliser ---- */

/* The hot loops (every value of every batch, and of every request) are vectorised where
 * the CPU allows.  No ifunc clones in sanitizer builds: their resolvers run before the
 * sanitizer run time is up (ThreadSanitizer crashes there). */
#if defined(INTENTD_NO_CLONES) || defined(__SANITIZE_THREAD__)
#define FEATURES_CLONES
#else
#define FEATURES_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

struct features_norm *features_norm_new(uint32_t ndense)
{
    struct features_norm *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->ndense = ndense;
    size_t k = ndense ? ndense : 1;
    n->count = calloc(k, sizeof(double));
    n->mean = calloc(k, sizeof(double));
    n->m2 = calloc(k, sizeof(double));
    if (!n->count || !n->mean || !n->m2) return features_norm_free(n);
    return n;
}

struct features_norm *features_norm_free(struct features_norm *n)
{
    if (n) {
        free(n->count);
        free(n->mean);
        free(n->m2);
        free(n);
    }
    return NULL;
}

/* The batch kernel: standardises rows (stride bytes apart) into out (B, nd) exactly as
 * features_standardise does, and, when mom is not NULL, sums per column the count, Σ d and
 * Σ d² of d = x - mean over the values present (about the frozen mean, so the sums stay
 * small and single precision is accurate).  Columns go 16 at a time so that the running
 * sums live in vector registers while the rows stream by: one load and one store per value.
 * Vectorised where the CPU allows. */
#define COLS 16
typedef float vcols_f __attribute__((vector_size(4 * COLS)));
typedef int32_t vcols_i __attribute__((vector_size(4 * COLS)));

FEATURES_CLONES static void standardise_rows(uint32_t nd, const float *mean, const float *inv_std,
                                             const char *base, size_t stride, size_t B, float *out,
                                             float *mom)
{
    uint32_t j0 = 0;
    /* GCC's vector extensions, lowered to whatever width the clone has: the same IEEE
     * subtract and multiply as the scalar path, so the results are bit-identical. */
    for (; j0 + COLS <= nd; j0 += COLS) {
        vcols_f m, s, c = {0}, a = {0}, q = {0}, one;
        memcpy(&m, mean + j0, sizeof m);
        memcpy(&s, inv_std + j0, sizeof s);
        for (int t = 0; t < COLS; t++) one[t] = 1.0f;
        for (size_t b = 0; b < B; b++) {
            vcols_f v;
            memcpy(&v, (const float *)(const void *)(base + b * stride) + j0, sizeof v);
            vcols_i ok = v == v; /* all ones where present, 0 where NaN (missing) */
            vcols_f d = v - m;
            vcols_f z = (vcols_f)((vcols_i)(d * s) & ok);
            memcpy(out + b * nd + j0, &z, sizeof z);
            vcols_f dd = (vcols_f)((vcols_i)d & ok);
            c += (vcols_f)((vcols_i)one & ok);
            a += dd;
            q += dd * dd;
        }
        if (mom) {
            memcpy(mom + j0, &c, sizeof c);
            memcpy(mom + nd + j0, &a, sizeof a);
            memcpy(mom + 2 * (size_t)nd + j0, &q, sizeof q);
        }
    }
    for (uint32_t j = j0; j < nd; j++) {
        float m = mean[j], s = inv_std[j], c = 0, a = 0, q = 0;
        for (size_t b = 0; b < B; b++) {
            float v = ((const float *)(const void *)(base + b * stride))[j];
            float d = v - m;
            float z = d * s;
            int ok = v == v;
            out[b * nd + j] = ok ? z : 0.0f;
            float dd = ok ? d : 0.0f;
            c += ok ? 1.0f : 0.0f;
            a += dd;
            q += dd * dd;
        }
        if (mom) mom[j] = c, mom[nd + j] = a, mom[2 * nd + j] = q;
    }
}

void features_standardise_examples(uint32_t ndense, const float *mean, const float *inv_std,
                                   const void *records, size_t stride, size_t B, float *out,
                                   float *moments)
{
    standardise_rows(ndense, mean, inv_std, (const char *)((const struct example *)records)->dense,
                     stride, B, out, moments);
}

void features_norm_merge(struct features_norm *n, const float *mean, const float *moments)
{
    uint32_t nd = n->ndense;
    const float *cnt = moments, *s1 = moments + nd, *s2 = moments + 2 * (size_t)nd;
    /* The batch's own count, mean and M2, then Chan et al.'s pairwise combination — a few
     * divisions per column per batch, not per value. */
    for (uint32_t j = 0; j < nd; j++) {
        if (cnt[j] == 0) continue;
        double nb = cnt[j], na = n->count[j], tot = na + nb;
        double mb = (double)mean[j] + (double)s1[j] / nb;
        double m2b = (double)s2[j] - (double)s1[j] * (double)s1[j] / nb;
        if (m2b < 0) m2b = 0;
        double delta = mb - n->mean[j];
        n->mean[j] += delta * (nb / tot);
        n->m2[j] += m2b + delta * delta * (na * nb / tot);
        n->count[j] = tot;
    }
}

/* Merges B rows (stride bytes apart) into n. */
static void norm_update_rows(struct features_norm *n, const float *x, size_t B, size_t stride)
{
    uint32_t nd = n->ndense;
    float k[CONFIG_MAX_FEATURES] = {0}, one[CONFIG_MAX_FEATURES];
    float mom[3 * CONFIG_MAX_FEATURES];
    for (uint32_t j = 0; j < nd; j++) k[j] = (float)n->mean[j], one[j] = 1.0f;
    for (size_t b0 = 0; b0 < B; b0 += 16) {
        /* The kernel wants somewhere to put the standardised rows: 16 at a time. */
        float out[16 * CONFIG_MAX_FEATURES];
        size_t nb = B - b0 < 16 ? B - b0 : 16;
        standardise_rows(nd, k, one, (const char *)x + b0 * stride, stride, nb, out, mom);
        features_norm_merge(n, k, mom);
        for (uint32_t j = 0; j < nd; j++) k[j] = (float)n->mean[j];
    }
}

void features_norm_update(struct features_norm *n, const float *x, size_t B)
{
    norm_update_rows(n, x, B, sizeof(float) * n->ndense);
}

void features_norm_update_examples(struct features_norm *n, const void *records, size_t stride,
                                   size_t B)
{
    norm_update_rows(n, ((const struct example *)records)->dense, B, stride);
}

void features_norm_freeze(const struct features_norm *n, float *mean, float *inv_std)
{
    for (uint32_t j = 0; j < n->ndense; j++) {
        mean[j] = (float)n->mean[j];
        double var = n->count[j] >= 2.0 ? n->m2[j] / n->count[j] : 0.0;
        double sd = sqrt(var);
        /* A column with no spread (yet) passes through centred, not blown up. */
        inv_std[j] = sd > 1e-12 ? (float)(1.0 / sd) : 1.0f;
    }
}

FEATURES_CLONES void features_standardise(uint32_t ndense, const float *mean, const float *inv_std,
                                          const float *x, float *out)
{
    for (uint32_t j = 0; j < ndense; j++) {
        float v = x[j];
        float z = (v - mean[j]) * inv_std[j];
        out[j] = v == v ? z : 0.0f;
    }
}

size_t features_norm_state_size(const struct features_norm *n)
{
    return sizeof(uint64_t) + 3 * sizeof(double) * (size_t)n->ndense;
}

void features_norm_save(const struct features_norm *n, void *buf)
{
    char *p = buf;
    uint64_t nd = n->ndense;
    memcpy(p, &nd, sizeof nd);
    p += sizeof nd;
    size_t sz = sizeof(double) * (size_t)n->ndense;
    memcpy(p, n->count, sz);
    memcpy(p + sz, n->mean, sz);
    memcpy(p + 2 * sz, n->m2, sz);
}

int features_norm_load(struct features_norm *n, const void *buf, size_t len)
{
    uint64_t nd;
    if (len != features_norm_state_size(n)) return -EINVAL;
    memcpy(&nd, buf, sizeof nd);
    if (nd != n->ndense) return -EINVAL;
    const char *p = (const char *)buf + sizeof nd;
    size_t sz = sizeof(double) * (size_t)n->ndense;
    memcpy(n->count, p, sz);
    memcpy(n->mean, p + sz, sz);
    memcpy(n->m2, p + 2 * sz, sz);
    return 0;
}

const char *features_type_name(enum feature_type t)
{
    return type_name(t);
}
