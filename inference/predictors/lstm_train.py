"""The LSTM's training round, in torch: the only part of the LSTM member that needs it.

The service runs it in a short-lived worker process (``python -m inference.predictors.lstm_train``,
started by lstm.ProcessTrainer, nice 19 and idle I/O, exiting once a pass over the users is done), so that
torch's 220-260 MB are resident only while the member learns; ``memo eval`` and the tests call
``train_round`` in their own process. Weights cross as numpy arrays keyed like torch's state_dict.

Worker protocol on stdin/stdout: frames of a 4-byte little-endian length and a pickle (both ends are
this file's code, in processes of the same service); a request is train_round's argument dict, a reply
{"ok": result} or {"error": "..."}.
"""

from __future__ import annotations

import pickle
import select
import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.predictors.lstm import DROPOUT, EMBED, HIDDEN, LR, N_TIME, read_frame, write_frame
from memo import helpers

# The nets are tiny: torch's intra-op threads would only take the second core from the user's launch.
torch.set_num_threads(1)

Weights = dict[str, np.ndarray]


class _Net(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, EMBED)
        self.lstm = nn.LSTM(EMBED + N_TIME, HIDDEN, batch_first=True)
        self.out = nn.Linear(HIDDEN, vocab)
        self.skip = nn.Linear(EMBED, vocab, bias=False)  # a direct "what follows this app" path
        # dropout from the round's own generator, not torch's global one: a user's model then trains
        # the same whatever else the process did before (reproducible runs)
        self.gen = torch.Generator().manual_seed(0)

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or DROPOUT <= 0:
            return x
        keep = torch.rand(x.shape, generator=self.gen) >= DROPOUT
        return x * keep / (1 - DROPOUT)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.drop(self.emb(x))
        y, _ = self.lstm(torch.cat([e, t], dim=-1))
        return self.out(self.drop(y)) + self.skip(e)

    def grown(self, vocab: int) -> _Net:
        """A copy with room for ``vocab`` apps; learned rows kept, new ones freshly initialised."""
        with torch.random.fork_rng():
            torch.manual_seed(vocab)
            new = _Net(vocab)
        with torch.no_grad():
            old = self.emb.num_embeddings
            new.emb.weight[:old] = self.emb.weight
            new.out.weight[:old] = self.out.weight
            new.out.bias[:old] = self.out.bias
            new.skip.weight[:old] = self.skip.weight
            new.out.bias[old:] = self.out.bias.min()  # unseen apps start unlikely
            new.lstm.load_state_dict(self.lstm.state_dict())
        return new


def _new_net(vocab: int) -> _Net:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _Net(vocab)


class _Adam:
    """Adam with torch.optim.Adam's defaults (betas 0.9 and 0.999, eps 1e-8), its state keyed by parameter
    name in numpy so that it crosses the worker's pipe. Written out rather than torch.optim because any
    torch.optim optimiser imports torch._dynamo on first use: +2.6 s of CPU and +150 MB resident on each
    worker start, several times the cost of the round itself (measured, torch 2.13 on this machine)."""

    B1, B2, EPS = 0.9, 0.999, 1e-8

    def __init__(self, params: dict[str, nn.Parameter], state: dict[str, Any] | None) -> None:
        self.params = params
        self.t: int = state["t"] if state else 0
        self.m = {k: torch.from_numpy(state["m"][k].copy()) if state else torch.zeros_like(p)
                  for k, p in params.items()}
        self.v = {k: torch.from_numpy(state["v"][k].copy()) if state else torch.zeros_like(p)
                  for k, p in params.items()}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        step_size = LR / (1 - self.B1 ** self.t)
        root_c2 = (1 - self.B2 ** self.t) ** 0.5
        for k, p in self.params.items():
            if p.grad is None:
                continue
            m, v = self.m[k], self.v[k]
            m.mul_(self.B1).add_(p.grad, alpha=1 - self.B1)
            v.mul_(self.B2).addcmul_(p.grad, p.grad, value=1 - self.B2)
            p.addcdiv_(m, (v.sqrt() / root_c2).add_(self.EPS), value=-step_size)

    def state(self) -> dict[str, Any]:
        return {"t": self.t, "m": {k: t.numpy().copy() for k, t in self.m.items()},
                "v": {k: t.numpy().copy() for k, t in self.v.items()}}


def train_round(req: dict[str, Any]) -> dict[str, Any]:
    """A few Adam steps from ``weights`` (None: a fresh net) grown to ``cap`` apps, on the windows of
    ``seq`` ending at each step's ``ends``; returns the new weights and the optimiser's state."""
    cap: int = req["cap"]
    weights: Weights | None = req["weights"]
    adam = req["adam"]
    if weights is None:
        net, adam = _new_net(cap), None
    else:
        net = _Net(weights["emb.weight"].shape[0])
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        if net.emb.num_embeddings < cap:
            net, adam = net.grown(cap), None
    opt = _Adam(dict(net.named_parameters()), adam)
    net.gen.manual_seed(req["seed"])
    net.train()
    seq, win = req["seq"], req["win"]
    x_all = torch.tensor(seq[:-1])
    y_all = torch.tensor(seq[1:])
    t_all = torch.tensor(req["tfeat"][:-1], dtype=torch.float32)
    # The target of step i is launch i+1; its time context is known only after it happens, so the
    # input at step i carries launch i's context (what the live model sees when predicting).
    for ends in req["ends"]:
        x = torch.stack([x_all[e - win:e] for e in ends])
        y = torch.stack([y_all[e - win:e] for e in ends])
        t = torch.stack([t_all[e - win:e] for e in ends])
        logits = net(x, t)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    net.eval()
    return {"weights": {k: v.detach().numpy().astype(np.float32).copy() for k, v in net.state_dict().items()},
            "adam": opt.state()}


# -- the worker process ------------------------------------------------------------------------------
IDLE_EXIT_S = 10.0
"""Rounds come at least lstm.ROUND_GAP_S apart; the worker stays only for the other users' rounds of the
same pass, then gives torch's memory back."""


def main() -> int:
    if len(sys.argv) > 1 and not helpers.bind_to_parent(int(sys.argv[1])):  # never outlive the service
        return 1
    helpers.lowest_priority()
    rfd, wfd = sys.stdin.fileno(), helpers.protocol_channel()
    while select.select([rfd], [], [], IDLE_EXIT_S)[0]:
        frame = read_frame(rfd)
        if frame is None:
            return 0
        try:
            reply: dict[str, Any] = {"ok": train_round(pickle.loads(frame))}
        except Exception as exc:  # one bad round is reported, the worker stays
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        write_frame(wfd, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    return 0  # the pass is over: give torch's memory back


if __name__ == "__main__":
    sys.exit(main())
