/* snapshot.c — immutable model snapshots: construction, scoring, the byte encoding, and
 * the lock-free publication slot.
 *
 * Why the slot is safe (split reference count).  The slot word holds the current pointer P
 * and a ticket count T: readers that have fetched P but have not yet settled their own
 * reference.  A snapshot's `refs` counts the references that live outside the slot word;
 * while P is published it also carries SLOT_BIAS, which stands for the slot's own reference
 * and for every ticket not yet handed over.
 *
 *   acquire:  w = fetch_add(word, 1 ticket)      -- P is pinned: T ≥ 1 now
 *             fetch_add(P->refs, 1)              -- our own reference
 *             give the ticket back: CAS(word, T-1) while the word still holds P; if P was
 *             replaced meanwhile, the publisher hands (or will hand) our ticket over to
 *             P->refs, so we fetch_sub(P->refs, 1) instead.
 *   publish:  P->refs += SLOT_BIAS - 1 (the caller's reference becomes the slot's);
 *             old = exchange(word, new | T=0);  fetch_add(old->refs, T_old - SLOT_BIAS);
 *             whoever brings refs to 0 frees.
 *
 * A reader that saw the swap may give its ticket back (−1) before the publisher's
 * fetch_add(T_old − SLOT_BIAS) lands: refs then under-counts by the tickets in flight,
 * which is why the slot's share is a large bias rather than 1 — until the hand-over refs
 * stays ≥ SLOT_BIAS − (readers in flight) > 0, so P cannot be freed between a reader's
 * load and its increment (the classic race), nor before the publisher is done with it.
 * After the hand-over refs is exact.  Because P stays allocated while a ticket on it is
 * outstanding, its address cannot be reused by a newer snapshot, so comparing pointers in
 * the CAS has no ABA.  T counts only readers inside that few-instruction window, so 16 bits
 * never overflow.  Readers never block or wait for the publisher; the publisher never waits
 * for readers.  Pointers must fit in 48 bits (x86-64 and AArch64 user space).
 */
#include "snapshot.h"
#include "errmsg.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the snapshot encoding writes floats as little-endian memory: port snapshot.c first"
#endif
_Static_assert(sizeof(void *) == 8, "the snapshot slot packs 48-bit pointers in 64 bits");

#define SLOT_PTR_MASK ((UINT64_C(1) << 48) - 1)
#define SLOT_TICKET   (UINT64_C(1) << 48)
#define SLOT_BIAS     (INT64_C(1) << 40)

static _Atomic long live_snapshots;

long snapshot_live(void)
{
    return atomic_load_explicit(&live_snapshots, memory_order_relaxed);
}

static void snapshot_destroy(struct snapshot *s)
{
    atomic_fetch_sub_explicit(&live_snapshots, 1, memory_order_relaxed);
    features_free(s->features);
    free(s->params);
    free(s->mean);
    free(s->inv_std);
    free(s);
}

/* ---- the encoding ---- */

/* A byte sink: counts (buf NULL), writes into buf, and/or feeds a hash. */
struct writer {
    unsigned char *buf;
    size_t pos;
    XXH3_state_t *hash;
};

static void put(struct writer *w, const void *p, size_t n)
{
    if (n == 0) return;
    if (w->buf) memcpy(w->buf + w->pos, p, n);
    if (w->hash) XXH3_128bits_update(w->hash, p, n);
    w->pos += n;
}
static void put_u8(struct writer *w, uint8_t v)
{
    put(w, &v, 1);
}
static void put_u16(struct writer *w, uint16_t v)
{
    put(w, &v, 2);
}
static void put_u32(struct writer *w, uint32_t v)
{
    put(w, &v, 4);
}
static void put_u64(struct writer *w, uint64_t v)
{
    put(w, &v, 8);
}
static void put_f64(struct writer *w, double v)
{
    put(w, &v, 8);
}

static void put_eval(struct writer *w, const struct snapshot_eval *e)
{
    put_f64(w, e->auc);
    put_f64(w, e->logloss);
    put_u64(w, e->n);
}

/* The fingerprinted part: everything that determines a score. */
static void put_model_section(struct writer *w, const struct features *f,
                              const struct model_shape *shape, size_t nparams, const float *params,
                              const float *mean, const float *inv_std)
{
    put_u64(w, FEATURES_HASH_SEED);
    uint32_t ncol = features_ncolumns(f);
    put_u32(w, ncol);
    for (uint32_t i = 0; i < ncol; i++) {
        const struct features_column *c = features_column(f, i);
        size_t len = strlen(c->name);
        put_u8(w, (uint8_t)c->type);
        put_u8(w, (uint8_t)c->transform);
        put_u16(w, (uint16_t)len);
        put_u32(w, c->buckets);
        put(w, c->name, len);
    }
    put_u32(w, shape->ndense);
    put_u32(w, shape->nsparse);
    put_u32(w, shape->ncat);
    put_u32(w, shape->nlayers);
    for (uint32_t i = 0; i <= shape->nlayers; i++) put_u32(w, shape->width[i]);
    put_u32(w, (uint32_t)shape->activation);
    put_u64(w, nparams);
    put(w, mean, sizeof(float) * shape->ndense);
    put(w, inv_std, sizeof(float) * shape->ndense);
    put(w, params, sizeof(float) * nparams);
}

static void hex_of(const XXH128_hash_t *h, char *out)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, *h);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[c.digest[i] >> 4];
        out[2 * i + 1] = digits[c.digest[i] & 15];
    }
    out[32] = '\0';
}

static int shape_matches_features(const struct features *f, const struct model_shape *s)
{
    return s->ndense == features_ndense(f) && s->nsparse == features_nsparse(f) &&
           s->ncat == features_ncat(f) && s->nlayers >= 1 && s->nlayers <= MODEL_MAX_LAYERS &&
           s->width[0] == s->ndense + s->nsparse && s->width[s->nlayers] == 1;
}

struct snapshot *snapshot_new(const struct features *f, const struct model_shape *shape,
                              const float *params, const float *mean, const float *inv_std,
                              const struct snapshot_meta *meta)
{
    if (!shape_matches_features(f, shape)) return NULL;
    struct snapshot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    atomic_fetch_add_explicit(&live_snapshots, 1, memory_order_relaxed);
    atomic_init(&s->refs, 1);
    s->version = meta->version;
    s->created_at_ms = meta->created_at_ms;
    s->trained_examples = meta->trained_examples;
    s->progressive = meta->progressive;
    s->holdout = meta->holdout;
    s->shape = *shape;
    s->nparams = model_nparams(shape);
    uint32_t nd = shape->ndense ? shape->ndense : 1;
    s->features = features_new(features_schema(f), features_ncolumns(f), NULL, 0);
    s->params = malloc(sizeof(float) * (s->nparams ? s->nparams : 1));
    s->mean = malloc(sizeof(float) * nd);
    s->inv_std = malloc(sizeof(float) * nd);
    XXH3_state_t *h = XXH3_createState();
    if (!s->features || !s->params || !s->mean || !s->inv_std || !h) {
        XXH3_freeState(h);
        snapshot_destroy(s);
        return NULL;
    }
    memcpy(s->params, params, sizeof(float) * s->nparams);
    memcpy(s->mean, mean, sizeof(float) * shape->ndense);
    memcpy(s->inv_std, inv_std, sizeof(float) * shape->ndense);
    XXH3_128bits_reset(h);
    struct writer w = {.hash = h};
    put_model_section(&w, s->features, &s->shape, s->nparams, s->params, s->mean, s->inv_std);
    XXH128_hash_t d = XXH3_128bits_digest(h);
    XXH3_freeState(h);
    hex_of(&d, s->fingerprint);
    return s;
}

struct snapshot *snapshot_ref(struct snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

struct snapshot *snapshot_release(struct snapshot *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) snapshot_destroy(s);
    return NULL;
}

float snapshot_score(const struct snapshot *s, const struct example *e)
{
    float x[CONFIG_MAX_FEATURES];
    uint32_t nd = s->shape.ndense;
    features_standardise(nd, s->mean, s->inv_std, e->dense, x);
    return model_predict(&s->shape, s->params, x, example_cat_at_c(e, nd));
}

/* Header: magic, format, reserved, total length. */
#define HEADER_LEN  (8 + 4 + 4 + 8)
#define TRAILER_LEN (16 + 8) /* fingerprint, checksum */

static void encode(const struct snapshot *s, struct writer *w)
{
    put(w, SNAPSHOT_MAGIC, 8);
    put_u32(w, SNAPSHOT_FORMAT);
    put_u32(w, 0);
    size_t total_at = w->pos;
    put_u64(w, 0); /* total length, patched below */
    put_u64(w, s->version);
    put_u64(w, (uint64_t)s->created_at_ms);
    put_u64(w, s->trained_examples);
    put_eval(w, &s->progressive);
    put_eval(w, &s->holdout);
    size_t model_at = w->pos;
    put_model_section(w, s->features, &s->shape, s->nparams, s->params, s->mean, s->inv_std);
    size_t model_end = w->pos;
    if (w->buf) {
        XXH128_hash_t d = XXH3_128bits(w->buf + model_at, model_end - model_at);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, d);
        put(w, c.digest, 16);
        uint64_t total = w->pos + 8;
        memcpy(w->buf + total_at, &total, 8);
        put_u64(w, XXH64(w->buf, w->pos, 0));
    } else {
        w->pos += TRAILER_LEN;
    }
}

size_t snapshot_encoded_size(const struct snapshot *s)
{
    struct writer w = {0};
    encode(s, &w);
    return w.pos;
}

void snapshot_encode_into(const struct snapshot *s, void *buf)
{
    struct writer w = {.buf = buf};
    encode(s, &w);
}

int snapshot_encode(const struct snapshot *s, void **buf, size_t *len)
{
    size_t n = snapshot_encoded_size(s);
    void *b = malloc(n);
    if (!b) return -ENOMEM;
    snapshot_encode_into(s, b);
    *buf = b;
    *len = n;
    return 0;
}

struct reader {
    const unsigned char *p;
    size_t len, pos;
    int short_read;
};

static void get(struct reader *r, void *out, size_t n)
{
    if (r->short_read || r->len - r->pos < n) {
        r->short_read = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
}
static uint8_t get_u8(struct reader *r)
{
    uint8_t v;
    get(r, &v, 1);
    return v;
}
static uint16_t get_u16(struct reader *r)
{
    uint16_t v;
    get(r, &v, 2);
    return v;
}
static uint32_t get_u32(struct reader *r)
{
    uint32_t v;
    get(r, &v, 4);
    return v;
}
static uint64_t get_u64(struct reader *r)
{
    uint64_t v;
    get(r, &v, 8);
    return v;
}
static double get_f64(struct reader *r)
{
    double v;
    get(r, &v, 8);
    return v;
}
static void get_eval(struct reader *r, struct snapshot_eval *e)
{
    e->auc = get_f64(r);
    e->logloss = get_f64(r);
    e->n = get_u64(r);
}

int snapshot_decode(const void *buf, size_t len, struct snapshot **out, char *err, size_t errlen)
{
    *out = NULL;
    const unsigned char *b = buf;
    if (len < HEADER_LEN + TRAILER_LEN || memcmp(b, SNAPSHOT_MAGIC, 8) != 0) {
        errmsg_set(err, errlen, "not a snapshot (bad magic or too short: %zu bytes)", len);
        return -EINVAL;
    }
    struct reader r = {.p = b, .len = len, .pos = 8};
    uint32_t format = get_u32(&r);
    (void)get_u32(&r);
    uint64_t total = get_u64(&r);
    if (format != SNAPSHOT_FORMAT) {
        errmsg_set(err, errlen, "snapshot format %" PRIu32 " is not supported (this build reads %d)",
                format, SNAPSHOT_FORMAT);
        return -EINVAL;
    }
    if (total != len) {
        errmsg_set(err, errlen, "snapshot is %zu bytes, its header says %" PRIu64 " (truncated?)", len,
                total);
        return -EINVAL;
    }
    uint64_t sum;
    memcpy(&sum, b + len - 8, 8);
    if (XXH64(b, len - 8, 0) != sum) {
        errmsg_set(err, errlen, "snapshot checksum mismatch (corrupt)");
        return -EINVAL;
    }
    r.len = len - TRAILER_LEN;

    struct snapshot_meta meta;
    meta.version = get_u64(&r);
    meta.created_at_ms = (int64_t)get_u64(&r);
    meta.trained_examples = get_u64(&r);
    get_eval(&r, &meta.progressive);
    get_eval(&r, &meta.holdout);
    size_t model_at = r.pos;

    uint64_t seed = get_u64(&r);
    if (seed != FEATURES_HASH_SEED) {
        errmsg_set(err, errlen, "snapshot was made with another categorical hash seed");
        return -EINVAL;
    }
    uint32_t ncol = get_u32(&r);
    if (r.short_read || ncol == 0 || ncol > CONFIG_MAX_FEATURES) {
        errmsg_set(err, errlen, "snapshot schema has %" PRIu32 " features", ncol);
        return -EINVAL;
    }
    struct config_feature cols[CONFIG_MAX_FEATURES];
    char *names = malloc(len); /* every name fits in the buffer's length */
    if (!names) {
        errmsg_set(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char *np = names;
    for (uint32_t i = 0; i < ncol && !r.short_read; i++) {
        cols[i].type = (enum feature_type)get_u8(&r);
        cols[i].transform = (enum feature_transform)get_u8(&r);
        uint16_t nlen = get_u16(&r);
        cols[i].buckets = get_u32(&r);
        get(&r, np, nlen);
        np[nlen] = '\0';
        cols[i].name = np;
        np += nlen + 1;
    }
    struct model_shape shape = {0};
    shape.ndense = get_u32(&r);
    shape.nsparse = get_u32(&r);
    shape.ncat = get_u32(&r);
    shape.nlayers = get_u32(&r);
    int bad_shape = shape.nlayers < 1 || shape.nlayers > MODEL_MAX_LAYERS;
    for (uint32_t i = 0; !bad_shape && i <= shape.nlayers; i++) shape.width[i] = get_u32(&r);
    shape.activation = (int)get_u32(&r);
    uint64_t nparams = get_u64(&r);
    if (r.short_read || bad_shape) {
        free(names);
        errmsg_set(err, errlen, "snapshot is truncated or has a bad shape");
        return -EINVAL;
    }
    char ferr[256];
    struct features *f = features_new(cols, ncol, ferr, sizeof ferr);
    free(names);
    if (!f) {
        errmsg_set(err, errlen, "snapshot schema: %s", ferr);
        return -EINVAL;
    }
    if (!shape_matches_features(f, &shape) || nparams != model_nparams(&shape) ||
        shape.activation < ACTIVATION_RELU || shape.activation > ACTIVATION_SIGMOID) {
        features_free(f);
        errmsg_set(err, errlen, "snapshot shape does not match its schema");
        return -EINVAL;
    }
    size_t need = sizeof(float) * (2 * (size_t)shape.ndense + nparams);
    if (r.len - r.pos != need) {
        features_free(f);
        errmsg_set(err, errlen, "snapshot has %zu bytes of weights and statistics, not %zu",
                r.len - r.pos, need);
        return -EINVAL;
    }
    /* The buffer may be unaligned for floats: copy the arrays out before use. */
    float *tmp = malloc(need ? need : 1);
    if (!tmp) {
        features_free(f);
        errmsg_set(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(tmp, b + r.pos, need);
    struct snapshot *s =
        snapshot_new(f, &shape, tmp + 2 * shape.ndense, tmp, tmp + shape.ndense, &meta);
    free(tmp);
    features_free(f);
    if (!s) {
        errmsg_set(err, errlen, "out of memory");
        return -ENOMEM;
    }
    XXH128_hash_t d = XXH3_128bits(b + model_at, r.len - model_at);
    char hex[SNAPSHOT_FINGERPRINT_LEN + 1], stored[SNAPSHOT_FINGERPRINT_LEN + 1];
    hex_of(&d, hex);
    XXH128_canonical_t c;
    memcpy(c.digest, b + r.len, 16);
    XXH128_hash_t sd = XXH128_hashFromCanonical(&c);
    hex_of(&sd, stored);
    if (strcmp(hex, stored) != 0 || strcmp(hex, s->fingerprint) != 0) {
        snapshot_destroy(s);
        errmsg_set(err, errlen, "snapshot fingerprint mismatch (stored %s, computed %s)", stored, hex);
        return -EINVAL;
    }
    *out = s;
    return 0;
}

static const char *transform_name(enum feature_transform t)
{
    return t == TRANSFORM_LOG1P ? "log1p" : "none";
}

int snapshot_check_compatible(const struct features *f, const struct model_shape *shape,
                              const struct features *f2, const struct model_shape *shape2,
                              char *err, size_t errlen)
{
    uint32_t n = features_ncolumns(f), n2 = features_ncolumns(f2);
    for (uint32_t i = 0; i < n && i < n2; i++) {
        const struct features_column *a = features_column(f, i), *b = features_column(f2, i);
        if (strcmp(a->name, b->name) != 0) {
            errmsg_set(err, errlen, "feature %" PRIu32 " is \"%s\", not \"%s\"", i + 1, b->name,
                    a->name);
            return -EINVAL;
        }
        if (a->type != b->type) {
            errmsg_set(err, errlen, "feature \"%s\" is %s, not %s", a->name,
                    features_type_name(b->type), features_type_name(a->type));
            return -EINVAL;
        }
        if (a->transform != b->transform) {
            errmsg_set(err, errlen, "feature \"%s\" has transform %s, not %s", a->name,
                    transform_name(b->transform), transform_name(a->transform));
            return -EINVAL;
        }
        if (a->buckets != b->buckets) {
            errmsg_set(err, errlen, "feature \"%s\" has %" PRIu32 " buckets, not %" PRIu32, a->name,
                    b->buckets, a->buckets);
            return -EINVAL;
        }
    }
    if (n != n2) {
        const struct features_column *extra =
            n2 > n ? features_column(f2, n) : features_column(f, n2);
        errmsg_set(err, errlen, "%" PRIu32 " features, not %" PRIu32 " (feature \"%s\" is %s)", n2, n,
                extra->name, n2 > n ? "extra" : "missing");
        return -EINVAL;
    }
    if (shape->nlayers != shape2->nlayers) {
        errmsg_set(err, errlen, "%" PRIu32 " hidden layers, not %" PRIu32, shape2->nlayers - 1,
                shape->nlayers - 1);
        return -EINVAL;
    }
    for (uint32_t i = 1; i < shape->nlayers; i++) {
        if (shape->width[i] != shape2->width[i]) {
            errmsg_set(err, errlen, "hidden layer %" PRIu32 " has width %" PRIu32 ", not %" PRIu32, i,
                    shape2->width[i], shape->width[i]);
            return -EINVAL;
        }
    }
    if (shape->activation != shape2->activation) {
        static const char *names[] = {"relu", "tanh", "sigmoid"};
        int a = shape->activation, b = shape2->activation;
        errmsg_set(err, errlen, "activation %s, not %s", b >= 0 && b <= 2 ? names[b] : "?",
                a >= 0 && a <= 2 ? names[a] : "?");
        return -EINVAL;
    }
    return 0;
}

/* ---- publication ---- */

void snapshot_slot_init(struct snapshot_slot *slot)
{
    atomic_init(&slot->word, 0);
}

void snapshot_slot_clear(struct snapshot_slot *slot)
{
    uint64_t old = atomic_exchange_explicit(&slot->word, 0, memory_order_acq_rel);
    struct snapshot *o = (struct snapshot *)(uintptr_t)(old & SLOT_PTR_MASK);
    if (o) {
        int64_t delta = (int64_t)(old >> 48) - SLOT_BIAS;
        if (atomic_fetch_add_explicit(&o->refs, delta, memory_order_acq_rel) + delta == 0)
            snapshot_destroy(o);
    }
}

void snapshot_slot_publish(struct snapshot_slot *slot, struct snapshot *s)
{
    uint64_t v = (uint64_t)(uintptr_t)s;
    if (v & ~SLOT_PTR_MASK) abort(); /* a pointer beyond 48 bits: see the top of this file */
    if (s) atomic_fetch_add_explicit(&s->refs, SLOT_BIAS - 1, memory_order_relaxed);
    uint64_t old = atomic_exchange_explicit(&slot->word, v, memory_order_acq_rel);
    struct snapshot *o = (struct snapshot *)(uintptr_t)(old & SLOT_PTR_MASK);
    if (!o) return; /* tickets taken on an empty slot refer to nothing */
    int64_t delta = (int64_t)(old >> 48) - SLOT_BIAS;
    if (atomic_fetch_add_explicit(&o->refs, delta, memory_order_acq_rel) + delta == 0)
        snapshot_destroy(o);
}

struct snapshot *snapshot_slot_acquire(struct snapshot_slot *slot)
{
    uint64_t w = atomic_fetch_add_explicit(&slot->word, SLOT_TICKET, memory_order_acq_rel);
    uintptr_t ptr = (uintptr_t)(w & SLOT_PTR_MASK);
    struct snapshot *s = (struct snapshot *)ptr;
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    /* Give the ticket back. */
    uint64_t cur = atomic_load_explicit(&slot->word, memory_order_relaxed);
    for (;;) {
        if ((cur & SLOT_PTR_MASK) != ptr) {
            /* Replaced: the publisher hands our ticket over to refs (perhaps not yet: the
             * bias covers that); drop it.  We still hold our own, so this never frees. */
            if (s) atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel);
            break;
        }
        if (atomic_compare_exchange_weak_explicit(&slot->word, &cur, cur - SLOT_TICKET,
                                                  memory_order_acq_rel, memory_order_relaxed))
            break;
    }
    return s;
}
