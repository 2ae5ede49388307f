#!/usr/bin/python3
"""PyTorch 1.13's examples/s on the trainer benchmark's model, batch and data, one thread.

usage: torch_trainer.py DATA INPUTS [--examples N] [--batch B] [--hidden 64,32]

DATA is the pool tests/bench/trainer_bench.c --write-data wrote: x as float32 (P, INPUTS),
then y as float32 (P).  The model is intentd's: Linear layers with ReLU, one logit,
BCEWithLogitsLoss with per-example weights (all 1) averaged over the batch, Adam (lr 1e-3,
betas 0.9/0.999, eps 1e-8).  The pool is cycled until N examples were trained on; the
time covers forward, backward and the optimizer step (as trainer_bench's does).
"""
import argparse
import os
import time

# One thread for real: Debian's torch does its matrix products in the system OpenBLAS
# (pthreads), whose own pool ignores torch.set_num_threads.  Set before torch loads it.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("inputs", type=int)
    ap.add_argument("--examples", type=int, default=2000000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", default="64,32")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    raw = np.fromfile(a.data, dtype=np.float32)
    pool = raw.size // (a.inputs + 1)
    x = torch.from_numpy(raw[:pool * a.inputs].reshape(pool, a.inputs).copy())
    y = torch.from_numpy(raw[pool * a.inputs:pool * (a.inputs + 1)].copy())
    w = torch.ones(a.batch)
    widths = [a.inputs] + [int(h) for h in a.hidden.split(",")] + [1]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    lossf = torch.nn.BCEWithLogitsLoss(weight=w, reduction="mean")
    per_pool = pool // a.batch
    batches = [(x[i * a.batch:(i + 1) * a.batch], y[i * a.batch:(i + 1) * a.batch])
               for i in range(per_pool)]

    def train(steps):
        tail = 0.0
        for s in range(steps):
            xb, yb = batches[s % per_pool]
            opt.zero_grad(set_to_none=True)
            logit = net(xb).reshape(-1)
            loss = lossf(logit, yb)
            loss.backward()
            opt.step()
            if s + 100 >= steps:
                tail += float(loss)
        return tail / min(steps, 100)

    train(min(20, per_pool))  # warm up
    steps = a.examples // a.batch
    t0, c0 = time.perf_counter(), time.process_time()
    loss = train(steps)
    t, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = steps * a.batch
    print("torch: %d examples, inputs %d, batch %d, %.3f s, %.0f examples/s, "
          "%.0f examples/cpu-s, loss of the last 100 batches %.4f"
          % (n, a.inputs, a.batch, t, n / t, n / cpu, loss))


if __name__ == "__main__":
    main()
