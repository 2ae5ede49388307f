/* broker.c — the development broker on librdkafka's mock cluster (see broker.h). */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* One broker is enough for development: the mock's brokers share one process and one
 * memory, so more would only add connections.  The fault functions loop over the ids so
 * that raising this stays correct. */
#define BROKER_COUNT 1

struct broker {
    rd_kafka_t *rk;              /* bookkeeping handle the cluster lives in; owns mc */
    rd_kafka_mock_cluster_t *mc; /* the cluster; destroyed before rk */
    char *bootstrap;             /* copy of the cluster's bootstrap list */
};

/* The bookkeeping handle never connects anywhere; its only log lines are the mock's own
 * debug chatter and "no bootstrap.servers", which would be noise: modules do not log. */
static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

struct broker *broker_new(int partitions, const char *const *topics, size_t ntopics, char *err,
                          size_t errlen)
{
    char errstr[512];
    struct broker *b;
    rd_kafka_conf_t *conf;

    if (partitions < 1 || partitions > BROKER_MAX_PARTITIONS) {
        snprintf(err, errlen, "partitions must be between 1 and %d, not %d", BROKER_MAX_PARTITIONS,
                 partitions);
        return NULL;
    }
    for (size_t i = 0; i < ntopics; i++) {
        if (!topics[i] || !topics[i][0]) {
            snprintf(err, errlen, "topic names must not be empty");
            return NULL;
        }
    }
    b = calloc(1, sizeof(*b));
    conf = rd_kafka_conf_new();
    if (!b || !conf) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    if (rd_kafka_conf_set(conf, "client.id", "intentd-broker", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "mock cluster handle: %s", errstr);
        goto fail;
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!b->rk) {
        snprintf(err, errlen, "mock cluster handle: %s", errstr);
        goto fail;
    }
    conf = NULL; /* now owned by b->rk */
    b->mc = rd_kafka_mock_cluster_new(b->rk, BROKER_COUNT);
    if (!b->mc) {
        snprintf(err, errlen, "cannot start the mock Kafka cluster (no loopback listener?)");
        goto fail;
    }
    for (size_t i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(b->mc, topics[i], partitions, 1);
        if (e) {
            snprintf(err, errlen, "cannot create topic \"%s\": %s", topics[i], rd_kafka_err2str(e));
            goto fail;
        }
    }
    b->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(b->mc));
    if (!b->bootstrap) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return b;

fail:
    if (conf) rd_kafka_conf_destroy(conf);
    return broker_free(b);
}

struct broker *broker_free(struct broker *b)
{
    if (!b) return NULL;
    if (b->mc) rd_kafka_mock_cluster_destroy(b->mc);
    if (b->rk) rd_kafka_destroy(b->rk);
    free(b->bootstrap);
    free(b);
    return NULL;
}

const char *broker_bootstrap(const struct broker *b)
{
    return b->bootstrap;
}

static int broker_set_state(struct broker *b, int up)
{
    int rc = 0;
    /* Broker ids of the mock start at 1. */
    for (int32_t id = 1; id <= BROKER_COUNT; id++) {
        rd_kafka_resp_err_t e =
            up ? rd_kafka_mock_broker_set_up(b->mc, id) : rd_kafka_mock_broker_set_down(b->mc, id);
        if (e) rc = -EIO;
    }
    return rc;
}

int broker_set_down(struct broker *b)
{
    return broker_set_state(b, 0);
}

int broker_set_up(struct broker *b)
{
    return broker_set_state(b, 1);
}

int broker_write_bootstrap_file(const char *path, const char *bootstrap)
{
    char tmp[PATH_MAX];
    size_t len = strlen(bootstrap), off = 0;
    int fd, rc = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    while (off <= len && rc == 0) {
        /* The bootstrap list, then its newline, as one stream. */
        const char *p = off < len ? bootstrap + off : "\n";
        size_t n = off < len ? len - off : 1;
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0)
            rc = -errno;
        else
            off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0) rc = -errno;
    if (close(fd) < 0 && rc == 0) rc = -errno;
    /* No fsync of the folder after the rename: the address dies with the process anyway,
     * the rename is there so that a reader never sees a half-written list. */
    if (rc == 0 && rename(tmp, path) < 0) rc = -errno;
    if (rc != 0) unlink(tmp);
    return rc;
}

int broker_read_bootstrap_file(const char *path, char *buf, size_t len)
{
    char line[4096];
    FILE *f = fopen(path, "re");
    char *s, *e;

    if (!f) return -errno;
    if (!fgets(line, sizeof(line), f)) line[0] = '\0';
    fclose(f);
    for (s = line; *s == ' ' || *s == '\t'; s++) {
    }
    e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
    *e = '\0';
    if (!*s) return -EINVAL;
    if ((size_t)(e - s) + 1 > len) return -ENAMETOOLONG;
    memcpy(buf, s, (size_t)(e - s) + 1);
    return 0;
}
