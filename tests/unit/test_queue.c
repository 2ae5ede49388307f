/* Tests of the ingest → trainer queue: capacity, -EAGAIN, forced bursts, barrier order,
 * close, and a two-thread producer/consumer run (clean under SAN=thread). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "queue.h"
#include "unit.h"

struct rec {
    uint64_t seq;
    uint64_t check; /* ~seq: a torn copy would show */
};

static struct rec mk(uint64_t i)
{
    struct rec r = {i, ~i};
    return r;
}

void test_queue_full_eagain_and_low_water(void)
{
    struct queue *q = queue_new(4, sizeof(struct rec));
    CHECK(q);
    CHECK_INT_EQ(queue_capacity(q), 4);
    CHECK_INT_EQ(queue_free_space(q), 4);
    for (uint64_t i = 0; i < 4; i++) {
        struct rec r = mk(i);
        CHECK_INT_EQ(queue_push_example(q, &r), 0);
    }
    struct rec r = mk(99);
    CHECK_INT_EQ(queue_push_example(q, &r), -EAGAIN);
    CHECK_INT_EQ(queue_len(q), 4);
    CHECK_INT_EQ(queue_free_space(q), 0);
    CHECK(!queue_below_low_water(q));

    struct rec out[4];
    size_t n;
    void *p;
    CHECK_INT_EQ(queue_pop(q, 0, out, 1, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(out[0].seq, 0);
    CHECK(!queue_below_low_water(q)); /* 3 of 4 */
    CHECK_INT_EQ(queue_pop(q, 0, out, 1, &n, &p), QUEUE_EXAMPLE);
    CHECK(queue_below_low_water(q)); /* 2 of 4 */
    CHECK_INT_EQ(queue_free_space(q), 2);
    /* The ring wraps: push two more and read everything back in order. */
    for (uint64_t i = 4; i < 6; i++) {
        r = mk(i);
        CHECK_INT_EQ(queue_push_example(q, &r), 0);
    }
    CHECK_INT_EQ(queue_pop(q, 0, out, 4, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(n, 4);
    for (size_t i = 0; i < 4; i++) CHECK_INT_EQ(out[i].seq, i + 2);
    CHECK_INT_EQ(queue_pop(q, 0, out, 4, &n, &p), QUEUE_TIMEOUT);
    CHECK_INT_EQ(queue_pop(q, 30, out, 4, &n, &p), QUEUE_TIMEOUT);
    CHECK(queue_new(0, 8) == NULL);
    CHECK(queue_new(8, 0) == NULL);
    CHECK(queue_free(q) == NULL);
    CHECK(queue_free(NULL) == NULL);
}

void test_queue_force_grows_beyond_capacity_in_order(void)
{
    struct queue *q = queue_new(3, sizeof(struct rec));
    CHECK(q);
    struct rec r = mk(0);
    CHECK_INT_EQ(queue_push_example(q, &r), 0);
    r = mk(1);
    CHECK_INT_EQ(queue_push_example(q, &r), 0);
    struct rec out[16];
    size_t n;
    void *p;
    CHECK_INT_EQ(queue_pop(q, 0, out, 1, &n, &p), QUEUE_EXAMPLE); /* head moves */
    for (uint64_t i = 2; i < 12; i++) {
        r = mk(i);
        CHECK_INT_EQ(queue_push_example_force(q, &r), 0);
    }
    CHECK_INT_EQ(queue_len(q), 11);
    CHECK_INT_EQ(queue_free_space(q), 0);
    r = mk(12);
    CHECK_INT_EQ(queue_push_example(q, &r), -EAGAIN);
    CHECK_INT_EQ(queue_pop(q, 0, out, 16, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(n, 11);
    for (size_t i = 0; i < n; i++) {
        CHECK_INT_EQ(out[i].seq, i + 1);
        CHECK(out[i].check == ~out[i].seq);
    }
    queue_free(q);
}

void test_queue_barriers_keep_fifo_order(void)
{
    struct queue *q = queue_new(2, sizeof(struct rec));
    CHECK(q);
    /* A barrier first, then examples, with the queue full: barriers still go in. */
    char b0[] = "b0", b1[] = "b1", b2[] = "b2";
    CHECK_INT_EQ(queue_push_barrier(q, b0), 0);
    struct rec r = mk(0);
    CHECK_INT_EQ(queue_push_example(q, &r), 0);
    r = mk(1);
    CHECK_INT_EQ(queue_push_example(q, &r), 0);
    CHECK_INT_EQ(queue_push_barrier(q, b1), 0);
    CHECK_INT_EQ(queue_push_barrier(q, b2), 0); /* two barriers in a row */
    CHECK_INT_EQ(queue_push_barrier(q, NULL), -EINVAL);
    r = mk(2);
    CHECK_INT_EQ(queue_push_example(q, &r), -EAGAIN);
    CHECK_INT_EQ(queue_push_example_force(q, &r), 0);
    CHECK_INT_EQ(queue_len(q), 3);
    CHECK_INT_EQ(queue_barriers(q), 3);

    struct rec out[8];
    size_t n;
    void *p;
    CHECK_INT_EQ(queue_pop(q, 0, out, 8, &n, &p), QUEUE_BARRIER);
    CHECK(p == b0);
    CHECK_INT_EQ(n, 0);
    /* A multi-pop stops at the barrier: exactly examples 0 and 1. */
    CHECK_INT_EQ(queue_pop(q, 0, out, 8, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(n, 2);
    CHECK_INT_EQ(out[0].seq, 0);
    CHECK_INT_EQ(out[1].seq, 1);
    CHECK_INT_EQ(queue_pop(q, 0, out, 8, &n, &p), QUEUE_BARRIER);
    CHECK(p == b1);
    CHECK_INT_EQ(queue_pop(q, 0, out, 8, &n, &p), QUEUE_BARRIER);
    CHECK(p == b2);
    CHECK_INT_EQ(queue_pop(q, 0, out, 8, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(out[0].seq, 2);
    CHECK_INT_EQ(queue_barriers(q), 0);

    /* Bounded in number: the next one after QUEUE_MAX_BARRIERS is refused. */
    for (int i = 0; i < QUEUE_MAX_BARRIERS; i++) {
        int *owned = malloc(sizeof *owned);
        CHECK_INT_EQ(queue_push_barrier(q, owned), 0);
    }
    CHECK_INT_EQ(queue_push_barrier(q, b0), -ENOBUFS);
    queue_free(q); /* frees the queued barriers with free() (ASan would report a leak) */
}

void test_queue_close_drains_then_epipe(void)
{
    struct queue *q = queue_new(4, sizeof(struct rec));
    CHECK(q);
    struct rec r = mk(7);
    CHECK_INT_EQ(queue_push_example(q, &r), 0);
    char end[] = "end";
    CHECK_INT_EQ(queue_push_barrier(q, end), 0);
    queue_close(q);
    queue_close(q);
    CHECK_INT_EQ(queue_push_example(q, &r), -EPIPE);
    CHECK_INT_EQ(queue_push_example_force(q, &r), -EPIPE);
    CHECK_INT_EQ(queue_push_barrier(q, end), -EPIPE);
    CHECK_INT_EQ(queue_wait_space(q, -1), -EPIPE);
    struct rec out[4];
    size_t n;
    void *p;
    CHECK_INT_EQ(queue_pop(q, -1, out, 4, &n, &p), QUEUE_EXAMPLE);
    CHECK_INT_EQ(out[0].seq, 7);
    CHECK_INT_EQ(queue_pop(q, -1, out, 4, &n, &p), QUEUE_BARRIER);
    CHECK(p == end);
    CHECK_INT_EQ(queue_pop(q, -1, out, 4, &n, &p), -EPIPE);
    queue_free(q);
}

/* ---- two threads ---- */

#define NPROD 200000

struct run {
    struct queue *q;
    uint64_t next;          /* consumer: next sequence expected */
    uint64_t barriers_seen; /* consumer */
    int bad;                /* consumer: first out-of-order or torn item */
};

static void *consumer(void *arg)
{
    struct run *run = arg;
    struct rec out[37];
    for (;;) {
        size_t n;
        void *p;
        int rc = queue_pop(run->q, -1, out, 37, &n, &p);
        if (rc == -EPIPE) break;
        if (rc == QUEUE_BARRIER) {
            uint64_t at;
            /* Each barrier carries the count of examples pushed before it. */
            memcpy(&at, p, sizeof at);
            if (at != run->next) run->bad = 2;
            run->barriers_seen++;
            free(p);
            continue;
        }
        if (rc != QUEUE_EXAMPLE) {
            run->bad = 3;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (out[i].seq != run->next || out[i].check != ~run->next) run->bad = 4;
            run->next++;
        }
    }
    return NULL;
}

static void *waiter(void *arg)
{
    struct run *run = arg;
    struct rec out[1];
    size_t n;
    void *p;
    run->bad = queue_pop(run->q, -1, out, 1, &n, &p) == -EPIPE ? 0 : 5;
    return NULL;
}

void test_queue_two_threads_order_and_backpressure(void)
{
    struct run run = {0};
    run.q = queue_new(64, sizeof(struct rec));
    CHECK(run.q);
    pthread_t t;
    CHECK_INT_EQ(pthread_create(&t, NULL, consumer, &run), 0);
    uint64_t eagain = 0, barriers = 0;
    for (uint64_t i = 0; i < NPROD;) {
        if (i % 5000 == 0 && i / 5000 > barriers) {
            uint64_t *at = malloc(sizeof *at);
            CHECK(at);
            *at = i;
            int rc = queue_push_barrier(run.q, at);
            if (rc == 0)
                barriers++;
            else
                free(at);
            CHECK(rc == 0 || rc == -ENOBUFS);
        }
        struct rec r = mk(i);
        int rc = queue_push_example(run.q, &r);
        if (rc == -EAGAIN) {
            eagain++;
            /* What ingest does: pause, wait for the low-water mark, resume; every other
             * time through queue_wait_space. */
            if (eagain % 2) {
                CHECK_INT_EQ(queue_wait_space(run.q, -1), 0);
            } else {
                while (!queue_below_low_water(run.q)) sched_yield();
            }
            continue;
        }
        CHECK_INT_EQ(rc, 0);
        i++;
    }
    queue_close(run.q);
    CHECK_INT_EQ(pthread_join(t, NULL), 0);
    CHECK_INT_EQ(run.bad, 0);
    CHECK_INT_EQ(run.next, NPROD);
    CHECK_INT_EQ(run.barriers_seen, barriers);
    CHECK(barriers > 0);
    printf("queue: %llu examples, %llu barriers, %llu -EAGAIN\n", (unsigned long long)NPROD,
           (unsigned long long)barriers, (unsigned long long)eagain);
    queue_free(run.q);

    /* queue_close wakes a consumer blocked without a timeout. */
    struct run w = {0};
    w.q = queue_new(4, sizeof(struct rec));
    w.bad = -1;
    CHECK_INT_EQ(pthread_create(&t, NULL, waiter, &w), 0);
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    queue_close(w.q);
    CHECK_INT_EQ(pthread_join(t, NULL), 0);
    CHECK_INT_EQ(w.bad, 0);
    queue_free(w.q);
}
