/* trainer_bench.c — examples per second of the training step (model_forward + model_step,
 * one BLAS thread), and how step time and the parameter block grow with the sparse slots.
 *
 *   trainer_bench [--examples N] [--inputs D] [--hidden 64,32] [--batch B] [--seed S]
 *                 [--write-data PATH]      train on N synthetic examples; print examples/s
 *   trainer_bench --buckets-table [--examples N]
 *                                          step time and sizes for nsparse 0 .. 2^20, ncat 6
 *                                          (uniform slots: the worst case for caches; timed
 *                                          over a second pass of N, after one to warm up)
 *
 * The data: a pool of min(N, 65536) examples, x ~ N(0, 1) (D dense inputs), y from a fixed
 * random linear teacher with logistic noise, cycled until N examples were trained on.
 * --write-data writes the pool (x as float32 (P, D), then y as float32 (P)) for
 * tests/bench/torch_trainer.py, so both train on the same data.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "model.h"

#define POOL_MAX 65536

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) * 0x1p-53;
}

static double nrand(void)
{
    return sqrt(-2.0 * log(urand())) * cos(2.0 * M_PI * urand());
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

/* The process's CPU time: on a shared machine, the wall clock also counts other people's
 * work; both figures are printed. */
static double cpu_s(void)
{
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

struct data {
    size_t n, d, ncat; /* pool examples, dense inputs, categorical columns */
    float *x, *y, *w;
    uint32_t *cat;
};

static int make_data(struct data *dt, size_t n, size_t d, size_t ncat, uint32_t nsparse)
{
    dt->n = n, dt->d = d, dt->ncat = ncat;
    dt->x = malloc(n * d * sizeof(float));
    dt->y = malloc(n * sizeof(float));
    dt->w = malloc(n * sizeof(float));
    dt->cat = malloc((n * ncat + 1) * sizeof(uint32_t));
    double *teacher = malloc((d + 1) * sizeof(double));
    if (!dt->x || !dt->y || !dt->w || !dt->cat || !teacher) return -ENOMEM;
    for (size_t i = 0; i < d; i++) teacher[i] = nrand() / sqrt((double)d);
    uint32_t per = ncat ? nsparse / (uint32_t)ncat : 0;
    for (size_t r = 0; r < n; r++) {
        double z = 0;
        for (size_t i = 0; i < d; i++) {
            float v = (float)nrand();
            dt->x[r * d + i] = v;
            z += teacher[i] * v;
        }
        for (size_t c = 0; c < ncat; c++) {
            uint32_t j = (uint32_t)(urand() * per);
            dt->cat[r * ncat + c] = (uint32_t)c * per + j;
            z += (j & 1) ? 0.3 : -0.3;
        }
        double u = urand();
        dt->y[r] = z + log(u / (1 - u)) > 0 ? 1.0f : 0.0f;
        dt->w[r] = 1.0f;
    }
    free(teacher);
    return 0;
}

static void free_data(struct data *dt)
{
    free(dt->x), free(dt->y), free(dt->w), free(dt->cat);
}

static struct config bench_cfg(const uint32_t *hidden, size_t nh, size_t batch)
{
    struct config c;
    memset(&c, 0, sizeof c);
    memcpy(c.model.hidden, hidden, nh * sizeof *hidden);
    c.model.nhidden = nh;
    c.model.activation = ACTIVATION_RELU;
    c.model.seed = 1;
    c.optimizer.name = OPTIMIZER_ADAM;
    c.optimizer.learning_rate = 0.001;
    c.optimizer.beta1 = 0.9;
    c.optimizer.beta2 = 0.999;
    c.optimizer.epsilon = 1e-8;
    c.optimizer.momentum = 0.9;
    c.training.batch_size = (uint32_t)batch;
    return c;
}

/* Trains on n examples cycled from the pool; returns the seconds spent in forward + step,
 * the CPU seconds in *cpu and the mean loss of the last 100 batches in *loss. */
static double train(struct model *m, const struct data *dt, size_t n, size_t batch, float *prob,
                    double *loss, double *cpu)
{
    size_t steps = n / batch, per_pool = dt->n / batch;
    double t0 = now_s(), c0 = cpu_s(), tail = 0;
    for (size_t s = 0; s < steps; s++) {
        size_t off = (s % per_pool) * batch;
        model_forward(m, dt->x + off * dt->d, dt->cat + off * dt->ncat, batch, 1, prob);
        double l = model_step(m, dt->y + off, dt->w + off, batch);
        if (s + 100 >= steps) tail += l;
    }
    double t = now_s() - t0;
    *cpu = cpu_s() - c0;
    *loss = tail / (double)(steps < 100 ? steps : 100);
    return t;
}

static int parse_hidden(const char *s, uint32_t *h, size_t *nh)
{
    *nh = 0;
    while (*s && *nh < CONFIG_MAX_HIDDEN) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0) return -EINVAL;
        h[(*nh)++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -EINVAL;
    }
    return *nh ? 0 : -EINVAL;
}

static int buckets_table(size_t n)
{
    const uint32_t hidden[2] = {64, 32};
    const uint32_t sizes[] = {0, 1u << 10, 1u << 16, 6u << 16, 1u << 20};
    size_t d = 128, batch = 128, ncat = 6;
    printf("%-10s %5s %12s %11s %11s %10s %10s %12s\n", "nsparse", "ncat", "nparams", "params MiB",
           "state MiB", "step µs", "cpu µs", "examples/s");
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint32_t ns = sizes[k];
        size_t nc = ns ? ncat : 0;
        struct config c = bench_cfg(hidden, 2, batch);
        char err[256];
        struct model *m = model_new(&c, (uint32_t)d, ns, (uint32_t)nc, err, sizeof err);
        struct data dt;
        float prob[1024];
        if (!m || make_data(&dt, POOL_MAX, d, nc, ns) != 0) {
            fprintf(stderr, "trainer_bench: %s\n", m ? "out of memory" : err);
            return 1;
        }
        double loss;
        /* untimed first pass: the first touch of a row's moments is a page fault, a cost of
         * warming up, not of a step */
        double cpu;
        train(m, &dt, n, batch, prob, &loss, &cpu);
        double t = train(m, &dt, n, batch, prob, &loss, &cpu);
        size_t np = model_nparams(model_shape(m));
        printf("%-10u %5zu %12zu %11.1f %11.1f %10.1f %10.1f %12.0f\n", ns, nc, np,
               (double)np * 4 / 1048576.0, (double)model_state_size(m) / 1048576.0,
               1e6 * t / (double)(n / batch), 1e6 * cpu / (double)(n / batch),
               (double)(n / batch * batch) / t);
        free_data(&dt);
        model_free(m);
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 2000000, d = 128, batch = 128, nh = 2;
    uint32_t hidden[CONFIG_MAX_HIDDEN] = {64, 32};
    const char *write_data = NULL;
    int table = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--buckets-table") == 0) {
            table = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "trainer_bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--examples") == 0)
            n = strtoul(v, NULL, 10);
        else if (strcmp(a, "--inputs") == 0)
            d = strtoul(v, NULL, 10);
        else if (strcmp(a, "--batch") == 0)
            batch = strtoul(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0)
            rng = strtoull(v, NULL, 10) | 1;
        else if (strcmp(a, "--write-data") == 0)
            write_data = v;
        else if (strcmp(a, "--hidden") == 0) {
            if (parse_hidden(v, hidden, &nh) != 0) {
                fprintf(stderr, "trainer_bench: --hidden: expected e.g. 64,32\n");
                return 2;
            }
        } else {
            fprintf(stderr, "trainer_bench: unknown option %s\n", a);
            return 2;
        }
    }
    if (table) return buckets_table(n);
    if (batch < 1 || batch > 1024 || d < 1 || n < batch) {
        fprintf(stderr, "trainer_bench: need 1 <= batch <= 1024, inputs >= 1, N >= batch\n");
        return 2;
    }
    size_t pool = n < POOL_MAX ? n : POOL_MAX;
    pool -= pool % batch;
    struct data dt;
    if (make_data(&dt, pool, d, 0, 0) != 0) {
        fprintf(stderr, "trainer_bench: out of memory\n");
        return 1;
    }
    if (write_data) {
        FILE *f = fopen(write_data, "wb");
        if (!f || fwrite(dt.x, sizeof(float), pool * d, f) != pool * d ||
            fwrite(dt.y, sizeof(float), pool, f) != pool || fclose(f) != 0) {
            fprintf(stderr, "trainer_bench: cannot write %s\n", write_data);
            return 1;
        }
    }
    struct config c = bench_cfg(hidden, nh, batch);
    char err[256];
    struct model *m = model_new(&c, (uint32_t)d, 0, 0, err, sizeof err);
    if (!m) {
        fprintf(stderr, "trainer_bench: %s\n", err);
        return 1;
    }
    float prob[1024];
    double loss, cpu;
    train(m, &dt, pool < 20 * batch ? pool : 20 * batch, batch, prob, &loss, &cpu); /* warm up */
    double t = train(m, &dt, n, batch, prob, &loss, &cpu);
    size_t done = n / batch * batch;
    printf("intentd: %zu examples, inputs %zu, batch %zu, %.3f s, %.0f examples/s, "
           "%.0f examples/cpu-s, loss of the last 100 batches %.4f\n",
           done, d, batch, t, (double)done / t, (double)done / cpu, loss);
    model_free(m);
    free_data(&dt);
    return 0;
}
