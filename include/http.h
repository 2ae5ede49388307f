/* http.h — the HTTP JSON API (DESIGN.md §7) on libmicrohttpd.
 *
 * Routes: POST /v1/predict, GET /v1/model, GET /healthz, GET /readyz, GET /metrics (GET routes
 * also answer HEAD).  Every answer but /metrics is application/json; errors are
 * {"error": "message"} plus "field" (and "index" for a row of "instances") when one field is
 * at fault: 400 malformed JSON / wrong type / NaN, 404 unknown path, 405 wrong method (with
 * Allow), 413 body over http.max_body (at once from Content-Length, else as soon as the
 * upload passes it) or more than http.max_batch instances, 503 before the first snapshot.
 *
 * Threads: libmicrohttpd's internal pool of http.threads threads, each with its own epoll
 * set, keep-alive, at most http.max_connections connections, and a connection idle for
 * http.connection_timeout (rounded up to seconds) is closed, so no client pins a thread.
 * One more thread accepts and hands each connection to the pool (MHD_add_connection spreads
 * them by descriptor), because the pool on a shared listening socket can put every
 * keep-alive connection of a burst on one worker.
 *
 * Scoring takes the slot's snapshot once at the start of a request and releases it at the
 * end, and encodes with that snapshot's own encoder and normaliser: serving never reads
 * trainer state and never takes a lock.  The single-instance path allocates only what
 * jansson's parse and libmicrohttpd's response object need.
 */
#ifndef INTENTD_HTTP_H
#define INTENTD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"

struct http;
struct snapshot_slot;
struct features;

/* Starts the server on cfg->http.listen ("HOST:PORT", IPv6 as "[::1]:PORT"; port 0 picks a
 * free one, see http_port).  cfg, slot and stats are borrowed and must outlive the server;
 * f (the daemon's encoder, may be NULL) is not used for scoring — each snapshot carries its
 * own — and is kept only for future use.  Returns NULL with err filled when the address does
 * not parse or cannot be bound, or out of memory.  The caller owns the server (http_free). */
struct http *http_new(const struct config *cfg, struct snapshot_slot *slot,
                      const struct features *f, struct stats *stats, char *err, size_t errlen);

/* Stops the server (waits for its threads; in-flight requests finish), frees it; accepts
 * NULL; returns NULL. */
struct http *http_free(struct http *h);

/* The bound TCP port. */
uint16_t http_port(const struct http *h);

/* Writes s as the contents of a JSON string (without the quotes) into out (size cap,
 * always NUL-terminated, truncated if short).  Returns the bytes written without the NUL. */
size_t http_json_escape(char *out, size_t cap, const char *s);

#endif
