/* errmsg.h — the caller-provided error buffer of STYLE.md rule 2 ("char *err, size_t errlen"
 * at configuration and start-up boundaries), filled in one place. */
#ifndef INTENTD_ERRMSG_H
#define INTENTD_ERRMSG_H

#include <stddef.h>

/* Formats into err (at most errlen bytes, always terminated); does nothing when err is NULL
 * or errlen is 0, so callers may pass NULL when they do not want the message. */
void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
