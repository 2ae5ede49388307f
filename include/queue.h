/* queue.h — the bounded queue between the ingest thread (one producer) and the trainer
 * thread (one consumer).
 *
 * It carries two kinds of item in one FIFO order:
 *   - examples: fixed-stride records of example_size bytes, copied in and out;
 *   - barriers: an opaque pointer handed over whole (for the checkpointer: the consumer
 *     offsets ingest had handed over when it pushed the barrier, DESIGN.md §8).  A barrier
 *     popped by the trainer means every example pushed before it was popped before it.
 *
 * Capacity counts examples only.  queue_push_example() refuses (-EAGAIN) once capacity
 * examples are queued, so ingest can pause its partitions and resume them when the queue is
 * below its low-water mark (queue_below_low_water).  The joiner can emit a burst of examples
 * from one event (a watermark jump closes many windows at once); ingest cannot un-consume
 * that event, so queue_push_example_force() accepts such a burst beyond capacity (the
 * storage grows; the burst is bounded by labels.max_pending, so memory stays bounded).
 * Barriers never count toward capacity but at most QUEUE_MAX_BARRIERS can be queued.
 *
 * Thread-safe: a mutex and one condition variable; every call may be made from any thread.
 * This is not on the serving path.
 */
#ifndef INTENTD_QUEUE_H
#define INTENTD_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#define QUEUE_MAX_BARRIERS 64 /* barriers queued at once (checkpoints in flight) */

struct queue;

/* What queue_pop() returned. */
enum queue_item {
    QUEUE_TIMEOUT = 0, /* nothing arrived within the timeout */
    QUEUE_EXAMPLE = 1, /* one or more examples were copied out */
    QUEUE_BARRIER = 2, /* a barrier; it now belongs to the caller */
};

/* Returns an empty queue for up to capacity_examples examples of example_size bytes each
 * (both >= 1), or NULL (out of memory or a zero argument).  Owned by the caller
 * (queue_free). */
struct queue *queue_new(size_t capacity_examples, size_t example_size);

/* Frees q and, with the function set by queue_set_barrier_free (default free()), every
 * barrier still queued; accepts NULL; returns NULL.  No thread may be using q any more. */
struct queue *queue_free(struct queue *q);

/* How queue_free disposes of barriers nobody popped. */
void queue_set_barrier_free(struct queue *q, void (*barrier_free)(void *barrier));

/* Copies example_size bytes from example into the queue.  Never blocks.  Returns 0,
 * -EAGAIN when capacity examples are queued already, or -EPIPE after queue_close. */
int queue_push_example(struct queue *q, const void *example);

/* Like queue_push_example but beyond capacity (grows the storage): for the examples one
 * joiner call emits, which ingest must not drop.  Returns 0, -ENOMEM or -EPIPE. */
int queue_push_example_force(struct queue *q, const void *example);

/* Queues barrier (any non-NULL pointer) after every example pushed so far.  On success the
 * queue owns it until queue_pop hands it on; on failure the caller still owns it.  Returns
 * 0, -EINVAL for NULL, -ENOBUFS when QUEUE_MAX_BARRIERS barriers are queued already (skip
 * this checkpoint; try at the next interval), or -EPIPE after queue_close. */
int queue_push_barrier(struct queue *q, void *barrier);

/* Takes the next item, waiting up to timeout_ms (0: do not wait; < 0: wait for ever).
 *   QUEUE_EXAMPLE: up to max (>= 1) consecutive examples (never across a barrier) were
 *                  copied to examples, which holds max * example_size bytes; *n says how
 *                  many.
 *   QUEUE_BARRIER: *barrier is the pointer queue_push_barrier was given; the caller now
 *                  owns it.  *n is 0.
 *   QUEUE_TIMEOUT: nothing within the timeout.
 *   -EPIPE:        the queue was closed and everything in it has been taken.
 * Items pushed before queue_close are still delivered after it. */
int queue_pop(struct queue *q, int timeout_ms, void *examples, size_t max, size_t *n,
              void **barrier);

/* Waits up to timeout_ms (< 0: for ever) until fewer than capacity examples are queued.
 * Returns 0 when there is room, -ETIMEDOUT, or -EPIPE after queue_close. */
int queue_wait_space(struct queue *q, int timeout_ms);

/* Wakes every waiter and makes pushes fail with -EPIPE; pops drain what is left, then
 * return -EPIPE.  Idempotent. */
void queue_close(struct queue *q);

/* Examples queued now (barriers not counted); may exceed capacity after forced pushes. */
size_t queue_len(struct queue *q);

/* Barriers queued now. */
size_t queue_barriers(struct queue *q);

/* capacity - queue_len, or 0 when at or over capacity. */
size_t queue_free_space(struct queue *q);

size_t queue_capacity(const struct queue *q);

/* True when at most half the capacity is used: where paused partitions are resumed (the gap
 * between full and half full keeps ingest from pausing and resuming on every example). */
bool queue_below_low_water(struct queue *q);

#endif
