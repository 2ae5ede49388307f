/* intentd-replay — produces a data file into Kafka as intentd events (DESIGN.md §4, §5).
 *
 * The story: parse options, load the configuration (topics and the feature schema), read
 * the whole input into memory (a CSV is typed and rendered per the schema up front, so a
 * bad cell is reported before anything is sent), then produce it — paced, optionally
 * shuffled and looped — with an idempotent producer, wait for every delivery report and
 * sum up.
 *
 * Event time (CSV input).  Row g (counted across loops) is stamped
 *     ts = min(t0 + g * step, wall clock),   t0 = start - rows * step,
 * never decreasing.  A single pass therefore spans rows * step of event time ending about
 * "now" however fast it is sent, and the clicks whose window (labels.window +
 * labels.allowed_lateness) is still open at the end are only the last ones; later loops
 * continue at the wall clock, so the stream never goes back in time and never runs ahead of
 * the wall clock (a transaction is txn-delay ahead at most, and txn-delay <= 1m).
 * No trailing "watermark" event is sent: any extra click would be an extra session and
 * change the counts the daemon is checked against.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "broker.h"
#include "config.h"
#include "log.h"

#define WHO                "replay"
#define REPLAY_MAX_LEAD_MS 60000u /* event times never this far ahead of the wall clock */
#define REPLAY_MAX_XPROPS  64
#define REPLAY_PROGRESS_MS 2000u /* progress line period */

static volatile sig_atomic_t replay_stop; /* set by SIGINT/SIGTERM: stop producing, flush */

static const char replay_usage[] =
    "Usage: intentd-replay [OPTIONS] (--csv FILE --label COLUMN | --jsonl FILE)\n"
    "Produces a data file as intentd events into Kafka.\n"
    "\n"
    "  --brokers LIST|@FILE   bootstrap servers, or read them from FILE (as written by\n"
    "                         intentd-devbroker --bootstrap-file or STATE_DIR/embedded-brokers);\n"
    "                         default: kafka.brokers of --config (\"embedded\" reads\n"
    "                         STATE_DIR/embedded-brokers)\n"
    "  --config FILE          the daemon's configuration: topics, feature schema, window\n"
    "                         (default: built-in defaults, whose schema is PageValues, Month,\n"
    "                         Weekend)\n"
    "  --csv FILE             each row becomes a click event of a fresh session with the\n"
    "                         schema's features (typed per the schema; an empty cell is a\n"
    "                         missing feature); a positive row is followed by a transaction\n"
    "                         event of that session txn-delay later in event time\n"
    "  --label COLUMN         the CSV column holding the label (never sent as a feature)\n"
    "  --positive VALUE       label value meaning positive (default: true or 1, any case)\n"
    "  --direct               put the label into the click event (\"label\": 0/1) and send\n"
    "                         no transactions\n"
    "  --jsonl FILE           one event per line, sent unchanged: a line that is a JSON\n"
    "                         object with a top-level \"order_id\" goes to the transactions\n"
    "                         topic, every other line (malformed ones too) to the clicks\n"
    "                         topic; keyed by its \"session_id\" when that is a string\n"
    "  --rate N               events per second, clicks and transactions together\n"
    "                         (default 0: as fast as possible); after a stall it goes on\n"
    "                         at N, without a burst to catch up\n"
    "  --loop                 start over at the end, until interrupted\n"
    "  --shuffle SEED         send the rows in a random order (a new one every loop)\n"
    "  --limit N              only the first N rows or lines of the file\n"
    "  --step DURATION        event time between consecutive rows (default 5s)\n"
    "  --txn-delay DURATION   event time from a click to its transaction (default 5s, <= 1m)\n"
    "  --timeout DURATION     give up on an undelivered event after this (default 30s)\n"
    "  -X, --property K=V     a librdkafka producer property (repeatable), applied after\n"
    "                         kafka.properties and replay's own settings\n"
    "  -h, --help             show this help\n"
    "\n"
    "Session ids are \"s-RUN-LOOP-ROW\" (RUN from the start time and the pid), so they are\n"
    "unique across loops and runs.  Event times: row g of the stream is stamped\n"
    "min(start - rows*step + g*step, now), so one pass ends about now and loops never go\n"
    "back in time.  Events are keyed by session_id (partitioner murmur2_random).\n"
    "Exit status: 0 when every event sent was delivered (also after SIGINT/SIGTERM, which\n"
    "stop producing and wait for the deliveries), 1 otherwise or on bad input, 2 on bad\n"
    "usage.\n";

/* ---- small helpers ---------------------------------------------------------------- */

/* A growable byte buffer; rendering fails only on out-of-memory, checked once at the end. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

/* Appends s as a JSON string literal (quotes, backslashes and control bytes escaped; other
 * bytes are passed through, so UTF-8 stays UTF-8). */
static void sbuf_json_string(struct sbuf *b, const char *s)
{
    sbuf_add(b, "\"", 1);
    for (const char *run = s;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c != 0 && c != '"' && c != '\\' && c >= 0x20) continue;
        sbuf_add(b, run, (size_t)(s - run));
        if (c == 0) break;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        sbuf_puts(b, esc);
        run = s + 1;
    }
    sbuf_add(b, "\"", 1);
}

/* 1 if s is exactly a JSON number (RFC 8259 grammar), so it can be sent as written. */
static int is_json_number(const char *s)
{
    if (*s == '-') s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9') s++;
    else
        return 0;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9')) return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!(*s >= '0' && *s <= '9')) return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0';
}

/* splitmix64: a tiny seeded generator for shuffles and amounts. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Reads a whole file into a NUL-terminated buffer (the caller frees it).  Returns 0 or
 * -errno. */
static int read_file(const char *path, char **out, size_t *outlen)
{
    FILE *f = fopen(path, "rbe");
    if (!f) return -errno;
    struct sbuf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sbuf_add(&b, chunk, n);
    int rc = ferror(f) ? -EIO : b.oom ? -ENOMEM : 0;
    fclose(f);
    if (rc == 0 && !b.p) sbuf_add(&b, "", 0);
    if (rc == 0 && b.oom) rc = -ENOMEM;
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

/* ---- CSV ---------------------------------------------------------------------------- */

/* A CSV held in memory: cells point into buf, unquoted in place. */
struct csv {
    char *buf;
    size_t ncols;
    char **header; /* ncols names */
    char **cells;  /* nrows * ncols, row-major */
    size_t nrows;
};

/* Parses one record at *pp (RFC 4180: quoted fields with "" escapes, line breaks inside
 * quotes, LF or CRLF line ends, a UTF-8 byte-order mark skipped by the caller).  Appends the
 * fields to *fields (count in *n, capacity *cap).  Returns 1 for a record, 0 at the end of
 * the input, -EINVAL for an unterminated quote, -ENOMEM. */
static int csv_record(char **pp, char ***fields, size_t *n, size_t *cap)
{
    char *p = *pp;
    *n = 0;
    if (*p == '\0') return 0;
    for (;;) {
        char *start = p, *w = p;
        if (*p == '"') {
            p++;
            for (;;) {
                if (*p == '\0') return -EINVAL;
                if (*p == '"' && p[1] == '"') {
                    *w++ = '"';
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    break;
                } else {
                    *w++ = *p++;
                }
            }
        }
        while (*p && *p != ',' && *p != '\r' && *p != '\n') *w++ = *p++;
        char c = *p;
        *w = '\0'; /* w may be p: from here on read the terminator from c, not *p */
        if (*n == *cap) {
            size_t ncap = *cap ? *cap * 2 : 32;
            char **f = realloc(*fields, ncap * sizeof(*f));
            if (!f) return -ENOMEM;
            *fields = f;
            *cap = ncap;
        }
        (*fields)[(*n)++] = start;
        if (c == ',') {
            p++;
            continue;
        }
        if (c == '\r' && p[1] == '\n')
            p += 2;
        else if (c == '\r' || c == '\n')
            p++;
        break;
    }
    *pp = p;
    return 1;
}

/* Loads path as a CSV with a header row; limit > 0 keeps only the first limit data rows.
 * Returns 0, or -errno with err filled. */
static int csv_load(struct csv *csv, const char *path, size_t limit, char *err, size_t errlen)
{
    size_t len, n = 0, cap = 0, ncells = 0, cellcap = 0, line = 1;
    char **fields = NULL;
    int rc = read_file(path, &csv->buf, &len);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    char *p = csv->buf;
    if ((unsigned char)p[0] == 0xef && (unsigned char)p[1] == 0xbb && (unsigned char)p[2] == 0xbf)
        p += 3;
    rc = csv_record(&p, &fields, &n, &cap);
    if (rc <= 0) {
        snprintf(err, errlen, "%s: %s", path,
                 rc == 0 ? "empty file, no header row" : "malformed header row");
        free(fields);
        return rc == 0 ? -EINVAL : rc;
    }
    csv->ncols = n;
    csv->header = malloc(n * sizeof(char *));
    if (!csv->header) {
        free(fields);
        return -ENOMEM;
    }
    memcpy(csv->header, fields, n * sizeof(char *));
    while ((limit == 0 || csv->nrows < limit) && (rc = csv_record(&p, &fields, &n, &cap)) > 0) {
        line++;
        if (n == 1 && fields[0][0] == '\0') continue; /* a blank line */
        if (n != csv->ncols) {
            snprintf(err, errlen, "%s:%zu: %zu fields, but the header has %zu", path, line, n,
                     csv->ncols);
            free(fields);
            return -EINVAL;
        }
        if (ncells + n > cellcap) {
            size_t ncap = cellcap ? cellcap * 2 : 1024;
            while (ncells + n > ncap) ncap *= 2;
            char **c = realloc(csv->cells, ncap * sizeof(*c));
            if (!c) {
                free(fields);
                return -ENOMEM;
            }
            csv->cells = c;
            cellcap = ncap;
        }
        memcpy(csv->cells + ncells, fields, n * sizeof(char *));
        ncells += n;
        csv->nrows++;
    }
    free(fields);
    if (rc < 0) {
        snprintf(err, errlen, "%s:%zu: %s", path, line + 1,
                 rc == -EINVAL ? "unterminated quoted field" : strerror(-rc));
        return rc;
    }
    return 0;
}

static void csv_free(struct csv *csv)
{
    free(csv->buf);
    free(csv->header);
    free(csv->cells);
}

/* ---- the events ------------------------------------------------------------------- */

enum kind { KIND_CLICK = 0, KIND_TXN = 1 };

/* One row or line ready to send. */
struct item {
    size_t off;         /* CSV: rendered features object; JSONL: the line, both in the arena */
    size_t keyoff;      /* JSONL: session_id in the arena, or SIZE_MAX for none */
    unsigned label : 1; /* CSV: the row is positive */
    unsigned kind : 1;  /* JSONL: enum kind */
};

struct input {
    struct sbuf arena;
    struct item *items;
    size_t nitems;
    size_t nclick_items, ntxn_items; /* JSONL routing counts, for the start line */
};

/* A label cell: positive when it equals positive, or without one when it is true or 1. */
static int label_positive(const char *cell, const char *positive)
{
    if (positive) return strcmp(cell, positive) == 0;
    return strcasecmp(cell, "true") == 0 || strcmp(cell, "1") == 0;
}

/* Renders the schema's features of one CSV row as a JSON object into a.  Returns 0, or
 * -EINVAL with err naming the row, column and value. */
static int render_row(struct sbuf *a, const struct config *cfg, const int *col, char *const *row,
                      const char *path, size_t rowno, char *err, size_t errlen)
{
    bool first = true;
    sbuf_add(a, "{", 1);
    for (size_t f = 0; f < cfg->nfeatures; f++) {
        const struct config_feature *feat = &cfg->features[f];
        if (col[f] < 0) continue;
        const char *cell = row[col[f]];
        if (cell[0] == '\0') continue; /* an empty cell is a missing feature */
        if (!first) sbuf_add(a, ",", 1);
        first = false;
        sbuf_json_string(a, feat->name);
        sbuf_add(a, ":", 1);
        if (feat->type == FEATURE_NUMERIC) {
            char *end;
            double v = strtod(cell, &end);
            if (end == cell || *end || !isfinite(v)) {
                snprintf(err, errlen, "%s: row %zu, column %s: \"%s\" is not a finite number", path,
                         rowno, feat->name, cell);
                return -EINVAL;
            }
            if (is_json_number(cell)) {
                sbuf_puts(a, cell);
            } else {
                char num[32];
                snprintf(num, sizeof num, "%.17g", v);
                sbuf_puts(a, num);
            }
        } else if (feat->type == FEATURE_BOOLEAN) {
            if (strcasecmp(cell, "true") == 0 || strcmp(cell, "1") == 0) {
                sbuf_puts(a, "true");
            } else if (strcasecmp(cell, "false") == 0 || strcmp(cell, "0") == 0) {
                sbuf_puts(a, "false");
            } else {
                snprintf(err, errlen,
                         "%s: row %zu, column %s: \"%s\" is not a boolean "
                         "(true/false or 1/0)",
                         path, rowno, feat->name, cell);
                return -EINVAL;
            }
        } else {
            /* Categoricals go as the string written: the daemon hashes 2 and "2" alike. */
            sbuf_json_string(a, cell);
        }
    }
    sbuf_add(a, "}", 1);
    return 0;
}

/* Reads and renders the CSV.  Returns 0 or -errno with err filled. */
static int input_csv(struct input *in, const struct config *cfg, const char *path,
                     const char *label, const char *positive, size_t limit, char *err,
                     size_t errlen)
{
    struct csv csv = {0};
    int rc = csv_load(&csv, path, limit, err, errlen), lcol = -1;
    int *col = NULL;
    if (rc) goto out;
    for (size_t c = 0; c < csv.ncols; c++)
        if (strcmp(csv.header[c], label) == 0) lcol = (int)c;
    if (lcol < 0) {
        snprintf(err, errlen, "%s: no column \"%s\" (--label) in the header", path, label);
        rc = -EINVAL;
        goto out;
    }
    col = malloc((cfg->nfeatures + 1) * sizeof(int));
    in->items = calloc(csv.nrows + 1, sizeof(struct item));
    if (!col || !in->items) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t found = 0;
    for (size_t f = 0; f < cfg->nfeatures; f++) {
        col[f] = -1;
        for (size_t c = 0; c < csv.ncols; c++)
            if ((int)c != lcol && strcmp(csv.header[c], cfg->features[f].name) == 0)
                col[f] = (int)c;
        if (col[f] < 0)
            LOG(LOG_WARN, WHO, "feature %s is not a column of %s: it is never sent",
                cfg->features[f].name, path);
        else
            found++;
    }
    if (csv.nrows > 0 && found == 0) {
        snprintf(err, errlen,
                 "%s: none of the %zu features of the schema is a column "
                 "(wrong --config?)",
                 path, cfg->nfeatures);
        rc = -EINVAL;
        goto out;
    }
    for (size_t r = 0; r < csv.nrows; r++) {
        char *const *row = csv.cells + r * csv.ncols;
        const char *lv = row[lcol];
        if (lv[0] == '\0') {
            snprintf(err, errlen, "%s: row %zu: empty label (%s)", path, r + 1, label);
            rc = -EINVAL;
            goto out;
        }
        in->items[r].off = in->arena.len;
        in->items[r].keyoff = SIZE_MAX;
        in->items[r].label = (unsigned)label_positive(lv, positive);
        rc = render_row(&in->arena, cfg, col, row, path, r + 1, err, errlen);
        if (rc) goto out;
        sbuf_add(&in->arena, "", 1); /* keep the terminating NUL */
    }
    in->nitems = csv.nrows;
    if (in->arena.oom) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
    }
out:
    free(col);
    csv_free(&csv);
    return rc;
}

/* Reads the JSONL file: one event per non-empty line (CR before LF stripped).  Returns 0 or
 * -errno with err filled. */
static int input_jsonl(struct input *in, const char *path, size_t limit, char *err, size_t errlen)
{
    char *buf;
    size_t len, cap = 0;
    int rc = read_file(path, &buf, &len);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    for (char *p = buf, *nl; *p && (limit == 0 || in->nitems < limit); p = nl) {
        size_t n = strcspn(p, "\n");
        nl = p + n + (p[n] == '\n');
        if (n > 0 && p[n - 1] == '\r') n--;
        if (n == 0) continue;
        if (in->nitems == cap) {
            cap = cap ? cap * 2 : 1024;
            struct item *it = realloc(in->items, cap * sizeof(*it));
            if (!it) {
                free(buf);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
            }
            in->items = it;
        }
        struct item *it = &in->items[in->nitems++];
        json_t *j = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        const char *sid = j ? json_string_value(json_object_get(j, "session_id")) : NULL;
        it->kind = json_is_object(j) && json_object_get(j, "order_id") ? KIND_TXN : KIND_CLICK;
        it->label = 0;
        it->keyoff = SIZE_MAX;
        if (sid) {
            it->keyoff = in->arena.len;
            sbuf_add(&in->arena, sid, strlen(sid) + 1);
        }
        json_decref(j);
        it->off = in->arena.len;
        sbuf_add(&in->arena, p, n);
        sbuf_add(&in->arena, "", 1);
        if (it->kind == KIND_TXN)
            in->ntxn_items++;
        else
            in->nclick_items++;
    }
    free(buf);
    if (in->arena.oom) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* ---- producing ------------------------------------------------------------------------ */

struct replay {
    rd_kafka_t *rk;
    const char *topic[2];    /* by enum kind */
    uint64_t sent[2];        /* produce() accepted, by kind */
    uint64_t delivered[2];   /* delivery reports without error, by kind */
    uint64_t failed;         /* delivery reports with an error */
    uint64_t refused;        /* events produce() refused (never sent, so no report) */
    bool fatal;              /* the producer hit a fatal error */
    struct log_ratelimit rl; /* delivery error lines */
};

static void replay_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct replay *r = opaque;
    int kind = (int)(intptr_t)m->_private;
    (void)rk;
    if (!m->err) {
        r->delivered[kind]++;
        return;
    }
    r->failed++;
    uint64_t suppressed;
    if (log_ratelimit_ok(&r->rl, &suppressed))
        LOG(LOG_ERROR, WHO, "not delivered to %s: %s%s", r->topic[kind], rd_kafka_err2str(m->err),
            suppressed ? " (more errors suppressed)" : "");
}

static void replay_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct replay *r = opaque;
    char fatal[512];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        LOG(LOG_ERROR, WHO, "fatal producer error: %s", fatal);
        r->fatal = true;
        return;
    }
    /* Transport errors repeat while a broker is away; librdkafka retries by itself and
     * message.timeout.ms bounds the wait, so they are worth a line, not an exit. */
    uint64_t suppressed;
    if (log_ratelimit_ok(&r->rl, &suppressed)) LOG(LOG_WARN, WHO, "kafka: %s", reason);
}

/* librdkafka's own log: warnings and errors repeat what error_cb reports (rate-limited), so
 * only configuration warnings and the lines a `debug` property asks for are passed on. */
static void replay_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0)
        LOG(LOG_WARN, WHO, "kafka: %s", buf);
    else if (level >= 7)
        LOG(LOG_INFO, WHO, "kafka %s: %s", fac, buf);
}

static int set_prop(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) == RD_KAFKA_CONF_OK) return 0;
    snprintf(err, errlen, "kafka property %s: %s", k, errstr);
    return -EINVAL;
}

/* Creates the producer: kafka.properties of the configuration, then what replay needs, then
 * the -X properties (last, so that they can override anything).  Returns 0 or -EINVAL with
 * err filled. */
static int replay_open(struct replay *r, const struct config *cfg, const char *brokers,
                       uint64_t timeout_ms, char *const *xprops, size_t nxprops, char *err,
                       size_t errlen)
{
    char errstr[512], tmo[32];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = 0;
    for (size_t i = 0; i < cfg->kafka.nproperties && rc == 0; i++)
        rc = set_prop(conf, cfg->kafka.properties[i].key, cfg->kafka.properties[i].value, err,
                      errlen);
    snprintf(tmo, sizeof tmo, "%" PRIu64, timeout_ms);
    if (rc == 0) rc = set_prop(conf, "bootstrap.servers", brokers, err, errlen);
    /* The Java client's partitioner, so that a session's click and transaction land in the
     * same partition number of the two topics (DESIGN.md §5). */
    if (rc == 0) rc = set_prop(conf, "partitioner", "murmur2_random", err, errlen);
    if (rc == 0) rc = set_prop(conf, "enable.idempotence", "true", err, errlen);
    if (rc == 0) rc = set_prop(conf, "linger.ms", "5", err, errlen);
    if (rc == 0) rc = set_prop(conf, "message.timeout.ms", tmo, err, errlen);
    if (rc == 0) rc = set_prop(conf, "client.id", "intentd-replay", err, errlen);
    for (size_t i = 0; i < nxprops && rc == 0; i++) {
        char *eq = strchr(xprops[i], '=');
        *eq = '\0'; /* checked by the option parser */
        rc = set_prop(conf, xprops[i], eq + 1, err, errlen);
        *eq = '=';
    }
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_conf_set_dr_msg_cb(conf, replay_on_delivery);
    rd_kafka_conf_set_error_cb(conf, replay_on_error);
    rd_kafka_conf_set_log_cb(conf, replay_on_log);
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!r->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "cannot create the producer: %s", errstr);
        return -EINVAL;
    }
    /* conf is now owned by r->rk */
    return 0;
}

/* Asks for the metadata of the first ntopics topics before the first event.  Without it
 * librdkafka 2.0.2 sometimes sends the first topic metadata request only a second after
 * the first produce (seen on the dev broker: 1.0 s instead of a few ms for 100 events).  A
 * broker that does not answer within wait_ms is only a warning: the events then wait for
 * it up to --timeout like any other. */
static void replay_warm_up(struct replay *r, int ntopics, uint64_t wait_ms)
{
    int parts[2] = {-1, -1};
    for (int k = 0; k < ntopics; k++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(r->rk, r->topic[k], NULL);
        const rd_kafka_metadata_t *md = NULL;
        rd_kafka_resp_err_t e =
            rkt ? rd_kafka_metadata(r->rk, 0, rkt, &md, (int)wait_ms) : rd_kafka_last_error();
        if (!e && md->topic_cnt == 1 && md->topics[0].err) e = md->topics[0].err;
        if (!e && md->topic_cnt == 1) parts[k] = md->topics[0].partition_cnt;
        if (md) rd_kafka_metadata_destroy(md);
        if (rkt) rd_kafka_topic_destroy(rkt);
        if (e) {
            LOG(LOG_WARN, WHO, "metadata of %s: %s", r->topic[k], rd_kafka_err2str(e));
            break; /* one unanswered wait is enough */
        }
    }
    if (parts[0] > 0 && parts[1] > 0 && parts[0] != parts[1])
        LOG(LOG_WARN, WHO,
            "%s has %d partitions but %s has %d: a session's click and transaction land in "
            "partitions of different numbers (DESIGN.md §5 wants equal counts)",
            r->topic[0], parts[0], r->topic[1], parts[1]);
}

/* Sends one event, waiting while the local queue is full.  Returns 0 (sent, or refused and
 * counted as failed), 1 when SIGINT/SIGTERM came while it waited, or -1 after a fatal
 * producer error. */
static int replay_send(struct replay *r, int kind, const char *key, const char *value, size_t len)
{
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            r->rk, RD_KAFKA_V_TOPIC(r->topic[kind]), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
            RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(intptr_t)kind), RD_KAFKA_V_END);
        if (!e) {
            r->sent[kind]++;
            return 0;
        }
        if (e == RD_KAFKA_RESP_ERR__FATAL) return -1;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            /* This event only (too large for message.max.bytes, say): count it and go on. */
            uint64_t suppressed;
            r->refused++;
            if (log_ratelimit_ok(&r->rl, &suppressed))
                LOG(LOG_ERROR, WHO, "cannot produce to %s: %s", r->topic[kind],
                    rd_kafka_err2str(e));
            return 0;
        }
        rd_kafka_poll(r->rk, 50);
        if (r->fatal) return -1;
        if (replay_stop) return 1;
    }
}

static uint64_t replay_total(const uint64_t v[2])
{
    return v[0] + v[1];
}

/* Paces the stream at rate events/s: waits (in slices, so a signal is noticed) until event
 * number events is due.  After a stall of more than a second (a broker away, a full queue)
 * the schedule restarts from now instead of bursting to catch up. */
struct pacer {
    uint64_t base_ms; /* monotonic time of event number base_events */
    uint64_t base_events;
};

static void pace(struct replay *r, struct pacer *p, double rate, uint64_t events)
{
    uint64_t due = p->base_ms + (uint64_t)((double)(events - p->base_events) * 1000.0 / rate);
    uint64_t now = log_now_ms();
    if (now > due + 1000) {
        p->base_ms = now;
        p->base_events = events;
        return;
    }
    for (; !replay_stop && now < due; now = log_now_ms()) {
        uint64_t left = due - now;
        rd_kafka_poll(r->rk, (int)(left < 100 ? left : 100));
    }
}

/* What to send and how; fixed for the run. */
struct plan {
    const struct input *in;
    bool csv; /* CSV rows (rendered here) rather than JSONL lines (sent as read) */
    bool direct, loop, shuffle;
    uint64_t seed;    /* --shuffle */
    double rate;      /* events/s, 0 = unpaced */
    uint64_t t0;      /* event time of row 0 (ms since the epoch) */
    uint64_t step_ms; /* event time between rows */
    uint64_t txn_delay_ms;
    char run[40]; /* the run id in session ids */
};

/* Renders CSV row `row` of lap `lap` into ev: its click (txn = false) or its transaction,
 * at the click's event time ts.  The session id goes to sid. */
static void render_event(struct sbuf *ev, const struct plan *p, const struct item *it, size_t row,
                         uint64_t lap, bool txn, uint64_t ts, char *sid, size_t sidlen)
{
    char num[160];
    snprintf(sid, sidlen, "s-%s-%" PRIu64 "-%zu", p->run, lap, row);
    ev->len = 0;
    sbuf_puts(ev, "{\"session_id\":");
    sbuf_json_string(ev, sid);
    if (!txn) {
        snprintf(num, sizeof num, ",\"ts\":%" PRIu64 ",\"features\":", ts);
        sbuf_puts(ev, num);
        sbuf_puts(ev, p->in->arena.p + it->off);
        if (p->direct) sbuf_puts(ev, it->label ? ",\"label\":1" : ",\"label\":0");
    } else {
        /* A deterministic amount per row, 5.00 to 499.99. */
        uint64_t h = row * 0x9e3779b97f4a7c15ull;
        uint64_t cents = 500 + splitmix64(&h) % 49500;
        snprintf(num, sizeof num,
                 ",\"ts\":%" PRIu64 ",\"order_id\":\"o-%s-%" PRIu64 "-%zu\",\"amount\":%" PRIu64
                 ".%02" PRIu64,
                 ts + p->txn_delay_ms, p->run, lap, row, cents / 100, cents % 100);
        sbuf_puts(ev, num);
    }
    sbuf_puts(ev, "}");
}

/* Produces the stream (once, or lap after lap with --loop) until it ends or SIGINT/SIGTERM
 * stops it, with a progress line every REPLAY_PROGRESS_MS.  order is the row order
 * (reshuffled per lap with --shuffle).  Returns 0, or -1 when it stopped on an error
 * (logged). */
static int replay_stream(struct replay *r, const struct plan *p, size_t *order, uint64_t mono0)
{
    const struct input *in = p->in;
    uint64_t rng = p->seed, g = 0, last_ts = 0, events = 0;
    uint64_t next_progress = mono0 + REPLAY_PROGRESS_MS;
    struct pacer pacer = {.base_ms = mono0};
    struct sbuf ev = {0};
    char sid[128];
    int rc = 0;

    for (uint64_t lap = 0; rc == 0 && !replay_stop; lap++) {
        if (p->shuffle)
            for (size_t i = in->nitems - 1; i > 0; i--) {
                size_t j = (size_t)(splitmix64(&rng) % (i + 1));
                size_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        for (size_t i = 0; i < in->nitems && rc == 0 && !replay_stop; i++, g++) {
            const struct item *it = &in->items[order[i]];
            int nev = p->csv && it->label && !p->direct ? 2 : 1;
            if (p->csv) {
                /* ts = min(t0 + g * step, now), never decreasing: see the top of the file */
                uint64_t now = log_wall_ms(), ts = p->t0 + g * p->step_ms;
                if (ts > now) ts = now;
                if (ts > last_ts) last_ts = ts;
            }
            for (int k = 0; k < nev && rc == 0; k++) {
                if (p->rate > 0) pace(r, &pacer, p->rate, events);
                if (replay_stop) break;
                if (r->fatal) {
                    rc = -1;
                    break;
                }
                if (!p->csv) {
                    const char *key = it->keyoff == SIZE_MAX ? NULL : in->arena.p + it->keyoff;
                    const char *line = in->arena.p + it->off;
                    rc = replay_send(r, it->kind, key, line, strlen(line));
                } else {
                    render_event(&ev, p, it, order[i], lap, k == 1, last_ts, sid, sizeof sid);
                    if (ev.oom) {
                        LOG(LOG_ERROR, WHO, "out of memory");
                        rc = -1;
                        break;
                    }
                    rc = replay_send(r, k == 0 ? KIND_CLICK : KIND_TXN, sid, ev.p, ev.len);
                }
                if (rc > 0) rc = 0; /* stopped by a signal: not a failure */
                if (rc || replay_stop) break;
                events++;
                rd_kafka_poll(r->rk, 0);
                uint64_t now = log_now_ms();
                if (now >= next_progress) {
                    next_progress = now + REPLAY_PROGRESS_MS;
                    LOG(LOG_INFO, WHO,
                        "sent %" PRIu64 ", delivered %" PRIu64 ", failed %" PRIu64
                        ", %.0f events/s",
                        replay_total(r->sent), replay_total(r->delivered), r->failed + r->refused,
                        (double)events * 1000.0 / (double)(now - mono0 + 1));
                }
            }
        }
        if (!p->loop) break;
    }
    free(ev.p);
    return rc;
}

static void on_signal(int sig)
{
    (void)sig;
    replay_stop = 1;
}

static int bad_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "intentd-replay: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "Try 'intentd-replay --help'.\n");
    return 2;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0') return -EINVAL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -EINVAL;
    *out = v;
    return 0;
}

/* Resolves the bootstrap list: --brokers (LIST or @FILE), else kafka.brokers of the
 * configuration ("embedded": STATE_DIR/embedded-brokers).  Returns 0 or -errno. */
static int resolve_brokers(const char *opt, const struct config *cfg, char *out, size_t len,
                           char *err, size_t errlen)
{
    char path[4096];
    const char *file = NULL;
    if (opt && opt[0] == '@') {
        file = opt + 1;
    } else if (opt) {
        if (snprintf(out, len, "%s", opt) >= (int)len) return -ENAMETOOLONG;
        return 0;
    } else if (strcmp(cfg->kafka.brokers, "embedded") == 0) {
        snprintf(path, sizeof path, "%s/embedded-brokers", cfg->state_dir);
        file = path;
    } else {
        snprintf(out, len, "%s", cfg->kafka.brokers);
        return 0;
    }
    int rc = broker_read_bootstrap_file(file, out, len);
    if (rc)
        snprintf(err, errlen, "cannot read the broker list from %s: %s%s", file,
                 rc == -EINVAL ? "empty file" : strerror(-rc),
                 opt ? "" : " (is the daemon running? or pass --brokers)");
    return rc;
}

int main(int argc, char **argv)
{
    enum {
        OPT_BROKERS = 256,
        OPT_CONFIG,
        OPT_CSV,
        OPT_LABEL,
        OPT_POSITIVE,
        OPT_JSONL,
        OPT_RATE,
        OPT_LOOP,
        OPT_SHUFFLE,
        OPT_LIMIT,
        OPT_DIRECT,
        OPT_STEP,
        OPT_TXN_DELAY,
        OPT_TIMEOUT
    };
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, OPT_BROKERS},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"csv", required_argument, NULL, OPT_CSV},
        {"label", required_argument, NULL, OPT_LABEL},
        {"positive", required_argument, NULL, OPT_POSITIVE},
        {"jsonl", required_argument, NULL, OPT_JSONL},
        {"rate", required_argument, NULL, OPT_RATE},
        {"loop", no_argument, NULL, OPT_LOOP},
        {"shuffle", required_argument, NULL, OPT_SHUFFLE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"direct", no_argument, NULL, OPT_DIRECT},
        {"step", required_argument, NULL, OPT_STEP},
        {"txn-delay", required_argument, NULL, OPT_TXN_DELAY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"property", required_argument, NULL, 'X'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *brokers_opt = NULL, *config_path = NULL, *csv_path = NULL, *label = NULL;
    const char *positive = NULL, *jsonl_path = NULL;
    bool loop = false, shuffle = false, direct = false;
    uint64_t seed = 0, limit = 0, step_ms = 5000, txn_delay_ms = 5000, timeout_ms = 30000;
    double rate = 0;
    char err[8192];
    int c;

    char *xprops[REPLAY_MAX_XPROPS];
    size_t nxprops = 0;
    while ((c = getopt_long(argc, argv, "hX:", opts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS:
            brokers_opt = optarg;
            break;
        case OPT_CONFIG:
            config_path = optarg;
            break;
        case OPT_CSV:
            csv_path = optarg;
            break;
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_POSITIVE:
            positive = optarg;
            break;
        case OPT_JSONL:
            jsonl_path = optarg;
            break;
        case OPT_LOOP:
            loop = true;
            break;
        case OPT_DIRECT:
            direct = true;
            break;
        case OPT_RATE: {
            char *end;
            rate = strtod(optarg, &end);
            if (end == optarg || *end || !isfinite(rate) || rate < 0)
                return bad_usage("--rate wants a number of events per second >= 0", optarg);
            break;
        }
        case OPT_SHUFFLE:
            if (parse_u64(optarg, &seed)) return bad_usage("--shuffle wants a seed", optarg);
            shuffle = true;
            break;
        case OPT_LIMIT:
            if (parse_u64(optarg, &limit) || limit == 0)
                return bad_usage("--limit wants a count >= 1", optarg);
            break;
        case OPT_STEP:
            if (config_parse_duration(optarg, &step_ms))
                return bad_usage("--step wants a duration like 5s", optarg);
            break;
        case OPT_TXN_DELAY:
            if (config_parse_duration(optarg, &txn_delay_ms) || txn_delay_ms > REPLAY_MAX_LEAD_MS)
                return bad_usage("--txn-delay wants a duration of at most 1m", optarg);
            break;
        case OPT_TIMEOUT:
            if (config_parse_duration(optarg, &timeout_ms) || timeout_ms < 1 ||
                timeout_ms > INT32_MAX)
                return bad_usage("--timeout wants a duration like 30s", optarg);
            break;
        case 'X':
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return bad_usage("-X wants a librdkafka property as KEY=VALUE", optarg);
            if (nxprops == REPLAY_MAX_XPROPS) return bad_usage("too many -X properties", NULL);
            xprops[nxprops++] = optarg;
            break;
        case 'h':
            fputs(replay_usage, stdout);
            return 0;
        default:
            return bad_usage("invalid option", NULL);
        }
    }
    if (optind < argc) return bad_usage("unexpected argument", argv[optind]);
    if (!!csv_path == !!jsonl_path) return bad_usage("give exactly one of --csv and --jsonl", NULL);
    if (csv_path && !label) return bad_usage("--csv needs --label COLUMN", NULL);
    if (jsonl_path && (label || positive || direct))
        return bad_usage("--label, --positive and --direct apply to --csv only", NULL);

    struct config *cfg = config_new();
    if (!cfg) {
        LOG(LOG_ERROR, WHO, "out of memory");
        return 1;
    }
    if (config_path && config_load(cfg, config_path, err, sizeof err)) {
        LOG(LOG_ERROR, WHO, "%s", err);
        config_free(cfg);
        return 1;
    }

    struct input in = {0};
    int rc = csv_path
                 ? input_csv(&in, cfg, csv_path, label, positive, (size_t)limit, err, sizeof err)
                 : input_jsonl(&in, jsonl_path, (size_t)limit, err, sizeof err);
    if (rc) {
        LOG(LOG_ERROR, WHO, "%s", err);
        goto out_input;
    }
    if (in.nitems == 0) {
        LOG(LOG_ERROR, WHO, "%s holds no events", csv_path ? csv_path : jsonl_path);
        rc = -EINVAL;
        goto out_input;
    }

    char brokers[4096];
    rc = resolve_brokers(brokers_opt, cfg, brokers, sizeof brokers, err, sizeof err);
    if (rc) {
        if (rc == -ENAMETOOLONG) snprintf(err, sizeof err, "the broker list is too long");
        LOG(LOG_ERROR, WHO, "%s", err);
        goto out_input;
    }

    struct replay r = {.topic = {cfg->kafka.clicks_topic, cfg->kafka.transactions_topic},
                       .rl = {.period_ms = 5000, .burst = 5}};
    rc = replay_open(&r, cfg, brokers, timeout_ms, xprops, nxprops, err, sizeof err);
    if (rc) {
        LOG(LOG_ERROR, WHO, "%s", err);
        goto out_input;
    }
    replay_warm_up(&r, csv_path && direct ? 1 : 2, timeout_ms < 5000 ? timeout_ms : 5000);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    size_t *order = malloc(in.nitems * sizeof(size_t));
    if (!order) {
        LOG(LOG_ERROR, WHO, "out of memory");
        rc = -ENOMEM;
        goto out_producer;
    }
    for (size_t i = 0; i < in.nitems; i++) order[i] = i;

    const uint64_t wall0 = log_wall_ms(), mono0 = log_now_ms();
    /* RUN: the start time and the pid, so two runs (even in the same millisecond on one
     * machine) never share a session id. */
    char run[40];
    snprintf(run, sizeof run, "%" PRIx64 "%x", wall0, (unsigned)getpid());
    const uint64_t span = (uint64_t)in.nitems * step_ms;
    const uint64_t t0 = wall0 > span ? wall0 - span : 0;
    if (csv_path) {
        uint64_t open_ms = cfg->labels.window_ms + cfg->labels.allowed_lateness_ms;
        uint64_t tail = step_ms ? open_ms / step_ms + 1 : in.nitems;
        LOG(LOG_INFO, WHO,
            "%zu rows from %s to %s/%s, %s; event time spans %.1f h "
            "(step %" PRIu64 " ms); the last ~%" PRIu64 " clicks are within window + "
            "allowed lateness of the end and close only when later events arrive",
            in.nitems, csv_path, cfg->kafka.clicks_topic,
            direct ? "(no transactions: --direct)" : cfg->kafka.transactions_topic, brokers,
            (double)span / 3.6e6, step_ms, tail < in.nitems ? tail : in.nitems);
        if (loop && !direct)
            LOG(LOG_INFO, WHO,
                "--loop: after the first pass event time follows the wall "
                "clock, so a click's window closes %.1f min after it is sent",
                (double)open_ms / 60000.0);
        if (!direct && txn_delay_ms >= cfg->labels.window_ms)
            LOG(LOG_WARN, WHO,
                "--txn-delay is not shorter than labels.window: "
                "the transactions will not label their clicks");
    } else {
        LOG(LOG_INFO, WHO, "%zu lines from %s (%zu to %s, %zu to %s), to %s", in.nitems, jsonl_path,
            in.nclick_items, cfg->kafka.clicks_topic, in.ntxn_items, cfg->kafka.transactions_topic,
            brokers);
    }

    struct plan plan = {.in = &in,
                        .csv = csv_path != NULL,
                        .direct = direct,
                        .loop = loop,
                        .shuffle = shuffle,
                        .seed = seed,
                        .rate = rate,
                        .t0 = t0,
                        .step_ms = step_ms,
                        .txn_delay_ms = txn_delay_ms};
    memcpy(plan.run, run, sizeof run);
    int stream_rc = replay_stream(&r, &plan, order, mono0);
    if (replay_stop) LOG(LOG_INFO, WHO, "interrupted: waiting for the deliveries");

    /* Every message is reported within message.timeout.ms; the margin covers the last
     * round trip.  Whatever is still queued after that is purged and counted as failed. */
    rd_kafka_flush(r.rk, (int)(timeout_ms + 10000));
    if (rd_kafka_outq_len(r.rk) > 0) {
        rd_kafka_purge(r.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r.rk, 5000);
    }
    /* Accepted events without any report (only after a purge that did not finish). */
    uint64_t lost = replay_total(r.sent) - replay_total(r.delivered) - r.failed;
    uint64_t failed = r.failed + r.refused + lost;
    double secs = (double)(log_now_ms() - mono0) / 1000.0;
    LOG(LOG_INFO, WHO, "%.2f s, %.0f events/s", secs,
        secs > 0 ? (double)replay_total(r.delivered) / secs : 0.0);
    LOG(LOG_INFO, WHO,
        "delivered %" PRIu64 " events (%" PRIu64 " clicks, %" PRIu64 " transactions), %" PRIu64
        " failed",
        replay_total(r.delivered), r.delivered[KIND_CLICK], r.delivered[KIND_TXN], failed);
    rc = (failed == 0 && !r.fatal && !stream_rc) ? 0 : -EIO;
    free(order);
out_producer:
    rd_kafka_destroy(r.rk);
out_input:
    free(in.items);
    free(in.arena.p);
    config_free(cfg);
    return rc ? 1 : 0;
}
