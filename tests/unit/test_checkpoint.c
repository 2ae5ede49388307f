/* Unit tests of the checkpoint container, its format and the store (checkpoint.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "unit.h"

/* ---- helpers ---- */

/* Collected warnings of load_latest. */
struct warns {
    int n;
    char path[8][512];
    char why[8][256];
};

static void collect(void *ctx, const char *path, const char *why)
{
    struct warns *w = ctx;
    if (w->n < 8) {
        snprintf(w->path[w->n], sizeof w->path[0], "%s", path);
        snprintf(w->why[w->n], sizeof w->why[0], "%s", why);
    }
    w->n++;
}

static const char *state_dir(const char *sub)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", unit_tmpdir(), sub);
    return p;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (l >= s && strcmp(de->d_name + l - s, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

static void ck_path(char *out, size_t n, const char *dir, unsigned long long seq)
{
    snprintf(out, n, "%s/checkpoint-%020llu.ck", dir, seq);
}

/* A checkpoint whose "meta" counter "gen" is gen, with a section of a few KB. */
static struct checkpoint *generation(uint64_t gen)
{
    struct checkpoint *cp = checkpoint_new();
    CHECK(cp != NULL);
    CHECK_INT_EQ(checkpoint_set_u64(cp, "gen", gen), 0);
    uint8_t blob[5000];
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (uint8_t)(i * 7 + gen);
    CHECK_INT_EQ(checkpoint_add(cp, "learner", blob, sizeof blob), 0);
    return cp;
}

static void write_generation(struct checkpoint_store *st, uint64_t gen)
{
    char err[512] = "";
    struct checkpoint *cp = generation(gen);
    int rc = checkpoint_store_write(st, cp, err, sizeof err);
    if (rc != 0) unit_fail(__FILE__, __LINE__, "write gen %llu: %s", (unsigned long long)gen, err);
    checkpoint_free(cp);
}

/* Loads the newest valid checkpoint and returns its "gen" counter. */
static uint64_t load_gen(struct checkpoint_store *st, struct warns *w)
{
    char err[512] = "";
    struct checkpoint *cp = NULL;
    int rc = checkpoint_store_load_latest(st, &cp, err, sizeof err, collect, w);
    if (rc != 0) unit_fail(__FILE__, __LINE__, "load: %d %s", rc, err);
    uint64_t gen = 0;
    CHECK_INT_EQ(checkpoint_get_u64(cp, "gen", &gen), 0);
    const void *data;
    size_t len;
    CHECK_INT_EQ(checkpoint_get(cp, "learner", &data, &len), 0);
    CHECK_INT_EQ(len, 5000);
    CHECK_INT_EQ(((const uint8_t *)data)[4999], (uint8_t)(4999 * 7 + gen));
    checkpoint_free(cp);
    return gen;
}

static void flip_byte(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK(fseek(f, at, SEEK_SET) == 0);
    int c = fgetc(f);
    CHECK(c != EOF);
    CHECK(fseek(f, at, SEEK_SET) == 0);
    fputc(c ^ 0x40, f);
    CHECK(fclose(f) == 0);
}

static long file_size(const char *path)
{
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    return (long)sb.st_size;
}

/* ---- the fault seam ---- */

static long fake_budget;     /* bytes write may still accept; < 0 means unlimited */
static int fake_write_errno; /* errno once the budget is spent */
static size_t fake_chunk;    /* most bytes one write accepts (0: all) */
static int fake_eintr;       /* fail every other call with EINTR */
static int fake_calls;
static int fake_fsync_fail_at; /* 1-based fsync call that fails with EIO; 0: none */
static int fake_fsyncs;

static ssize_t fake_write(int fd, const void *buf, size_t len)
{
    fake_calls++;
    if (fake_eintr && fake_calls % 2 == 1) {
        errno = EINTR;
        return -1;
    }
    if (fake_budget == 0) {
        errno = fake_write_errno;
        return -1;
    }
    if (fake_chunk && len > fake_chunk) len = fake_chunk;
    if (fake_budget > 0 && (long)len > fake_budget) len = (size_t)fake_budget;
    ssize_t w = write(fd, buf, len);
    if (w > 0 && fake_budget > 0) fake_budget -= w;
    return w;
}

static int fake_fsync(int fd)
{
    if (++fake_fsyncs == fake_fsync_fail_at) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static void fake_reset(void)
{
    fake_budget = -1;
    fake_write_errno = ENOSPC;
    fake_chunk = 0;
    fake_eintr = 0;
    fake_calls = 0;
    fake_fsync_fail_at = 0;
    fake_fsyncs = 0;
    static const struct checkpoint_io fake = {fake_write, fake_fsync};
    checkpoint_set_io(&fake);
}

/* ---- the container and the format ---- */

void test_checkpoint_round_trip_every_section_type(void)
{
    struct checkpoint *cp = checkpoint_new();
    CHECK(cp != NULL);
    uint8_t learner[3000];
    for (size_t i = 0; i < sizeof learner; i++) learner[i] = (uint8_t)(i ^ (i >> 8));
    CHECK_INT_EQ(checkpoint_add(cp, "learner", learner, sizeof learner), 0);
    CHECK_INT_EQ(checkpoint_add(cp, "joiner", "old", 3), 0);
    CHECK_INT_EQ(checkpoint_add(cp, "joiner", "pending\0clicks", 14), 0); /* replaces */
    CHECK_INT_EQ(checkpoint_add(cp, "snapshot", NULL, 0), 0);
    char *owned = strdup("taken, not copied");
    CHECK_INT_EQ(checkpoint_take(cp, "meta", owned, 17), 0);
    const void *peek;
    CHECK_INT_EQ(checkpoint_get(cp, "meta", &peek, NULL), 0);
    CHECK(peek == owned); /* no copy was made */
    struct checkpoint_offset offs[3] = {
        {"shop.clicks", 0, 0}, {"shop.clicks", 5, 123456789012345LL}, {"shop.transactions", 2, -1}};
    memset(offs[2].topic, 0, sizeof offs[2].topic);
    memset(offs[2].topic, 'x', CHECKPOINT_TOPIC_MAX); /* longest topic */
    CHECK_INT_EQ(checkpoint_set_offsets(cp, offs, 3), 0);
    CHECK_INT_EQ(checkpoint_set_u64(cp, "trained_examples", 0xfedcba9876543210ULL), 0);
    CHECK_INT_EQ(checkpoint_set_u64(cp, "served_version", 7), 0);
    CHECK_INT_EQ(checkpoint_count(cp), 7);
    CHECK_STR_EQ(checkpoint_name(cp, 1), "joiner");

    char err[512] = "";
    struct checkpoint_store *st = checkpoint_store_open(state_dir("s"), 2, err, sizeof err);
    CHECK(st != NULL);
    CHECK_INT_EQ(checkpoint_store_write(st, cp, err, sizeof err), 0);
    CHECK_INT_EQ(checkpoint_seq(cp), 1);
    checkpoint_free(cp);

    struct warns w = {0};
    struct checkpoint *got = NULL;
    CHECK_INT_EQ(checkpoint_store_load_latest(st, &got, err, sizeof err, collect, &w), 0);
    CHECK_INT_EQ(w.n, 0);
    CHECK_INT_EQ(checkpoint_seq(got), 1);
    CHECK_INT_EQ(checkpoint_count(got), 7);
    for (size_t i = 0; i < 7; i++) {
        static const char *order[] = {
            "learner",           "joiner", "snapshot", "meta", "offsets", "u64:trained_examples",
            "u64:served_version"};
        CHECK_STR_EQ(checkpoint_name(got, i), order[i]);
    }
    const void *data;
    size_t len;
    CHECK_INT_EQ(checkpoint_get(got, "learner", &data, &len), 0);
    CHECK_INT_EQ(len, sizeof learner);
    CHECK(memcmp(data, learner, len) == 0);
    CHECK_INT_EQ(checkpoint_get(got, "joiner", &data, &len), 0);
    CHECK_INT_EQ(len, 14);
    CHECK(memcmp(data, "pending\0clicks", 14) == 0);
    CHECK_INT_EQ(checkpoint_get(got, "snapshot", &data, &len), 0);
    CHECK_INT_EQ(len, 0);
    CHECK_INT_EQ(checkpoint_get(got, "meta", &data, &len), 0);
    CHECK_INT_EQ(len, 17);
    CHECK(memcmp(data, "taken, not copied", 17) == 0);
    CHECK_INT_EQ(checkpoint_get(got, "absent", &data, &len), -ENOENT);

    struct checkpoint_offset *o = NULL;
    size_t n = 0;
    CHECK_INT_EQ(checkpoint_get_offsets(got, &o, &n), 0);
    CHECK_INT_EQ(n, 3);
    for (size_t i = 0; i < 3; i++) {
        CHECK_STR_EQ(o[i].topic, offs[i].topic);
        CHECK_INT_EQ(o[i].partition, offs[i].partition);
        CHECK_INT_EQ(o[i].offset, offs[i].offset);
    }
    free(o);
    uint64_t v = 0;
    CHECK_INT_EQ(checkpoint_get_u64(got, "trained_examples", &v), 0);
    CHECK(v == 0xfedcba9876543210ULL);
    CHECK_INT_EQ(checkpoint_get_u64(got, "served_version", &v), 0);
    CHECK_INT_EQ(v, 7);
    CHECK_INT_EQ(checkpoint_get_u64(got, "nope", &v), -ENOENT);
    CHECK_INT_EQ(checkpoint_get_u64(got, "", &v), -ENOENT);
    checkpoint_free(got);
    CHECK(checkpoint_store_free(st) == NULL);
    CHECK(checkpoint_store_free(NULL) == NULL);
    CHECK(checkpoint_free(NULL) == NULL);
}

void test_checkpoint_rejects_bad_arguments(void)
{
    struct checkpoint *cp = checkpoint_new();
    char longname[CHECKPOINT_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_INT_EQ(checkpoint_add(cp, "", "x", 1), -EINVAL);
    CHECK_INT_EQ(checkpoint_add(cp, longname, "x", 1), -EINVAL);
    longname[CHECKPOINT_NAME_MAX] = '\0';
    CHECK_INT_EQ(checkpoint_add(cp, longname, "x", 1), 0); /* exactly the maximum */
    CHECK_INT_EQ(checkpoint_add(cp, "x", NULL, 4), -EINVAL);
    CHECK_INT_EQ(checkpoint_take(cp, "", malloc(8), 8), -EINVAL); /* freed: ASan would tell */
    CHECK_INT_EQ(checkpoint_take(cp, "empty", malloc(8), 0), 0);
    size_t elen = 1;
    const void *edata = "";
    CHECK_INT_EQ(checkpoint_get(cp, "empty", &edata, &elen), 0);
    CHECK(edata == NULL && elen == 0);
    CHECK_INT_EQ(checkpoint_set_u64(cp, longname, 1), -EINVAL); /* "u64:" would not fit */
    struct checkpoint_offset empty = {"", 0, 0};
    CHECK_INT_EQ(checkpoint_set_offsets(cp, &empty, 1), -EINVAL);
    struct checkpoint_offset unterminated;
    memset(unterminated.topic, 'a', sizeof unterminated.topic);
    CHECK_INT_EQ(checkpoint_set_offsets(cp, &unterminated, 1), -EINVAL);
    struct checkpoint_offset *o;
    size_t n;
    CHECK_INT_EQ(checkpoint_get_offsets(cp, &o, &n), -ENOENT);
    /* An offsets section that is not one. */
    CHECK_INT_EQ(checkpoint_add(cp, "offsets", "\x01\0\0\0\x05\0ab", 8), 0);
    CHECK_INT_EQ(checkpoint_get_offsets(cp, &o, &n), -EBADMSG);
    CHECK_INT_EQ(checkpoint_set_offsets(cp, NULL, 0), 0);
    CHECK_INT_EQ(checkpoint_get_offsets(cp, &o, &n), 0);
    CHECK_INT_EQ(n, 0);
    CHECK(o == NULL);
    CHECK_INT_EQ(checkpoint_add(cp, "u64:short", "abc", 3), 0);
    uint64_t v;
    CHECK_INT_EQ(checkpoint_get_u64(cp, "short", &v), -EBADMSG);
    checkpoint_free(cp);
}

/* Every truncation and every single-bit flip of an encoded checkpoint is refused. */
void test_checkpoint_decode_refuses_every_truncation_and_bit_flip(void)
{
    struct checkpoint *cp = generation(3);
    struct checkpoint_offset off = {"t", 1, 99};
    CHECK_INT_EQ(checkpoint_set_offsets(cp, &off, 1), 0);
    CHECK_INT_EQ(checkpoint_add(cp, "small", "abc", 3), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(checkpoint_encode(cp, &buf, &len), 0);
    CHECK(memcmp(buf, "INTENTDCK\x01\0\0\0\x04\0\0\0", 13) == 0); /* explicit LE header */
    char err[256];
    struct checkpoint *got;
    CHECK_INT_EQ(checkpoint_decode(buf, len, &got, err, sizeof err), 0);
    CHECK_INT_EQ(checkpoint_count(got), 4);
    checkpoint_free(got);
    for (size_t cut = 0; cut < len; cut++) {
        err[0] = '\0';
        CHECK_INT_EQ(checkpoint_decode(buf, cut, &got, err, sizeof err), -EBADMSG);
        CHECK(got == NULL);
        if (cut >= 9) CHECK_STR_HAS(err, "truncated");
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1 << bit);
            int rc = checkpoint_decode(buf, len, &got, err, sizeof err);
            if (rc == 0) unit_fail(__FILE__, __LINE__, "flip of byte %zu bit %d accepted", i, bit);
            CHECK(got == NULL);
            buf[i] ^= (uint8_t)(1 << bit);
        }
    }
    /* A flip in the data is a checksum failure; in the version, a version failure. */
    buf[len - 100] ^= 1;
    CHECK_INT_EQ(checkpoint_decode(buf, len, &got, err, sizeof err), -EBADMSG);
    CHECK_STR_HAS(err, "checksum mismatch");
    buf[len - 100] ^= 1;
    buf[9] = 2;
    CHECK_INT_EQ(checkpoint_decode(buf, len, &got, err, sizeof err), -EPROTONOSUPPORT);
    CHECK_STR_HAS(err, "format version 2");
    buf[9] = 1;
    buf[0] = 'X';
    CHECK_INT_EQ(checkpoint_decode(buf, len, &got, err, sizeof err), -EBADMSG);
    CHECK_STR_HAS(err, "bad magic");
    free(buf);
    checkpoint_free(cp);
}

/* ---- the store ---- */

void test_checkpoint_empty_dir_is_enoent(void)
{
    char err[512] = "";
    const char *dir = state_dir("a/b/c"); /* created with its parents */
    struct checkpoint_store *st = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(st != NULL);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK_INT_EQ(checkpoint_store_last_seq(st), 0);
    struct checkpoint *cp = (struct checkpoint *)1;
    struct warns w = {0};
    CHECK_INT_EQ(checkpoint_store_load_latest(st, &cp, err, sizeof err, collect, &w), -ENOENT);
    CHECK(cp == NULL);
    CHECK_INT_EQ(w.n, 0);
    CHECK_STR_HAS(err, "no valid checkpoint");
    checkpoint_store_free(st);
}

void test_checkpoint_corrupt_newest_falls_back_with_warning(void)
{
    char err[512] = "", newest[4096];
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(st != NULL);
    for (uint64_t g = 1; g <= 3; g++) write_generation(st, g);
    ck_path(newest, sizeof newest, dir, 3);
    flip_byte(newest, file_size(newest) / 2);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 2);
    CHECK_INT_EQ(w.n, 1);
    CHECK_STR_EQ(w.path[0], newest);
    CHECK_STR_HAS(w.why[0], "checksum mismatch");
    /* The next write still goes after the corrupt one, never reusing its number. */
    write_generation(st, 4);
    CHECK_INT_EQ(checkpoint_store_last_seq(st), 4);
    w.n = 0;
    CHECK_INT_EQ(load_gen(st, &w), 4);
    CHECK_INT_EQ(w.n, 0);
    checkpoint_store_free(st);
}

void test_checkpoint_truncated_and_foreign_files_are_skipped(void)
{
    char err[512] = "", p[4096];
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 5, err, sizeof err);
    CHECK(st != NULL);
    for (uint64_t g = 1; g <= 4; g++) write_generation(st, g);
    ck_path(p, sizeof p, dir, 4);
    CHECK(truncate(p, file_size(p) / 2) == 0);
    ck_path(p, sizeof p, dir, 3);
    CHECK(truncate(p, 0) == 0);
    ck_path(p, sizeof p, dir, 2);
    flip_byte(p, 9); /* the version field */
    /* Files that are not checkpoints by name are ignored, not warned about. */
    char other[4200];
    snprintf(other, sizeof other, "%s/checkpoint-99.ck", dir);
    FILE *f = fopen(other, "w");
    CHECK(f && fputs("junk", f) >= 0 && fclose(f) == 0);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 1);
    CHECK_INT_EQ(w.n, 3);
    CHECK_STR_HAS(w.path[0], "checkpoint-00000000000000000004.ck");
    CHECK_STR_HAS(w.why[0], "truncated");
    CHECK_STR_HAS(w.path[1], "checkpoint-00000000000000000003.ck");
    CHECK_STR_HAS(w.why[1], "truncated");
    CHECK_STR_HAS(w.path[2], "checkpoint-00000000000000000002.ck");
    CHECK_STR_HAS(w.why[2], "format version");
    /* With the last one gone too: -ENOENT, saying how many were skipped. */
    ck_path(p, sizeof p, dir, 1);
    flip_byte(p, 0);
    w.n = 0;
    struct checkpoint *cp;
    CHECK_INT_EQ(checkpoint_store_load_latest(st, &cp, err, sizeof err, collect, &w), -ENOENT);
    CHECK_INT_EQ(w.n, 4);
    CHECK_STR_HAS(w.why[3], "bad magic");
    CHECK_STR_HAS(err, "4 skipped");
    /* NULL warn callback is allowed. */
    CHECK_INT_EQ(checkpoint_store_load_latest(st, &cp, err, sizeof err, NULL, NULL), -ENOENT);
    checkpoint_store_free(st);
}

void test_checkpoint_keep_retains_newest(void)
{
    char err[512] = "", p[4096];
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(st != NULL);
    for (uint64_t g = 1; g <= 7; g++) {
        write_generation(st, g);
        CHECK_INT_EQ(count_files(dir, ".ck"), g < 3 ? (int)g : 3);
    }
    for (unsigned long long s = 1; s <= 7; s++) {
        ck_path(p, sizeof p, dir, s);
        CHECK_INT_EQ(access(p, F_OK) == 0, s >= 5);
    }
    CHECK_INT_EQ(count_files(dir, ".tmp"), 0);
    checkpoint_store_free(st);
    CHECK(checkpoint_store_open(dir, 0, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "at least 1");
}

void test_checkpoint_sequence_continues_after_reopen(void)
{
    char err[512] = "";
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 2, err, sizeof err);
    CHECK(st != NULL);
    for (uint64_t g = 1; g <= 3; g++) write_generation(st, g);
    checkpoint_store_free(st);
    /* A stale .tmp with a higher number (a crash mid-write) is removed, and its number
     * is not reused either. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/checkpoint-%020d.ck.tmp", dir, 9);
    FILE *f = fopen(tmp, "w");
    CHECK(f && fputs("half", f) >= 0 && fclose(f) == 0);
    st = checkpoint_store_open(dir, 2, err, sizeof err);
    CHECK(st != NULL);
    CHECK(access(tmp, F_OK) != 0);
    CHECK_INT_EQ(checkpoint_store_last_seq(st), 9);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 3);
    write_generation(st, 4);
    CHECK_INT_EQ(checkpoint_store_last_seq(st), 10);
    char p[4096];
    ck_path(p, sizeof p, dir, 10);
    CHECK(access(p, F_OK) == 0);
    CHECK_INT_EQ(load_gen(st, &w), 4);
    CHECK_STR_EQ(checkpoint_store_dir(st), dir);
    checkpoint_store_free(st);
}

void test_checkpoint_enospc_at_every_point_keeps_previous(void)
{
    char err[512] = "";
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(st != NULL);
    write_generation(st, 1);
    char p[4096];
    ck_path(p, sizeof p, dir, 1);
    long size = file_size(p);
    /* Run out of space after every possible number of bytes (in steps, plus the edges). */
    for (long budget = 0; budget < size; budget += (budget < 64 || budget > size - 64) ? 1 : 97) {
        fake_reset();
        fake_budget = budget;
        err[0] = '\0';
        struct checkpoint *cp = generation(100);
        int rc = checkpoint_store_write(st, cp, err, sizeof err);
        checkpoint_free(cp);
        if (rc != -ENOSPC) unit_fail(__FILE__, __LINE__, "budget %ld: rc %d (%s)", budget, rc, err);
        CHECK_STR_HAS(err, "No space left on device");
        CHECK_STR_HAS(err, ".ck.tmp");
        CHECK_STR_HAS(err, dir);
        CHECK_INT_EQ(count_files(dir, ".tmp"), 0);
        CHECK_INT_EQ(count_files(dir, ".ck"), 1);
        checkpoint_set_io(NULL);
        struct warns w = {0};
        CHECK_INT_EQ(load_gen(st, &w), 1);
        CHECK_INT_EQ(w.n, 0);
    }
    /* Space again: the next write succeeds and is the newest. */
    write_generation(st, 2);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 2);
    CHECK_INT_EQ(count_files(dir, ".ck"), 2);
    checkpoint_store_free(st);
}

void test_checkpoint_short_writes_and_eintr_are_retried(void)
{
    char err[512] = "";
    struct checkpoint_store *st = checkpoint_store_open(state_dir("s"), 3, err, sizeof err);
    CHECK(st != NULL);
    fake_reset();
    fake_chunk = 7;
    fake_eintr = 1;
    write_generation(st, 5);
    CHECK(fake_calls > 1000); /* 5 KB in 7-byte pieces, every other call interrupted */
    checkpoint_set_io(NULL);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 5);
    checkpoint_store_free(st);
}

void test_checkpoint_eio_on_fsync(void)
{
    char err[512] = "";
    const char *dir = state_dir("s");
    struct checkpoint_store *st = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(st != NULL);
    write_generation(st, 1);

    /* The file's fsync fails: nothing of the new checkpoint remains. */
    fake_reset();
    fake_fsync_fail_at = 1;
    struct checkpoint *cp = generation(2);
    CHECK_INT_EQ(checkpoint_store_write(st, cp, err, sizeof err), -EIO);
    CHECK_STR_HAS(err, "cannot fsync checkpoint");
    CHECK_STR_HAS(err, "checkpoint-00000000000000000002.ck.tmp");
    CHECK_STR_HAS(err, "Input/output error");
    CHECK_INT_EQ(count_files(dir, ".tmp"), 0);
    CHECK_INT_EQ(count_files(dir, ".ck"), 1);
    struct warns w = {0};
    CHECK_INT_EQ(load_gen(st, &w), 1);

    /* The directory's fsync fails: an error (durability unknown), but the renamed file is
     * whole, so the older one is not pruned and the new one loads. */
    fake_reset();
    fake_fsync_fail_at = 2;
    CHECK_INT_EQ(checkpoint_store_write(st, cp, err, sizeof err), -EIO);
    CHECK_STR_HAS(err, "cannot fsync state_dir");
    CHECK_INT_EQ(count_files(dir, ".tmp"), 0);
    CHECK_INT_EQ(load_gen(st, &w), 2);
    CHECK_INT_EQ(w.n, 0);

    /* Healthy again. */
    fake_reset();
    CHECK_INT_EQ(checkpoint_store_write(st, cp, err, sizeof err), 0);
    CHECK_INT_EQ(fake_fsyncs, 2); /* the file and the folder */
    CHECK_INT_EQ(checkpoint_seq(cp), 4);
    checkpoint_set_io(NULL);
    checkpoint_free(cp);
    checkpoint_store_free(st);
}

void test_checkpoint_file_in_place_of_state_dir(void)
{
    char err[512] = "";
    const char *dir = state_dir("state");
    FILE *f = fopen(dir, "w");
    CHECK(f && fputs("not a folder", f) >= 0 && fclose(f) == 0);
    CHECK(checkpoint_store_open(dir, 3, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, dir);
    CHECK_STR_HAS(err, "not a directory");
    /* A file where a parent folder should be. */
    char below[4200];
    snprintf(below, sizeof below, "%s/sub", dir);
    err[0] = '\0';
    CHECK(checkpoint_store_open(below, 3, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "cannot create state_dir");
    CHECK_STR_HAS(err, "Not a directory");
    CHECK(checkpoint_store_open("", 3, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "empty");
}

void test_checkpoint_state_dir_is_locked_by_one_store(void)
{
    char err[512] = "";
    const char *dir = state_dir("s");
    struct checkpoint_store *a = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(a != NULL);
    CHECK(checkpoint_store_open(dir, 3, err, sizeof err) == NULL);
    CHECK_STR_HAS(err, "in use by another intentd");
    checkpoint_store_free(a);
    struct checkpoint_store *b = checkpoint_store_open(dir, 3, err, sizeof err);
    CHECK(b != NULL);
    checkpoint_store_free(b);
}

void test_checkpoint_big_sections(void)
{
    const size_t big = 50u << 20;
    uint8_t *blob = malloc(big);
    CHECK(blob != NULL);
    uint64_t x = 88172645463325252ULL; /* xorshift: incompressible, position-dependent */
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        blob[i] = (uint8_t)x;
    }
    struct checkpoint *cp = checkpoint_new();
    CHECK_INT_EQ(checkpoint_add(cp, "learner", blob, big), 0);
    CHECK_INT_EQ(checkpoint_add(cp, "snapshot", blob + 1, big / 5), 0);
    char err[512] = "";
    struct checkpoint_store *st = checkpoint_store_open(state_dir("s"), 1, err, sizeof err);
    CHECK(st != NULL);
    CHECK_INT_EQ(checkpoint_store_write(st, cp, err, sizeof err), 0);
    checkpoint_free(cp);
    struct checkpoint *got;
    CHECK_INT_EQ(checkpoint_store_load_latest(st, &got, err, sizeof err, NULL, NULL), 0);
    const void *data;
    size_t len;
    CHECK_INT_EQ(checkpoint_get(got, "learner", &data, &len), 0);
    CHECK_INT_EQ(len, big);
    CHECK(memcmp(data, blob, big) == 0);
    CHECK_INT_EQ(checkpoint_get(got, "snapshot", &data, &len), 0);
    CHECK_INT_EQ(len, big / 5);
    CHECK(memcmp(data, blob + 1, big / 5) == 0);
    checkpoint_free(got);
    checkpoint_store_free(st);
    free(blob);
}
