/* checkpoint.h — durable checkpoints: a container of named sections and a store in state_dir.
 *
 * A checkpoint is a list of named, opaque byte sections that other modules produce
 * ("learner" from learner_save, "joiner", "snapshot", "meta", ...), plus two typed helpers
 * so callers do not hand-roll encodings: the Kafka offsets list and u64 counters by name.
 *
 * File format (every integer little-endian, written byte by byte, never a struct dump):
 *   "INTENTDCK" (9 bytes) | format version u32 (= CHECKPOINT_FORMAT_VERSION) | count u32 |
 *   count × { name length u16 | name bytes | data length u64 | data bytes } |
 *   XXH3-64 u64 of every byte before it.
 * The "offsets" section: count u32, then count × { topic length u16 | topic | partition i32 |
 * next offset i64 }.  A u64 counter NAME is the 8-byte section "u64:NAME".
 *
 * The store writes `checkpoint-<seq, 20 digits>.ck.tmp`, fsyncs it, renames it to
 * `checkpoint-<seq>.ck`, fsyncs the folder, then keeps only the newest `keep` files.  So a
 * crash at any instant leaves the previous checkpoints whole; at worst a stale .tmp that the
 * next write (or open) removes.  A store holds an exclusive flock(2) on state_dir so two
 * daemons cannot interleave checkpoints in one folder.
 *
 * Pure file I/O, no threads, no logging: the trainer thread calls it and logs the messages.
 * Not thread-safe: one thread uses a given store or checkpoint at a time.
 */
#ifndef INTENTD_CHECKPOINT_H
#define INTENTD_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHECKPOINT_FORMAT_VERSION 1u
#define CHECKPOINT_NAME_MAX       255  /* longest section name, bytes */
#define CHECKPOINT_MAX_SECTIONS   4096 /* more is refused when decoding (a corrupt count) */
#define CHECKPOINT_TOPIC_MAX      255  /* longest topic name in the offsets section */

struct checkpoint;
struct checkpoint_store;

/* One entry of the offsets section: events of topic/partition before `offset` are in the
 * checkpoint, so the consumer resumes at `offset` (Kafka's "next offset" convention). */
struct checkpoint_offset {
    char topic[CHECKPOINT_TOPIC_MAX + 1]; /* NUL-terminated */
    int32_t partition;
    int64_t offset;
};

/* ---- the container ---- */

/* An empty checkpoint, or NULL on allocation failure.  Caller owns; free with
 * checkpoint_free. */
struct checkpoint *checkpoint_new(void);
struct checkpoint *checkpoint_free(struct checkpoint *cp); /* accepts NULL; returns NULL */

/* Adds section `name` (1..CHECKPOINT_NAME_MAX bytes) with a copy of data[0..len); a section
 * of the same name is replaced.  len may be 0 (data may then be NULL).
 * Returns 0, -EINVAL (bad name), -ENOMEM. */
int checkpoint_add(struct checkpoint *cp, const char *name, const void *data, size_t len);

/* The same without the copy: takes ownership of data (from malloc; freed by cp, and also on
 * failure), e.g. the buffer of learner_save or snapshot_encode.  The caller must not use or
 * free data afterwards.  Returns 0, -EINVAL (data is then freed too), -ENOMEM. */
int checkpoint_take(struct checkpoint *cp, const char *name, void *data, size_t len);

/* Finds section `name`: *data points into cp (borrowed, valid until cp is changed or freed;
 * NULL when len is 0), *len its length.  Returns 0 or -ENOENT. */
int checkpoint_get(const struct checkpoint *cp, const char *name, const void **data, size_t *len);

/* Number of sections and the name of the i-th (in insertion / file order), for listing. */
size_t checkpoint_count(const struct checkpoint *cp);
const char *checkpoint_name(const struct checkpoint *cp, size_t i);

/* Stores the offsets list as the "offsets" section (replacing it).  Returns 0, -EINVAL (a
 * topic that is empty or not NUL-terminated within CHECKPOINT_TOPIC_MAX), -ENOMEM. */
int checkpoint_set_offsets(struct checkpoint *cp, const struct checkpoint_offset *offs, size_t n);
/* Decodes the "offsets" section into a new array *offs of *n entries (caller frees *offs with
 * free(); NULL when *n is 0).  Returns 0, -ENOENT (no section), -EBADMSG (malformed),
 * -ENOMEM. */
int checkpoint_get_offsets(const struct checkpoint *cp, struct checkpoint_offset **offs, size_t *n);

/* A u64 counter by name (section "u64:NAME"; NAME at most CHECKPOINT_NAME_MAX - 4 bytes).
 * set returns 0, -EINVAL, -ENOMEM; get returns 0, -ENOENT, -EBADMSG (not 8 bytes). */
int checkpoint_set_u64(struct checkpoint *cp, const char *name, uint64_t value);
int checkpoint_get_u64(const struct checkpoint *cp, const char *name, uint64_t *value);

/* The sequence number of the file cp was loaded from or last written as (0 if neither). */
uint64_t checkpoint_seq(const struct checkpoint *cp);

/* Serialises cp into a new buffer *buf of *len bytes (caller frees with free()).
 * Returns 0 or -ENOMEM. */
int checkpoint_encode(const struct checkpoint *cp, uint8_t **buf, size_t *len);
/* Parses buf[0..len) (copied; buf stays the caller's) into a new checkpoint *out (caller
 * owns).  Returns 0; -EBADMSG for a bad magic, short/truncated input, a bad checksum or a
 * malformed section list; -EPROTONOSUPPORT for another format version; -ENOMEM.  On error,
 * err says why in a sentence (without a file name). */
int checkpoint_decode(const void *buf, size_t len, struct checkpoint **out, char *err,
                      size_t errlen);

/* ---- the store ---- */

/* Opens state_dir (created with its parents if missing, mode 0750) for checkpoints, keeping
 * the newest `keep` (>= 1) files.  Fails when state_dir is not a directory (e.g. a file in its
 * place), cannot be created, is not writable (a probe file is created and removed), or is
 * locked by another store (another daemon).  Removes stale .tmp files.  Returns the store
 * (caller owns; checkpoint_store_free), or NULL with err naming the folder and the reason. */
struct checkpoint_store *checkpoint_store_open(const char *state_dir, unsigned keep, char *err,
                                               size_t errlen);
/* Closes the store and releases its lock.  Accepts NULL; returns NULL. */
struct checkpoint_store *checkpoint_store_free(struct checkpoint_store *st);

/* Writes cp durably as the next sequence number (one more than the largest ever seen in the
 * folder), then removes all but the newest `keep` checkpoints and any stale .tmp.  Returns 0
 * once the file and its directory entry are on disk (sets checkpoint_seq(cp)); only then may
 * the offsets in cp be committed to Kafka.  On failure returns -errno (-ENOSPC, -EIO, ...)
 * with err naming the file and the error, the .tmp removed and the previous checkpoints
 * untouched.  (If only the final directory fsync fails, the renamed file stays — it is whole
 * and loadable — but the write reports the error because its durability is not known.) */
int checkpoint_store_write(struct checkpoint_store *st, struct checkpoint *cp, char *err,
                           size_t errlen);

/* Called for each checkpoint file that is skipped: path is the full file name, why says what
 * is wrong with it ("checksum mismatch ...", "truncated ...", ...). */
typedef void (*checkpoint_warn_fn)(void *ctx, const char *path, const char *why);

/* Loads the newest valid checkpoint into *out (caller owns).  Files are tried newest first;
 * each unreadable or corrupt one is reported through warn (may be NULL) and skipped.
 * Returns 0; -ENOENT when there is no valid checkpoint (err says how many were skipped);
 * -ENOMEM. */
int checkpoint_store_load_latest(struct checkpoint_store *st, struct checkpoint **out, char *err,
                                 size_t errlen, checkpoint_warn_fn warn, void *ctx);

/* Changes how many checkpoints the next writes keep (checkpoint.keep on SIGHUP); values below
 * 1 count as 1.  Not thread-safe: call it from the thread that writes. */
void checkpoint_store_set_keep(struct checkpoint_store *st, unsigned keep);

/* The largest sequence number in the folder (existing or written by this store), 0 if none. */
uint64_t checkpoint_store_last_seq(const struct checkpoint_store *st);
/* The folder this store writes into (as given to checkpoint_store_open). */
const char *checkpoint_store_dir(const struct checkpoint_store *st);

/* ---- fault seam for tests (STYLE.md, after beanstalkd) ---- */

/* The system calls the store writes through.  Tests replace them to simulate a short write,
 * ENOSPC or EIO at any point; both must behave like write(2) / fsync(2) (return -1 and set
 * errno on failure).  fsync is used for the file and for the directory. */
struct checkpoint_io {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
};
/* Installs io (copied); NULL restores the real system calls.  Process-wide: tests only. */
void checkpoint_set_io(const struct checkpoint_io *io);

#endif
