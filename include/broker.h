/* broker.h — the development broker: librdkafka's mock cluster (rdkafka_mock.h) behind a
 * small interface, shared by `intentd-devbroker` and the daemon's `kafka.brokers: embedded`.
 *
 * The mock cluster speaks the Kafka protocol on loopback listeners (ephemeral ports) and
 * keeps everything in memory: it supports the idempotent producer, consumer groups with
 * offset commits and message headers.  Its limits (librdkafka 2.0.2): each partition keeps
 * at most 5 MiB or 100,000 message sets, dropping the oldest beyond that (the log start
 * offset moves, as retention would); the CreateTopics admin API is not supported, so the
 * topics are created here; a topic nobody created is auto-created on first metadata
 * request with the mock's default partition count, which need not match ours.
 *
 * Thread safety: the functions may be called from any thread; the cluster runs in its own
 * librdkafka threads.
 */
#ifndef INTENTD_BROKER_H
#define INTENTD_BROKER_H

#include <stddef.h>

#define BROKER_MAX_PARTITIONS 1024

struct broker;

/* Starts a mock cluster of one broker listening on 127.0.0.1 and creates each of the ntopics
 * topics with `partitions` partitions (1..BROKER_MAX_PARTITIONS).  Returns the broker (the
 * caller owns it: broker_free), or NULL with err filled. */
struct broker *broker_new(int partitions, const char *const *topics, size_t ntopics, char *err,
                          size_t errlen);

/* Stops the cluster (clients connected to it see the connection drop) and frees it; accepts
 * NULL; returns NULL. */
struct broker *broker_free(struct broker *b);

/* The bootstrap list "HOST:PORT[,HOST:PORT...]"; owned by b, valid until broker_free. */
const char *broker_bootstrap(const struct broker *b);

/* Takes every broker of the cluster down (connections are closed and new ones refused) or
 * brings them back up; the data stays.  For fault tests.  Return 0 or -EIO. */
int broker_set_down(struct broker *b);
int broker_set_up(struct broker *b);

/* Writes bootstrap plus a newline to path atomically: to "path.tmp.PID" first, fsync'd,
 * then renamed over path, so a reader sees either the old file or the complete new one.
 * Returns 0 or a negative errno (the temporary file is removed on failure). */
int broker_write_bootstrap_file(const char *path, const char *bootstrap);

/* Reads a bootstrap list written by broker_write_bootstrap_file (or by hand): the first line
 * with surrounding whitespace trimmed, into buf of len bytes.  Returns 0, -ENOENT etc. for
 * an unreadable file, -EINVAL for an empty one, -ENAMETOOLONG when it does not fit. */
int broker_read_bootstrap_file(const char *path, char *buf, size_t len);

#endif
