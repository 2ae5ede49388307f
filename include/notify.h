/* notify.h — the sd_notify protocol, and a watchdog thread that speaks it.
 *
 * The protocol is the one systemd documents as stable (sd_notify(3), "Notify socket"): one
 * datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET — a filesystem path
 * ("/run/systemd/notify") or an abstract address written with a leading "@".  A message is
 * newline-separated assignments: "READY=1", "RELOADING=1\nMONOTONIC_USEC=...", "STOPPING=1",
 * "WATCHDOG=1", "STATUS=...".  Without $NOTIFY_SOCKET (not started by systemd, or a unit that
 * is not Type=notify) every call is a successful no-op, so the daemon needs no special case.
 *
 * The daemon's sequence (DESIGN.md §4): READY=1 once HTTP listens and the consumer is
 * subscribed; RELOADING=1 (with MONOTONIC_USEC, as systemd 253+ wants for Type=notify-reload)
 * then READY=1 around a SIGHUP reload; STOPPING=1 when SIGTERM arrives.
 *
 * Thread-safety: notify_send may be called from any thread; it reads the environment, so
 * nobody may call setenv/unsetenv while threads run (intentd never does).
 */
#ifndef INTENTD_NOTIFY_H
#define INTENTD_NOTIFY_H

#include <stdint.h>

/* Sends `state` (e.g. "READY=1") as one datagram to $NOTIFY_SOCKET.  Returns 0 when sent or
 * when NOTIFY_SOCKET is unset or empty; -EINVAL for an address that is neither "/..." nor
 * "@..." or does not fit a sockaddr_un (-EAFNOSUPPORT for "vsock:"); else the -errno of
 * socket/sendto (-ENOENT, -ECONNREFUSED when nobody listens).  Never raises SIGPIPE. */
int notify_send(const char *state);

/* As notify_send, with a printf format: notify_sendf("STATUS=model version %llu", v). */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "RELOADING=1\nMONOTONIC_USEC=<now>": systemd 253+ matches the timestamp against its own
 * reload request; older versions ignore the extra field.  Follow with notify_send("READY=1")
 * once the reload is done. */
int notify_reloading(void);

/* The watchdog timeout systemd expects pings within, in microseconds: $WATCHDOG_USEC when it
 * is a positive integer and $WATCHDOG_PID is unset or equals getpid() (the variables may have
 * leaked to a child); else 0, meaning no watchdog is configured. */
uint64_t notify_watchdog_usec(void);

/* The recommended ping interval for a watchdog timeout: half of it, as sd_watchdog_enabled(3)
 * advises, in milliseconds and at least 1; 0 when usec is 0. */
uint64_t notify_watchdog_interval_ms(uint64_t usec);

struct notify_watchdog;

/* Starts a thread that, every interval_ms (> 0), calls alive(ctx) and sends "WATCHDOG=1" only
 * when it returns non-zero.  So a stalled trainer or a dead HTTP server (whatever alive
 * checks) stops the pings and systemd restarts the service after WatchdogSec; pings resume
 * by themselves if alive becomes true again.  alive runs on the watchdog thread and must be
 * thread-safe (e.g. read atomic heartbeats); ctx stays owned by the caller and must outlive
 * the watchdog.  Typical use:
 *
 *     uint64_t usec = notify_watchdog_usec();
 *     if (usec) wd = notify_watchdog_new(notify_watchdog_interval_ms(usec), alive, ctx);
 *
 * Returns NULL with errno set (EINVAL for interval_ms 0 or alive NULL, or pthread's error). */
struct notify_watchdog *notify_watchdog_new(uint64_t interval_ms, int (*alive)(void *), void *ctx);

/* Counters for the daemon's logs (read from any thread): pings sent, ticks at which alive
 * returned 0, and the -errno of the last failed send (0 if none). */
uint64_t notify_watchdog_pings(const struct notify_watchdog *w);
uint64_t notify_watchdog_missed(const struct notify_watchdog *w);
int notify_watchdog_last_error(const struct notify_watchdog *w);

/* Stops the thread (at once, not at the next tick), joins it and frees.  Accepts NULL;
 * returns NULL. */
struct notify_watchdog *notify_watchdog_free(struct notify_watchdog *w);

#endif
