/* test_notify.c — the sd_notify messages as a receiver sees them: the test binds the datagram
 * socket systemd would, points NOTIFY_SOCKET at it and reads what arrives.  Each test runs in
 * its own process, so setenv here touches no other test. */
#include "notify.h"
#include "unit.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Binds a datagram socket at `name` ("/path" or "@abstract"), with SO_PASSCRED so each
 * message carries the sender's credentials, as systemd's notify socket does. */
static int bind_notify_socket(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(name);
    CHECK(n < sizeof sa.sun_path);
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@') sa.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    CHECK_INT_EQ(bind(fd, (struct sockaddr *)&sa, len), 0);
    int one = 1;
    CHECK_INT_EQ(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
    CHECK_INT_EQ(setenv("NOTIFY_SOCKET", name, 1), 0);
    return fd;
}

/* Receives one datagram within timeout_ms into buf (NUL-terminated); returns its length, or
 * -1 on timeout.  *pid_out (if given) gets the sender's PID from SCM_CREDENTIALS. */
static int recv_msg(int fd, char *buf, size_t size, int timeout_ms, pid_t *pid_out)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    CHECK(r >= 0);
    if (r == 0) return -1;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(struct ucred))];
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = &control,
                        .msg_controllen = sizeof control};
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
    CHECK(n >= 0);
    buf[n] = '\0';
    if (pid_out) {
        *pid_out = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred cred;
                memcpy(&cred, CMSG_DATA(c), sizeof cred);
                *pid_out = cred.pid;
            }
        }
    }
    return (int)n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void test_notify_unset_is_noop(void)
{
    unsetenv("NOTIFY_SOCKET");
    CHECK_INT_EQ(notify_send("READY=1"), 0);
    CHECK_INT_EQ(notify_reloading(), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    CHECK_INT_EQ(notify_send("STOPPING=1"), 0);
}

void test_notify_bad_address(void)
{
    setenv("NOTIFY_SOCKET", "relative/notify", 1);
    CHECK_INT_EQ(notify_send("READY=1"), -EINVAL);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    CHECK_INT_EQ(notify_send("READY=1"), -EAFNOSUPPORT);
    char path[4096];
    snprintf(path, sizeof path, "/%0200d", 0); /* longer than sun_path */
    setenv("NOTIFY_SOCKET", path, 1);
    CHECK_INT_EQ(notify_send("READY=1"), -EINVAL);
    snprintf(path, sizeof path, "%s/nobody-listens", unit_tmpdir());
    setenv("NOTIFY_SOCKET", path, 1);
    CHECK_INT_EQ(notify_send("READY=1"), -ENOENT);
}

/* The daemon's life as systemd sees it, in order: ready, a reload, ready again, stopping. */
void test_notify_sequence_on_path_socket(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/notify", unit_tmpdir());
    int fd = bind_notify_socket(path);
    CHECK_INT_EQ(notify_send("READY=1"), 0);
    CHECK_INT_EQ(notify_reloading(), 0);
    CHECK_INT_EQ(notify_sendf("STATUS=model version %d", 17), 0);
    CHECK_INT_EQ(notify_send("READY=1"), 0);
    CHECK_INT_EQ(notify_send("STOPPING=1"), 0);

    char buf[512];
    pid_t pid = 0;
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, &pid) > 0);
    CHECK_STR_EQ(buf, "READY=1");
    CHECK_INT_EQ(pid, getpid()); /* how systemd tells the main process's messages apart */
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
    CHECK_STR_HAS(buf, "RELOADING=1\nMONOTONIC_USEC=");
    CHECK(strtoull(strstr(buf, "MONOTONIC_USEC=") + strlen("MONOTONIC_USEC="), NULL, 10) > 0);
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
    CHECK_STR_EQ(buf, "STATUS=model version 17");
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
    CHECK_STR_EQ(buf, "READY=1");
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
    CHECK_STR_EQ(buf, "STOPPING=1");
    CHECK_INT_EQ(recv_msg(fd, buf, sizeof buf, 100, NULL), -1); /* nothing else was sent */
    close(fd);
}

void test_notify_abstract_socket(void)
{
    char name[108];
    snprintf(name, sizeof name, "@intentd-test-notify-%d-%ld", (int)getpid(), (long)time(NULL));
    int fd = bind_notify_socket(name);
    CHECK_INT_EQ(notify_send("READY=1"), 0);
    char buf[64];
    CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
    CHECK_STR_EQ(buf, "READY=1");
    close(fd);
}

void test_notify_watchdog_usec(void)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    CHECK_INT_EQ(notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    CHECK_INT_EQ(notify_watchdog_usec(), 30000000);
    CHECK_INT_EQ(notify_watchdog_interval_ms(notify_watchdog_usec()), 15000);
    setenv("WATCHDOG_PID", pid, 1);
    CHECK_INT_EQ(notify_watchdog_usec(), 30000000);
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    CHECK_INT_EQ(notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", pid, 1);
    const char *bad[] = {"", "0", "-5", "12x", " 12", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        CHECK_INT_EQ(notify_watchdog_usec(), 0);
    }
    CHECK_INT_EQ(notify_watchdog_interval_ms(0), 0);
    CHECK_INT_EQ(notify_watchdog_interval_ms(1), 1);
}

/* The test seam for a stalled trainer: alive() reads a flag the test flips, and counts its
 * calls so the test knows when the watchdog thread has seen the flip. */
struct fake_daemon {
    atomic_int healthy;
    atomic_int calls;
};

static int fake_alive(void *ctx)
{
    struct fake_daemon *d = ctx;
    atomic_fetch_add(&d->calls, 1);
    return atomic_load(&d->healthy);
}

/* Waits (generously) for n WATCHDOG=1 datagrams; fails on anything else. */
static void expect_pings(int fd, int n)
{
    char buf[64];
    for (int i = 0; i < n; i++) {
        CHECK(recv_msg(fd, buf, sizeof buf, 30000, NULL) > 0);
        CHECK_STR_EQ(buf, "WATCHDOG=1");
    }
}

void test_notify_watchdog_pings_only_while_alive(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/notify", unit_tmpdir());
    int fd = bind_notify_socket(path);
    struct fake_daemon d;
    atomic_init(&d.healthy, 1);
    atomic_init(&d.calls, 0);

    struct notify_watchdog *w = notify_watchdog_new(20, fake_alive, &d);
    CHECK(w != NULL);
    expect_pings(fd, 5); /* repeatedly, not once */

    /* Stall: once alive() has been called twice after the flip, a whole tick has passed with
     * alive false, so any ping decided before the flip is already in the socket. */
    atomic_store(&d.healthy, 0);
    int seen = atomic_load(&d.calls);
    double deadline = now_s() + 30;
    while (atomic_load(&d.calls) < seen + 2 && now_s() < deadline) usleep(5000);
    CHECK(atomic_load(&d.calls) >= seen + 2);
    char buf[64];
    while (recv_msg(fd, buf, sizeof buf, 0, NULL) > 0) CHECK_STR_EQ(buf, "WATCHDOG=1");
    uint64_t pings = notify_watchdog_pings(w);
    seen = atomic_load(&d.calls);
    /* Ten more ticks with the trainer stalled: no ping may arrive. */
    while (atomic_load(&d.calls) < seen + 10 && now_s() < deadline + 30) {
        CHECK_INT_EQ(recv_msg(fd, buf, sizeof buf, 20, NULL), -1);
    }
    CHECK(atomic_load(&d.calls) >= seen + 10);
    CHECK_INT_EQ(recv_msg(fd, buf, sizeof buf, 0, NULL), -1);
    CHECK_INT_EQ(notify_watchdog_pings(w), pings);
    CHECK(notify_watchdog_missed(w) >= 10);

    /* Recovered: pings resume by themselves. */
    atomic_store(&d.healthy, 1);
    expect_pings(fd, 2);
    CHECK(notify_watchdog_pings(w) >= pings + 1); /* the 2nd may be counted after its send */
    CHECK_INT_EQ(notify_watchdog_last_error(w), 0);
    CHECK(notify_watchdog_free(w) == NULL);
    close(fd);
}

/* A send that fails (nobody listens any more) is recorded, and the thread carries on. */
void test_notify_watchdog_records_send_errors(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/notify", unit_tmpdir());
    int fd = bind_notify_socket(path);
    close(fd);
    CHECK_INT_EQ(unlink(path), 0);
    struct fake_daemon d;
    atomic_init(&d.healthy, 1);
    atomic_init(&d.calls, 0);
    struct notify_watchdog *w = notify_watchdog_new(10, fake_alive, &d);
    CHECK(w != NULL);
    double deadline = now_s() + 30;
    while (atomic_load(&d.calls) < 3 && now_s() < deadline) usleep(5000);
    CHECK(atomic_load(&d.calls) >= 3);
    CHECK_INT_EQ(notify_watchdog_last_error(w), -ENOENT);
    CHECK_INT_EQ(notify_watchdog_pings(w), 0);
    notify_watchdog_free(w);
}

/* free wakes the thread instead of waiting out its interval (an hour here). */
void test_notify_watchdog_free_is_prompt(void)
{
    unsetenv("NOTIFY_SOCKET");
    struct fake_daemon d;
    atomic_init(&d.healthy, 1);
    atomic_init(&d.calls, 0);
    struct notify_watchdog *w = notify_watchdog_new(3600 * 1000, fake_alive, &d);
    CHECK(w != NULL);
    double deadline = now_s() + 30;
    while (atomic_load(&d.calls) < 1 && now_s() < deadline) usleep(5000);
    CHECK_INT_EQ(atomic_load(&d.calls), 1); /* the first tick is at once */
    double t0 = now_s();
    CHECK(notify_watchdog_free(w) == NULL);
    CHECK(now_s() - t0 < 30); /* far below the hour; generous for a loaded machine */
    CHECK(notify_watchdog_free(NULL) == NULL);
}

void test_notify_watchdog_new_rejects_bad_arguments(void)
{
    struct fake_daemon d;
    errno = 0;
    CHECK(notify_watchdog_new(0, fake_alive, &d) == NULL);
    CHECK_INT_EQ(errno, EINVAL);
    errno = 0;
    CHECK(notify_watchdog_new(10, NULL, &d) == NULL);
    CHECK_INT_EQ(errno, EINVAL);
}
