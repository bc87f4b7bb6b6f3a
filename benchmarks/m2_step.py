"""An M2 training step with the MLP nets taking the one-hot label apart (``W [x; y] + b = W_x x + W_y y + b``,
:func:`pyro_vae.models.nets.linear_of_joined`) against the nets on the joined tensor ``[x, y]`` they replaced,
in one process, rounds alternating the two (:func:`benchmarks.timing.rounds`), 1 torch thread.

    python -m benchmarks.m2_step      # median seconds per step of each, the ratio with its 95% interval

The model is experiments/m2.toml's (one hidden layer of 500, z = 50) with 100 labels of 50,000 images; a step
is one unlabelled minibatch of 200 random binary images, y enumerated over the 10 classes, and one labelled
minibatch of the 100 (the M2 recipe's step). Enumerating y makes the encoder of q(z | x, y) see every unlabelled
image 10 times: joined, its first layer multiplies 10 x 200 rows of 794 inputs; apart, 200 rows of 784.
"""

import argparse
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI

import pyro_vae.models.conditional as conditional
from pyro_vae.infer.optim import adam
from pyro_vae.models.conditional import one_hot
from pyro_vae.models.nets import joined
from pyro_vae.workflow.build import build_model, build_objective
from pyro_vae.workflow.config import load_config
from pyro_vae.workflow.streams import flushed_subnormals

from .timing import ratio_summary, rounds, summary


def joined_input(net, a, c):
    """The replaced path: every net, the MLPs included, on ``[a, c]`` built in memory."""
    return getattr(net, "net", net)(joined(a, c))


EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "m2.toml"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.m2_step", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds kept (default 15)")
    parser.add_argument("--steps", type=int, default=5, help="SVI steps per segment (default 5)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with flushed_subnormals():  # as pyro-vae trains
            return _measure(args)
    finally:
        torch.set_num_threads(threads)


def _measure(args) -> dict:
    config = load_config(EXPERIMENT, [])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, guide = build_model(config, 50000)
    svi = SVI(vae.model, guide, adam(config.train.lr), build_objective(config, 50000))
    x_u, x_l = (torch.rand(200, 784) < 0.2).float(), (torch.rand(100, 784) < 0.2).float()
    y_l = one_hot(torch.arange(100) % 10, 10)
    batch = (x_u, torch.arange(200), x_l, torch.arange(100), y_l)
    paths = {"apart": conditional.on_joined, "joined": joined_input}
    calls = dict.fromkeys(paths, 0)

    def counted(path):
        def call(net, a, c):
            calls[path] += 1
            return paths[path](net, a, c)
        return call

    def segment(path):
        def run():
            conditional.on_joined = counted(path)
            for _ in range(args.steps):
                svi.step(*batch)
        return run

    try:
        timed = rounds({name: segment(name) for name in paths}, args.rounds)["times"]
    finally:
        conditional.on_joined = paths["apart"]
    if not all(calls.values()):  # the models no longer go through conditional.on_joined: one path timed twice
        raise RuntimeError(f"the M2 step called conditional.on_joined {calls} times; benchmarks/m2_step.py "
                           "must patch where the conditional nets are called")
    for name, seconds in timed.items():
        s = summary([t / args.steps for t in seconds])
        print(f"{name:7s} median {s['median']:.4f} s/step, range {s['min']:.4f}-{s['max']:.4f}")
    stats = ratio_summary([a / j for a, j in zip(timed["apart"], timed["joined"])])
    low, high = stats["interval"]
    print(f"apart / joined: median {stats['median']:.3f} (95% CI {low:.3f}-{high:.3f})")
    return {"ratio": stats, "calls": calls, "seconds": timed}


if __name__ == "__main__":
    main()
