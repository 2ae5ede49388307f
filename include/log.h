/* log.h — the one logging facility: one line per record on stderr.
 *
 * Modules do not log (they return errors); threads and main.c do, through LOG().
 * Format: "2026-12-04T07:40:00.123Z info  ingest: message".  The level can change at run
 * time (SIGHUP), so it is an atomic.
 */
#ifndef INTENTD_LOG_H
#define INTENTD_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Returns the level named "debug" | "info" | "warn" | "error", or -1. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG(level, who, ...)                                                                \
    do {                                                                                    \
        if ((level) >= log_get_level()) log_write((level), (who), __VA_ARGS__);             \
    } while (0)

/* A rate limit for repetitive log lines: at most `burst` lines per `period_ms`, then a
 * summary of how many were suppressed.  Not thread-safe: one per thread and purpose. */
struct log_ratelimit {
    uint64_t period_ms;  /* window length */
    uint32_t burst;      /* lines allowed per window */
    uint64_t window_start_ms; /* start of the current window */
    uint32_t printed;    /* lines printed in the current window */
    uint64_t suppressed; /* lines suppressed since the last summary */
};
/* Returns 1 if a line may be printed now; *suppressed_out is set to how many lines were
 * suppressed before it (to mention once), else 0. */
int log_ratelimit_ok(struct log_ratelimit *rl, uint64_t *suppressed_out);

/* Monotonic and wall clocks in milliseconds. */
uint64_t log_now_ms(void);
uint64_t log_wall_ms(void);

#endif
