/* checkpoint.c — the checkpoint container, its file format and the store (checkpoint.h). */
#include "checkpoint.h"
#include "errmsg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#define MAGIC     "INTENTDCK"
#define MAGIC_LEN 9
/* magic, version, count, trailer: a checkpoint with no section. */
#define HEADER_LEN  (MAGIC_LEN + 4 + 4)
#define TRAILER_LEN 8
#define MIN_LEN     (HEADER_LEN + TRAILER_LEN)

#define FILE_PREFIX     "checkpoint-"
#define FILE_PREFIX_LEN 11
#define SEQ_DIGITS      20
#define FILE_SUFFIX     ".ck"
#define TMP_SUFFIX      ".ck.tmp"
/* checkpoint-<20 digits>.ck.tmp and NUL */
#define FILE_NAME_MAX (FILE_PREFIX_LEN + SEQ_DIGITS + 7 + 1)

#define OFFSETS_SECTION "offsets"
#define U64_PREFIX      "u64:"
#define U64_PREFIX_LEN  4

#define PROBE_NAME ".intentd-write-probe"
/* How long open waits for another store's lock: a daemon killed a moment ago may still be
 * exiting when its successor starts. */
#define LOCK_WAIT_MS 3000

struct section {
    char *name;    /* NUL-terminated, 1..CHECKPOINT_NAME_MAX bytes, unique in its checkpoint */
    uint8_t *data; /* owned; NULL when len is 0 */
    size_t len;
};

struct checkpoint {
    struct section *sec; /* in insertion order, which is also file order */
    size_t n, cap;
    uint64_t seq; /* file sequence number it was loaded from / written as; 0 if neither */
};

struct checkpoint_store {
    char *dir;         /* as given to open, for messages */
    int dfd;           /* O_DIRECTORY descriptor; holds the exclusive flock */
    unsigned keep;     /* newest files kept after a write, >= 1 */
    uint64_t last_seq; /* largest sequence number seen in the folder or used by a write */
};

/* ---- the fault seam ---- */

static ssize_t real_write(int fd, const void *buf, size_t len)
{
    return write(fd, buf, len);
}

static int real_fsync(int fd)
{
    return fsync(fd);
}

static struct checkpoint_io io = {real_write, real_fsync};

void checkpoint_set_io(const struct checkpoint_io *replacement)
{
    if (replacement) {
        io.write = replacement->write ? replacement->write : real_write;
        io.fsync = replacement->fsync ? replacement->fsync : real_fsync;
    } else {
        io.write = real_write;
        io.fsync = real_fsync;
    }
}

/* ---- small helpers ---- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- the container ---- */

struct checkpoint *checkpoint_new(void)
{
    return calloc(1, sizeof(struct checkpoint));
}

struct checkpoint *checkpoint_free(struct checkpoint *cp)
{
    if (!cp) return NULL;
    for (size_t i = 0; i < cp->n; i++) {
        free(cp->sec[i].name);
        free(cp->sec[i].data);
    }
    free(cp->sec);
    free(cp);
    return NULL;
}

static struct section *find(const struct checkpoint *cp, const char *name)
{
    for (size_t i = 0; i < cp->n; i++)
        if (strcmp(cp->sec[i].name, name) == 0) return &cp->sec[i];
    return NULL;
}

static int valid_name(const char *name)
{
    if (!name) return 0;
    size_t n = strnlen(name, CHECKPOINT_NAME_MAX + 1);
    return n >= 1 && n <= CHECKPOINT_NAME_MAX;
}

/* Appends or replaces a section, taking ownership of data (freed on failure too). */
static int add_owned(struct checkpoint *cp, const char *name, uint8_t *data, size_t len)
{
    struct section *s = find(cp, name);
    if (s) {
        free(s->data);
        s->data = data;
        s->len = len;
        return 0;
    }
    if (cp->n == cp->cap) {
        size_t cap = cp->cap ? cp->cap * 2 : 8;
        struct section *sec = realloc(cp->sec, cap * sizeof *sec);
        if (!sec) {
            free(data);
            return -ENOMEM;
        }
        cp->sec = sec;
        cp->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        free(data);
        return -ENOMEM;
    }
    cp->sec[cp->n++] = (struct section){copy, data, len};
    return 0;
}

int checkpoint_add(struct checkpoint *cp, const char *name, const void *data, size_t len)
{
    if (!cp || !valid_name(name) || (len && !data)) return -EINVAL;
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return -ENOMEM;
        memcpy(copy, data, len);
    }
    return add_owned(cp, name, copy, len);
}

int checkpoint_take(struct checkpoint *cp, const char *name, void *data, size_t len)
{
    if (!cp || !valid_name(name) || (len && !data)) {
        free(data);
        return -EINVAL;
    }
    if (!len) {
        free(data); /* a section of 0 bytes holds no buffer */
        data = NULL;
    }
    return add_owned(cp, name, data, len);
}

int checkpoint_get(const struct checkpoint *cp, const char *name, const void **data, size_t *len)
{
    const struct section *s = cp && name ? find(cp, name) : NULL;
    if (!s) return -ENOENT;
    if (data) *data = s->data;
    if (len) *len = s->len;
    return 0;
}

size_t checkpoint_count(const struct checkpoint *cp)
{
    return cp ? cp->n : 0;
}

const char *checkpoint_name(const struct checkpoint *cp, size_t i)
{
    return cp && i < cp->n ? cp->sec[i].name : NULL;
}

uint64_t checkpoint_seq(const struct checkpoint *cp)
{
    return cp ? cp->seq : 0;
}

int checkpoint_set_offsets(struct checkpoint *cp, const struct checkpoint_offset *offs, size_t n)
{
    if (!cp || (n && !offs) || n > UINT32_MAX) return -EINVAL;
    size_t len = 4;
    for (size_t i = 0; i < n; i++) {
        size_t tl = strnlen(offs[i].topic, sizeof offs[i].topic);
        if (tl == 0 || tl > CHECKPOINT_TOPIC_MAX) return -EINVAL;
        len += 2 + tl + 4 + 8;
    }
    uint8_t *buf = malloc(len), *p = buf;
    if (!buf) return -ENOMEM;
    put_u32(p, (uint32_t)n);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(offs[i].topic);
        put_u16(p, (uint16_t)tl);
        memcpy(p + 2, offs[i].topic, tl);
        p += 2 + tl;
        put_u32(p, (uint32_t)offs[i].partition);
        put_u64(p + 4, (uint64_t)offs[i].offset);
        p += 12;
    }
    return add_owned(cp, OFFSETS_SECTION, buf, len);
}

int checkpoint_get_offsets(const struct checkpoint *cp, struct checkpoint_offset **offs, size_t *n)
{
    const void *data;
    size_t len;
    *offs = NULL;
    *n = 0;
    int rc = checkpoint_get(cp, OFFSETS_SECTION, &data, &len);
    if (rc < 0) return rc;
    const uint8_t *p = data, *end = p + len;
    if (len < 4) return -EBADMSG;
    uint32_t count = get_u32(p);
    p += 4;
    /* Each entry takes at least 15 bytes, which bounds a corrupt count before allocating. */
    if (count > (size_t)(end - p) / 15) return -EBADMSG;
    struct checkpoint_offset *out = count ? calloc(count, sizeof *out) : NULL;
    if (count && !out) return -ENOMEM;
    for (uint32_t i = 0; i < count; i++) {
        if (end - p < 2) goto bad;
        size_t tl = get_u16(p);
        p += 2;
        if (tl == 0 || tl > CHECKPOINT_TOPIC_MAX || (size_t)(end - p) < tl + 12) goto bad;
        if (memchr(p, '\0', tl)) goto bad;
        memcpy(out[i].topic, p, tl);
        out[i].topic[tl] = '\0';
        p += tl;
        out[i].partition = (int32_t)get_u32(p);
        out[i].offset = (int64_t)get_u64(p + 4);
        p += 12;
    }
    if (p != end) goto bad;
    *offs = out;
    *n = count;
    return 0;
bad:
    free(out);
    return -EBADMSG;
}

/* "u64:" name, or -EINVAL when it would not fit a section name. */
static int u64_name(char out[CHECKPOINT_NAME_MAX + 1], const char *name)
{
    if (!name) return -EINVAL;
    size_t n = strnlen(name, CHECKPOINT_NAME_MAX);
    if (n == 0 || n > CHECKPOINT_NAME_MAX - U64_PREFIX_LEN) return -EINVAL;
    memcpy(out, U64_PREFIX, U64_PREFIX_LEN);
    memcpy(out + U64_PREFIX_LEN, name, n + 1);
    return 0;
}

int checkpoint_set_u64(struct checkpoint *cp, const char *name, uint64_t value)
{
    char sname[CHECKPOINT_NAME_MAX + 1];
    if (!cp || u64_name(sname, name) < 0) return -EINVAL;
    uint8_t b[8];
    put_u64(b, value);
    return checkpoint_add(cp, sname, b, sizeof b);
}

int checkpoint_get_u64(const struct checkpoint *cp, const char *name, uint64_t *value)
{
    char sname[CHECKPOINT_NAME_MAX + 1];
    if (u64_name(sname, name) < 0) return -ENOENT;
    const void *data;
    size_t len;
    int rc = checkpoint_get(cp, sname, &data, &len);
    if (rc < 0) return rc;
    if (len != 8) return -EBADMSG;
    *value = get_u64(data);
    return 0;
}

/* ---- serialisation ---- */

/* Where encoded bytes go: put returns 0 or -errno. */
struct sink {
    int (*put)(struct sink *s, const void *p, size_t n);
    uint8_t *buf; /* memory sink: the output; file sink: a staging buffer */
    size_t len, cap;
    int fd; /* file sink only */
};

/* Feeds every byte of cp's encoding to the sink and the hash, then the trailer. */
static int serialise(const struct checkpoint *cp, struct sink *s)
{
    XXH3_state_t *h = XXH3_createState();
    if (!h) return -ENOMEM;
    XXH3_64bits_reset(h);
    uint8_t hdr[HEADER_LEN];
    memcpy(hdr, MAGIC, MAGIC_LEN);
    put_u32(hdr + MAGIC_LEN, CHECKPOINT_FORMAT_VERSION);
    put_u32(hdr + MAGIC_LEN + 4, (uint32_t)cp->n);
    int rc = s->put(s, hdr, sizeof hdr);
    XXH3_64bits_update(h, hdr, sizeof hdr);
    for (size_t i = 0; rc == 0 && i < cp->n; i++) {
        const struct section *sec = &cp->sec[i];
        size_t nl = strlen(sec->name);
        uint8_t head[2 + CHECKPOINT_NAME_MAX + 8];
        put_u16(head, (uint16_t)nl);
        memcpy(head + 2, sec->name, nl);
        put_u64(head + 2 + nl, (uint64_t)sec->len);
        rc = s->put(s, head, 2 + nl + 8);
        XXH3_64bits_update(h, head, 2 + nl + 8);
        if (rc == 0 && sec->len) {
            rc = s->put(s, sec->data, sec->len);
            XXH3_64bits_update(h, sec->data, sec->len);
        }
    }
    if (rc == 0) {
        uint8_t trailer[TRAILER_LEN];
        put_u64(trailer, XXH3_64bits_digest(h));
        rc = s->put(s, trailer, sizeof trailer);
    }
    XXH3_freeState(h);
    return rc;
}

static int mem_put(struct sink *s, const void *p, size_t n)
{
    if (s->cap - s->len < n) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n) cap *= 2;
        uint8_t *b = realloc(s->buf, cap);
        if (!b) return -ENOMEM;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

int checkpoint_encode(const struct checkpoint *cp, uint8_t **buf, size_t *len)
{
    struct sink s = {.put = mem_put, .fd = -1};
    int rc = serialise(cp, &s);
    if (rc < 0) {
        free(s.buf);
        return rc;
    }
    *buf = s.buf;
    *len = s.len;
    return 0;
}

/* Writes all of p, through the seam, retrying on EINTR and after short writes. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = io.write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (w == 0) return -EIO; /* no progress and no error: never loop forever */
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int file_flush(struct sink *s)
{
    int rc = write_all(s->fd, s->buf, s->len);
    s->len = 0;
    return rc;
}

/* Small pieces are staged so a checkpoint of many sections is not one syscall per header;
 * large ones go straight to the file without another copy. */
static int file_put(struct sink *s, const void *p, size_t n)
{
    if (n > s->cap - s->len) {
        int rc = file_flush(s);
        if (rc < 0) return rc;
        if (n >= s->cap) return write_all(s->fd, p, n);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

int checkpoint_decode(const void *buf, size_t len, struct checkpoint **out, char *err,
                      size_t errlen)
{
    const uint8_t *b = buf;
    *out = NULL;
    if (len < MAGIC_LEN ? memcmp(b, MAGIC, len) != 0 : memcmp(b, MAGIC, MAGIC_LEN) != 0) {
        errmsg_set(err, errlen, "bad magic: not an intentd checkpoint");
        return -EBADMSG;
    }
    if (len < MIN_LEN) {
        errmsg_set(err, errlen, "truncated: %zu bytes, shorter than the smallest checkpoint (%d)", len,
               MIN_LEN);
        return -EBADMSG;
    }
    uint32_t version = get_u32(b + MAGIC_LEN);
    if (version != CHECKPOINT_FORMAT_VERSION) {
        errmsg_set(err, errlen, "format version %" PRIu32 ", this build reads version %u", version,
               CHECKPOINT_FORMAT_VERSION);
        return -EPROTONOSUPPORT;
    }
    uint32_t count = get_u32(b + MAGIC_LEN + 4);
    if (count > CHECKPOINT_MAX_SECTIONS) {
        errmsg_set(err, errlen, "corrupt: %" PRIu32 " sections (at most %d)", count,
               CHECKPOINT_MAX_SECTIONS);
        return -EBADMSG;
    }
    /* Walk the section list within the bounds first, so a cut-off file is called truncated
     * rather than only failing its checksum. */
    size_t body_end = len - TRAILER_LEN, pos = HEADER_LEN;
    for (uint32_t i = 0; i < count; i++) {
        if (len - pos < 2) goto truncated;
        size_t nl = get_u16(b + pos);
        if (nl == 0 || nl > CHECKPOINT_NAME_MAX) {
            errmsg_set(err, errlen, "corrupt: section %" PRIu32 " has a name of %zu bytes", i, nl);
            return -EBADMSG;
        }
        if (len - pos - 2 < nl + 8) goto truncated;
        uint64_t dl = get_u64(b + pos + 2 + nl);
        pos += 2 + nl + 8;
        if (dl > len - pos) goto truncated;
        pos += (size_t)dl;
    }
    if (pos > body_end) goto truncated;
    if (pos < body_end) {
        errmsg_set(err, errlen, "corrupt: %zu bytes after the last section", body_end - pos);
        return -EBADMSG;
    }
    uint64_t stored = get_u64(b + body_end), computed = XXH3_64bits(b, body_end);
    if (stored != computed) {
        errmsg_set(err, errlen,
               "checksum mismatch (stored %016" PRIx64 ", computed %016" PRIx64
               "): the file is corrupt",
               stored, computed);
        return -EBADMSG;
    }

    struct checkpoint *cp = checkpoint_new();
    if (!cp) return -ENOMEM;
    pos = HEADER_LEN;
    for (uint32_t i = 0; i < count; i++) {
        size_t nl = get_u16(b + pos);
        char name[CHECKPOINT_NAME_MAX + 1];
        memcpy(name, b + pos + 2, nl);
        name[nl] = '\0';
        size_t dl = (size_t)get_u64(b + pos + 2 + nl);
        pos += 2 + nl + 8;
        if (strlen(name) != nl || find(cp, name)) {
            errmsg_set(err, errlen, "corrupt: section %" PRIu32 " has a %s name", i,
                   strlen(name) != nl ? "malformed" : "duplicate");
            checkpoint_free(cp);
            return -EBADMSG;
        }
        int rc = checkpoint_add(cp, name, b + pos, dl);
        if (rc < 0) {
            errmsg_set(err, errlen, "out of memory for section \"%s\" (%zu bytes)", name, dl);
            checkpoint_free(cp);
            return rc;
        }
        pos += dl;
    }
    *out = cp;
    return 0;
truncated:
    errmsg_set(err, errlen, "truncated: %zu bytes, its section list runs past the end", len);
    return -EBADMSG;
}

/* ---- the store ---- */

/* The sequence number of a file named checkpoint-<20 digits><suffix>, or 0 if it is not. */
static uint64_t parse_name(const char *name, const char *suffix)
{
    if (strncmp(name, FILE_PREFIX, FILE_PREFIX_LEN) != 0) return 0;
    const char *d = name + FILE_PREFIX_LEN;
    uint64_t seq = 0;
    for (int i = 0; i < SEQ_DIGITS; i++) {
        if (d[i] < '0' || d[i] > '9') return 0;
        uint64_t next = seq * 10 + (uint64_t)(d[i] - '0');
        if (next / 10 != seq) return 0; /* beyond uint64_t */
        seq = next;
    }
    return strcmp(d + SEQ_DIGITS, suffix) == 0 ? seq : 0;
}

static void file_name(char out[FILE_NAME_MAX], uint64_t seq, const char *suffix)
{
    snprintf(out, FILE_NAME_MAX, FILE_PREFIX "%020" PRIu64 "%s", seq, suffix);
}

/* The sequence numbers of the complete checkpoints, in *seqs (caller frees), descending;
 * stale .tmp files are removed when remove_tmp. Also raises st->last_seq. */
static int list_checkpoints(struct checkpoint_store *st, uint64_t **seqs, size_t *n, int remove_tmp)
{
    *seqs = NULL;
    *n = 0;
    int fd = openat(st->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        uint64_t seq = parse_name(de->d_name, FILE_SUFFIX);
        uint64_t tmp = seq ? 0 : parse_name(de->d_name, TMP_SUFFIX);
        if (tmp) {
            if (tmp > st->last_seq) st->last_seq = tmp;
            if (remove_tmp) unlinkat(st->dfd, de->d_name, 0);
        }
        if (!seq) continue;
        if (seq > st->last_seq) st->last_seq = seq;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        v[cnt++] = seq;
        errno = 0;
    }
    if (rc == 0 && errno) rc = -errno;
    closedir(d);
    if (rc < 0) {
        free(v);
        return rc;
    }
    /* Descending; an insertion sort is plenty for the handful of files kept. */
    for (size_t i = 1; i < cnt; i++) {
        uint64_t x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] < x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
    *seqs = v;
    *n = cnt;
    return 0;
}

/* mkdir -p with mode 0750 for the folders it creates. */
static int mkdir_p(const char *path)
{
    size_t n = strlen(path);
    char *p = strdup(path);
    if (!p) return -ENOMEM;
    int rc = 0;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        if (p[i - 1] == '/') continue; /* "a//b" */
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0750) < 0 && errno != EEXIST) rc = -errno;
        p[i] = c;
    }
    free(p);
    return rc;
}

static int lock_dir(int dfd)
{
    for (int waited = 0;; waited += 50) {
        if (flock(dfd, LOCK_EX | LOCK_NB) == 0) return 0;
        if (errno != EWOULDBLOCK && errno != EINTR) return -errno;
        if (waited >= LOCK_WAIT_MS) return -EBUSY;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
}

struct checkpoint_store *checkpoint_store_open(const char *state_dir, unsigned keep, char *err,
                                               size_t errlen)
{
    if (!state_dir || !*state_dir) {
        errmsg_set(err, errlen, "state_dir is empty");
        return NULL;
    }
    if (keep < 1) {
        errmsg_set(err, errlen, "checkpoint.keep must be at least 1 (got %u)", keep);
        return NULL;
    }
    struct stat sb;
    if (stat(state_dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        errmsg_set(err, errlen, "state_dir %s exists but is not a directory", state_dir);
        return NULL;
    }
    int rc = mkdir_p(state_dir);
    if (rc < 0) {
        errmsg_set(err, errlen, "cannot create state_dir %s: %s", state_dir, strerror(-rc));
        return NULL;
    }
    struct checkpoint_store *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(state_dir))) {
        free(st);
        errmsg_set(err, errlen, "out of memory opening state_dir %s", state_dir);
        return NULL;
    }
    st->keep = keep;
    st->dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dfd < 0) {
        rc = -errno;
        errmsg_set(err, errlen, "cannot open state_dir %s: %s", state_dir,
               rc == -ENOTDIR ? "it is not a directory" : strerror(-rc));
        goto fail;
    }
    rc = lock_dir(st->dfd);
    if (rc < 0) {
        errmsg_set(err, errlen, "state_dir %s is %s", state_dir,
               rc == -EBUSY ? "in use by another intentd (it is locked)" : strerror(-rc));
        goto fail;
    }
    /* As root, permission bits do not stop writes, but a read-only mount does: try one. */
    int pfd = openat(st->dfd, PROBE_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (pfd < 0) {
        rc = -errno;
        errmsg_set(err, errlen, "state_dir %s is not writable: %s", state_dir, strerror(-rc));
        goto fail;
    }
    close(pfd);
    unlinkat(st->dfd, PROBE_NAME, 0);
    uint64_t *seqs;
    size_t n;
    rc = list_checkpoints(st, &seqs, &n, 1);
    if (rc < 0) {
        errmsg_set(err, errlen, "cannot list state_dir %s: %s", state_dir, strerror(-rc));
        goto fail;
    }
    free(seqs);
    return st;
fail:
    checkpoint_store_free(st);
    return NULL;
}

struct checkpoint_store *checkpoint_store_free(struct checkpoint_store *st)
{
    if (!st) return NULL;
    if (st->dfd >= 0) close(st->dfd); /* releases the flock */
    free(st->dir);
    free(st);
    return NULL;
}

uint64_t checkpoint_store_last_seq(const struct checkpoint_store *st)
{
    return st ? st->last_seq : 0;
}

const char *checkpoint_store_dir(const struct checkpoint_store *st)
{
    return st ? st->dir : NULL;
}

void checkpoint_store_set_keep(struct checkpoint_store *st, unsigned keep)
{
    if (st) st->keep = keep ? keep : 1;
}

/* Removes all but the newest keep checkpoints and any .tmp.  Failures here are not the
 * write's: the new checkpoint is durable, and a leftover old file is only disk space. */
static void prune(struct checkpoint_store *st)
{
    uint64_t *seqs;
    size_t n;
    if (list_checkpoints(st, &seqs, &n, 1) < 0) return;
    for (size_t i = st->keep; i < n; i++) {
        char name[FILE_NAME_MAX];
        file_name(name, seqs[i], FILE_SUFFIX);
        unlinkat(st->dfd, name, 0);
    }
    free(seqs);
}

int checkpoint_store_write(struct checkpoint_store *st, struct checkpoint *cp, char *err,
                           size_t errlen)
{
    if (!st || !cp) return -EINVAL;
    /* A failed attempt still consumes its number, so a name is never reused even when a
     * renamed file survives a failed directory fsync. */
    uint64_t seq = ++st->last_seq;
    char tmp[FILE_NAME_MAX], fin[FILE_NAME_MAX];
    file_name(tmp, seq, TMP_SUFFIX);
    file_name(fin, seq, FILE_SUFFIX);
    const char *what = "create";
    int rc, fd = openat(st->dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        errmsg_set(err, errlen, "cannot create checkpoint %s/%s: %s", st->dir, tmp, strerror(-rc));
        return rc;
    }
    struct sink s = {.put = file_put, .fd = fd, .cap = 1 << 16};
    s.buf = malloc(s.cap);
    rc = s.buf ? 0 : -ENOMEM;
    what = "write";
    if (rc == 0) rc = serialise(cp, &s);
    if (rc == 0) rc = file_flush(&s);
    free(s.buf);
    if (rc == 0) {
        what = "fsync";
        if (io.fsync(fd) < 0) rc = -errno;
    }
    if (close(fd) < 0 && rc == 0) {
        what = "close";
        rc = -errno;
    }
    if (rc == 0) {
        what = "rename";
        if (renameat(st->dfd, tmp, st->dfd, fin) < 0) rc = -errno;
    }
    if (rc < 0) {
        unlinkat(st->dfd, tmp, 0);
        errmsg_set(err, errlen, "cannot %s checkpoint %s/%s: %s", what, st->dir, tmp, strerror(-rc));
        return rc;
    }
    if (io.fsync(st->dfd) < 0) {
        rc = -errno;
        errmsg_set(err, errlen, "cannot fsync state_dir %s after renaming checkpoint %s: %s", st->dir,
               fin, strerror(-rc));
        return rc;
    }
    cp->seq = seq;
    prune(st);
    return 0;
}

/* Reads a whole file into a new buffer.  Returns 0, or -errno with what failed in *what. */
static int read_file(int dfd, const char *name, uint8_t **buf, size_t *len, const char **what)
{
    *buf = NULL;
    *len = 0;
    *what = "open";
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat sb;
    int rc = 0;
    *what = "stat";
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        goto out;
    }
    size_t size = (size_t)sb.st_size, got = 0;
    uint8_t *b = malloc(size ? size : 1);
    if (!b) {
        rc = -ENOMEM;
        goto out;
    }
    *what = "read";
    while (got < size) {
        ssize_t r = read(fd, b + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = -errno;
            free(b);
            goto out;
        }
        if (r == 0) break; /* shrank under us: decode calls what is left truncated */
        got += (size_t)r;
    }
    *buf = b;
    *len = got;
out:
    close(fd);
    return rc;
}

int checkpoint_store_load_latest(struct checkpoint_store *st, struct checkpoint **out, char *err,
                                 size_t errlen, checkpoint_warn_fn warn, void *ctx)
{
    *out = NULL;
    uint64_t *seqs;
    size_t n;
    int rc = list_checkpoints(st, &seqs, &n, 0);
    if (rc < 0) {
        errmsg_set(err, errlen, "cannot list state_dir %s: %s", st->dir, strerror(-rc));
        return rc;
    }
    size_t skipped = 0;
    for (size_t i = 0; i < n; i++) {
        char name[FILE_NAME_MAX], path[4096 + FILE_NAME_MAX], why[256];
        file_name(name, seqs[i], FILE_SUFFIX);
        snprintf(path, sizeof path, "%s/%s", st->dir, name);
        uint8_t *buf;
        size_t len;
        const char *what;
        rc = read_file(st->dfd, name, &buf, &len, &what);
        if (rc == -ENOMEM) {
            errmsg_set(err, errlen, "out of memory reading checkpoint %s", path);
            free(seqs);
            return rc;
        }
        if (rc < 0) {
            snprintf(why, sizeof why, "cannot %s it: %s", what, strerror(-rc));
        } else {
            struct checkpoint *cp;
            rc = checkpoint_decode(buf, len, &cp, why, sizeof why);
            free(buf);
            if (rc == -ENOMEM) {
                errmsg_set(err, errlen, "out of memory loading checkpoint %s", path);
                free(seqs);
                return rc;
            }
            if (rc == 0) {
                cp->seq = seqs[i];
                *out = cp;
                free(seqs);
                return 0;
            }
        }
        skipped++;
        if (warn) warn(ctx, path, why);
    }
    free(seqs);
    errmsg_set(err, errlen, "no valid checkpoint in %s (%zu skipped)", st->dir, skipped);
    return -ENOENT;
}
