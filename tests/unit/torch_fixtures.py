#!/usr/bin/python3
"""Writes tests/unit/model_fixtures.h: PyTorch 1.13 reference values for tests/unit/test_model.c.

Run with Debian's torch:  /usr/bin/python3 tests/unit/torch_fixtures.py
The output is committed, so the unit tests need no torch.

Each case builds the model of include/model.h in PyTorch: the first layer is one Linear over
[x | one-hot(cat)] (its weight columns beyond ndense are E transposed), hidden activations,
a 1-unit output and BCEWithLogitsLoss(weight=w, reduction='mean'), i.e. mean_b(w_b * bce_b).
L2 is weight_decay on the weights only (biases in a group without decay), as model.l2 is.
The batch touches every one-hot slot, so a dense torch optimizer and intentd's lazy E updates
must agree.  Two steps on the same batch exercise Adam's bias correction and SGD's momentum.
"""
import os

import torch

torch.manual_seed(20261204)
torch.set_num_threads(1)

NDENSE, BUCKETS, B = 5, (3, 3), 8
NSPARSE = sum(BUCKETS)
NCAT = len(BUCKETS)

CASES = [
    # name, activation, hidden, optimizer, lr, l2, momentum
    ("relu_adam", "relu", [4, 3], "adam", 0.01, 0.01, 0.0),
    ("tanh_sgd", "tanh", [4, 3], "sgd", 0.05, 0.01, 0.9),
    ("sigmoid_adam", "sigmoid", [5], "adam", 0.02, 0.0, 0.0),
]
ACT = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
ACT_ENUM = {"relu": 0, "tanh": 1, "sigmoid": 2}


def c_layout(linears):
    """The parameter block of model.h: [W1 | E | b1 | W2 | b2 | ... | Wout | bout]."""
    out = []
    for i, lin in enumerate(linears):
        w = lin.weight.detach()
        if i == 0:
            out.append(w[:, :NDENSE].reshape(-1))
            out.append(w[:, NDENSE:].t().reshape(-1))
        else:
            out.append(w.reshape(-1))
        out.append(lin.bias.detach().reshape(-1))
    return torch.cat(out)


def inputs():
    x = torch.randn(B, NDENSE)
    # every slot of both columns appears; one missing value (-1 = MODEL_NO_INDEX)
    c0 = [0, 1, 2, 0, 1, 2, -1, 0]
    c1 = [2, 1, 0, 1, 2, 0, 1, 1]
    cat = [[a, BUCKETS[0] + b if b >= 0 else -1] for a, b in zip(c0, c1)]
    onehot = torch.zeros(B, NSPARSE)
    for r, row in enumerate(cat):
        for j in row:
            if j >= 0:
                onehot[r, j] = 1.0
    y = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.float32)
    w = torch.tensor([1, 2, 0.5, 1, 0, 1, 3, 1], dtype=torch.float32)
    return x, cat, onehot, y, w


def flit(v):
    """A C float literal that reads back as exactly the float32 v."""
    s = "%.9g" % v
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


def fmt(name, values, ctype="float"):
    vals = [float(v) for v in values]
    body = ",\n    ".join(
        ", ".join(flit(v) if ctype == "float" else str(int(v)) for v in vals[i:i + 6])
        for i in range(0, len(vals), 6))
    return "static const %s %s[%d] = {\n    %s};\n" % (ctype, name, len(vals), body)


def case(name, act, hidden, opt, lr, l2, momentum, x, cat, onehot, y, w):
    widths = [NDENSE + NSPARSE] + hidden + [1]
    linears = [torch.nn.Linear(widths[i], widths[i + 1]) for i in range(len(widths) - 1)]
    layers = []
    for i, lin in enumerate(linears):
        layers.append(lin)
        if i < len(linears) - 1:
            layers.append(ACT[act]())
    net = torch.nn.Sequential(*layers)
    init = c_layout(linears)
    decay = [lin.weight for lin in linears]
    nodecay = [lin.bias for lin in linears]
    groups = [{"params": decay, "weight_decay": l2}, {"params": nodecay, "weight_decay": 0.0}]
    if opt == "adam":
        optim = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    else:
        optim = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    lossf = torch.nn.BCEWithLogitsLoss(weight=w, reduction="mean")
    inp = torch.cat([x, onehot], dim=1)
    probs, losses, after = [], [], []
    for _ in range(2):
        optim.zero_grad()
        logit = net(inp).reshape(-1)
        loss = lossf(logit, y)
        loss.backward()
        optim.step()
        probs.append(torch.sigmoid(logit).detach())
        losses.append(float(loss))
        after.append(c_layout(linears))
    s = "/* case %s: %s %s, %s lr %g l2 %g momentum %g */\n" % (name, act, hidden, opt, lr, l2,
                                                               momentum)
    s += "#define FX_%s_ACT %d\n" % (name.upper(), ACT_ENUM[act])
    s += "#define FX_%s_OPT %d\n" % (name.upper(), 0 if opt == "adam" else 1)
    s += "#define FX_%s_LR %.9g\n" % (name.upper(), lr)
    s += "#define FX_%s_L2 %.9g\n" % (name.upper(), l2)
    s += "#define FX_%s_MOMENTUM %.9g\n" % (name.upper(), momentum)
    s += "#define FX_%s_LOSS1 %.17g\n" % (name.upper(), losses[0])
    s += "#define FX_%s_LOSS2 %.17g\n" % (name.upper(), losses[1])
    s += fmt("fx_%s_hidden" % name, hidden, "unsigned")
    s += fmt("fx_%s_init" % name, init)
    s += fmt("fx_%s_prob1" % name, probs[0])
    s += fmt("fx_%s_prob2" % name, probs[1])
    s += fmt("fx_%s_step1" % name, after[0])
    s += fmt("fx_%s_step2" % name, after[1])
    return s


def main():
    x, cat, onehot, y, w = inputs()
    out = ["/* generated by tests/unit/torch_fixtures.py with torch %s; do not edit */\n"
           "/* clang-format off */\n" % torch.__version__,
           "#define FX_NDENSE %d\n#define FX_NSPARSE %d\n#define FX_NCAT %d\n#define FX_B %d\n"
           % (NDENSE, NSPARSE, NCAT, B),
           fmt("fx_x", x.reshape(-1)),
           "static const unsigned fx_cat[%d] = {%s};\n" % (
               B * NCAT, ", ".join("0xffffffffu" if j < 0 else "%du" % j
                                   for row in cat for j in row)),
           fmt("fx_y", y), fmt("fx_w", w)]
    for c in CASES:
        out.append(case(*c, x, cat, onehot, y, w))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_fixtures.h")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print("wrote", path)


if __name__ == "__main__":
    main()
