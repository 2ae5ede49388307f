/* notify.c — see notify.h.  The protocol is written out here rather than taken from
 * libsystemd's sd_notify so that it is visible, testable and costs no dependency at run time;
 * it is the part systemd documents as a stable interface. */
#include "notify.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Fills *sa from $NOTIFY_SOCKET.  Returns the address length, 0 when the variable is unset or
 * empty (nothing to do), or -errno. */
static int notify_address(struct sockaddr_un *sa, socklen_t *len)
{
    const char *e = getenv("NOTIFY_SOCKET");
    if (!e || !*e) return 0;
    if (strncmp(e, "vsock:", 6) == 0) return -EAFNOSUPPORT; /* VMs only; not for a daemon */
    if (e[0] != '/' && e[0] != '@') return -EINVAL;
    size_t n = strlen(e);
    if (n < 2 || n >= sizeof sa->sun_path) return -EINVAL;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, e, n);
    if (e[0] == '@') sa->sun_path[0] = '\0';
    /* An abstract name is exactly n bytes (a trailing NUL would be part of the name); a path
     * is NUL-terminated and may be passed with its terminator. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
    return 1;
}

int notify_send(const char *state)
{
    struct sockaddr_un sa;
    socklen_t salen = 0;
    int r = notify_address(&sa, &salen);
    if (r <= 0) return r;
    if (!state || !*state) return -EINVAL;

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    /* The datagram carries our credentials implicitly (the receiver sets SO_PASSCRED), which
     * is how systemd attributes it to the main PID. */
    ssize_t w;
    do {
        w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    } while (w < 0 && errno == EINTR);
    r = w < 0 ? -errno : ((size_t)w == strlen(state) ? 0 : -EMSGSIZE);
    close(fd);
    return r;
}

int notify_sendf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return -EINVAL;
    if ((size_t)n >= sizeof buf) return -EMSGSIZE;
    return notify_send(buf);
}

int notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return notify_sendf("RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
}

/* Parses a decimal uint64 that fills the whole string; returns 0 on success. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -EINVAL;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -EINVAL;
    *out = v;
    return 0;
}

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0, pid = 0;
    if (parse_u64(getenv("WATCHDOG_USEC"), &usec) < 0 || usec == 0) return 0;
    const char *p = getenv("WATCHDOG_PID");
    if (p && *p) {
        if (parse_u64(p, &pid) < 0 || pid != (uint64_t)getpid()) return 0;
    }
    return usec;
}

uint64_t notify_watchdog_interval_ms(uint64_t usec)
{
    if (usec == 0) return 0;
    uint64_t ms = usec / 2000u;
    return ms ? ms : 1;
}

struct notify_watchdog {
    pthread_t thread;        /* the pinging thread, joined by notify_watchdog_free */
    pthread_mutex_t lock;    /* guards stop, with wake */
    pthread_cond_t wake;     /* signalled by free so the thread does not sleep out its tick */
    int stop;                /* set once, by free */
    uint64_t interval_ms;    /* time between ticks */
    int (*alive)(void *);    /* the caller's health check, run on the thread at every tick */
    void *ctx;               /* alive's argument, owned by the caller */
    _Atomic uint64_t pings;  /* WATCHDOG=1 datagrams sent */
    _Atomic uint64_t missed; /* ticks at which alive returned 0 (no ping sent) */
    _Atomic int last_error;  /* -errno of the last failed send, 0 if none */
};

/* The watchdog thread: its only role is to turn "alive(ctx) is true" into a WATCHDOG=1 ping
 * every interval.  It shares nothing with the daemon but ctx (through alive) and its own
 * atomics. */
static void *watchdog_main(void *arg)
{
    struct notify_watchdog *w = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        pthread_mutex_unlock(&w->lock);
        if (w->alive(w->ctx)) {
            int r = notify_send("WATCHDOG=1");
            if (r < 0)
                atomic_store(&w->last_error, r);
            else
                atomic_fetch_add(&w->pings, 1);
        } else {
            atomic_fetch_add(&w->missed, 1);
        }
        /* Ticks are scheduled on absolute deadlines so a slow alive() does not stretch the
         * interval; if we fell behind by more than a tick, restart from now rather than send
         * a burst. */
        uint64_t ns = (uint64_t)next.tv_nsec + (w->interval_ms % 1000u) * 1000000u;
        next.tv_sec += (time_t)(w->interval_ms / 1000u + ns / 1000000000u);
        next.tv_nsec = (long)(ns % 1000000000u);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
            next = now;
        pthread_mutex_lock(&w->lock);
        while (!w->stop) {
            int r = pthread_cond_timedwait(&w->wake, &w->lock, &next);
            if (r == ETIMEDOUT) break;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct notify_watchdog *notify_watchdog_new(uint64_t interval_ms, int (*alive)(void *), void *ctx)
{
    if (interval_ms == 0 || !alive) {
        errno = EINVAL;
        return NULL;
    }
    struct notify_watchdog *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->interval_ms = interval_ms;
    w->alive = alive;
    w->ctx = ctx;
    atomic_init(&w->pings, 0);
    atomic_init(&w->missed, 0);
    atomic_init(&w->last_error, 0);

    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r == 0) r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* immune to clock steps */
    if (r == 0) r = pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (r != 0) {
        free(w);
        errno = r;
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    r = pthread_create(&w->thread, NULL, watchdog_main, w);
    if (r != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        errno = r;
        return NULL;
    }
    return w;
}

uint64_t notify_watchdog_pings(const struct notify_watchdog *w)
{
    return w ? atomic_load(&w->pings) : 0;
}

uint64_t notify_watchdog_missed(const struct notify_watchdog *w)
{
    return w ? atomic_load(&w->missed) : 0;
}

int notify_watchdog_last_error(const struct notify_watchdog *w)
{
    return w ? atomic_load(&w->last_error) : 0;
}

struct notify_watchdog *notify_watchdog_free(struct notify_watchdog *w)
{
    if (!w) return NULL;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return NULL;
}
