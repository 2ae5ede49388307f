/* expo.h — the Prometheus text exposition (format 0.0.4) of /metrics.
 *
 * Renders every metric of DESIGN.md §9 from struct stats (relaxed atomic loads, no lock, so
 * a scrape never blocks the trainer), the served snapshot's version and age, and process
 * metrics read from the kernel.  The whole page is built into one buffer.
 *
 * Conventions: every family has HELP and TYPE lines, counters end in _total, label values
 * are escaped (\\, \", \n), consumer lag and offset-reset series appear only for partitions
 * that are assigned (lag >= 0) or have counted a reset, histograms have cumulative
 * _bucket{le=...}, _sum and _count.
 */
#ifndef INTENTD_EXPO_H
#define INTENTD_EXPO_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"

#define EXPO_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What /metrics says about the served model; the caller fills it from the snapshot it
 * holds (or leaves served = 0 before the first snapshot), so this module needs no
 * snapshot. */
struct expo_model {
    int served;            /* 0: no snapshot yet (version 0, no age sample) */
    uint64_t version;      /* the served snapshot's version */
    uint64_t published_ms; /* wall clock ms when it was published */
};

/* Renders the exposition.  cfg names the topics (label values); m may be NULL (= not
 * served).  Returns a malloc'd NUL-terminated buffer of *len bytes, owned by the caller
 * (free), or NULL when out of memory. */
char *expo_render(const struct stats *s, const struct config *cfg, const struct expo_model *m,
                  size_t *len);

/* Writes v as a label value escaped for the exposition (\\ \" \n) into out (size outlen,
 * always NUL-terminated, truncated if short).  Returns the length it needed without the
 * NUL (like snprintf). */
size_t expo_escape_label(char *out, size_t outlen, const char *v);

/* Formats a sample value: NaN, +Inf, -Inf as Prometheus spells them, else the shortest
 * decimal that reads back as v.  out needs 32 bytes; returns out. */
char *expo_format_double(char out[32], double v);

#endif
