/* Unit tests of the development broker (broker.h): topics, faults, bootstrap files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "broker.h"
#include "unit.h"

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

/* A producer handle on bootstrap, for metadata requests. */
static rd_kafka_t *client(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr) ==
          RD_KAFKA_CONF_OK);
    /* Fail fast while the broker is down instead of retrying for the default minute. */
    CHECK(rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "200", errstr, sizeof errstr) ==
          RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    CHECK(rk != NULL);
    return rk;
}

/* Partition count of topic as the broker reports it, or -1 when it is absent. */
static int partitions_of(const rd_kafka_metadata_t *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0)
            return md->topics[i].err ? -1 : md->topics[i].partition_cnt;
    return -1;
}

void test_broker_creates_topics(void)
{
    const char *topics[] = {"t.clicks", "t.transactions", "t.dead-letter"};
    char err[256];
    struct broker *b = broker_new(6, topics, 3, err, sizeof err);
    CHECK(b != NULL);
    CHECK_STR_HAS(broker_bootstrap(b), "127.0.0.1:");

    rd_kafka_t *rk = client(broker_bootstrap(b));
    const rd_kafka_metadata_t *md = NULL;
    CHECK_INT_EQ(rd_kafka_metadata(rk, 1, NULL, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK_INT_EQ(md->broker_cnt, 1);
    for (int i = 0; i < 3; i++) CHECK_INT_EQ(partitions_of(md, topics[i]), 6);
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    CHECK(broker_free(b) == NULL);
    CHECK(broker_free(NULL) == NULL);
}

void test_broker_rejects_bad_arguments(void)
{
    const char *topics[] = {"a", ""};
    char err[256] = "";
    CHECK(broker_new(0, topics, 1, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "partitions");
    CHECK(broker_new(BROKER_MAX_PARTITIONS + 1, topics, 1, err, sizeof err) == NULL);
    CHECK(broker_new(2, topics, 2, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "empty");
    const char *dup[] = {"a", "a"};
    err[0] = '\0';
    CHECK(broker_new(2, dup, 2, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "\"a\"");
}

void test_broker_down_and_up(void)
{
    const char *topics[] = {"t"};
    char err[256];
    struct broker *b = broker_new(2, topics, 1, err, sizeof err);
    CHECK(b != NULL);
    CHECK_INT_EQ(broker_set_down(b), 0);
    rd_kafka_t *rk = client(broker_bootstrap(b));
    const rd_kafka_metadata_t *md = NULL;
    CHECK(rd_kafka_metadata(rk, 1, NULL, &md, 1500) != RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK_INT_EQ(broker_set_up(b), 0);
    /* The client reconnects by itself; a generous deadline keeps this robust under load. */
    CHECK_INT_EQ(rd_kafka_metadata(rk, 1, NULL, &md, 20000), RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK_INT_EQ(partitions_of(md, "t"), 2);
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    broker_free(b);
}

void test_broker_bootstrap_file_round_trip(void)
{
    char path[4200], tmp[4300], buf[64];
    snprintf(path, sizeof path, "%s/embedded-brokers", unit_tmpdir());
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, sizeof buf), -ENOENT);
    CHECK_INT_EQ(broker_write_bootstrap_file(path, "127.0.0.1:1234"), 0);
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, sizeof buf), 0);
    CHECK_STR_EQ(buf, "127.0.0.1:1234");
    /* Replaced whole, not appended to; no temporary file left behind. */
    CHECK_INT_EQ(broker_write_bootstrap_file(path, "127.0.0.1:5,127.0.0.1:6"), 0);
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, sizeof buf), 0);
    CHECK_STR_EQ(buf, "127.0.0.1:5,127.0.0.1:6");
    struct stat st;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(stat(tmp, &st) < 0 && errno == ENOENT);
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, 5), -ENAMETOOLONG);
    /* Hand-written files: whitespace and CRLF trimmed; an empty file is an error. */
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("  host:9092 \r\n", f);
    fclose(f);
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, sizeof buf), 0);
    CHECK_STR_EQ(buf, "host:9092");
    f = fopen(path, "w");
    fclose(f);
    CHECK_INT_EQ(broker_read_bootstrap_file(path, buf, sizeof buf), -EINVAL);
    /* A folder that does not exist: the error comes back, nothing is created. */
    snprintf(path, sizeof path, "%s/missing/embedded-brokers", unit_tmpdir());
    CHECK_INT_EQ(broker_write_bootstrap_file(path, "x:1"), -ENOENT);
}
