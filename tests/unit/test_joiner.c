/* Tests of the label join: every rule of DESIGN.md §5 as joiner.h states it, the counts'
 * invariants on a random stream, the 1,908 / 10,422 arithmetic of the shipped data set's
 * shape, and checkpoint save → load → continue giving the uninterrupted output. */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#include "features.h"
#include "joiner.h"
#include "unit.h"

#define EXSIZE (sizeof(struct example) + 8)
#define W      1000 /* window */
#define L      100  /* allowed lateness */
#define T0     INT64_C(1764842400000)

/* What the emit callback saw, in order. */
struct out {
    uint64_t tag[200000]; /* the example's seq field: which click it came from */
    int label[200000];
    size_t n;
};

static void record(void *ctx, const void *example, int label)
{
    struct out *o = ctx;
    const struct example *e = example;
    if (o->n >= sizeof o->tag / sizeof o->tag[0]) unit_fail(__FILE__, __LINE__, "too many");
    if (e->label != (float)label) unit_fail(__FILE__, __LINE__, "label field not set");
    o->tag[o->n] = e->seq;
    o->label[o->n] = label;
    o->n++;
}

static struct config cfg_with(uint64_t max_pending, uint64_t idle_timeout)
{
    struct config c;
    memset(&c, 0, sizeof c);
    c.labels.window_ms = W;
    c.labels.allowed_lateness_ms = L;
    c.labels.idle_timeout_ms = idle_timeout;
    c.labels.max_future_ms = 3600000;
    c.labels.max_pending = max_pending;
    return c;
}

static struct joiner *mk(struct out *o, uint64_t max_pending, uint64_t idle_timeout)
{
    struct config c = cfg_with(max_pending, idle_timeout);
    char err[200];
    struct joiner *j = joiner_new(&c, EXSIZE, err, sizeof err);
    if (!j) unit_fail(__FILE__, __LINE__, "joiner_new: %s", err);
    memset(o, 0, sizeof *o);
    joiner_set_emit(j, record, o);
    return j;
}

static void click(struct joiner *j, int32_t p, const char *sid, int64_t ts, uint64_t tag, int label)
{
    union {
        struct example e;
        unsigned char b[EXSIZE];
    } ex;
    memset(&ex, 0, sizeof ex);
    ex.e.seq = tag;
    ex.e.weight = 1;
    int rc = joiner_add_click(j, p, sid, strlen(sid), ts, label, &ex, 0);
    if (rc) unit_fail(__FILE__, __LINE__, "joiner_add_click: %d", rc);
}

static void txn(struct joiner *j, int32_t p, const char *sid, int64_t ts)
{
    int rc = joiner_add_transaction(j, p, sid, strlen(sid), ts, 0);
    if (rc) unit_fail(__FILE__, __LINE__, "joiner_add_transaction: %d", rc);
}

static struct joiner_counts counts(const struct joiner *j)
{
    struct joiner_counts c;
    joiner_counts(j, &c);
    return c;
}

void test_joiner_direct_labels_bypass_the_table(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 10, 0);
    click(j, 0, "d1", T0, 7, 1);
    click(j, 0, "d2", T0, 8, 0);
    CHECK_INT_EQ(o.n, 2);
    CHECK_INT_EQ(o.tag[0], 7);
    CHECK_INT_EQ(o.label[0], 1);
    CHECK_INT_EQ(o.tag[1], 8);
    CHECK_INT_EQ(o.label[1], 0);
    struct joiner_counts c = counts(j);
    CHECK_INT_EQ(c.direct, 2);
    CHECK_INT_EQ(c.positives, 1);
    CHECK_INT_EQ(c.negatives, 1);
    CHECK_INT_EQ(c.pending, 0);
    /* A transaction of a directly labelled session finds nothing pending: held. */
    txn(j, 0, "d1", T0 + 1);
    CHECK_INT_EQ(counts(j).held_transactions, 1);
    CHECK_INT_EQ(o.n, 2);
    /* Bad arguments change nothing. */
    CHECK_INT_EQ(joiner_add_click(j, 0, "x", 0, T0, -1, &o, 0), -EINVAL);
    CHECK_INT_EQ(joiner_add_click(j, 0, "x", 1, T0, 2, &o, 0), -EINVAL);
    CHECK_INT_EQ(joiner_add_click(j, -1, "x", 1, T0, -1, &o, 0), -EINVAL);
    CHECK_INT_EQ(joiner_assign(j, 5, 0, 0), -EINVAL);
    CHECK_INT_EQ(counts(j).clicks, 2);
    CHECK_INT_EQ(counts(j).pending, 0);
    joiner_free(j);
    char err[200];
    struct config c0 = cfg_with(0, 0);
    CHECK(joiner_new(&c0, EXSIZE, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "max_pending");
    struct config c1 = cfg_with(1, 0);
    CHECK(joiner_new(&c1, 4, err, sizeof err) == NULL);
    CHECK(joiner_free(NULL) == NULL);
}

void test_joiner_window_edges_inclusive(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 10, 0);
    /* One partition per topic.  Windows: [first, last + W], both ends inclusive. */
    click(j, 0, "a", T0, 1, -1);
    click(j, 0, "b", T0, 2, -1);
    click(j, 0, "c", T0 + 10, 3, -1);
    txn(j, 0, "a", T0 + W); /* the last instant of a's window */
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 1);
    CHECK_INT_EQ(o.label[0], 1);
    txn(j, 0, "b", T0 + W + 1); /* 1 ms too late: held, b stays pending */
    CHECK_INT_EQ(o.n, 1);
    txn(j, 0, "c", T0 + 9); /* 1 ms before c's first click: held */
    CHECK_INT_EQ(o.n, 1);
    struct joiner_counts c = counts(j);
    CHECK_INT_EQ(c.positives, 1);
    CHECK_INT_EQ(c.pending, 2);
    CHECK_INT_EQ(c.held_transactions, 2);
    /* A click exactly at the transaction time matches a held one (x in [ts, ts + W]). */
    txn(j, 0, "e", T0 + 20);
    click(j, 0, "e", T0 + 20, 5, -1);
    CHECK_INT_EQ(o.n, 2);
    CHECK_INT_EQ(o.tag[1], 5);
    CHECK_INT_EQ(counts(j).matched_held, 1);
    /* Held a click's window ahead: x = ts + W matches, x = ts + W + 1 does not. */
    txn(j, 0, "f", T0 + 30 + W);
    click(j, 0, "f", T0 + 30, 6, -1);
    CHECK_INT_EQ(o.n, 3);
    txn(j, 0, "g", T0 + 30 + W + 1);
    click(j, 0, "g", T0 + 30, 7, -1);
    CHECK_INT_EQ(o.n, 3);
    CHECK_INT_EQ(counts(j).pending, 3); /* b, c, g */
    joiner_free(j);
}

void test_joiner_watermark_closes_windows_strictly(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 10, 0);
    joiner_assign(j, TOPIC_CLICKS, 0, 0);
    click(j, 0, "a", T0, 1, -1);
    CHECK_INT_EQ(counts(j).watermark, T0 - L);
    /* Watermark T0 + W (= a's close): not passed yet. */
    click(j, 0, "z1", T0 + W + L, 90, -1);
    CHECK_INT_EQ(counts(j).watermark, T0 + W);
    CHECK_INT_EQ(o.n, 0);
    /* One more ms: passed, a is a negative. */
    click(j, 0, "z2", T0 + W + L + 1, 91, -1);
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 1);
    CHECK_INT_EQ(o.label[0], 0);
    /* Late events never move the watermark back. */
    click(j, 0, "late", T0, 92, -1); /* its window closed already: negative at once */
    CHECK_INT_EQ(counts(j).watermark, T0 + W + 1);
    CHECK_INT_EQ(o.n, 2);
    CHECK_INT_EQ(o.tag[1], 92);
    CHECK_INT_EQ(o.label[1], 0);
    /* A late transaction, below the watermark, with no click: unmatched at once. */
    txn(j, 0, "nobody", T0);
    CHECK_INT_EQ(counts(j).unmatched, 1);
    CHECK_INT_EQ(counts(j).held_transactions, 0);
    CHECK_INT_EQ(counts(j).late_clicks, 1);
    CHECK_INT_EQ(counts(j).late_transactions, 1);
    /* A transaction of a pending session still matches by event time, even late. */
    txn(j, 0, "z1", T0 + W + L + 5);
    CHECK_INT_EQ(o.n, 3);
    CHECK_INT_EQ(o.tag[2], 90);
    CHECK_INT_EQ(o.label[2], 1);
    joiner_free(j);
}

void test_joiner_lagging_partition_holds_windows_open(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 100, 0);
    joiner_assign(j, TOPIC_CLICKS, 0, 0);
    joiner_assign(j, TOPIC_CLICKS, 1, 0);
    joiner_assign(j, TOPIC_TRANSACTIONS, 0, 0);
    joiner_assign(j, TOPIC_TRANSACTIONS, 1, 0);
    click(j, 0, "a", T0, 1, -1);
    /* Partition 0 runs far ahead; the others have nothing yet: no window may close. */
    click(j, 0, "b", T0 + 100 * W, 2, -1);
    CHECK_INT_EQ(counts(j).watermark, INT64_MIN);
    CHECK_INT_EQ(o.n, 0);
    click(j, 1, "c", T0 + 100 * W, 3, -1);
    txn(j, 0, "x", T0 + 100 * W);
    CHECK_INT_EQ(o.n, 0); /* transactions partition 1 still holds it */
    txn(j, 1, "y", T0 + 2 * W);
    CHECK_INT_EQ(counts(j).watermark, T0 + 2 * W - L);
    CHECK_INT_EQ(o.n, 1); /* a closed: T0 + W < T0 + 2W - L */
    CHECK_INT_EQ(o.tag[0], 1);
    /* The lagging partition is the minimum; a revoked one stops holding it back. */
    joiner_revoke(j, TOPIC_TRANSACTIONS, 1);
    txn(j, 0, "x2", T0 + 100 * W);
    CHECK_INT_EQ(counts(j).watermark, T0 + 100 * W - L);
    /* Held x, y expire below the watermark; x2 is at it, not below. */
    CHECK_INT_EQ(counts(j).unmatched, 1); /* y; x is at T0+100W > wm */
    /* An assigned partition that has seen nothing holds the watermark where it is. */
    joiner_assign(j, TOPIC_CLICKS, 2, 0);
    click(j, 0, "d", T0 + 200 * W, 4, -1);
    CHECK_INT_EQ(counts(j).watermark, T0 + 100 * W - L);
    joiner_free(j);
}

void test_joiner_idle_partition_stops_holding(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 100, 5000); /* idle after 5 s of the caller's clock */
    joiner_assign(j, TOPIC_CLICKS, 0, 1000);
    joiner_assign(j, TOPIC_CLICKS, 1, 1000);
    union {
        struct example e;
        unsigned char b[EXSIZE];
    } ex;
    memset(&ex, 0, sizeof ex);
    ex.e.seq = 1;
    CHECK_INT_EQ(joiner_add_click(j, 0, "a", 1, T0, -1, &ex, 2000), 0);
    ex.e.seq = 2;
    CHECK_INT_EQ(joiner_add_click(j, 0, "b", 1, T0 + 10 * W, -1, &ex, 3000), 0);
    joiner_tick(j, 5999); /* partition 1: 4999 ms since its assignment */
    CHECK_INT_EQ(o.n, 0);
    CHECK_INT_EQ(counts(j).watermark, INT64_MIN);
    joiner_tick(j, 6000); /* 5000 ms: idle; partition 0 alone sets the watermark */
    CHECK_INT_EQ(counts(j).watermark, T0 + 10 * W - L);
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 1);
    /* Partition 0 idle too (5 s after its last event at 3000): the watermark stays. */
    joiner_tick(j, 8000);
    CHECK_INT_EQ(counts(j).watermark, T0 + 10 * W - L);
    /* Partition 1 comes back behind the watermark: it holds again, but it never goes
     * back; the next event of partition 0 is then held by partition 1. */
    ex.e.seq = 3;
    CHECK_INT_EQ(joiner_add_click(j, 1, "c", 1, T0, -1, &ex, 9000), 0);
    CHECK_INT_EQ(o.n, 2); /* c's window closed long ago: a negative at once */
    ex.e.seq = 4;
    CHECK_INT_EQ(joiner_add_click(j, 0, "d", 1, T0 + 50 * W, -1, &ex, 9000), 0);
    CHECK_INT_EQ(counts(j).watermark, T0 + 10 * W - L);
    CHECK_INT_EQ(o.n, 2); /* b still pending: partition 1 is at T0 */
    joiner_free(j);

    /* idle_timeout 0: never idle, however long. */
    j = mk(&o, 100, 0);
    joiner_assign(j, TOPIC_CLICKS, 0, 0);
    joiner_assign(j, TOPIC_CLICKS, 1, 0);
    click(j, 0, "a", T0, 1, -1);
    click(j, 0, "b", T0 + 10 * W, 2, -1);
    joiner_tick(j, UINT64_C(1) << 60);
    CHECK_INT_EQ(o.n, 0);
    joiner_free(j);
}

void test_joiner_eviction_order_and_counts(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 3, 0);
    click(j, 0, "a", T0 + 10, 1, -1);
    click(j, 0, "b", T0 + 5, 2, -1);
    click(j, 0, "c", T0 + 5, 3, -1); /* same close as b, created later */
    CHECK_INT_EQ(o.n, 0);
    click(j, 0, "d", T0 + 20, 4, -1); /* full: b closes first */
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 2);
    CHECK_INT_EQ(o.label[0], 0);
    click(j, 0, "e", T0 + 30, 5, -1); /* then c (tie with b broken by creation) */
    CHECK_INT_EQ(o.tag[1], 3);
    /* A replacement moves a's close later: now d closes first. */
    click(j, 0, "a", T0 + 40, 6, -1);
    click(j, 0, "f", T0 + 50, 7, -1);
    CHECK_INT_EQ(o.tag[2], 4);
    struct joiner_counts c = counts(j);
    CHECK_INT_EQ(c.evicted, 3);
    CHECK_INT_EQ(c.negatives, 3);
    CHECK_INT_EQ(c.pending, 3);
    CHECK_INT_EQ(c.replaced, 1);
    /* Replacing does not evict. */
    click(j, 0, "f", T0 + 51, 8, -1);
    CHECK_INT_EQ(counts(j).evicted, 3);
    joiner_free(j);
}

void test_joiner_replacement_keeps_the_latest_click(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 10, 0);
    click(j, 0, "a", T0 + 100, 1, -1);
    click(j, 0, "a", T0 + 200, 2, -1); /* later: its features win, window to T0+200+W */
    click(j, 0, "a", T0 + 50, 3, -1);  /* older: only extends the session back */
    click(j, 0, "a", T0 + 200, 4, -1); /* a tie: the later arrival wins */
    CHECK_INT_EQ(counts(j).pending, 1);
    CHECK_INT_EQ(counts(j).replaced, 3);
    txn(j, 0, "a", T0 + 60); /* after the first click, before the last: converted */
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 4);
    CHECK_INT_EQ(o.label[0], 1);
    /* A replacement that brings a held transaction into range matches it. */
    click(j, 0, "b", T0, 5, -1);
    txn(j, 0, "b", T0 + W + 500); /* beyond b's window: held */
    CHECK_INT_EQ(counts(j).held_transactions, 1);
    click(j, 0, "b", T0 + 600, 6, -1);
    CHECK_INT_EQ(o.n, 2);
    CHECK_INT_EQ(o.tag[1], 6);
    CHECK_INT_EQ(counts(j).held_transactions, 0);
    /* Once emitted, a new click of the session starts a new pending episode. */
    click(j, 0, "a", T0 + 300, 7, -1);
    CHECK_INT_EQ(counts(j).pending, 1);
    joiner_free(j);
}

void test_joiner_held_transactions_matched_unmatched_bounded(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 2, 0); /* max_pending 2: also 2 held transactions */
    joiner_assign(j, TOPIC_CLICKS, 0, 0);
    joiner_assign(j, TOPIC_TRANSACTIONS, 0, 0);
    txn(j, 0, "a", T0 + 10);
    txn(j, 0, "a", T0 + 20); /* a second one of the same session */
    CHECK_INT_EQ(counts(j).held_transactions, 2);
    CHECK_INT_EQ(counts(j).watermark, INT64_MIN); /* the clicks partition has nothing */
    txn(j, 0, "b", T0 + 30);                      /* full: a@10 (the next to expire) is dropped */
    struct joiner_counts c = counts(j);
    CHECK_INT_EQ(c.held_transactions, 2);
    CHECK_INT_EQ(c.unmatched, 1);
    CHECK_INT_EQ(c.held_dropped, 1);
    click(j, 0, "a", T0 + 5, 1, -1); /* matches a@20 */
    CHECK_INT_EQ(o.n, 1);
    CHECK_INT_EQ(o.tag[0], 1);
    CHECK_INT_EQ(o.label[0], 1);
    CHECK_INT_EQ(counts(j).matched_held, 1);
    CHECK_INT_EQ(counts(j).pending, 0);
    /* b's click never comes; the watermark passing b's time makes it unmatched. */
    click(j, 0, "z", T0 + 30 + L, 2, -1); /* clicks wm = T0+30, transactions' T0+30-L */
    CHECK_INT_EQ(counts(j).unmatched, 1);
    txn(j, 0, "zz", T0 + 31 + L);         /* min over both topics: T0 + 30 + L - L = T0 + 30 */
    CHECK_INT_EQ(counts(j).unmatched, 1); /* b at T0+30 is not below T0+30 */
    click(j, 0, "z", T0 + 32 + L, 3, -1);
    txn(j, 0, "zzz", T0 + 32 + L);
    c = counts(j);
    CHECK_INT_EQ(c.unmatched, 2); /* b */
    CHECK_INT_EQ(c.transactions, 5);
    joiner_free(j);
}

/* ---- random streams ---- */

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* One step of a random stream over 3 partitions of each topic and 80 sessions. */
struct step {
    int kind; /* 0 click, 1 transaction, 2 tick */
    int32_t part;
    char sid[16];
    int64_t ts;
    int label;
    uint64_t now;
};

static void gen(struct step *s, size_t n, uint64_t seed)
{
    rng_state = seed;
    int64_t clock = T0; /* event time advances for all; each event lags it a little */
    for (size_t i = 0; i < n; i++) {
        struct step *x = &s[i];
        memset(x, 0, sizeof *x);
        uint32_t r = rnd() % 100;
        x->kind = r < 60 ? 0 : r < 95 ? 1 : 2;
        x->part = (int32_t)(rnd() % 3);
        clock += rnd() % 12;
        x->ts = clock - (int64_t)(rnd() % 50) - (rnd() % 10 == 0 ? (int64_t)(rnd() % 400) : 0);
        snprintf(x->sid, sizeof x->sid, "s%u", rnd() % 80);
        x->label = rnd() % 20 == 0 ? (int)(rnd() % 2) : -1;
        x->now = i * 10;
    }
}

static void play(struct joiner *j, const struct step *s, size_t from, size_t to,
                 uint64_t *direct_pos)
{
    for (size_t i = from; i < to; i++) {
        const struct step *x = &s[i];
        union {
            struct example e;
            unsigned char b[EXSIZE];
        } ex;
        memset(&ex, 0, sizeof ex);
        ex.e.seq = i;
        int rc = 0;
        if (x->kind == 0) {
            rc = joiner_add_click(j, x->part, x->sid, strlen(x->sid), x->ts, x->label, &ex, x->now);
            if (direct_pos && x->label == 1) (*direct_pos)++;
        } else if (x->kind == 1) {
            rc = joiner_add_transaction(j, x->part, x->sid, strlen(x->sid), x->ts, x->now);
        } else {
            joiner_tick(j, x->now);
        }
        if (rc) unit_fail(__FILE__, __LINE__, "step %zu: %d", i, rc);
    }
}

#define NSTEPS 60000

/* What ingest's rebalance callback does after a (re)start. */
static void assign_all(struct joiner *j)
{
    for (int t = 0; t < 2; t++)
        for (int p = 0; p < 3; p++) CHECK_INT_EQ(joiner_assign(j, t, p, 0), 0);
}

void test_joiner_counts_invariants_on_a_random_stream(void)
{
    static struct out o;
    static struct step s[NSTEPS];
    gen(s, NSTEPS, 42);
    struct joiner *j = mk(&o, 20, 200); /* small table: evictions and held drops happen */
    for (int t = 0; t < 2; t++)
        for (int p = 0; p < 3; p++) joiner_assign(j, t, p, 0);
    uint64_t direct_pos = 0;
    for (size_t i = 0; i < NSTEPS; i++) {
        play(j, s, i, i + 1, &direct_pos);
        struct joiner_counts c = counts(j);
        /* Every joined click starts an episode or replaces a pending one; every episode is
         * one example or still pending. */
        uint64_t episodes = c.clicks - c.direct - c.replaced;
        if (c.positives + c.negatives - c.direct + c.pending != episodes)
            unit_fail(__FILE__, __LINE__, "step %zu: %llu + %llu - %llu + %llu != %llu", i,
                      (unsigned long long)c.positives, (unsigned long long)c.negatives,
                      (unsigned long long)c.direct, (unsigned long long)c.pending,
                      (unsigned long long)episodes);
        /* Every transaction matched at arrival, matched later, is unmatched or held. */
        uint64_t tx_pos = c.positives - direct_pos - c.matched_held;
        CHECK_INT_EQ(tx_pos + c.matched_held + c.unmatched + c.held_transactions, c.transactions);
        CHECK(c.pending <= 20 && c.held_transactions <= 20);
        CHECK_INT_EQ(c.positives + c.negatives, o.n);
    }
    struct joiner_counts c = counts(j);
    printf("random: %llu clicks, %llu transactions: %llu positives, %llu negatives "
           "(%llu evicted), %llu unmatched (%llu dropped), %llu pending, %llu held\n",
           (unsigned long long)c.clicks, (unsigned long long)c.transactions,
           (unsigned long long)c.positives, (unsigned long long)c.negatives,
           (unsigned long long)c.evicted, (unsigned long long)c.unmatched,
           (unsigned long long)c.held_dropped, (unsigned long long)c.pending,
           (unsigned long long)c.held_transactions);
    fflush(stdout);
    CHECK(c.evicted > 0 && c.held_dropped > 0 && c.matched_held > 0 && c.unmatched > 0);
    CHECK(c.positives > c.direct && c.negatives > c.evicted);
    joiner_free(j);
}

void test_joiner_save_load_continue_is_uninterrupted(void)
{
    static struct out a, b;
    static struct step s[NSTEPS];
    gen(s, NSTEPS, 7);
    /* idle_timeout 0, as bit-identical replays need: idle clocks restart at a load. */
    struct joiner *ja = mk(&a, 50, 0);
    assign_all(ja);
    play(ja, s, 0, NSTEPS, NULL);

    /* Interrupted at several points: save, free, load into a new joiner, go on. */
    size_t cuts[] = {1, 999, 12345, 30000, 59999};
    struct joiner *jb = mk(&b, 50, 0);
    assign_all(jb);
    size_t at = 0;
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        play(jb, s, at, cuts[k], NULL);
        at = cuts[k];
        void *buf;
        size_t len;
        CHECK_INT_EQ(joiner_save(jb, &buf, &len), 0);
        joiner_free(jb);
        struct config c = cfg_with(50, 0);
        char err[200];
        jb = joiner_new(&c, EXSIZE, err, sizeof err);
        CHECK(jb);
        joiner_set_emit(jb, record, &b);
        CHECK_INT_EQ(joiner_load(jb, buf, len, err, sizeof err), 0);
        void *buf2;
        size_t len2;
        CHECK_INT_EQ(joiner_save(jb, &buf2, &len2), 0);
        CHECK_INT_EQ(len2, len);
        /* Once the partitions are assigned again (as the rebalance does), the state saves
         * to the same bytes. */
        assign_all(jb);
        free(buf2);
        CHECK_INT_EQ(joiner_save(jb, &buf2, &len2), 0);
        CHECK_INT_EQ(len2, len);
        CHECK(memcmp(buf, buf2, len) == 0);
        free(buf);
        free(buf2);
    }
    play(jb, s, at, NSTEPS, NULL);
    CHECK_INT_EQ(b.n, a.n);
    for (size_t i = 0; i < a.n; i++) {
        if (a.tag[i] != b.tag[i] || a.label[i] != b.label[i])
            unit_fail(__FILE__, __LINE__, "output %zu: %llu/%d vs %llu/%d", i,
                      (unsigned long long)a.tag[i], a.label[i], (unsigned long long)b.tag[i],
                      b.label[i]);
    }
    struct joiner_counts ca = counts(ja), cb = counts(jb);
    CHECK(memcmp(&ca, &cb, sizeof ca) == 0);
    printf("save/load: %zu outputs identical across %zu restarts\n", a.n,
           sizeof cuts / sizeof cuts[0]);
    joiner_free(ja);
    joiner_free(jb);
}

void test_joiner_load_keeps_maxima_not_assignment(void)
{
    static struct out o;
    struct joiner *j = mk(&o, 10, 0);
    joiner_assign(j, TOPIC_CLICKS, 0, 0);
    joiner_assign(j, TOPIC_CLICKS, 1, 0);
    click(j, 0, "a", T0, 1, -1);
    click(j, 1, "b", T0 + 5 * W, 2, -1);
    CHECK_INT_EQ(counts(j).watermark, T0 - L);
    void *buf;
    size_t len;
    CHECK_INT_EQ(joiner_save(j, &buf, &len), 0);
    static struct out o2;
    struct joiner *k = mk(&o2, 10, 0);
    char err[200];
    CHECK_INT_EQ(joiner_load(k, buf, len, err, sizeof err), 0);
    CHECK_INT_EQ(counts(k).watermark, T0 - L);
    CHECK_INT_EQ(counts(k).pending, 2);
    /* Only partition 1 is assigned after the restart: partition 0 no longer holds the
     * watermark; partition 1's maximum survived the restart. */
    joiner_assign(k, TOPIC_CLICKS, 1, 0);
    joiner_tick(k, 0);
    CHECK_INT_EQ(counts(k).watermark, T0 + 5 * W - L);
    CHECK_INT_EQ(o2.n, 1);
    CHECK_INT_EQ(o2.tag[0], 1);
    free(buf);
    joiner_free(j);
    joiner_free(k);
}

void test_joiner_load_rejects_bad_states(void)
{
    static struct out o;
    static struct step s[2000];
    gen(s, 2000, 3);
    struct joiner *j = mk(&o, 50, 0);
    play(j, s, 0, 2000, NULL);
    struct joiner_counts before = counts(j);
    CHECK(before.pending > 0 && before.held_transactions > 0);
    void *buf;
    size_t len;
    CHECK_INT_EQ(joiner_save(j, &buf, &len), 0);
    char err[200];
    /* Every truncation is refused and leaves j as it was. */
    for (size_t n = 0; n < len; n += (n < 200 ? 1 : 97)) {
        CHECK_INT_EQ(joiner_load(j, buf, n, err, sizeof err), -EINVAL);
    }
    CHECK_STR_HAS(err, "truncated");
    struct joiner_counts after = counts(j);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    /* Trailing bytes, another example size, garbage. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK_INT_EQ(joiner_load(j, longer, len + 1, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "after the end");
    free(longer);
    struct config c = cfg_with(50, 0);
    struct joiner *other = joiner_new(&c, EXSIZE + 8, err, sizeof err);
    CHECK_INT_EQ(joiner_load(other, buf, len, err, sizeof err), -EINVAL);
    CHECK_STR_HAS(err, "bytes");
    joiner_free(other);
    CHECK_INT_EQ(joiner_load(j, "garbage!", 8, err, sizeof err), -EINVAL);
    /* And the good state loads into a joiner with a smaller table, emitting nothing. */
    struct config small = cfg_with(2, 0);
    static struct out o2;
    struct joiner *k = joiner_new(&small, EXSIZE, err, sizeof err);
    joiner_set_emit(k, record, &o2);
    o2.n = 0;
    CHECK_INT_EQ(joiner_load(k, buf, len, err, sizeof err), 0);
    CHECK_INT_EQ(o2.n, 0);
    CHECK_INT_EQ(counts(k).pending, before.pending);
    assign_all(k);
    CHECK_INT_EQ(counts(k).watermark, before.watermark);
    /* A new session at the watermark's front evicts down to the bound. */
    click(k, 0, "brand-new-session", before.watermark + L, 1, -1);
    CHECK_INT_EQ(counts(k).watermark, before.watermark);
    CHECK_INT_EQ(o2.n, before.pending - 1);
    CHECK_INT_EQ(counts(k).pending, 2);
    joiner_free(k);
    free(buf);
    joiner_free(j);
}

/* The acceptance arithmetic on a stream shaped like the shipped CSV replay: 12,330
 * sessions, one click each, 1,908 of them followed a few seconds later by a transaction;
 * both topics on 4 partitions by session hash, consumed in a random interleaving (so
 * transactions often arrive before their clicks). */
void test_joiner_1908_positives_of_12330_sessions(void)
{
    enum { NS = 12330, NPOS = 1908, NP = 4 };
    static struct out o;
    struct config c = cfg_with(1000000, 0);
    c.labels.window_ms = 30 * 60 * 1000;
    c.labels.allowed_lateness_ms = 60 * 1000;
    char err[200];
    struct joiner *j = joiner_new(&c, EXSIZE, err, sizeof err);
    CHECK(j);
    memset(&o, 0, sizeof o);
    joiner_set_emit(j, record, &o);
    for (int t = 0; t < 2; t++)
        for (int p = 0; p < NP; p++) joiner_assign(j, t, p, 0);

    /* Per (topic, partition) queues, each in event-time order. */
    static int q[2][NP][NS];
    int qn[2][NP] = {{0}}, qh[2][NP] = {{0}};
    static char sids[NS][16];
    static int buys[NS];
    rng_state = 2026;
    int chosen = 0;
    for (int i = 0; i < NS; i++) {
        snprintf(sids[i], sizeof sids[i], "r-%d", i);
        /* exactly NPOS buyers, spread over the stream */
        buys[i] = (int)((uint64_t)(NPOS - chosen) * 1000000 / (uint64_t)(NS - i)) >
                  (int)(rnd() % 1000000);
        chosen += buys[i];
        int p = (int)(XXH3_64bits(sids[i], strlen(sids[i])) % NP);
        q[0][p][qn[0][p]++] = i;
        if (buys[i]) q[1][p][qn[1][p]++] = i;
    }
    CHECK_INT_EQ(chosen, NPOS);
    int left = NS + NPOS;
    while (left > 0) {
        int t = (int)(rnd() % 2), p = (int)(rnd() % NP);
        if (qh[t][p] == qn[t][p]) continue;
        int i = q[t][p][qh[t][p]++];
        left--;
        int64_t ts = T0 + (int64_t)i * 1000; /* a second apart */
        if (t == 0) {
            union {
                struct example e;
                unsigned char b[EXSIZE];
            } ex;
            memset(&ex, 0, sizeof ex);
            ex.e.seq = (uint64_t)i;
            CHECK_INT_EQ(joiner_add_click(j, p, sids[i], strlen(sids[i]), ts, -1, &ex, 0), 0);
        } else {
            CHECK_INT_EQ(joiner_add_transaction(j, p, sids[i], strlen(sids[i]), ts + 5000, 0), 0);
        }
    }
    struct joiner_counts jc = counts(j);
    printf("12330 sessions: %llu positives, %llu negatives + %llu pending = %llu, "
           "%llu matched after being held, %llu unmatched\n",
           (unsigned long long)jc.positives, (unsigned long long)jc.negatives,
           (unsigned long long)jc.pending, (unsigned long long)(jc.negatives + jc.pending),
           (unsigned long long)jc.matched_held, (unsigned long long)jc.unmatched);
    CHECK_INT_EQ(jc.positives, 1908);
    CHECK_INT_EQ(jc.negatives + jc.pending, 10422);
    CHECK_INT_EQ(jc.unmatched, 0);
    CHECK_INT_EQ(jc.held_transactions, 0);
    CHECK(jc.matched_held > 0); /* the interleaving did put transactions first */
    CHECK(jc.negatives > 0);    /* and windows did close */
    /* Every positive is a buyer, every negative is not. */
    for (size_t i = 0; i < o.n; i++) CHECK_INT_EQ(o.label[i], buys[o.tag[i]]);
    joiner_free(j);
}
