/* model.h — the MLP: forward and backward over minibatches on OpenBLAS, Adam / SGD with
 * momentum, and an allocation-free single-example predict path.
 *
 * Inputs come in two parts (see features.h): a dense block x (B, ndense) of standardised
 * numeric and boolean columns, and for each of the ncat categorical columns one global
 * sparse index in [0, nsparse) (or MODEL_NO_INDEX when missing).  The first layer is
 *
 *     h1 = act(x · W1ᵀ + Σ_c E[cat[b, c]] + b1)      W1 is (H1, ndense), E is (nsparse, H1)
 *
 * i.e. an embedding bag over the first layer's rows for the one-hot slots, so the cost per
 * example does not depend on nsparse; E's rows are updated lazily (only rows a batch
 * touched, LazyAdam).  Further layers are dense, the output is one sigmoid unit and the loss
 * is weighted binary cross-entropy, mean over the batch: mean_b(w_b · bce(p_b, y_b)).
 *
 * All parameters live in one contiguous float block (so a snapshot is one memcpy), laid out
 * as [W1 (H1,ndense) | E (nsparse,H1) | b1 (H1) | W2 (H2,H1) | b2 | ... | Wout (1,HL) | bout].
 *
 * The learning core knows nothing of Kafka, HTTP or threads.
 */
#ifndef INTENTD_MODEL_H
#define INTENTD_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define MODEL_NO_INDEX UINT32_MAX
#define MODEL_MAX_LAYERS (CONFIG_MAX_HIDDEN + 1) /* weight layers: hidden + output */
#define MODEL_MAX_WIDTH 4096                     /* widest hidden layer (predict scratch) */

/* Everything that fixes the parameter layout; equal shapes ⇔ compatible parameter blocks. */
struct model_shape {
    uint32_t ndense;                      /* dense inputs */
    uint32_t nsparse;                     /* one-hot slots over all categorical columns */
    uint32_t ncat;                        /* categorical columns (indices per example) */
    uint32_t nlayers;                     /* weight layers, hidden + output (>= 1) */
    uint32_t width[MODEL_MAX_LAYERS + 1]; /* width[0] = ndense + nsparse; width[nlayers] = 1 */
    int activation;                       /* enum activation, for the hidden layers */
};

struct model;

/* Creates a model for the configured model.* and optimizer.* settings with He (relu) or
 * Xavier (tanh, sigmoid) initialisation from model.seed.  Returns NULL with err filled
 * (bad shape, out of memory).  The caller owns the model (model_free). */
struct model *model_new(const struct config *cfg, uint32_t ndense, uint32_t nsparse,
                        uint32_t ncat, char *err, size_t errlen);

/* Frees m; accepts NULL; returns NULL. */
struct model *model_free(struct model *m);

const struct model_shape *model_shape(const struct model *m);

/* The parameter block (model_nparams floats), owned by m. */
float *model_params(struct model *m);
size_t model_nparams(const struct model_shape *s);

/* Forward pass over a batch of B examples: x is (B, ndense), cat is (B, ncat), prob (B)
 * receives the predicted probabilities.  training != 0 applies dropout.  The activations are
 * kept for model_step.  B must not exceed the configured training.batch_size
 * (the batch capacity); returns 0 or -EINVAL. */
int model_forward(struct model *m, const float *x, const uint32_t *cat, size_t B, int training,
                  float *prob);

/* Backward pass from the last model_forward and one optimizer step (with model.l2 on the
 * weights).  label and weight are (B).  Returns the batch's mean weighted log loss. */
double model_step(struct model *m, const float *label, const float *weight, size_t B);

/* Changes the learning rate (SIGHUP); the optimizer state is kept. */
void model_set_learning_rate(struct model *m, double lr);

/* Scores one example from a parameter block of the given shape: no allocation, no state
 * (scratch lives on the stack), safe from any number of threads at once. */
float model_predict(const struct model_shape *s, const float *params, const float *x,
                    const uint32_t *cat);

/* Optimizer state, RNG and step counter, for checkpoints: model_state_size() bytes written
 * by model_state_save() and read back by model_state_load() (which checks the shape). */
size_t model_state_size(const struct model *m);
void model_state_save(const struct model *m, void *buf);
int model_state_load(struct model *m, const void *buf, size_t len);

#endif
