/* reservoir.c — bounded record stores (reservoir sampling or most recent) and the RNG. */
#include "reservoir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RESERVOIR_STATE_MAGIC UINT64_C(0x3152565345524e49) /* "INRESRV1" */

struct reservoir {
    size_t stride;
    uint32_t capacity;
    enum reservoir_policy policy;
    struct reservoir_rng rng;
    uint64_t seen;    /* records ever offered */
    size_t size;      /* records held */
    size_t head;      /* RECENT: slot the next record overwrites once full */
    size_t allocated; /* records the storage has room for (grows to capacity) */
    unsigned char *data;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void reservoir_rng_seed(struct reservoir_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t reservoir_rng_next(struct reservoir_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double reservoir_rng_uniform(struct reservoir_rng *r)
{
    return (double)(reservoir_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t reservoir_rng_below(struct reservoir_rng *r, uint64_t n)
{
    /* Lemire: the high half of a 128-bit product, rejecting the few values that would bias
     * it. */
    unsigned __int128 m = (unsigned __int128)reservoir_rng_next(r) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)reservoir_rng_next(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

/* Writes every page of p, so the memory is resident now (a plain malloc + memset(0) is
 * turned into calloc by the compiler, whose fresh pages stay untouched). */
static void touch(unsigned char *p, size_t len)
{
    volatile unsigned char *v = p;
    for (size_t i = 0; i < len; i += 4096) v[i] = 0;
    if (len) v[len - 1] = 0;
}

struct reservoir *reservoir_new(size_t stride, uint32_t capacity, enum reservoir_policy policy,
                                uint64_t seed)
{
    if (stride == 0 || capacity == 0) return NULL;
    struct reservoir *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->stride = stride;
    r->capacity = capacity;
    r->policy = policy;
    reservoir_rng_seed(&r->rng, seed);
    /* The whole capacity is allocated and touched now: the daemon's memory is what its
     * configuration says from the first minute, not something that creeps up for hours
     * while the reservoir fills (and an operator sizing the host sees it at once). */
    r->data = malloc((size_t)capacity * stride);
    if (!r->data) {
        free(r);
        return NULL;
    }
    touch(r->data, (size_t)capacity * stride);
    r->allocated = capacity;
    return r;
}

struct reservoir *reservoir_free(struct reservoir *r)
{
    if (r) {
        free(r->data);
        free(r);
    }
    return NULL;
}

/* Makes room for at least want records (doubling, capped at capacity). */
static int reservoir_grow(struct reservoir *r, size_t want)
{
    if (want <= r->allocated) return 0;
    size_t n = r->allocated ? r->allocated * 2 : 64;
    if (n < want) n = want;
    if (n > r->capacity) n = r->capacity;
    unsigned char *d = realloc(r->data, n * r->stride);
    if (!d) return -ENOMEM;
    r->data = d;
    r->allocated = n;
    return 0;
}

int reservoir_add(struct reservoir *r, const void *record)
{
    uint64_t i = r->seen++;
    size_t slot;
    if (r->size < r->capacity) {
        if (reservoir_grow(r, r->size + 1) < 0) {
            r->seen--;
            return -ENOMEM;
        }
        slot = r->size++;
    } else if (r->policy == RESERVOIR_RECENT) {
        slot = r->head;
        r->head = (r->head + 1) % r->capacity;
    } else {
        /* Algorithm R: the (i+1)-th record replaces a random one with probability
         * capacity/(i+1). */
        uint64_t j = reservoir_rng_below(&r->rng, i + 1);
        if (j >= r->capacity) return 0;
        slot = (size_t)j;
    }
    memcpy(r->data + slot * r->stride, record, r->stride);
    return 0;
}

size_t reservoir_size(const struct reservoir *r)
{
    return r->size;
}

uint32_t reservoir_capacity(const struct reservoir *r)
{
    return r->capacity;
}

uint64_t reservoir_seen(const struct reservoir *r)
{
    return r->seen;
}

size_t reservoir_stride(const struct reservoir *r)
{
    return r->stride;
}

const void *reservoir_get(const struct reservoir *r, size_t i)
{
    return i < r->size ? r->data + i * r->stride : NULL;
}

const void *reservoir_sample(struct reservoir *r)
{
    if (r->size == 0) return NULL;
    return r->data + reservoir_rng_below(&r->rng, r->size) * r->stride;
}

/* State: magic, stride, capacity, policy, rng, seen, size, head, then size records. */
struct reservoir_state_header {
    uint64_t magic;
    uint64_t stride;
    uint64_t capacity;
    uint64_t policy;
    uint64_t rng[4];
    uint64_t seen;
    uint64_t size;
    uint64_t head;
};

size_t reservoir_state_size(const struct reservoir *r)
{
    return sizeof(struct reservoir_state_header) + r->size * r->stride;
}

void reservoir_save(const struct reservoir *r, void *buf)
{
    struct reservoir_state_header h = {
        .magic = RESERVOIR_STATE_MAGIC,
        .stride = r->stride,
        .capacity = r->capacity,
        .policy = (uint64_t)r->policy,
        .seen = r->seen,
        .size = r->size,
        .head = r->head,
    };
    memcpy(h.rng, r->rng.s, sizeof h.rng);
    memcpy(buf, &h, sizeof h);
    if (r->size) memcpy((char *)buf + sizeof h, r->data, r->size * r->stride);
}

int reservoir_load(struct reservoir *r, const void *buf, size_t len)
{
    struct reservoir_state_header h;
    if (len < sizeof h) return -EINVAL;
    memcpy(&h, buf, sizeof h);
    if (h.magic != RESERVOIR_STATE_MAGIC || h.stride != r->stride ||
        h.policy != (uint64_t)r->policy || h.capacity == 0 || h.size > h.capacity ||
        h.head >= h.capacity || h.size > h.seen)
        return -EINVAL;
    if (len != sizeof h + h.size * r->stride) return -EINVAL;
    const unsigned char *src = (const unsigned char *)buf + sizeof h;
    /* A changed capacity keeps what fits: the most recent records for RECENT (oldest first
     * from head once the ring had wrapped), any of them for SAMPLE (its slots are
     * exchangeable).  With the capacity unchanged this is an exact copy. */
    size_t keep = h.size < r->capacity ? (size_t)h.size : r->capacity;
    size_t first = 0, head = (size_t)h.head;
    if (h.capacity != r->capacity) {
        if (r->policy == RESERVOIR_RECENT) {
            size_t oldest = h.size == h.capacity ? (size_t)h.head : 0;
            first = (oldest + (size_t)h.size - keep) % (size_t)h.size;
        }
        head = 0; /* laid out oldest first below, so slot 0 is the next to go */
    }
    unsigned char *d = malloc((size_t)r->capacity * r->stride); /* all of it, as in _new */
    if (!d) return -ENOMEM;
    touch(d, (size_t)r->capacity * r->stride);
    for (size_t i = 0; i < keep; i++)
        memcpy(d + i * r->stride, src + ((first + i) % (size_t)h.size) * r->stride, r->stride);
    free(r->data);
    r->data = d;
    r->allocated = r->capacity;
    r->size = keep;
    r->seen = h.seen;
    r->head = head;
    memcpy(r->rng.s, h.rng, sizeof h.rng);
    return 0;
}
