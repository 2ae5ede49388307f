/* joiner.c — the label join (see joiner.h for the rules).
 *
 * Data structures:
 *   - pending sessions: a hash table by session id (open addressing, linear probing,
 *     backward-shift deletion) and a binary min-heap by (close time, creation seq), so
 *     closing what the watermark passed costs O(closed · log n) and eviction takes the
 *     heap's top;
 *   - held transactions: a hash table of sessions, each with its transactions in arrival
 *     order (a doubly linked list), and a min-heap by (ts, seq) for expiry;
 *   - partitions: a small array sorted by (topic, partition).
 * Outputs depend only on the order of calls and their arguments: heaps break ties by a
 * sequence number, never by address, and hash order is never observable.
 */
#include "joiner.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "features.h"

#define KEY_MAX       65535
#define STATE_MAGIC   0x524e494au /* "JINR" little-endian */
#define STATE_VERSION 1u
#define HASH_SEED     UINT64_C(0x6a6f696e6572) /* any constant: hash order is never observed */

/* ---- saturating event-time arithmetic (times come from producers) ---- */

static int64_t sat_add(int64_t a, uint64_t b)
{
    if (b > (uint64_t)INT64_MAX || a > INT64_MAX - (int64_t)b) return INT64_MAX;
    return a + (int64_t)b;
}

static int64_t sat_sub(int64_t a, uint64_t b)
{
    if (b > (uint64_t)INT64_MAX || a < INT64_MIN + (int64_t)b) return INT64_MIN;
    return a - (int64_t)b;
}

/* ---- heap ---- */

/* Embedded in every heap member. */
struct hitem {
    int64_t key;  /* close time (pending) or ts (held) */
    uint64_t seq; /* creation order: the tie-break */
    size_t idx;   /* position in the heap */
};

struct heap {
    struct hitem **a;
    size_t n, cap;
};

static bool hless(const struct hitem *x, const struct hitem *y)
{
    return x->key < y->key || (x->key == y->key && x->seq < y->seq);
}

static void hset(struct heap *h, size_t i, struct hitem *it)
{
    h->a[i] = it;
    it->idx = i;
}

static void hup(struct heap *h, size_t i)
{
    struct hitem *it = h->a[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(it, h->a[p])) break;
        hset(h, i, h->a[p]);
        i = p;
    }
    hset(h, i, it);
}

static void hdown(struct heap *h, size_t i)
{
    struct hitem *it = h->a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && hless(h->a[c + 1], h->a[c])) c++;
        if (!hless(h->a[c], it)) break;
        hset(h, i, h->a[c]);
        i = c;
    }
    hset(h, i, it);
}

static int hpush(struct heap *h, struct hitem *it)
{
    if (h->n == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        struct hitem **na = realloc(h->a, ncap * sizeof *na);
        if (!na) return -ENOMEM;
        h->a = na;
        h->cap = ncap;
    }
    hset(h, h->n++, it);
    hup(h, h->n - 1);
    return 0;
}

static void hremove(struct heap *h, struct hitem *it)
{
    size_t i = it->idx;
    struct hitem *last = h->a[--h->n];
    if (i == h->n) return;
    hset(h, i, last);
    hup(h, i);
    hdown(h, last->idx);
}

/* After it->key changed. */
static void hfix(struct heap *h, struct hitem *it)
{
    hup(h, it->idx);
    hdown(h, it->idx);
}

static struct hitem *htop(const struct heap *h)
{
    return h->n ? h->a[0] : NULL;
}

/* ---- hash table of nodes keyed by byte strings ---- */

struct hnode {
    uint64_t hash;
    const char *key; /* points into the node's own allocation */
    uint32_t keylen;
};

struct htab {
    struct hnode **slots; /* cap slots, NULL = empty */
    size_t cap;           /* power of two, or 0 */
    size_t n;
};

static uint64_t hkey(const char *key, size_t len)
{
    return XXH3_64bits_withSeed(key, len, HASH_SEED);
}

static struct hnode *ht_find(const struct htab *t, const char *key, size_t len, uint64_t hash)
{
    if (!t->cap) return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct hnode *nd = t->slots[i];
        if (!nd) return NULL;
        if (nd->hash == hash && nd->keylen == len && memcmp(nd->key, key, len) == 0) return nd;
    }
}

static void ht_place(struct hnode **slots, size_t cap, struct hnode *nd)
{
    size_t mask = cap - 1;
    size_t i = nd->hash & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = nd;
}

/* Inserts nd (its key must not be in t).  Keeps the load at most 1/2. */
static int ht_insert(struct htab *t, struct hnode *nd)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct hnode **ns = calloc(ncap, sizeof *ns);
        if (!ns) return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i]) ht_place(ns, ncap, t->slots[i]);
        free(t->slots);
        t->slots = ns;
        t->cap = ncap;
    }
    ht_place(t->slots, t->cap, nd);
    t->n++;
    return 0;
}

/* Removes nd (which is in t): backward-shift deletion, so no tombstones pile up. */
static void ht_remove(struct htab *t, struct hnode *nd)
{
    size_t mask = t->cap - 1;
    size_t i = nd->hash & mask;
    while (t->slots[i] != nd) i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
        struct hnode *m = t->slots[j];
        if (!m) break;
        size_t home = m->hash & mask;
        /* m may move back to i when its home is not in the cyclic range (i, j]. */
        bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = m;
            i = j;
        }
    }
    t->slots[i] = NULL;
    t->n--;
}

/* ---- the joiner ---- */

struct pending {
    struct hnode node; /* keyed by session id */
    struct hitem heap; /* key: last + window */
    int64_t first;     /* smallest click time of the session */
    int64_t last;      /* largest click time: its example is the one kept */
    unsigned char *example;
    /* then: key bytes + NUL, padding, example_size bytes */
};

struct held_session;

struct held {
    struct hitem heap; /* key: ts */
    struct held_session *s;
    struct held *prev, *next; /* the session's transactions in arrival order */
};

struct held_session {
    struct hnode node;
    struct held *head, *tail;
    /* then: key bytes + NUL */
};

struct part {
    int topic;
    int32_t partition;
    bool assigned;
    bool idle;
    bool has_data;    /* max_ts is meaningful */
    bool clock_set;   /* last_ms is meaningful (not after a load, until the next call) */
    int64_t max_ts;   /* largest event time seen */
    uint64_t last_ms; /* caller's clock at the last event or assignment */
};

struct joiner {
    size_t example_size;
    uint64_t window;
    uint64_t lateness;
    uint64_t idle_timeout; /* 0 = never */
    uint64_t max_pending;
    uint64_t max_held;
    joiner_emit_fn emit;
    void *ctx;

    struct htab pending;     /* struct pending by session */
    struct heap closes;      /* struct pending by (close, seq) */
    struct htab held_by_sid; /* struct held_session by session */
    struct heap expiries;    /* struct held by (ts, seq) */
    uint64_t nheld;

    struct part *parts; /* sorted by (topic, partition) */
    size_t nparts, capparts;

    int64_t watermark;
    uint64_t next_seq;
    struct joiner_counts c; /* pending, held_transactions, watermark filled on read */
    unsigned char *scratch; /* example_size bytes: a labelled copy of a caller's example */
};

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

struct joiner *joiner_new(const struct config *cfg, size_t example_size, char *err, size_t errlen)
{
    if (example_size < sizeof(struct example)) {
        snprintf(err, errlen, "joiner: example size %zu is below the %zu bytes of a record",
                 example_size, sizeof(struct example));
        return NULL;
    }
    if (cfg->labels.max_pending == 0) {
        snprintf(err, errlen, "labels.max_pending must be at least 1");
        return NULL;
    }
    struct joiner *j = calloc(1, sizeof *j);
    if (!j || !(j->scratch = malloc(example_size))) {
        free(j);
        snprintf(err, errlen, "joiner: out of memory");
        return NULL;
    }
    j->example_size = example_size;
    j->window = cfg->labels.window_ms;
    j->lateness = cfg->labels.allowed_lateness_ms;
    j->idle_timeout = cfg->labels.idle_timeout_ms;
    j->max_pending = cfg->labels.max_pending;
    j->max_held = cfg->labels.max_pending;
    j->watermark = INT64_MIN;
    return j;
}

static void clear_state(struct joiner *j)
{
    for (size_t i = 0; i < j->closes.n; i++) {
        struct pending *p =
            (struct pending *)((char *)j->closes.a[i] - offsetof(struct pending, heap));
        free(p);
    }
    for (size_t i = 0; i < j->held_by_sid.cap; i++) {
        struct held_session *s = (struct held_session *)j->held_by_sid.slots[i];
        if (!s) continue;
        for (struct held *h = s->head, *nx; h; h = nx) {
            nx = h->next;
            free(h);
        }
        free(s);
    }
    free(j->pending.slots);
    free(j->closes.a);
    free(j->held_by_sid.slots);
    free(j->expiries.a);
    free(j->parts);
}

struct joiner *joiner_free(struct joiner *j)
{
    if (!j) return NULL;
    clear_state(j);
    free(j->scratch);
    free(j);
    return NULL;
}

void joiner_set_emit(struct joiner *j, joiner_emit_fn emit, void *ctx)
{
    j->emit = emit;
    j->ctx = ctx;
}

static struct pending *pending_of_item(struct hitem *it)
{
    return (struct pending *)((char *)it - offsetof(struct pending, heap));
}

static struct held *held_of_item(struct hitem *it)
{
    return (struct held *)((char *)it - offsetof(struct held, heap));
}

/* ---- emitting ---- */

static void emit(struct joiner *j, unsigned char *example, int label)
{
    struct example *e = (struct example *)(void *)example;
    e->label = (float)label;
    if (label)
        j->c.positives++;
    else
        j->c.negatives++;
    if (j->emit) j->emit(j->ctx, example, label);
}

static void pending_drop(struct joiner *j, struct pending *p)
{
    ht_remove(&j->pending, &p->node);
    hremove(&j->closes, &p->heap);
    free(p);
}

static void emit_pending(struct joiner *j, struct pending *p, int label)
{
    emit(j, p->example, label);
    pending_drop(j, p);
}

static void held_drop(struct joiner *j, struct held *h)
{
    struct held_session *s = h->s;
    if (h->prev)
        h->prev->next = h->next;
    else
        s->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        s->tail = h->prev;
    hremove(&j->expiries, &h->heap);
    free(h);
    j->nheld--;
    if (!s->head) {
        ht_remove(&j->held_by_sid, &s->node);
        free(s);
    }
}

/* ---- partitions and the watermark ---- */

static int part_cmp(int ta, int32_t pa, int tb, int32_t pb)
{
    if (ta != tb) return ta < tb ? -1 : 1;
    return pa < pb ? -1 : pa > pb;
}

/* Finds (topic, partition), adding it (unassigned) when add; NULL when absent or full. */
static struct part *part_get(struct joiner *j, int topic, int32_t partition, bool add)
{
    size_t lo = 0, hi = j->nparts;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = part_cmp(j->parts[mid].topic, j->parts[mid].partition, topic, partition);
        if (c == 0) return &j->parts[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!add || j->nparts == JOINER_MAX_PARTITIONS) return NULL;
    if (j->nparts == j->capparts) {
        size_t ncap = j->capparts ? j->capparts * 2 : 16;
        struct part *np = realloc(j->parts, ncap * sizeof *np);
        if (!np) return NULL;
        j->parts = np;
        j->capparts = ncap;
    }
    memmove(&j->parts[lo + 1], &j->parts[lo], (j->nparts - lo) * sizeof *j->parts);
    j->nparts++;
    struct part *p = &j->parts[lo];
    memset(p, 0, sizeof *p);
    p->topic = topic;
    p->partition = partition;
    return p;
}

static bool valid_part(int topic, int32_t partition)
{
    return (topic == TOPIC_CLICKS || topic == TOPIC_TRANSACTIONS) && partition >= 0;
}

/* Raises the watermark to what the partitions allow now (never lowers it). */
static void update_watermark(struct joiner *j)
{
    bool any = false;
    int64_t lo = INT64_MAX;
    for (size_t i = 0; i < j->nparts; i++) {
        const struct part *p = &j->parts[i];
        if (!p->assigned || p->idle) continue;
        any = true;
        int64_t m = p->has_data ? p->max_ts : INT64_MIN;
        if (m < lo) lo = m;
    }
    if (!any || lo == INT64_MIN) return;
    int64_t wm = sat_sub(lo, j->lateness);
    if (wm > j->watermark) j->watermark = wm;
}

/* Emits the negatives and expires the held transactions the watermark has passed. */
static void advance(struct joiner *j)
{
    update_watermark(j);
    struct hitem *it;
    while ((it = htop(&j->closes)) && it->key < j->watermark)
        emit_pending(j, pending_of_item(it), 0);
    while ((it = htop(&j->expiries)) && it->key < j->watermark) {
        held_drop(j, held_of_item(it));
        j->c.unmatched++;
    }
}

/* The event-time and idle bookkeeping of one event. */
static int touch(struct joiner *j, int topic, int32_t partition, int64_t ts, uint64_t now)
{
    if (!valid_part(topic, partition)) return -EINVAL;
    struct part *p = part_get(j, topic, partition, true);
    if (!p) return j->nparts == JOINER_MAX_PARTITIONS ? -ENOSPC : -ENOMEM;
    p->assigned = true;
    p->idle = false;
    p->last_ms = now;
    p->clock_set = true;
    if (!p->has_data || ts > p->max_ts) p->max_ts = ts;
    p->has_data = true;
    return 0;
}

int joiner_assign(struct joiner *j, int topic, int32_t partition, uint64_t now_ms)
{
    if (!valid_part(topic, partition)) return -EINVAL;
    struct part *p = part_get(j, topic, partition, true);
    if (!p) return j->nparts == JOINER_MAX_PARTITIONS ? -ENOSPC : -ENOMEM;
    p->assigned = true;
    p->idle = false;
    p->last_ms = now_ms;
    p->clock_set = true;
    return 0;
}

int joiner_revoke(struct joiner *j, int topic, int32_t partition)
{
    if (!valid_part(topic, partition)) return -EINVAL;
    struct part *p = part_get(j, topic, partition, false);
    if (p) p->assigned = false;
    return 0;
}

void joiner_tick(struct joiner *j, uint64_t now_ms)
{
    for (size_t i = 0; i < j->nparts; i++) {
        struct part *p = &j->parts[i];
        if (!p->clock_set) { /* after a load: the clock starts now */
            p->last_ms = now_ms;
            p->clock_set = true;
        }
        if (p->assigned && !p->idle && j->idle_timeout > 0 && now_ms >= p->last_ms &&
            now_ms - p->last_ms >= j->idle_timeout)
            p->idle = true;
    }
    advance(j);
}

/* ---- events ---- */

static struct pending *pending_new(struct joiner *j, const char *key, size_t len, uint64_t hash,
                                   int64_t ts, const void *example)
{
    size_t off = align8(sizeof(struct pending) + len + 1);
    struct pending *p = malloc(off + j->example_size);
    if (!p) return NULL;
    char *k = (char *)(p + 1);
    memcpy(k, key, len);
    k[len] = '\0';
    p->node = (struct hnode){.hash = hash, .key = k, .keylen = (uint32_t)len};
    p->first = p->last = ts;
    p->example = (unsigned char *)p + off;
    if (example) memcpy(p->example, example, j->example_size);
    p->heap.key = sat_add(ts, j->window);
    p->heap.seq = j->next_seq++;
    return p;
}

/* Links p into both structures; frees it on failure. */
static int pending_link(struct joiner *j, struct pending *p)
{
    if (ht_insert(&j->pending, &p->node) < 0) {
        free(p);
        return -ENOMEM;
    }
    if (hpush(&j->closes, &p->heap) < 0) {
        ht_remove(&j->pending, &p->node);
        free(p);
        return -ENOMEM;
    }
    return 0;
}

/* The first held transaction of the session within [first, last + window], or NULL. */
static struct held *held_match(struct joiner *j, const char *key, size_t len, uint64_t hash,
                               int64_t first, int64_t last)
{
    struct held_session *s = (struct held_session *)ht_find(&j->held_by_sid, key, len, hash);
    if (!s) return NULL;
    int64_t close = sat_add(last, j->window);
    for (struct held *h = s->head; h; h = h->next)
        if (h->heap.key >= first && h->heap.key <= close) return h;
    return NULL;
}

int joiner_add_click(struct joiner *j, int32_t partition, const char *session, size_t len,
                     int64_t ts, int label, const void *example, uint64_t now_ms)
{
    if (len == 0 || len > KEY_MAX || label < -1 || label > 1) return -EINVAL;
    uint64_t hash = hkey(session, len);
    struct pending *p = (struct pending *)ht_find(&j->pending, session, len, hash);
    struct pending *fresh = NULL;
    if (label < 0 && !p) {
        /* Allocate before touching any state, so -ENOMEM leaves the joiner as it was. */
        fresh = pending_new(j, session, len, hash, ts, example);
        if (!fresh) return -ENOMEM;
    }
    int rc = touch(j, TOPIC_CLICKS, partition, ts, now_ms);
    if (rc < 0) {
        free(fresh);
        return rc;
    }
    j->c.clicks++;

    if (label >= 0) {
        memcpy(j->scratch, example, j->example_size);
        j->c.direct++;
        emit(j, j->scratch, label);
        advance(j);
        return 0;
    }

    if (p) {
        j->c.replaced++;
        if (ts >= p->last) {
            memcpy(p->example, example, j->example_size);
            p->last = ts;
            p->heap.key = sat_add(ts, j->window);
            hfix(&j->closes, &p->heap);
        }
        if (ts < p->first) p->first = ts;
        struct held *h = held_match(j, session, len, hash, p->first, p->last);
        if (h) {
            held_drop(j, h);
            j->c.matched_held++;
            emit_pending(j, p, 1);
        }
    } else {
        /* The watermark has not moved yet (only advance moves it). */
        if (sat_add(ts, j->window) < j->watermark) j->c.late_clicks++;
        struct held *h = held_match(j, session, len, hash, ts, ts);
        if (h) { /* its transaction came first: a positive at once, never pending */
            held_drop(j, h);
            j->c.matched_held++;
            emit(j, fresh->example, 1);
            free(fresh);
        } else {
            while (j->pending.n >= j->max_pending) {
                j->c.evicted++;
                emit_pending(j, pending_of_item(htop(&j->closes)), 0);
            }
            rc = pending_link(j, fresh);
            if (rc < 0) return rc;
        }
    }
    advance(j);
    return 0;
}

/* Appends a held transaction (time ts, sequence seq) to its session; no bound, no expiry.
 * Returns 0 or -ENOMEM (nothing changed). */
static int held_add(struct joiner *j, const char *key, size_t len, uint64_t hash, int64_t ts,
                    uint64_t seq)
{
    struct held *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    struct held_session *s = (struct held_session *)ht_find(&j->held_by_sid, key, len, hash);
    if (!s) {
        s = malloc(sizeof *s + len + 1);
        if (!s) {
            free(h);
            return -ENOMEM;
        }
        char *k = (char *)(s + 1);
        memcpy(k, key, len);
        k[len] = '\0';
        s->node = (struct hnode){.hash = hash, .key = k, .keylen = (uint32_t)len};
        s->head = s->tail = NULL;
        if (ht_insert(&j->held_by_sid, &s->node) < 0) {
            free(s);
            free(h);
            return -ENOMEM;
        }
    }
    h->heap.key = ts;
    h->heap.seq = seq;
    if (hpush(&j->expiries, &h->heap) < 0) {
        if (!s->head) {
            ht_remove(&j->held_by_sid, &s->node);
            free(s);
        }
        free(h);
        return -ENOMEM;
    }
    /* The session's list is in seq (arrival) order; a load adds in heap order, so walk
     * back from the tail (new transactions go at the tail at once). */
    struct held *after = s->tail;
    while (after && after->heap.seq > seq) after = after->prev;
    h->s = s;
    h->prev = after;
    h->next = after ? after->next : s->head;
    if (h->next)
        h->next->prev = h;
    else
        s->tail = h;
    if (after)
        after->next = h;
    else
        s->head = h;
    j->nheld++;
    return 0;
}

int joiner_add_transaction(struct joiner *j, int32_t partition, const char *session, size_t len,
                           int64_t ts, uint64_t now_ms)
{
    if (len == 0 || len > KEY_MAX) return -EINVAL;
    uint64_t hash = hkey(session, len);
    int rc = touch(j, TOPIC_TRANSACTIONS, partition, ts, now_ms);
    if (rc < 0) return rc;
    j->c.transactions++;

    struct pending *p = (struct pending *)ht_find(&j->pending, session, len, hash);
    if (p && ts >= p->first && ts <= sat_add(p->last, j->window)) {
        emit_pending(j, p, 1);
        advance(j);
        return 0;
    }

    /* Hold it until its click comes or the watermark passes it (at once when late). */
    if (ts < j->watermark) j->c.late_transactions++;
    while (j->nheld >= j->max_held) {
        held_drop(j, held_of_item(htop(&j->expiries)));
        j->c.unmatched++;
        j->c.held_dropped++;
    }
    rc = held_add(j, session, len, hash, ts, j->next_seq);
    if (rc < 0) return rc;
    j->next_seq++;
    advance(j);
    return 0;
}

int joiner_click(struct joiner *j, int32_t partition, const struct event *ev, const void *example,
                 uint64_t now_ms)
{
    return joiner_add_click(j, partition, ev->session_id, ev->session_len, ev->ts, ev->label,
                            example, now_ms);
}

int joiner_transaction(struct joiner *j, int32_t partition, const struct event *ev, uint64_t now_ms)
{
    return joiner_add_transaction(j, partition, ev->session_id, ev->session_len, ev->ts, now_ms);
}

void joiner_counts(const struct joiner *j, struct joiner_counts *out)
{
    *out = j->c;
    out->pending = j->pending.n;
    out->held_transactions = j->nheld;
    out->watermark = j->watermark;
}

/* ---- checkpoint state ----
 *
 * Little-endian throughout:
 *   u32 magic, u32 version, u64 example_size, i64 watermark, u64 next_seq,
 *   u64 ncounters, ncounters × u64 (struct joiner_counts' counters, in field order),
 *   u32 nparts, nparts × {u8 topic, u8 flags (1 assigned, 2 idle, 4 has_data; a load
 *                         applies has_data only),
 *                         i32 partition, i64 max_ts},
 *   u64 npending, npending × {u64 seq, i64 first, i64 last, u32 keylen, key,
 *                             example_size bytes},
 *   u64 nheld, nheld × {u64 seq, i64 ts, u32 keylen, key}
 */

#define NCOUNTERS 12 /* clicks .. late_transactions */

static uint64_t *counter_at(struct joiner_counts *c, int i)
{
    uint64_t *f[NCOUNTERS] = {&c->clicks,       &c->transactions, &c->positives,
                              &c->negatives,    &c->direct,       &c->evicted,
                              &c->replaced,     &c->matched_held, &c->unmatched,
                              &c->held_dropped, &c->late_clicks,  &c->late_transactions};
    return f[i];
}

struct wbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct wbuf *w, const void *src, size_t n)
{
    if (w->oom) return;
    if (w->len + n > w->cap) {
        size_t ncap = w->cap ? w->cap : 256;
        while (ncap < w->len + n) ncap *= 2;
        unsigned char *np = realloc(w->p, ncap);
        if (!np) {
            w->oom = true;
            return;
        }
        w->p = np;
        w->cap = ncap;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u64(struct wbuf *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    put(w, b, 8);
}

static void put_u32(struct wbuf *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
    put(w, b, 4);
}

static void put_u8(struct wbuf *w, uint8_t v)
{
    put(w, &v, 1);
}

int joiner_save(const struct joiner *j, void **buf, size_t *len)
{
    struct wbuf w = {0};
    put_u32(&w, STATE_MAGIC);
    put_u32(&w, STATE_VERSION);
    put_u64(&w, j->example_size);
    put_u64(&w, (uint64_t)j->watermark);
    put_u64(&w, j->next_seq);
    put_u64(&w, NCOUNTERS);
    struct joiner_counts c = j->c;
    for (int i = 0; i < NCOUNTERS; i++) put_u64(&w, *counter_at(&c, i));
    put_u32(&w, (uint32_t)j->nparts);
    for (size_t i = 0; i < j->nparts; i++) {
        const struct part *p = &j->parts[i];
        put_u8(&w, (uint8_t)p->topic);
        put_u8(&w, (uint8_t)((p->assigned ? 1 : 0) | (p->idle ? 2 : 0) | (p->has_data ? 4 : 0)));
        put_u32(&w, (uint32_t)p->partition);
        put_u64(&w, (uint64_t)p->max_ts);
    }
    /* Both heaps in array order: pushing a heap's array in order rebuilds the same array
     * (no element is less than its parent), so a loaded state saves to the same bytes. */
    put_u64(&w, j->closes.n);
    for (size_t i = 0; i < j->closes.n; i++) {
        const struct pending *p = pending_of_item(j->closes.a[i]);
        put_u64(&w, p->heap.seq);
        put_u64(&w, (uint64_t)p->first);
        put_u64(&w, (uint64_t)p->last);
        put_u32(&w, p->node.keylen);
        put(&w, p->node.key, p->node.keylen);
        put(&w, p->example, j->example_size);
    }
    put_u64(&w, j->nheld);
    for (size_t i = 0; i < j->expiries.n; i++) {
        const struct held *h = held_of_item(j->expiries.a[i]);
        put_u64(&w, h->heap.seq);
        put_u64(&w, (uint64_t)h->heap.key);
        put_u32(&w, h->s->node.keylen);
        put(&w, h->s->node.key, h->s->node.keylen);
    }
    if (w.oom) {
        free(w.p);
        return -ENOMEM;
    }
    *buf = w.p;
    *len = w.len;
    return 0;
}

struct rbuf {
    const unsigned char *p;
    size_t len, off;
    bool bad;
};

static const void *get(struct rbuf *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const void *at = r->p + r->off;
    r->off += n;
    return at;
}

static uint64_t get_u64(struct rbuf *r)
{
    const unsigned char *b = get(r, 8);
    uint64_t v = 0;
    if (b)
        for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static uint32_t get_u32(struct rbuf *r)
{
    const unsigned char *b = get(r, 4);
    uint32_t v = 0;
    if (b)
        for (int i = 0; i < 4; i++) v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static uint8_t get_u8(struct rbuf *r)
{
    const unsigned char *b = get(r, 1);
    return b ? b[0] : 0;
}

static int load_into(struct joiner *j, struct rbuf *r, char *err, size_t errlen)
{
#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -EINVAL;                                                                            \
    } while (0)
    if (get_u32(r) != STATE_MAGIC || r->bad) BAD("joiner state: not a joiner state");
    uint32_t version = get_u32(r);
    if (version != STATE_VERSION)
        BAD("joiner state: version %u, expected %u", version, STATE_VERSION);
    uint64_t es = get_u64(r);
    if (!r->bad && es != j->example_size)
        BAD("joiner state: examples of %llu bytes, this schema has %zu", (unsigned long long)es,
            j->example_size);
    j->watermark = (int64_t)get_u64(r);
    uint64_t next_seq = get_u64(r); /* set last: pending_new below draws numbers */
    uint64_t nc = get_u64(r);
    if (!r->bad && nc != NCOUNTERS)
        BAD("joiner state: %llu counters, expected %d", (unsigned long long)nc, NCOUNTERS);
    for (int i = 0; i < NCOUNTERS; i++) *counter_at(&j->c, i) = get_u64(r);
    uint32_t np = get_u32(r);
    if (np > JOINER_MAX_PARTITIONS) BAD("joiner state: %u partitions", np);
    for (uint32_t i = 0; i < np && !r->bad; i++) {
        int topic = get_u8(r);
        uint8_t flags = get_u8(r);
        int32_t partition = (int32_t)get_u32(r);
        int64_t max_ts = (int64_t)get_u64(r);
        if (r->bad) break;
        if (!valid_part(topic, partition))
            BAD("joiner state: bad partition %d/%d", topic, (int)partition);
        struct part *p = part_get(j, topic, partition, true);
        if (!p) return -ENOMEM;
        /* Assignment and idleness belong to the consumer's session, not to the data: the
         * assignment after a restart (joiner_assign) sets them afresh, and a partition not
         * assigned again must not hold the watermark.  Only the event-time maximum stays. */
        p->assigned = false;
        p->idle = false;
        p->has_data = flags & 4;
        p->max_ts = max_ts;
        p->clock_set = false;
    }
    uint64_t npend = get_u64(r);
    for (uint64_t i = 0; i < npend && !r->bad; i++) {
        uint64_t seq = get_u64(r);
        int64_t first = (int64_t)get_u64(r);
        int64_t last = (int64_t)get_u64(r);
        uint32_t kl = get_u32(r);
        if (r->bad) break;
        if (kl == 0 || kl > KEY_MAX || first > last) BAD("joiner state: bad pending session");
        const char *key = get(r, kl);
        const void *ex = get(r, j->example_size);
        if (r->bad) break;
        uint64_t hash = hkey(key, kl);
        if (ht_find(&j->pending, key, kl, hash)) BAD("joiner state: a session twice");
        struct pending *p = pending_new(j, key, kl, hash, last, ex);
        if (!p) return -ENOMEM;
        p->first = first;
        p->heap.seq = seq;
        if (pending_link(j, p) < 0) return -ENOMEM;
    }
    uint64_t nheld = get_u64(r);
    for (uint64_t i = 0; i < nheld && !r->bad; i++) {
        uint64_t seq = get_u64(r);
        int64_t ts = (int64_t)get_u64(r);
        uint32_t kl = get_u32(r);
        if (r->bad) break;
        if (kl == 0 || kl > KEY_MAX) BAD("joiner state: bad held transaction");
        const char *key = get(r, kl);
        if (r->bad) break;
        if (held_add(j, key, kl, hkey(key, kl), ts, seq) < 0) return -ENOMEM;
    }
    if (r->bad) BAD("joiner state: truncated at byte %zu of %zu", r->off, r->len);
    if (r->off != r->len) BAD("joiner state: %zu bytes after the end", r->len - r->off);
    j->next_seq = next_seq;
    return 0;
#undef BAD
}

int joiner_load(struct joiner *j, const void *buf, size_t len, char *err, size_t errlen)
{
    /* Load into a fresh joiner with j's settings, then swap: j is unchanged on error. */
    struct joiner *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "joiner state: out of memory");
        return -ENOMEM;
    }
    t->example_size = j->example_size;
    t->window = j->window;
    t->lateness = j->lateness;
    t->idle_timeout = j->idle_timeout;
    t->max_pending = j->max_pending;
    t->max_held = j->max_held;
    t->watermark = INT64_MIN;
    struct rbuf r = {.p = buf, .len = len};
    int rc = load_into(t, &r, err, errlen);
    if (rc < 0) {
        if (rc == -ENOMEM) snprintf(err, errlen, "joiner state: out of memory");
        clear_state(t);
        free(t);
        return rc;
    }
    clear_state(j);
    t->emit = j->emit;
    t->ctx = j->ctx;
    t->scratch = j->scratch;
    *j = *t;
    free(t);
    return 0;
}
