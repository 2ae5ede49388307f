/* http.c — see http.h.
 *
 * Request flow (libmicrohttpd's access handler is called several times per request):
 *   1st call  — headers only: route, and a declared Content-Length over http.max_body is
 *               answered 413 at once (libmicrohttpd then closes the connection).
 *   n calls   — body chunks for POST /v1/predict, copied into the connection's buffer up to
 *               http.max_body (other routes' bodies are dropped).
 *   last call — upload_data_size == 0: every other answer, so keep-alive connections stay
 *               open (an answer queued on the 1st call makes libmicrohttpd close them).
 * The per-request context is the per-connection one (made when the connection opens, freed
 * when it closes), so keep-alive requests reuse its buffer and allocate nothing.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "expo.h"
#include "features.h"
#include "snapshot.h"

#define JSON_TYPE   "application/json"
#define CONN_INLINE 4096        /* body bytes held without a heap buffer (a UCI row is ~500) */
#define DISCARD_MAX (16u << 20) /* unread body bytes after which the connection is dropped */

/* Room for one example record of any schema config.h allows. */
#define EXAMPLE_MAX (sizeof(struct example) + 4 * (size_t)CONFIG_MAX_FEATURES + 8)

struct http {
    struct MHD_Daemon *daemon;
    int listen_fd;        /* owned; the acceptor thread accepts on it */
    pthread_t acceptor;   /* see acceptor_main */
    int acceptor_started; /* acceptor is joinable */
    atomic_int stopping;  /* set by http_free before it wakes the acceptor */
    const struct config *cfg;
    struct snapshot_slot *slot;
    const struct features *features; /* unused for scoring; see http.h */
    struct stats *stats;
    uint16_t port;
    uint64_t max_body;
    uint32_t max_batch;
    /* Constant answers, made once and shared by every thread (libmicrohttpd counts their
     * references). */
    struct MHD_Response *r_404, *r_405_get, *r_405_post, *r_healthz;
};

/* One connection's request state; reset at the first call of each request. */
struct conn {
    enum stats_route route;
    int too_large;      /* the body passed max_body: answer 413 */
    int answered;       /* a response is queued: ignore the rest */
    uint64_t discarded; /* body bytes dropped (over the cap, or a route without a body) */
    uint64_t t0_ns;     /* the request's first call (monotonic) */
    size_t len;         /* body bytes held */
    size_t cap;         /* capacity of body */
    char *body;         /* inline, or heap when larger (cap > CONN_INLINE) */
    char inline_body[CONN_INLINE];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

size_t http_json_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (cap == 0) return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char tmp[7];
        size_t k = 0;
        if (ch == '"' || ch == '\\') {
            tmp[k++] = '\\';
            tmp[k++] = (char)ch;
        } else if (ch == '\n') {
            tmp[k++] = '\\';
            tmp[k++] = 'n';
        } else if (ch < 0x20) {
            tmp[k++] = '\\';
            tmp[k++] = 'u';
            tmp[k++] = '0';
            tmp[k++] = '0';
            tmp[k++] = hex[ch >> 4];
            tmp[k++] = hex[ch & 15];
        } else {
            tmp[k++] = (char)ch;
        }
        if (n + k >= cap) break; /* never split an escape */
        memcpy(out + n, tmp, k);
        n += k;
    }
    out[n] = 0;
    return n;
}

/* ---- answers ---- */

static void count(struct http *h, struct conn *cx, int code)
{
    stats_add(&h->stats->http_requests[cx->route][stats_status_index(code)], 1);
    if (cx->route == ROUTE_PREDICT)
        stats_hist_observe(&h->stats->predict_duration, (double)(now_ns() - cx->t0_ns) / 1e9);
}

/* Queues a shared (persistent) response. */
static enum MHD_Result reply_shared(struct http *h, struct MHD_Connection *c, struct conn *cx,
                                    int code, struct MHD_Response *r)
{
    cx->answered = 1;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
    count(h, cx, code);
    return ret;
}

/* Queues body (len bytes) with the given memory mode (MUST_COPY for stack buffers, MUST_FREE
 * for malloc'd ones, whose ownership passes to libmicrohttpd even on failure). */
static enum MHD_Result reply(struct http *h, struct MHD_Connection *c, struct conn *cx, int code,
                             const char *type, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    cx->answered = 1;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    count(h, cx, code);
    return ret;
}

/* An error answer: {"error": msg[, "field": field][, "index": index]} (index < 0: none). */
static enum MHD_Result reply_error(struct http *h, struct MHD_Connection *c, struct conn *cx,
                                   int code, const char *msg, const char *field, long index)
{
    char body[1536], esc[512];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"error\": \"");
    n += http_json_escape(body + n, sizeof body - 512, msg); /* leaves room for the rest */
    n += (size_t)snprintf(body + n, sizeof body - n, "\"");
    if (field) {
        http_json_escape(esc, sizeof esc, field);
        n += (size_t)snprintf(body + n, sizeof body - n, ", \"field\": \"%s\"", esc);
    }
    if (index >= 0 && n < sizeof body)
        n += (size_t)snprintf(body + n, sizeof body - n, ", \"index\": %ld", index);
    if (n < sizeof body) n += (size_t)snprintf(body + n, sizeof body - n, "}");
    if (n >= sizeof body) n = sizeof body - 1;
    return reply(h, c, cx, code, JSON_TYPE, body, n, MHD_RESPMEM_MUST_COPY);
}

static struct MHD_Response *shared_response(const char *body, const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r) return NULL;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_TYPE) != MHD_YES ||
        (allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES)) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}

/* ---- routes ---- */

static enum stats_route route_of(const char *url)
{
    if (strcmp(url, "/v1/predict") == 0) return ROUTE_PREDICT;
    if (strcmp(url, "/v1/model") == 0) return ROUTE_MODEL;
    if (strcmp(url, "/healthz") == 0) return ROUTE_HEALTHZ;
    if (strcmp(url, "/readyz") == 0) return ROUTE_READYZ;
    if (strcmp(url, "/metrics") == 0) return ROUTE_METRICS;
    return ROUTE_OTHER;
}

static enum MHD_Result no_model(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    return reply_error(h, c, cx, MHD_HTTP_SERVICE_UNAVAILABLE,
                       "no model snapshot yet: the trainer has not published one", NULL, -1);
}

static enum MHD_Result get_readyz(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    struct snapshot *s = snapshot_slot_acquire(h->slot);
    if (!s) return no_model(h, c, cx);
    char body[96];
    int n = snprintf(body, sizeof body, "{\"status\": \"ready\", \"model_version\": %llu}",
                     (unsigned long long)s->version);
    snapshot_release(s);
    return reply(h, c, cx, MHD_HTTP_OK, JSON_TYPE, body, (size_t)n, MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result get_metrics(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    struct expo_model m = {0};
    struct snapshot *s = snapshot_slot_acquire(h->slot);
    if (s) {
        m.served = 1;
        m.version = s->version;
        m.published_ms = s->created_at_ms > 0 ? (uint64_t)s->created_at_ms : 0;
        snapshot_release(s);
    }
    size_t len = 0;
    char *page = expo_render(h->stats, h->cfg, &m, &len);
    if (!page)
        return reply_error(h, c, cx, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL, -1);
    return reply(h, c, cx, MHD_HTTP_OK, EXPO_CONTENT_TYPE, page, len, MHD_RESPMEM_MUST_FREE);
}

static json_t *eval_json(const struct snapshot_eval *e)
{
    return json_pack("{s:o, s:o, s:I}", "auc", isfinite(e->auc) ? json_real(e->auc) : json_null(),
                     "logloss", isfinite(e->logloss) ? json_real(e->logloss) : json_null(), "n",
                     (json_int_t)e->n);
}

static const char *type_name(enum feature_type t)
{
    return t == FEATURE_NUMERIC ? "numeric" : t == FEATURE_CATEGORICAL ? "categorical" : "boolean";
}

/* GET /v1/model, from the snapshot s (borrowed).  Returns the JSON text (malloc'd) or NULL. */
static char *model_json(const struct snapshot *s)
{
    char created[80];
    time_t secs = (time_t)(s->created_at_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(created, sizeof created, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(s->created_at_ms % 1000));
    json_t *layers = json_array();
    for (uint32_t i = 0; layers && i <= s->shape.nlayers; i++)
        json_array_append_new(layers, json_integer(s->shape.width[i]));
    json_t *cols = json_array();
    uint32_t ncol = features_ncolumns(s->features);
    for (uint32_t i = 0; cols && i < ncol; i++) {
        const struct features_column *fc = features_column(s->features, i);
        json_t *col = json_pack("{s:s, s:s}", "name", fc->name, "type", type_name(fc->type));
        if (col && fc->type == FEATURE_NUMERIC)
            json_object_set_new(col, "transform",
                                json_string(fc->transform == TRANSFORM_LOG1P ? "log1p" : "none"));
        if (col && fc->type == FEATURE_CATEGORICAL)
            json_object_set_new(col, "buckets", json_integer(fc->buckets));
        json_array_append_new(cols, col);
    }
    json_t *root =
        json_pack("{s:I, s:s, s:I, s:s, s:o, s:o, s:o, s:o}", "version", (json_int_t)s->version,
                  "created_at", created, "trained_examples", (json_int_t)s->trained_examples,
                  "fingerprint", s->fingerprint, "layers", layers, "features", cols, "progressive",
                  eval_json(&s->progressive), "holdout", eval_json(&s->holdout));
    if (!root) return NULL; /* json_pack's "o" steals the references even when it fails */
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static enum MHD_Result get_model(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    struct snapshot *s = snapshot_slot_acquire(h->slot);
    if (!s) return no_model(h, c, cx);
    char *text = model_json(s);
    snapshot_release(s);
    if (!text)
        return reply_error(h, c, cx, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL, -1);
    return reply(h, c, cx, MHD_HTTP_OK, JSON_TYPE, text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

/* Writes `, "model_version": V}` at out (room for 40 bytes); returns its length.  By hand:
 * with a second conversion after the %g, glibc's snprintf takes its slower positional path
 * (callgrind: 0.6k fewer instructions a request this way). */
static size_t version_tail(char *out, uint64_t v)
{
    static const char head[] = ", \"model_version\": ";
    char digits[24];
    size_t n = 0, len = sizeof head - 1;
    memcpy(out, head, len);
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) out[len++] = digits[--n];
    out[len++] = '}';
    return len;
}

/* Encodes the features object obj into e and scores it with s.  Returns 0 with *score, or a
 * negative errno with msg filled and *field naming the feature at fault (or NULL). */
static int score_one(struct http *h, const struct snapshot *s, const json_t *obj, struct example *e,
                     float *score, char *msg, size_t msglen, const char **field)
{
    uint32_t unknown = 0;
    features_example_init(s->features, e);
    int rc = features_from_json(s->features, obj, e, &unknown, msg, msglen, field);
    if (unknown) stats_add(&h->stats->unknown_features, unknown);
    if (rc == -EINVAL) snprintf(msg, msglen, "features must be a JSON object");
    if (rc < 0) return rc;
    *score = snapshot_score(s, e);
    if (!isfinite(*score)) {
        snprintf(msg, msglen, "the model produced a non-finite score");
        *field = NULL;
        return -ERANGE;
    }
    return 0;
}

/* {"instances": [...]}: every row must score, else the first bad one is reported. */
static enum MHD_Result predict_batch(struct http *h, struct MHD_Connection *c, struct conn *cx,
                                     const struct snapshot *s, struct example *e,
                                     const json_t *inst)
{
    if (!json_is_array(inst))
        return reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST, "instances must be a JSON array",
                           "instances", -1);
    size_t n = json_array_size(inst);
    if (n > h->max_batch) {
        char msg[128];
        snprintf(msg, sizeof msg, "%zu instances, more than http.max_batch (%u)", n, h->max_batch);
        return reply_error(h, c, cx, MHD_HTTP_CONTENT_TOO_LARGE, msg, "instances", -1);
    }
    size_t cap = 64 + n * 24; /* "%.9g" of a probability is at most 15 characters */
    char *out = malloc(cap);
    if (!out)
        return reply_error(h, c, cx, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL, -1);
    size_t len = (size_t)snprintf(out, cap, "{\"predictions\": [");
    for (size_t i = 0; i < n; i++) {
        const json_t *row = json_array_get(inst, i);
        char msg[512];
        const char *field = NULL;
        float p;
        int rc = -EINVAL;
        if (json_is_object(row)) {
            rc = score_one(h, s, row, e, &p, msg, sizeof msg, &field);
        } else {
            snprintf(msg, sizeof msg, "an instance must be a JSON object of features");
            field = "instances";
        }
        if (rc < 0) {
            free(out);
            int code = rc == -ERANGE ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_BAD_REQUEST;
            return reply_error(h, c, cx, code, msg, field, (long)i);
        }
        len += (size_t)snprintf(out + len, cap - len, i ? ", %.9g" : "%.9g", (double)p);
    }
    out[len++] = ']';
    len += version_tail(out + len, s->version);
    return reply(h, c, cx, MHD_HTTP_OK, JSON_TYPE, out, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result predict(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    struct snapshot *s = snapshot_slot_acquire(h->slot);
    if (!s) return no_model(h, c, cx);
    enum MHD_Result ret;
    json_error_t jerr;
    json_t *root = json_loadb(cx->body, cx->len, 0, &jerr);
    _Alignas(8) char rec[EXAMPLE_MAX];
    struct example *e = (struct example *)(void *)rec;
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        ret = reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST, msg, NULL, -1);
        goto out;
    }
    if (!json_is_object(root)) {
        ret =
            reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST, "the body must be a JSON object", NULL, -1);
        goto out;
    }
    if (features_example_size(s->features) > sizeof rec) {
        ret = reply_error(h, c, cx, MHD_HTTP_INTERNAL_SERVER_ERROR, "schema too wide", NULL, -1);
        goto out;
    }
    const json_t *feat = json_object_get(root, "features");
    const json_t *inst = json_object_get(root, "instances");
    if (feat && inst) {
        ret = reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST,
                          "give either \"features\" or \"instances\", not both", NULL, -1);
    } else if (inst) {
        ret = predict_batch(h, c, cx, s, e, inst);
    } else if (!feat) {
        ret = reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST,
                          "the body needs \"features\" (an object) or \"instances\" (an array)",
                          NULL, -1);
    } else if (!json_is_object(feat)) {
        ret = reply_error(h, c, cx, MHD_HTTP_BAD_REQUEST, "features must be a JSON object",
                          "features", -1);
    } else {
        char msg[512];
        const char *field = NULL;
        float p;
        int rc = score_one(h, s, feat, e, &p, msg, sizeof msg, &field);
        if (rc < 0) {
            int code = rc == -ERANGE ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_BAD_REQUEST;
            ret = reply_error(h, c, cx, code, msg, field, -1);
        } else {
            char body[96];
            size_t n = (size_t)snprintf(body, 48, "{\"score\": %.9g", (double)p);
            n += version_tail(body + n, s->version);
            ret = reply(h, c, cx, MHD_HTTP_OK, JSON_TYPE, body, n, MHD_RESPMEM_MUST_COPY);
        }
    }
out:
    json_decref(root);
    snapshot_release(s);
    return ret;
}

/* ---- libmicrohttpd callbacks ---- */

static enum MHD_Result too_large(struct http *h, struct MHD_Connection *c, struct conn *cx)
{
    char msg[128];
    snprintf(msg, sizeof msg, "the body is larger than http.max_body (%llu bytes)",
             (unsigned long long)h->max_body);
    return reply_error(h, c, cx, MHD_HTTP_CONTENT_TOO_LARGE, msg, NULL, -1);
}

static int is_get(const char *method)
{
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

/* The first call of a request: headers are in, the body (if any) is not.  Only a declared
 * body over the cap is answered here (libmicrohttpd then closes the connection rather than
 * read it); everything else waits for the last call, so keep-alive connections stay open. */
static enum MHD_Result begin(struct http *h, struct MHD_Connection *c, struct conn *cx,
                             const char *method)
{
    if (cx->route != ROUTE_PREDICT || strcmp(method, MHD_HTTP_METHOD_POST) != 0) return MHD_YES;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl) return MHD_YES;
    errno = 0;
    unsigned long long n = strtoull(cl, NULL, 10);
    if (errno != ERANGE && n <= h->max_body) return MHD_YES;
    cx->too_large = 1;
    return too_large(h, c, cx);
}

/* The last call: the whole request is in. */
static enum MHD_Result dispatch(struct http *h, struct MHD_Connection *c, struct conn *cx,
                                const char *method)
{
    switch (cx->route) {
    case ROUTE_OTHER:
        return reply_shared(h, c, cx, MHD_HTTP_NOT_FOUND, h->r_404);
    case ROUTE_PREDICT:
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return reply_shared(h, c, cx, MHD_HTTP_METHOD_NOT_ALLOWED, h->r_405_post);
        if (cx->too_large) return too_large(h, c, cx);
        return predict(h, c, cx);
    default:
        break;
    }
    if (!is_get(method)) return reply_shared(h, c, cx, MHD_HTTP_METHOD_NOT_ALLOWED, h->r_405_get);
    if (cx->route == ROUTE_HEALTHZ) return reply_shared(h, c, cx, MHD_HTTP_OK, h->r_healthz);
    if (cx->route == ROUTE_READYZ) return get_readyz(h, c, cx);
    if (cx->route == ROUTE_MODEL) return get_model(h, c, cx);
    return get_metrics(h, c, cx);
}

/* Appends a body chunk; returns 0, or -E2BIG when the body passes max_body. */
static int append(struct http *h, struct conn *cx, const char *data, size_t n)
{
    if (n > h->max_body - cx->len) return -E2BIG;
    if (cx->len + n > cx->cap) {
        size_t cap = cx->cap * 2;
        while (cap < cx->len + n) cap *= 2;
        if (cap > h->max_body) cap = (size_t)h->max_body;
        char *p = cx->body == cx->inline_body ? malloc(cap) : realloc(cx->body, cap);
        if (!p) return -ENOMEM;
        if (cx->body == cx->inline_body) memcpy(p, cx->body, cx->len);
        cx->body = p;
        cx->cap = cap;
    }
    memcpy(cx->body + cx->len, data, n);
    cx->len += n;
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)version;
    struct http *h = cls;
    struct conn *cx = *req_cls;
    if (!cx) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        cx = ci ? ci->socket_context : NULL;
        if (!cx) return MHD_NO; /* out of memory when the connection opened: drop it */
        cx->route = route_of(url);
        cx->too_large = 0;
        cx->answered = 0;
        cx->len = 0;
        cx->discarded = 0;
        cx->t0_ns = now_ns();
        *req_cls = cx;
        return begin(h, c, cx, method);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0; /* consumed (or discarded) */
        if (cx->answered || cx->too_large || cx->route != ROUTE_PREDICT) {
            /* a body nobody reads: bounded, so an endless upload cannot keep a thread */
            cx->discarded += n;
            return cx->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        int rc = append(h, cx, upload_data, n);
        /* libmicrohttpd 0.9.75 cannot queue a response while a body is arriving, so a
         * chunked body over the cap is read and dropped and gets its 413 at the end. */
        if (rc == -E2BIG) cx->too_large = 1;
        if (rc == -ENOMEM) return MHD_NO;
        return MHD_YES;
    }
    if (cx->answered) return MHD_YES;
    return dispatch(h, c, cx, method);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn *cx = malloc(sizeof *cx);
        if (cx) {
            cx->body = cx->inline_body;
            cx->cap = CONN_INLINE;
            cx->len = 0;
        }
        *socket_context = cx; /* NULL: on_request drops the connection */
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn *cx = *socket_context;
        if (cx && cx->body != cx->inline_body) free(cx->body);
        free(cx);
        *socket_context = NULL;
    }
}

/* ---- start and stop ---- */

/* Opens a listening socket on "HOST:PORT" ("[v6]:PORT").  Returns the descriptor or -1 with
 * err filled. */
static int listen_on(const char *listen_addr, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(listen_addr, ':');
    if (!colon || colon == listen_addr || !colon[1]) {
        snprintf(err, errlen, "http.listen \"%s\" is not HOST:PORT", listen_addr);
        return -1;
    }
    size_t hl = (size_t)(colon - listen_addr);
    const char *hs = listen_addr;
    if (hs[0] == '[' && hl >= 2 && hs[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    if (hl >= sizeof host) {
        snprintf(err, errlen, "http.listen \"%s\": host name too long", listen_addr);
        return -1;
    }
    memcpy(host, hs, hl);
    host[hl] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "http.listen \"%s\": %s", listen_addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        /* blocking: the acceptor thread sleeps in accept4() */
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s (http.listen): %s", listen_addr,
                 strerror(saved));
    return fd;
}

/* The acceptor thread's role: take every connection from the listening socket and hand it to
 * libmicrohttpd's pool, whose MHD_add_connection picks the worker by descriptor number.  With
 * the pool on the listening socket itself, a worker that wakes first accepts a burst of up to
 * ten connections at once: measured with wrk -c64, a quarter of runs put all 64 keep-alive
 * connections on one of the two workers, halving capacity for their whole life. */
static void *acceptor_main(void *arg)
{
    struct http *h = arg;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(h->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            /* closes fd itself when it cannot take it (connection limit, out of memory) */
            MHD_add_connection(h->daemon, fd, (struct sockaddr *)&ss, sl);
            continue;
        }
        if (atomic_load_explicit(&h->stopping, memory_order_acquire)) break;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* out of descriptors or memory: wait for some to be freed instead of spinning */
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

struct http *http_new(const struct config *cfg, struct snapshot_slot *slot,
                      const struct features *f, struct stats *stats, char *err, size_t errlen)
{
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->listen_fd = -1;
    atomic_init(&h->stopping, 0);
    h->cfg = cfg;
    h->slot = slot;
    h->features = f;
    h->stats = stats;
    h->max_body = cfg->http.max_body;
    h->max_batch = cfg->http.max_batch;
    h->r_404 = shared_response("{\"error\": \"no such path\"}", NULL);
    h->r_405_get = shared_response("{\"error\": \"method not allowed: use GET\"}", "GET, HEAD");
    h->r_405_post = shared_response("{\"error\": \"method not allowed: use POST\"}", "POST");
    h->r_healthz = shared_response("{\"status\": \"ok\"}", NULL);
    if (!h->r_404 || !h->r_405_get || !h->r_405_post || !h->r_healthz) {
        snprintf(err, errlen, "out of memory");
        return http_free(h);
    }
    h->listen_fd = listen_on(cfg->http.listen, err, errlen);
    if (h->listen_fd < 0) return http_free(h);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(h->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    /* Seconds, rounded up: a 1500 ms setting must not close connections after 1 s. */
    unsigned timeout = (unsigned)((cfg->http.connection_timeout_ms + 999) / 1000);
    unsigned threads = cfg->http.threads ? cfg->http.threads : 1;
    /* ITC wakes a worker when the acceptor adds a connection to it */
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC,
                                 0, NULL, NULL, on_request, h, MHD_OPTION_THREAD_POOL_SIZE, threads,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http.max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, timeout,
                                 MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen,
                 "cannot start the HTTP server on %s (libmicrohttpd refused the "
                 "options: http.threads %u, http.max_connections %u)",
                 cfg->http.listen, threads, (unsigned)cfg->http.max_connections);
        return http_free(h);
    }
    int rc = pthread_create(&h->acceptor, NULL, acceptor_main, h);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the HTTP acceptor thread: %s", strerror(rc));
        return http_free(h);
    }
    h->acceptor_started = 1;
    return h;
}

struct http *http_free(struct http *h)
{
    if (!h) return NULL;
    if (h->acceptor_started) {
        /* shutdown() makes the blocked accept4() fail, and the flag tells it to stop */
        atomic_store_explicit(&h->stopping, 1, memory_order_release);
        shutdown(h->listen_fd, SHUT_RDWR);
        pthread_join(h->acceptor, NULL);
    }
    if (h->listen_fd >= 0) close(h->listen_fd);
    if (h->daemon) MHD_stop_daemon(h->daemon); /* closes every connection */
    if (h->r_404) MHD_destroy_response(h->r_404);
    if (h->r_405_get) MHD_destroy_response(h->r_405_get);
    if (h->r_405_post) MHD_destroy_response(h->r_405_post);
    if (h->r_healthz) MHD_destroy_response(h->r_healthz);
    free(h);
    return NULL;
}

uint16_t http_port(const struct http *h)
{
    return h->port;
}
