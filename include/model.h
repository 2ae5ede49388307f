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
 * Each W is row-major (out, in), as torch.nn.Linear's weight; E[j] is column ndense + j of the
 * first layer's full weight.  With no hidden layer (nlayers 1) H1 is the output (1).
 *
 * Initialisation: biases 0; hidden weights N(0, 2/fan_in) for relu (He), U(±sqrt(6/(fan_in +
 * fan_out))) for tanh and sigmoid (Xavier), the output layer always Xavier; the first layer's
 * fan_in is ndense + ncat (the inputs that are non-zero in an example), not ndense + nsparse.
 * Dropout (inverted, training forward only) follows every hidden activation.  L2 adds model.l2 · W
 * to the gradient of every weight (W and E, not the biases), i.e. a penalty l2/2 · ‖W‖² not
 * included in the returned loss.  Adam is PyTorch's (bias-corrected, eps outside the square root);
 * SGD is PyTorch's with momentum (no dampening).  The rows of E are updated lazily: only rows the
 * batch touched get their moments, L2 and parameters updated (bias correction with the global step
 * count, as TF-Addons' LazyAdam); with SGD likewise.
 *
 * The learning core knows nothing of Kafka, HTTP or threads.
 */
#ifndef INTENTD_MODEL_H
#define INTENTD_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

#define MODEL_NO_INDEX   UINT32_MAX
#define MODEL_MAX_LAYERS (CONFIG_MAX_HIDDEN + 1) /* weight layers: hidden + output */
#define MODEL_MAX_WIDTH  4096                    /* widest hidden layer (predict scratch) */

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
struct model *model_new(const struct config *cfg, uint32_t ndense, uint32_t nsparse, uint32_t ncat,
                        char *err, size_t errlen);

/* Frees m; accepts NULL; returns NULL. */
struct model *model_free(struct model *m);

const struct model_shape *model_shape(const struct model *m);

/* The parameter block (model_nparams floats), owned by m. */
float *model_params(struct model *m);
size_t model_nparams(const struct model_shape *s);

/* Forward pass over a batch of B examples: x is (B, ndense), cat is (B, ncat), prob (B)
 * receives the predicted probabilities (prob may be NULL).  training != 0 applies dropout.
 * The activations are kept for model_step, and x and cat are BORROWED, not copied: they must
 * stay valid and unchanged until the model_step that follows.  A cat entry is an index in
 * [0, nsparse) or MODEL_NO_INDEX (contributes nothing).  1 <= B <= the configured
 * training.batch_size (the batch capacity); returns 0, or -EINVAL (bad B, NULL x with
 * ndense > 0, NULL cat with ncat > 0, an index out of range) leaving nothing changed. */
int model_forward(struct model *m, const float *x, const uint32_t *cat, size_t B, int training,
                  float *prob);

/* Backward pass from the last model_forward and one optimizer step (with model.l2 on the
 * weights).  label (in [0, 1]) and weight (>= 0) are (B); B must equal the last forward's.
 * The loss is mean_b(weight_b · bce_b), computed from the logits (stable for any logit), so
 * weight 0 removes an example and weight 2 counts it twice.  Returns that loss (before the
 * update; L2 not included), or NAN and changes nothing when no forward preceded it or B
 * differs.  Each model_forward allows one model_step. */
double model_step(struct model *m, const float *label, const float *weight, size_t B);

/* Optimizer steps taken so far (restored by model_state_load). */
uint64_t model_steps(const struct model *m);

/* Changes the learning rate (SIGHUP); the optimizer state is kept. */
void model_set_learning_rate(struct model *m, double lr);

/* Scores one example from a parameter block of the given shape: no allocation, no state
 * (scratch lives on the stack), safe from any number of threads at once.  x is (ndense), cat
 * is (ncat); an index >= nsparse counts as MODEL_NO_INDEX.  Returns the probability the eval
 * forward (training 0) computes for the same example, equal up to float rounding (summation
 * order of the dot products; tests/unit/test_model.c states the tolerance). */
float model_predict(const struct model_shape *s, const float *params, const float *x,
                    const uint32_t *cat);

/* Everything needed to continue training bit-identically after a restart, for checkpoints:
 * a header (magic, version, shape, optimizer), the step counter, the dropout RNG state, the
 * PARAMETER BLOCK and the optimizer moments (Adam m and v, or SGD velocity), in native byte
 * order.  model_state_size() bytes are written by model_state_save() into buf (caller's) and
 * read back by model_state_load(), which returns 0, or -EINVAL and leaves m unchanged when
 * len is wrong, the header is not ours, or the shape or the optimizer differ from m's (the
 * learning rate is not part of the state: it comes from the configuration). */
size_t model_state_size(const struct model *m);
void model_state_save(const struct model *m, void *buf);
int model_state_load(struct model *m, const void *buf, size_t len);

#endif
