/* intentd-devbroker — a single-process, memory-only Kafka-protocol broker for development
 * and tests (librdkafka's mock cluster, see broker.h).
 *
 * The story: parse options, block the signals we handle (so every librdkafka thread
 * inherits the mask and only sigwaitinfo() here sees them), start the broker, announce its
 * address, then wait for signals until told to stop.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "log.h"

#define DEVBROKER_MAX_TOPICS 64

static const char devbroker_usage[] =
    "Usage: intentd-devbroker [OPTIONS]\n"
    "A memory-only Kafka-protocol broker on 127.0.0.1 for development and tests\n"
    "(librdkafka's mock cluster; each partition keeps at most 5 MiB).\n"
    "\n"
    "  --partitions N         partitions of every topic (default 4)\n"
    "  --topics a,b,...       topics to create (default intentd.clicks,\n"
    "                         intentd.transactions,intentd.dead-letter)\n"
    "  --bootstrap-file FILE  also write the bootstrap list to FILE (atomically)\n"
    "  -h, --help             show this help\n"
    "\n"
    "The first line on stdout is \"bootstrap: HOST:PORT\"; it is printed after the topics\n"
    "exist and after the bootstrap file is written.  Runs until SIGTERM or SIGINT\n"
    "(exit 0).  For fault tests, SIGUSR1 takes the broker down (connections dropped, new\n"
    "ones refused; the data is kept) and SIGUSR2 brings it back up.\n";

static int devbroker_bad_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "intentd-devbroker: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "Try 'intentd-devbroker --help'.\n");
    return 2;
}

/* Splits list at commas into names (pointers into list, which is modified).  Returns the
 * count, or -1 for more than max names.  The caller has rejected empty names already:
 * strtok_r would skip them silently. */
static int devbroker_split_topics(char *list, const char **names, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == max) return -1;
        names[n++] = tok;
    }
    return n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"partitions", required_argument, NULL, 'p'},
        {"topics", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *topics[DEVBROKER_MAX_TOPICS] = {"intentd.clicks", "intentd.transactions",
                                                "intentd.dead-letter"};
    int ntopics = 3, partitions = 4, c;
    const char *bootstrap_file = NULL;
    char *topic_list = NULL;
    char err[512];

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > BROKER_MAX_PARTITIONS)
                return devbroker_bad_usage("--partitions wants an integer from 1 to 1024", optarg);
            partitions = (int)v;
            break;
        }
        case 't':
            topic_list = optarg;
            break;
        case 'b':
            bootstrap_file = optarg;
            break;
        case 'h':
            fputs(devbroker_usage, stdout);
            return 0;
        default:
            return devbroker_bad_usage("invalid option", NULL);
        }
    }
    if (optind < argc) return devbroker_bad_usage("unexpected argument", argv[optind]);
    if (topic_list) {
        size_t len = strlen(topic_list);
        if (len == 0 || topic_list[0] == ',' || topic_list[len - 1] == ',' ||
            strstr(topic_list, ",,"))
            return devbroker_bad_usage("--topics wants non-empty names separated by commas",
                                       topic_list);
        ntopics = devbroker_split_topics(topic_list, topics, DEVBROKER_MAX_TOPICS);
        if (ntopics < 0) return devbroker_bad_usage("too many topics (at most 64)", NULL);
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct broker *b = broker_new(partitions, topics, (size_t)ntopics, err, sizeof(err));
    if (!b) {
        LOG(LOG_ERROR, "devbroker", "%s", err);
        return 1;
    }
    if (bootstrap_file) {
        int rc = broker_write_bootstrap_file(bootstrap_file, broker_bootstrap(b));
        if (rc < 0) {
            LOG(LOG_ERROR, "devbroker", "cannot write %s: %s", bootstrap_file, strerror(-rc));
            broker_free(b);
            return 1;
        }
    }
    printf("bootstrap: %s\n", broker_bootstrap(b));
    fflush(stdout);
    LOG(LOG_INFO, "devbroker", "listening on %s: %d topic(s) of %d partition(s)",
        broker_bootstrap(b), ntopics, partitions);

    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0) continue; /* EINTR from a signal we do not wait for */
        if (sig == SIGUSR1) {
            int rc = broker_set_down(b);
            LOG(rc ? LOG_ERROR : LOG_INFO, "devbroker", "SIGUSR1: broker %s",
                rc ? "could not be taken down" : "down");
        } else if (sig == SIGUSR2) {
            int rc = broker_set_up(b);
            LOG(rc ? LOG_ERROR : LOG_INFO, "devbroker", "SIGUSR2: broker %s",
                rc ? "could not be brought up" : "up");
        } else {
            LOG(LOG_INFO, "devbroker", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
    }
    broker_free(b);
    return 0;
}
