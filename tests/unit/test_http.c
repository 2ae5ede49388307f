/* Tests of the HTTP server, in-process on a free port, with raw-socket clients against
 * snapshots built in the test (UCI schema, random weights). */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "features.h"
#include "http.h"
#include "log.h"
#include "snapshot.h"
#include "unit.h"

/* ---- fixture: schema, config, snapshots, server ---- */

/* The UCI online-shoppers columns (tests/data/online_shoppers_intention.csv) but Revenue. */
static const struct config_feature uci_cols[] = {
    {"Administrative", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Administrative_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"Informational", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Informational_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"ProductRelated", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"ProductRelated_Duration", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"BounceRates", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"ExitRates", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"PageValues", FEATURE_NUMERIC, TRANSFORM_LOG1P, 0},
    {"SpecialDay", FEATURE_NUMERIC, TRANSFORM_NONE, 0},
    {"Month", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"OperatingSystems", FEATURE_CATEGORICAL, TRANSFORM_NONE, 8},
    {"Browser", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"Region", FEATURE_CATEGORICAL, TRANSFORM_NONE, 16},
    {"TrafficType", FEATURE_CATEGORICAL, TRANSFORM_NONE, 32},
    {"VisitorType", FEATURE_CATEGORICAL, TRANSFORM_NONE, 4},
    {"Weekend", FEATURE_BOOLEAN, TRANSFORM_NONE, 0},
};
#define NCOLS (sizeof uci_cols / sizeof uci_cols[0])

/* Three rows of the UCI file as request features. */
static const char *const uci_rows[] = {
    "{\"Administrative\": 0, \"Administrative_Duration\": 0, \"Informational\": 0, "
    "\"Informational_Duration\": 0, \"ProductRelated\": 1, \"ProductRelated_Duration\": 0, "
    "\"BounceRates\": 0.2, \"ExitRates\": 0.2, \"PageValues\": 0, \"SpecialDay\": 0, "
    "\"Month\": \"Feb\", \"OperatingSystems\": 1, \"Browser\": 1, \"Region\": 1, "
    "\"TrafficType\": 1, \"VisitorType\": \"Returning_Visitor\", \"Weekend\": false}",
    "{\"Administrative\": 3, \"Administrative_Duration\": 142.5, \"Informational\": 1, "
    "\"Informational_Duration\": 12, \"ProductRelated\": 48, \"ProductRelated_Duration\": "
    "1839.2, \"BounceRates\": 0.0041, \"ExitRates\": 0.0183, \"PageValues\": 26.7, "
    "\"SpecialDay\": 0, \"Month\": \"Nov\", \"OperatingSystems\": 2, \"Browser\": 2, "
    "\"Region\": 3, \"TrafficType\": 2, \"VisitorType\": \"New_Visitor\", \"Weekend\": true}",
    "{\"PageValues\": 5.5, \"Month\": \"Dec\", \"Weekend\": \"TRUE\", \"VisitorType\": \"Other\"}",
};
#define NROWS (sizeof uci_rows / sizeof uci_rows[0])

struct fixture {
    struct config cfg;
    struct stats stats;
    struct snapshot_slot slot;
    struct features *f;
    struct http *h;
    uint16_t port;
    uint64_t next_version;
};

static void fx_config(struct fixture *fx)
{
    memset(&fx->cfg, 0, sizeof fx->cfg);
    fx->cfg.kafka.clicks_topic = "intentd.clicks";
    fx->cfg.kafka.transactions_topic = "intentd.transactions";
    fx->cfg.features = (struct config_feature *)uci_cols;
    fx->cfg.nfeatures = NCOLS;
    fx->cfg.http.listen = "127.0.0.1:0";
    fx->cfg.http.threads = 2;
    fx->cfg.http.max_body = 4096;
    fx->cfg.http.max_batch = 8;
    fx->cfg.http.max_connections = 256;
    fx->cfg.http.connection_timeout_ms = 30000;
}

static void fx_start(struct fixture *fx)
{
    char err[256] = "";
    stats_init(&fx->stats);
    snapshot_slot_init(&fx->slot);
    fx->f = features_new(uci_cols, NCOLS, err, sizeof err);
    if (!fx->f) unit_fail(__FILE__, __LINE__, "features_new: %s", err);
    fx->h = http_new(&fx->cfg, &fx->slot, fx->f, &fx->stats, err, sizeof err);
    if (!fx->h) unit_fail(__FILE__, __LINE__, "http_new: %s", err);
    fx->port = http_port(fx->h);
    CHECK(fx->port != 0);
    fx->next_version = 1;
}

static void fx_stop(struct fixture *fx)
{
    fx->h = http_free(fx->h);
    snapshot_slot_clear(&fx->slot);
    fx->f = features_free(fx->f);
    /* every snapshot a request took was released (tests release their own first) */
    CHECK_INT_EQ(snapshot_live(), 0);
}

/* A snapshot of the fixture's schema with weights drawn from seed (two hidden layers); with
 * poison, the output bias is NaN (a diverged model). */
static struct snapshot *make_snapshot_p(struct fixture *fx, uint32_t seed, int64_t created_ms,
                                        int poison)
{
    struct model_shape shape;
    memset(&shape, 0, sizeof shape);
    shape.ndense = features_ndense(fx->f);
    shape.nsparse = features_nsparse(fx->f);
    shape.ncat = features_ncat(fx->f);
    shape.nlayers = 3;
    shape.width[0] = shape.ndense + shape.nsparse;
    shape.width[1] = 16;
    shape.width[2] = 8;
    shape.width[3] = 1;
    shape.activation = ACTIVATION_RELU;
    size_t np = model_nparams(&shape);
    float *params = malloc(np * sizeof *params);
    float mean[CONFIG_MAX_FEATURES], inv_std[CONFIG_MAX_FEATURES];
    CHECK(params);
    uint64_t x = seed * 2654435761u + 12345;
    for (size_t i = 0; i < np; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        params[i] = (float)((double)(x >> 40) / (double)(1ull << 24) - 0.5) * 0.1f;
    }
    if (poison) params[np - 1] = NAN;
    for (uint32_t j = 0; j < shape.ndense; j++) {
        mean[j] = 0.1f * (float)j;
        inv_std[j] = 1.0f / (1.0f + 0.05f * (float)j);
    }
    struct snapshot_meta meta = {
        .version = fx->next_version++,
        .created_at_ms = created_ms,
        .trained_examples = 1000 * seed,
        .progressive = {0.81, 0.42, 900},
        .holdout = {NAN, NAN, 0},
    };
    struct snapshot *s = snapshot_new(fx->f, &shape, params, mean, inv_std, &meta);
    free(params);
    CHECK(s);
    return s;
}

static struct snapshot *make_snapshot(struct fixture *fx, uint32_t seed, int64_t created_ms)
{
    return make_snapshot_p(fx, seed, created_ms, 0);
}

static void publish(struct fixture *fx, uint32_t seed)
{
    snapshot_slot_publish(&fx->slot, make_snapshot(fx, seed, (int64_t)log_wall_ms()));
}

/* ---- a raw HTTP/1.1 client ---- */

struct resp {
    int status;
    char head[4096]; /* status line and headers */
    char body[65536];
    size_t len;
};

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {30, 0}; /* a broken server fails the test instead of hanging it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        unit_fail(__FILE__, __LINE__, "connect to %u: %s", port, strerror(errno));
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads one response from fd (head up to the blank line, then Content-Length bytes, none for
 * HEAD).  Returns 0, or -1 when the connection closed or timed out first. */
static int read_resp(int fd, struct resp *r, int head_only)
{
    char buf[sizeof r->head + sizeof r->body];
    size_t have = 0;
    char *eoh = NULL;
    while (!eoh) {
        if (have == sizeof buf) return -1;
        ssize_t k = recv(fd, buf + have, sizeof buf - have - 1, 0);
        if (k <= 0) return -1;
        have += (size_t)k;
        buf[have] = 0;
        eoh = strstr(buf, "\r\n\r\n");
    }
    size_t hl = (size_t)(eoh - buf) + 2;
    CHECK(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->head[hl] = 0;
    r->status = atoi(buf + 9);
    const char *cl = strcasestr(r->head, "\r\nContent-Length:");
    size_t want = cl && !head_only ? strtoul(cl + 17, NULL, 10) : 0;
    CHECK(want < sizeof r->body);
    size_t got = have - (hl + 2);
    memcpy(r->body, eoh + 4, got);
    while (got < want) {
        ssize_t k = recv(fd, r->body + got, want - got, 0);
        if (k <= 0) return -1;
        got += (size_t)k;
    }
    r->len = want;
    r->body[want] = 0;
    return 0;
}

/* Sends one request on a fresh connection ("Connection: close") and reads the answer. */
static void request(uint16_t port, const char *method, const char *path, const char *body,
                    struct resp *r)
{
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, blen);
    int fd = dial(port);
    CHECK(send_all(fd, head, (size_t)n) == 0);
    if (blen) CHECK(send_all(fd, body, blen) == 0);
    if (read_resp(fd, r, strcmp(method, "HEAD") == 0) != 0)
        unit_fail(__FILE__, __LINE__, "%s %s: no answer", method, path);
    close(fd);
}

static void post(struct fixture *fx, const char *body, struct resp *r)
{
    request(fx->port, "POST", "/v1/predict", body, r);
}

static json_t *parse_body(const struct resp *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->len, 0, &e);
    if (!j) unit_fail(__FILE__, __LINE__, "answer is not JSON (%s): %s", e.text, r->body);
    return j;
}

/* Checks an error answer: status, JSON content type, the "error" message containing
 * msg_part, the "field" (NULL: absent) and the "index" (-1: absent). */
#define CHECK_ERROR(r, code, msg_part, field, index)                                               \
    do {                                                                                           \
        if ((r)->status != (code))                                                                 \
            unit_fail(__FILE__, __LINE__, "status %d, want %d: %s", (r)->status, (code),           \
                      (r)->body);                                                                  \
        CHECK_STR_HAS((r)->head, "Content-Type: application/json");                                \
        json_t *j_ = parse_body(r);                                                                \
        CHECK(json_is_string(json_object_get(j_, "error")));                                       \
        CHECK_STR_HAS(json_string_value(json_object_get(j_, "error")), (msg_part));                \
        const char *f_ = (field);                                                                  \
        if (f_)                                                                                    \
            CHECK_STR_EQ(json_string_value(json_object_get(j_, "field")), f_);                     \
        else                                                                                       \
            CHECK(json_object_get(j_, "field") == NULL);                                           \
        long i_ = (index);                                                                         \
        if (i_ >= 0)                                                                               \
            CHECK_INT_EQ(json_integer_value(json_object_get(j_, "index")), i_);                    \
        else                                                                                       \
            CHECK(json_object_get(j_, "index") == NULL);                                           \
        json_decref(j_);                                                                           \
    } while (0)

/* The value of one sample of a /metrics scrape (NAN when absent). */
static double scrape(struct fixture *fx, const char *name)
{
    static struct resp r;
    request(fx->port, "GET", "/metrics", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    size_t n = strlen(name);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
    return NAN;
}

static double score_of(const struct resp *r)
{
    json_t *j = parse_body(r);
    CHECK(json_is_real(json_object_get(j, "score")) ||
          json_is_integer(json_object_get(j, "score")));
    double v = json_number_value(json_object_get(j, "score"));
    json_decref(j);
    return v;
}

/* ---- tests ---- */

void test_http_probes_and_503_before_first_snapshot(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    struct resp r;
    request(fx.port, "GET", "/healthz", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_HAS(r.head, "Content-Type: application/json");
    CHECK_STR_HAS(r.body, "\"ok\"");
    request(fx.port, "GET", "/readyz", NULL, &r);
    CHECK_ERROR(&r, 503, "no model", NULL, -1);
    request(fx.port, "GET", "/v1/model", NULL, &r);
    CHECK_ERROR(&r, 503, "no model", NULL, -1);
    post(&fx, "{\"features\": {}}", &r);
    CHECK_ERROR(&r, 503, "no model", NULL, -1);
    request(fx.port, "GET", "/metrics", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_HAS(r.head, "Content-Type: text/plain; version=0.0.4");
    CHECK_STR_HAS(r.body, "intentd_model_version 0\n");

    publish(&fx, 1);
    request(fx.port, "GET", "/readyz", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_HAS(r.body, "\"model_version\": 1");
    post(&fx, "{\"features\": {}}", &r);
    CHECK_INT_EQ(r.status, 200);
    /* HEAD answers like GET, without a body */
    request(fx.port, "HEAD", "/healthz", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/v1/predict\",code=\"503\"}"), 1);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/readyz\",code=\"503\"}"), 1);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/healthz\",code=\"200\"}"), 2);
    fx_stop(&fx);
}

void test_http_404_and_405(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    struct resp r;
    request(fx.port, "GET", "/nope", NULL, &r);
    CHECK_ERROR(&r, 404, "no such path", NULL, -1);
    request(fx.port, "POST", "/v1/predict/extra", "{}", &r);
    CHECK_ERROR(&r, 404, "no such path", NULL, -1);
    request(fx.port, "GET", "/v1/predict", NULL, &r);
    CHECK_ERROR(&r, 405, "use POST", NULL, -1);
    CHECK_STR_HAS(r.head, "\r\nAllow: POST\r\n");
    request(fx.port, "POST", "/healthz", "{}", &r);
    CHECK_ERROR(&r, 405, "use GET", NULL, -1);
    CHECK_STR_HAS(r.head, "\r\nAllow: GET, HEAD\r\n");
    request(fx.port, "DELETE", "/metrics", NULL, &r);
    CHECK_ERROR(&r, 405, "use GET", NULL, -1);
    /* unknown paths share one label, whatever the client sends */
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"other\",code=\"404\"}"), 2);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/v1/predict\",code=\"405\"}"), 1);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/healthz\",code=\"405\"}"), 1);
    fx_stop(&fx);
}

void test_http_400_errors_name_the_field(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    struct resp r;
    post(&fx, "{\"features\": {\"PageValues\": 1,}", &r);
    CHECK_ERROR(&r, 400, "malformed JSON", NULL, -1);
    post(&fx, "", &r);
    CHECK_ERROR(&r, 400, "malformed JSON", NULL, -1);
    post(&fx, "{\"features\": {\"PageValues\": NaN}}", &r); /* bare NaN is not JSON */
    CHECK_ERROR(&r, 400, "malformed JSON", NULL, -1);
    post(&fx, "{\"features\": {\"PageValues\": 1e400}}", &r); /* overflows a double */
    CHECK_ERROR(&r, 400, "malformed JSON", NULL, -1);
    post(&fx, "[1, 2]", &r);
    CHECK_ERROR(&r, 400, "JSON object", NULL, -1);
    post(&fx, "{\"feature\": {}}", &r);
    CHECK_ERROR(&r, 400, "\"features\"", NULL, -1);
    post(&fx, "{\"features\": {}, \"instances\": []}", &r);
    CHECK_ERROR(&r, 400, "not both", NULL, -1);
    post(&fx, "{\"features\": [1]}", &r);
    CHECK_ERROR(&r, 400, "object", "features", -1);
    post(&fx, "{\"features\": {\"PageValues\": \"high\"}}", &r);
    CHECK_ERROR(&r, 400, "PageValues", "PageValues", -1);
    post(&fx, "{\"features\": {\"PageValues\": \"NaN\"}}", &r);
    CHECK_ERROR(&r, 400, "PageValues", "PageValues", -1);
    post(&fx, "{\"features\": {\"Weekend\": 2}}", &r);
    CHECK_ERROR(&r, 400, "Weekend", "Weekend", -1);
    post(&fx, "{\"features\": {\"Month\": 1.5}}", &r);
    CHECK_ERROR(&r, 400, "Month", "Month", -1);
    post(&fx, "{\"instances\": {}}", &r);
    CHECK_ERROR(&r, 400, "array", "instances", -1);
    post(&fx, "{\"instances\": [{}, {\"Month\": \"Feb\"}, {\"Weekend\": []}]}", &r);
    CHECK_ERROR(&r, 400, "Weekend", "Weekend", 2);
    post(&fx, "{\"instances\": [{}, 7]}", &r);
    CHECK_ERROR(&r, 400, "object", "instances", 1);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/v1/predict\",code=\"400\"}"), 15);
    fx_stop(&fx);
}

/* A body of n bytes: {"features": {...row...}} padded with JSON whitespace to n. */
static char *padded_body(const char *row, size_t n)
{
    char *b = malloc(n + 1);
    CHECK(b);
    int k = snprintf(b, n + 1, "{\"features\": %s", row);
    CHECK(k > 0 && (size_t)k + 1 <= n);
    memset(b + k, ' ', n - (size_t)k - 1);
    b[n - 1] = '}';
    b[n] = 0;
    return b;
}

void test_http_413_body_and_batch_limits(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    struct resp r, r1;
    size_t max = (size_t)fx.cfg.http.max_body;
    char *exact = padded_body(uci_rows[1], max), *over = padded_body(uci_rows[1], max + 1);
    post(&fx, exact, &r);
    CHECK_INT_EQ(r.status, 200);
    post(&fx, "{\"features\": {}}", &r1); /* a different row scores differently */
    CHECK(score_of(&r) != score_of(&r1));
    post(&fx, over, &r);
    CHECK_ERROR(&r, 413, "max_body", NULL, -1);

    /* without Content-Length (chunked), the cap applies while the body arrives */
    int fd = dial(fx.port);
    const char *head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    CHECK(send_all(fd, head, strlen(head)) == 0);
    char chunk[64];
    size_t sent = 0;
    int broken = 0; /* the server may answer and close before the body ends */
    while (sent <= max && !broken) {
        size_t part = max / 4;
        int k = snprintf(chunk, sizeof chunk, "%zx\r\n", part);
        broken =
            send_all(fd, chunk, (size_t)k) || send_all(fd, over, part) || send_all(fd, "\r\n", 2);
        sent += part;
    }
    if (!broken) send_all(fd, "0\r\n\r\n", 5);
    CHECK(read_resp(fd, &r, 0) == 0);
    close(fd);
    CHECK_ERROR(&r, 413, "max_body", NULL, -1);
    free(exact);
    free(over);

    /* instances: max_batch (8) is fine, one more is 413 */
    char batch[2048] = "{\"instances\": [{}";
    for (uint32_t i = 1; i < fx.cfg.http.max_batch; i++) strcat(batch, ", {}");
    strcat(batch, "]}");
    post(&fx, batch, &r);
    CHECK_INT_EQ(r.status, 200);
    batch[strlen(batch) - 2] = 0;
    strcat(batch, ", {}]}");
    post(&fx, batch, &r);
    CHECK_ERROR(&r, 413, "max_batch", "instances", -1);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/v1/predict\",code=\"413\"}"), 3);
    fx_stop(&fx);
}

void test_http_batch_equals_single_and_snapshot_score(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    struct snapshot *s = make_snapshot(&fx, 7, (int64_t)log_wall_ms());
    snapshot_slot_publish(&fx.slot, snapshot_ref(s));
    struct resp r;
    double single[NROWS];
    char batch[8192] = "{\"instances\": [";
    for (size_t i = 0; i < NROWS; i++) {
        char body[2048];
        snprintf(body, sizeof body, "{\"features\": %s}", uci_rows[i]);
        post(&fx, body, &r);
        CHECK_INT_EQ(r.status, 200);
        CHECK_STR_HAS(r.head, "Content-Type: application/json");
        CHECK_STR_HAS(r.body, "\"model_version\": 1}");
        single[i] = score_of(&r);
        /* the trainer's own scoring of the same row on the same snapshot */
        json_t *obj = json_loads(uci_rows[i], 0, NULL);
        _Alignas(8) char rec[4096];
        struct example *e = (struct example *)(void *)rec;
        CHECK(features_example_size(fx.f) <= sizeof rec);
        features_example_init(s->features, e);
        CHECK_INT_EQ(features_from_json(s->features, obj, e, NULL, NULL, 0, NULL), 0);
        float want = snapshot_score(s, e);
        json_decref(obj);
        CHECK_NEAR(single[i], want, 1e-7 * fabs(want) + 1e-9);
        CHECK(single[i] > 0 && single[i] < 1);
        if (i) strcat(batch, ", ");
        strcat(batch, uci_rows[i]);
    }
    CHECK(single[0] != single[1]);
    strcat(batch, "]}");
    post(&fx, batch, &r);
    CHECK_INT_EQ(r.status, 200);
    json_t *j = parse_body(&r);
    json_t *preds = json_object_get(j, "predictions");
    CHECK_INT_EQ(json_array_size(preds), NROWS);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "model_version")), 1);
    for (size_t i = 0; i < NROWS; i++)
        CHECK(json_number_value(json_array_get(preds, i)) == single[i]);
    json_decref(j);
    post(&fx, "{\"instances\": []}", &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_HAS(r.body, "\"predictions\": []");
    snapshot_release(s);
    fx_stop(&fx);
}

void test_http_unknown_features_counted(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    struct resp r;
    post(&fx, "{\"features\": {\"PageValues\": 3, \"Colour\": \"red\", \"Size\": 2}}", &r);
    CHECK_INT_EQ(r.status, 200);
    post(&fx, "{\"instances\": [{\"Colour\": 1}, {\"Shape\": 1}, {}]}", &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_INT_EQ(stats_get(&fx.stats.unknown_features), 4);
    CHECK_INT_EQ(scrape(&fx, "intentd_unknown_features_total"), 4);
    fx_stop(&fx);
}

void test_http_model_route(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    struct snapshot *s = make_snapshot(&fx, 3, INT64_C(1764842400123));
    snapshot_slot_publish(&fx.slot, snapshot_ref(s));
    struct resp r;
    request(fx.port, "GET", "/v1/model", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    CHECK_STR_HAS(r.head, "Content-Type: application/json");
    json_t *j = parse_body(&r);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "version")), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "created_at")), "2025-12-04T10:00:00.123Z");
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "trained_examples")), 3000);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "fingerprint")), s->fingerprint);
    CHECK_INT_EQ(strlen(s->fingerprint), SNAPSHOT_FINGERPRINT_LEN);
    json_t *layers = json_object_get(j, "layers");
    CHECK_INT_EQ(json_array_size(layers), 4);
    CHECK_INT_EQ(json_integer_value(json_array_get(layers, 0)), 10 + 1 + 16 + 8 + 16 + 16 + 32 + 4);
    CHECK_INT_EQ(json_integer_value(json_array_get(layers, 1)), 16);
    CHECK_INT_EQ(json_integer_value(json_array_get(layers, 3)), 1);
    json_t *cols = json_object_get(j, "features");
    CHECK_INT_EQ(json_array_size(cols), NCOLS);
    json_t *pv = json_array_get(cols, 8), *mo = json_array_get(cols, 10);
    CHECK_STR_EQ(json_string_value(json_object_get(pv, "name")), "PageValues");
    CHECK_STR_EQ(json_string_value(json_object_get(pv, "type")), "numeric");
    CHECK_STR_EQ(json_string_value(json_object_get(pv, "transform")), "log1p");
    CHECK_STR_EQ(json_string_value(json_object_get(mo, "type")), "categorical");
    CHECK_INT_EQ(json_integer_value(json_object_get(mo, "buckets")), 16);
    CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(cols, 16), "type")), "boolean");
    json_t *prog = json_object_get(j, "progressive"), *hold = json_object_get(j, "holdout");
    CHECK_NEAR(json_number_value(json_object_get(prog, "auc")), 0.81, 1e-12);
    CHECK_NEAR(json_number_value(json_object_get(prog, "logloss")), 0.42, 1e-12);
    CHECK(json_is_null(json_object_get(hold, "auc"))); /* unknown (NaN) is null */
    CHECK(json_is_null(json_object_get(hold, "logloss")));
    json_decref(j);
    snapshot_release(s);
    fx_stop(&fx);
}

void test_http_metrics_move_with_requests_and_swaps(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    /* a snapshot published 5 s ago */
    snapshot_slot_publish(&fx.slot, make_snapshot(&fx, 1, (int64_t)log_wall_ms() - 5000));
    double age0 = scrape(&fx, "intentd_model_age_seconds");
    CHECK(age0 >= 5.0);
    CHECK_INT_EQ(scrape(&fx, "intentd_model_version"), 1);
    const char *ok = "intentd_http_requests_total{path=\"/v1/predict\",code=\"200\"}";
    double n0 = scrape(&fx, ok), c0 = scrape(&fx, "intentd_predict_duration_seconds_count");
    double inf0 = scrape(&fx, "intentd_predict_duration_seconds_bucket{le=\"+Inf\"}");
    CHECK_INT_EQ(n0, 0);
    struct resp r;
    for (int i = 0; i < 5; i++) {
        post(&fx, "{\"features\": {\"PageValues\": 1}}", &r);
        CHECK_INT_EQ(r.status, 200);
    }
    post(&fx, "{\"features\": 1}", &r);
    CHECK_INT_EQ(r.status, 400);
    CHECK_INT_EQ(scrape(&fx, ok), n0 + 5);
    CHECK_INT_EQ(scrape(&fx, "intentd_predict_duration_seconds_count"), c0 + 6);
    CHECK_INT_EQ(scrape(&fx, "intentd_predict_duration_seconds_bucket{le=\"+Inf\"}"), inf0 + 6);
    CHECK(scrape(&fx, "intentd_predict_duration_seconds_sum") > 0);
    /* a swap: the age restarts near zero and the version moves */
    publish(&fx, 2);
    double age1 = scrape(&fx, "intentd_model_age_seconds");
    CHECK(age1 < age0);
    CHECK(age1 < 5.0);
    CHECK_INT_EQ(scrape(&fx, "intentd_model_version"), 2);
    fx_stop(&fx);
}

/* The scrape of a live server passes `promtool check metrics` without a word. */
void test_http_metrics_pass_promtool(void)
{
    if (system("command -v promtool > /dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool missing (Debian package prometheus): check skipped\n");
        return;
    }
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    atomic_store(&fx.stats.consumer_lag[TOPIC_CLICKS][0], 12);
    struct resp r;
    post(&fx, "{\"features\": {\"PageValues\": 1}}", &r);
    request(fx.port, "GET", "/nope", NULL, &r);
    request(fx.port, "GET", "/metrics", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    char path[4200], cmd[8500], out[4096];
    snprintf(path, sizeof path, "%s/scrape.txt", unit_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f && fwrite(r.body, 1, r.len, f) == r.len && fclose(f) == 0);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || n)
        unit_fail(__FILE__, __LINE__, "promtool: %s", out);
    fx_stop(&fx);
}

/* ---- concurrency: clients hammer /v1/predict while snapshots swap every millisecond ---- */

struct swapper {
    struct fixture *fx;
    atomic_int stop;
    int published;
};

static void *swap_main(void *arg)
{
    struct swapper *sw = arg;
    while (!atomic_load(&sw->stop)) {
        publish(sw->fx, (uint32_t)sw->published + 2);
        sw->published++;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

struct client {
    uint16_t port;
    int requests;
    int ok;        /* 200 answers with a score in (0, 1) */
    int monotonic; /* model_version never went back */
};

static void *client_main(void *arg)
{
    struct client *cl = arg;
    static const char body[] = "{\"features\": {\"PageValues\": 2.5, \"Month\": \"Nov\"}}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    struct resp *r = malloc(sizeof *r);
    unsigned long long last = 0;
    cl->monotonic = 1;
    int fd = -1;
    for (int i = 0; i < cl->requests; i++) {
        if (fd < 0) fd = dial(cl->port); /* keep-alive: one connection for many requests */
        if (send_all(fd, req, (size_t)n) != 0 || read_resp(fd, r, 0) != 0) {
            close(fd);
            fd = -1;
            continue;
        }
        const char *v = strstr(r->body, "\"model_version\": ");
        const char *sc = strstr(r->body, "\"score\": ");
        if (r->status != 200 || !v || !sc) continue;
        double p = strtod(sc + 9, NULL);
        unsigned long long ver = strtoull(v + 17, NULL, 10);
        if (ver < last) cl->monotonic = 0;
        last = ver;
        if (p > 0 && p < 1) cl->ok++;
    }
    if (fd >= 0) close(fd);
    free(r);
    return NULL;
}

void test_http_concurrent_requests_during_swaps(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    struct swapper sw = {.fx = &fx};
    atomic_init(&sw.stop, 0);
    pthread_t swt, ct[4];
    struct client cl[4];
    CHECK(pthread_create(&swt, NULL, swap_main, &sw) == 0);
    for (int i = 0; i < 4; i++) {
        cl[i] = (struct client){.port = fx.port, .requests = 300};
        CHECK(pthread_create(&ct[i], NULL, client_main, &cl[i]) == 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(ct[i], NULL);
    atomic_store(&sw.stop, 1);
    pthread_join(swt, NULL);
    for (int i = 0; i < 4; i++) {
        CHECK_INT_EQ(cl[i].ok, cl[i].requests);
        CHECK(cl[i].monotonic);
    }
    CHECK(sw.published > 10);
    CHECK_INT_EQ(stats_get(&fx.stats.http_requests[ROUTE_PREDICT][STATUS_200]), 4 * 300);
    fx_stop(&fx);
}

/* ---- connection management ---- */

void test_http_idle_client_is_closed_after_timeout(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx.cfg.http.connection_timeout_ms = 1000;
    fx_start(&fx);
    int idle = dial(fx.port), half = dial(fx.port);
    /* half a request: headers never finish */
    CHECK(send_all(half, "POST /v1/predict HTTP/1.1\r\nHost: x\r\n", 37) == 0);
    uint64_t t0 = log_now_ms();
    struct pollfd pf[2] = {{.fd = idle, .events = POLLIN}, {.fd = half, .events = POLLIN}};
    int closed[2] = {0, 0};
    while ((!closed[0] || !closed[1]) && log_now_ms() - t0 < 30000) {
        if (poll(pf, 2, 500) < 0) break;
        for (int i = 0; i < 2; i++) {
            char b[256];
            if (!closed[i] && (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                recv(pf[i].fd, b, sizeof b, MSG_DONTWAIT) <= 0) {
                closed[i] = 1;
                pf[i].fd = -1;
            }
        }
    }
    CHECK(closed[0]);
    CHECK(closed[1]);
    close(idle);
    close(half);
    /* the server still answers */
    struct resp r;
    request(fx.port, "GET", "/healthz", NULL, &r);
    CHECK_INT_EQ(r.status, 200);
    fx_stop(&fx);
}

void test_http_keep_alive_reuses_the_connection(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 1);
    int fd = dial(fx.port);
    struct resp *r = malloc(sizeof *r);
    for (int i = 0; i < 20; i++) {
        const char *q = i % 2 ? "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                              : "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n"
                                "\r\n{\"features\": {}}";
        CHECK(send_all(fd, q, strlen(q)) == 0);
        CHECK(read_resp(fd, r, 0) == 0);
        CHECK_INT_EQ(r->status, 200);
    }
    free(r);
    close(fd);
    fx_stop(&fx);
}

void test_http_bad_listen_addresses(void)
{
    struct fixture fx, fx2;
    fx_config(&fx);
    fx_start(&fx);
    char listen[64], err[256];
    struct stats st;
    stats_init(&st);
    struct snapshot_slot slot;
    snapshot_slot_init(&slot);
    fx_config(&fx2);
    snprintf(listen, sizeof listen, "127.0.0.1:%u", fx.port);
    fx2.cfg.http.listen = listen;
    CHECK(http_new(&fx2.cfg, &slot, NULL, &st, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "cannot listen on");
    CHECK_STR_HAS(err, "in use");
    fx2.cfg.http.listen = "no-port-here";
    CHECK(http_new(&fx2.cfg, &slot, NULL, &st, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "HOST:PORT");
    fx2.cfg.http.listen = "[::1]:0"; /* IPv6 loopback, where the host has it */
    struct http *h6 = http_new(&fx2.cfg, &slot, NULL, &st, err, sizeof err);
    if (h6)
        CHECK(http_port(h6) != 0);
    else
        CHECK_STR_HAS(err, "::1");
    http_free(h6);
    CHECK(http_free(NULL) == NULL);
    fx_stop(&fx);
}

void test_http_json_escape(void)
{
    char out[64];
    CHECK_INT_EQ(http_json_escape(out, sizeof out, "a\"b\\c\nd\x01"), 16);
    CHECK_STR_EQ(out, "a\\\"b\\\\c\\nd\\u0001");
    /* truncation never splits an escape */
    CHECK_INT_EQ(http_json_escape(out, 4, "ab\"c"), 2);
    CHECK_STR_EQ(out, "ab");
}

static int count_fds(void)
{
    char path[64];
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, F_OK) == 0) n++;
    }
    return n;
}

void test_http_free_releases_the_socket_and_threads(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    fx_stop(&fx);
    int before = count_fds();
    for (int i = 0; i < 3; i++) {
        fx_start(&fx);
        publish(&fx, 1);
        struct resp r;
        post(&fx, "{\"features\": {}}", &r);
        CHECK_INT_EQ(r.status, 200);
        int open_conn = dial(fx.port); /* a connection still open at stop */
        uint16_t port = fx.port;
        fx_stop(&fx);
        close(open_conn);
        /* the port is free again: a new server binds it */
        char listen[32], err[256];
        snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
        fx.cfg.http.listen = listen;
        struct stats st;
        stats_init(&st);
        struct snapshot_slot slot;
        snapshot_slot_init(&slot);
        struct http *h = http_new(&fx.cfg, &slot, NULL, &st, err, sizeof err);
        if (!h) unit_fail(__FILE__, __LINE__, "rebinding %s: %s", listen, err);
        http_free(h);
        fx.cfg.http.listen = "127.0.0.1:0";
    }
    CHECK_INT_EQ(count_fds(), before);
}

void test_http_500_when_the_model_scores_nan(void)
{
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    snapshot_slot_publish(&fx.slot, make_snapshot_p(&fx, 1, (int64_t)log_wall_ms(), 1));
    struct resp r;
    post(&fx, "{\"features\": {\"PageValues\": 1}}", &r);
    CHECK_ERROR(&r, 500, "non-finite", NULL, -1);
    post(&fx, "{\"instances\": [{}, {}]}", &r);
    CHECK_ERROR(&r, 500, "non-finite", NULL, 0);
    CHECK_INT_EQ(scrape(&fx, "intentd_http_requests_total{path=\"/v1/predict\",code=\"500\"}"), 2);
    fx_stop(&fx);
}

/* DESIGN §6: an integer categorical hashes as its decimal string, over HTTP too. */
void test_http_integer_and_string_categoricals_score_alike(void)
{
    static const char *const pairs[][2] = {
        {"{\"features\": {\"Browser\": 6, \"Region\": 0}}",
         "{\"features\": {\"Browser\": \"6\", \"Region\": \"0\"}}"},
        {"{\"features\": {\"TrafficType\": -17, \"OperatingSystems\": 1234567}}",
         "{\"features\": {\"TrafficType\": \"-17\", \"OperatingSystems\": \"1234567\"}}"},
        {"{\"features\": {\"Browser\": -9223372036854775808}}",
         "{\"features\": {\"Browser\": \"-9223372036854775808\"}}"},
    };
    struct fixture fx;
    fx_config(&fx);
    fx_start(&fx);
    publish(&fx, 5);
    struct resp r;
    double base;
    post(&fx, "{\"features\": {}}", &r);
    base = score_of(&r);
    int differs = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        post(&fx, pairs[i][0], &r);
        CHECK_INT_EQ(r.status, 200);
        double a = score_of(&r);
        post(&fx, pairs[i][1], &r);
        CHECK_INT_EQ(r.status, 200);
        CHECK(score_of(&r) == a);
        differs += a != base;
    }
    CHECK(differs > 0); /* the categoricals do reach the model */
    fx_stop(&fx);
}
