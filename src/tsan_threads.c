/* tsan_threads.c — C11 threads through pthreads, in ThreadSanitizer builds only.
 *
 * Debian's librdkafka starts its threads with C11 thrd_create and locks with mtx_lock /
 * cnd_wait, which gcc 12's libtsan does not intercept: a librdkafka thread then crashes on
 * its first malloc (TSan never set it up), and its locking would be invisible (false races).
 * Defined in the program, these replace glibc's for librdkafka too (symbol interposition)
 * and go through the intercepted pthread calls.  glibc's mtx_t and cnd_t have the layout of
 * pthread_mutex_t and pthread_cond_t (its own C11 functions are these very calls).  What
 * librdkafka does with atomics inside itself is still invisible to TSan (it is not
 * instrumented), so races with a librdkafka frame on the stack are suppressed below.
 *
 * The Makefile links this file in with -Wl,-u,intentd_tsan_threads when SAN has thread;
 * in every other build it is empty.
 */
#if defined(__SANITIZE_THREAD__)
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

int intentd_tsan_threads = 1; /* the symbol the link pulls this file in by */

/* TSan reads this at start-up (its documented hook); TSAN_OPTIONS=suppressions= adds more. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:librdkafka.so.1\n"
           "race:libmicrohttpd.so.12\n";
}

struct shim_start {
    thrd_start_t fn;
    void *arg;
};

static void *shim_run(void *p)
{
    struct shim_start s = *(struct shim_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

static int result(int rc)
{
    if (rc == 0) return thrd_success;
    if (rc == EBUSY) return thrd_busy;
    if (rc == ETIMEDOUT) return thrd_timedout;
    if (rc == ENOMEM || rc == EAGAIN) return thrd_nomem;
    return thrd_error;
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    struct shim_start *s = malloc(sizeof *s);
    if (!s) return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int rc = pthread_create(thr, NULL, shim_run, s);
    if (rc) free(s);
    return result(rc);
}

int thrd_join(thrd_t thr, int *res)
{
    void *r;
    int rc = pthread_join(thr, &r);
    if (rc == 0 && res) *res = (int)(intptr_t)r;
    return result(rc);
}

int thrd_detach(thrd_t thr)
{
    return result(pthread_detach(thr));
}

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive) pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return result(rc);
}

int mtx_lock(mtx_t *m)
{
    return result(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
    return result(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return result(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int mtx_unlock(mtx_t *m)
{
    return result(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return result(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
    return result(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
    return result(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}
#else
typedef int tsan_threads_unused; /* ISO C forbids an empty translation unit */
#endif
