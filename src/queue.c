/* queue.c — the bounded example queue between ingest and trainer (see queue.h).
 *
 * Examples sit in one ring of fixed-stride slots; barriers sit in a small ring of their own,
 * each stamped with the number of examples pushed before it.  The head barrier is due when
 * exactly that many examples have been popped, which keeps the FIFO order of the two kinds
 * without interleaving variable-size records in the example ring.
 */
#include "queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct queue_barrier {
    uint64_t pos;  /* examples pushed before this barrier */
    void *barrier; /* the caller's pointer, owned by the queue while queued */
};

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t nonempty; /* signalled on push and on close */
    pthread_cond_t space;    /* signalled when a pop makes room, and on close */
    size_t size;             /* bytes per example */
    size_t capacity;         /* examples accepted by queue_push_example */
    size_t slots;            /* allocated slots in ring, >= capacity (grows on force) */
    unsigned char *ring;     /* slots * size bytes */
    size_t head;             /* slot of the oldest example */
    size_t len;              /* examples queued */
    uint64_t pushed;         /* examples ever pushed */
    uint64_t popped;         /* examples ever popped */
    struct queue_barrier barriers[QUEUE_MAX_BARRIERS];
    size_t bhead;      /* index of the oldest barrier */
    size_t nbarrier;   /* barriers queued */
    int waiters;       /* consumers in cond_wait: skip the signal when none */
    int space_waiters; /* producers in queue_wait_space */
    bool closed;
    void (*barrier_free)(void *barrier);
};

struct queue *queue_new(size_t capacity_examples, size_t example_size)
{
    if (capacity_examples == 0 || example_size == 0) return NULL;
    if (capacity_examples > SIZE_MAX / example_size) return NULL;
    struct queue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->size = example_size;
    q->capacity = capacity_examples;
    q->slots = capacity_examples;
    q->ring = malloc(capacity_examples * example_size);
    pthread_condattr_t ca;
    bool ca_ok = pthread_condattr_init(&ca) == 0;
    /* Timeouts on the monotonic clock, so a wall-clock step cannot stretch a wait. */
    if (ca_ok) ca_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    bool cond_ok = ca_ok && pthread_cond_init(&q->nonempty, &ca) == 0;
    bool space_ok = cond_ok && pthread_cond_init(&q->space, &ca) == 0;
    if (ca_ok) pthread_condattr_destroy(&ca);
    if (!q->ring || !space_ok || pthread_mutex_init(&q->lock, NULL) != 0) {
        if (cond_ok) pthread_cond_destroy(&q->nonempty);
        if (space_ok) pthread_cond_destroy(&q->space);
        free(q->ring);
        free(q);
        return NULL;
    }
    q->barrier_free = free;
    return q;
}

struct queue *queue_free(struct queue *q)
{
    if (!q) return NULL;
    for (size_t i = 0; i < q->nbarrier; i++)
        q->barrier_free(q->barriers[(q->bhead + i) % QUEUE_MAX_BARRIERS].barrier);
    pthread_cond_destroy(&q->nonempty);
    pthread_cond_destroy(&q->space);
    pthread_mutex_destroy(&q->lock);
    free(q->ring);
    free(q);
    return NULL;
}

void queue_set_barrier_free(struct queue *q, void (*barrier_free)(void *barrier))
{
    pthread_mutex_lock(&q->lock);
    q->barrier_free = barrier_free ? barrier_free : free;
    pthread_mutex_unlock(&q->lock);
}

static void wake_locked(struct queue *q)
{
    if (q->waiters > 0) pthread_cond_signal(&q->nonempty);
}

/* Doubles the ring, moving the queued examples to its start.  Called with the lock held. */
static int grow_locked(struct queue *q)
{
    if (q->slots > SIZE_MAX / 2 / q->size) return -ENOMEM;
    size_t nslots = q->slots * 2;
    unsigned char *nring = malloc(nslots * q->size);
    if (!nring) return -ENOMEM;
    size_t first = q->slots - q->head < q->len ? q->slots - q->head : q->len;
    memcpy(nring, q->ring + q->head * q->size, first * q->size);
    memcpy(nring + first * q->size, q->ring, (q->len - first) * q->size);
    free(q->ring);
    q->ring = nring;
    q->slots = nslots;
    q->head = 0;
    return 0;
}

static int push(struct queue *q, const void *example, bool force)
{
    pthread_mutex_lock(&q->lock);
    int rc = 0;
    if (q->closed) {
        rc = -EPIPE;
    } else if (q->len >= q->capacity && !force) {
        rc = -EAGAIN;
    } else if (q->len == q->slots) {
        rc = grow_locked(q);
    }
    if (rc == 0) {
        size_t slot = (q->head + q->len) % q->slots;
        memcpy(q->ring + slot * q->size, example, q->size);
        q->len++;
        q->pushed++;
        wake_locked(q);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int queue_push_example(struct queue *q, const void *example)
{
    return push(q, example, false);
}

int queue_push_example_force(struct queue *q, const void *example)
{
    return push(q, example, true);
}

int queue_push_barrier(struct queue *q, void *barrier)
{
    if (!barrier) return -EINVAL;
    pthread_mutex_lock(&q->lock);
    int rc = 0;
    if (q->closed) {
        rc = -EPIPE;
    } else if (q->nbarrier == QUEUE_MAX_BARRIERS) {
        rc = -ENOBUFS;
    } else {
        struct queue_barrier *b = &q->barriers[(q->bhead + q->nbarrier) % QUEUE_MAX_BARRIERS];
        b->pos = q->pushed;
        b->barrier = barrier; /* now owned by the queue */
        q->nbarrier++;
        wake_locked(q);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int queue_pop(struct queue *q, int timeout_ms, void *examples, size_t max, size_t *n,
              void **barrier)
{
    *n = 0;
    *barrier = NULL;
    if (max == 0) return -EINVAL;
    struct timespec deadline;
    if (timeout_ms > 0) deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&q->lock);
    int rc;
    for (;;) {
        if (q->nbarrier > 0 && q->barriers[q->bhead].pos == q->popped) {
            struct queue_barrier *b = &q->barriers[q->bhead];
            *barrier = b->barrier; /* now owned by the caller */
            b->barrier = NULL;
            q->bhead = (q->bhead + 1) % QUEUE_MAX_BARRIERS;
            q->nbarrier--;
            rc = QUEUE_BARRIER;
            break;
        }
        if (q->len > 0) {
            size_t take = q->len < max ? q->len : max;
            if (q->nbarrier > 0) { /* stop at the next barrier */
                uint64_t until = q->barriers[q->bhead].pos - q->popped;
                if (until < take) take = (size_t)until;
            }
            unsigned char *out = examples;
            for (size_t done = 0; done < take;) {
                size_t run = q->slots - q->head;
                if (run > take - done) run = take - done;
                memcpy(out + done * q->size, q->ring + q->head * q->size, run * q->size);
                q->head = (q->head + run) % q->slots;
                done += run;
            }
            bool was_full = q->len >= q->capacity;
            q->len -= take;
            q->popped += take;
            /* Empty: start over at slot 0, so that the pages the ring touches follow how
             * full it gets, not how many examples went through it (else the RSS climbs
             * until the first wrap-around: capacity × size bytes, 6 MB by default). */
            if (q->len == 0) q->head = 0;
            if (was_full && q->len < q->capacity && q->space_waiters > 0)
                pthread_cond_broadcast(&q->space);
            *n = take;
            rc = QUEUE_EXAMPLE;
            break;
        }
        if (q->closed) {
            rc = -EPIPE;
            break;
        }
        if (timeout_ms == 0) {
            rc = QUEUE_TIMEOUT;
            break;
        }
        q->waiters++;
        int w = timeout_ms < 0 ? pthread_cond_wait(&q->nonempty, &q->lock)
                               : pthread_cond_timedwait(&q->nonempty, &q->lock, &deadline);
        q->waiters--;
        if (w == ETIMEDOUT) timeout_ms = 0; /* one last look, then report the timeout */
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void queue_close(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_cond_broadcast(&q->nonempty);
    pthread_cond_broadcast(&q->space);
    pthread_mutex_unlock(&q->lock);
}

int queue_wait_space(struct queue *q, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms > 0) deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&q->lock);
    int rc;
    for (;;) {
        if (q->closed) {
            rc = -EPIPE;
            break;
        }
        if (q->len < q->capacity) {
            rc = 0;
            break;
        }
        if (timeout_ms == 0) {
            rc = -ETIMEDOUT;
            break;
        }
        q->space_waiters++;
        int w = timeout_ms < 0 ? pthread_cond_wait(&q->space, &q->lock)
                               : pthread_cond_timedwait(&q->space, &q->lock, &deadline);
        q->space_waiters--;
        if (w == ETIMEDOUT) timeout_ms = 0;
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

size_t queue_len(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t queue_barriers(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->nbarrier;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t queue_free_space(struct queue *q)
{
    size_t n = queue_len(q);
    return n >= q->capacity ? 0 : q->capacity - n;
}

size_t queue_capacity(const struct queue *q)
{
    return q->capacity; /* fixed at creation: no lock needed */
}

bool queue_below_low_water(struct queue *q)
{
    return queue_len(q) <= q->capacity / 2;
}
