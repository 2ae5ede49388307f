/* fuzz_event.c — libFuzzer harness for event_parse: any bytes, either topic, must give
 * EVENT_OK or one known reason, never a crash, a leak or undefined behaviour.
 *
 *   clang -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -iquote include \
 *       tests/fuzz/fuzz_event.c src/event.c src/features.c src/errmsg.c \
 *       $(pkg-config --cflags --libs jansson libxxhash) -lm -o build/fuzz-event
 *   build/fuzz-event -max_total_time=60 -max_len=4096 tests/fuzz/corpus-event
 *
 * The first byte picks the topic and the Kafka timestamp; the rest is the payload.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

static struct config cfg;
static struct config_feature cols[4];
static struct features *feats;
static void *example;

static void setup(void)
{
    cols[0] = (struct config_feature){
        .name = "PageValues", .type = FEATURE_NUMERIC, .transform = TRANSFORM_LOG1P};
    cols[1] = (struct config_feature){.name = "Month", .type = FEATURE_CATEGORICAL, .buckets = 16};
    cols[2] = (struct config_feature){.name = "Weekend", .type = FEATURE_BOOLEAN};
    cols[3] = (struct config_feature){.name = "Raw", .type = FEATURE_NUMERIC};
    cfg.features = cols;
    cfg.nfeatures = 4;
    cfg.kafka.max_event_bytes = 2048; /* so too_large is reachable too */
    cfg.labels.max_future_ms = 3600000;
    char err[256];
    feats = features_new(cols, 4, err, sizeof err);
    if (!feats) abort();
    example = calloc(1, features_example_size(feats));
    if (!example) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!feats) setup();
    if (size == 0) return 0;
    enum stats_topic topic = (data[0] & 1) ? TOPIC_TRANSACTIONS : TOPIC_CLICKS;
    int64_t kafka_ts = (data[0] & 2) ? -1 : INT64_C(1764842400000);
    struct event ev;
    char why[160];
    uint32_t unknown = 0;
    int r = event_parse(&cfg, feats, topic, data + 1, size - 1, kafka_ts, INT64_C(1764842400000),
                        &ev, example, &unknown, why, sizeof why);
    if (r != EVENT_OK && (r < 0 || r >= REJECT_NREASONS)) abort();
    if (r != EVENT_OK && why[0] == '\0') abort();
    if (r == EVENT_OK) {
        if (ev.session_len == 0 || ev.session_len > EVENT_MAX_SESSION_ID) abort();
        if (strlen(ev.session_id) != ev.session_len) abort();
        if (ev.ts < 0) abort();
        if (topic == TOPIC_CLICKS && !json_is_object(ev.features)) abort();
        if (!(ev.weight > 0)) abort();
    }
    event_clear(&ev);
    return 0;
}
