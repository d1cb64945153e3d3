#!/usr/bin/python3
"""The anchor for `chainlm bench train`: the same LLaMA training step in PyTorch, fp32 or with
bf16 autocast (the one-line mixed precision a PyTorch user has). Same shapes as a chainlm config
(dim, layers, heads, kv heads, ffn_dim, vocab, untied head unless tie_embeddings), random tokens,
AdamW (lr 1e-4, weight decay 0.1), gradient clipping at 1.0, as chainlm's step. Prints one JSON
line like chainlm's: the median step time of --steps timed steps after two warm-up steps.

Needs PyTorch: Debian's python3-torch (1.13; `apt-get install python3-torch`, not part of
scripts/setup.sh: only this comparison uses it). bench/vs_pytorch.sh runs it beside chainlm.
  /usr/bin/python3 bench/pytorch_train.py --config configs/ref30m.json --precision bf16
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # In fp32 under autocast too (as chainlm keeps its norms).
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)) * self.weight


def rope_tables(head_dim, seq_len, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    ang = torch.outer(torch.arange(seq_len).float(), inv)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    # x: (B, H, T, hd), pairs (2i, 2i+1) rotated as in LLaMA.
    x1, x2 = x[..., 0::2], x[..., 1::2]
    r1 = x1 * cos - x2 * sin
    r2 = x1 * sin + x2 * cos
    return torch.stack((r1, r2), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kvh = c["dim"], c["n_heads"], c.get("n_kv_heads", c["n_heads"])
        self.h, self.kvh, self.hd = h, kvh, d // h
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, kvh * self.hd, bias=False)
        self.wv = nn.Linear(d, kvh * self.hd, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.w1 = nn.Linear(d, c["ffn_dim"], bias=False)
        self.w3 = nn.Linear(d, c["ffn_dim"], bias=False)
        self.w2 = nn.Linear(c["ffn_dim"], d, bias=False)
        eps = c.get("norm_eps", 1e-5)
        self.n1, self.n2 = RMSNorm(d, eps), RMSNorm(d, eps)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        xn = self.n1(x)
        q = self.wq(xn).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.wk(xn).view(B, T, self.kvh, self.hd).transpose(1, 2)
        v = self.wv(xn).view(B, T, self.kvh, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kvh != self.h:
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        a = (F.softmax(s.float(), dim=-1).to(v.dtype) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.wo(a)
        xn = self.n2(x)
        return x + self.w2(F.silu(self.w1(xn)) * self.w3(xn))


class Llama(nn.Module):
    def __init__(self, c, seq_len):
        super().__init__()
        self.emb = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c.get("norm_eps", 1e-5))
        self.head = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        if c.get("tie_embeddings", False):
            self.head.weight = self.emb.weight
        cos, sin = rope_tables(c["dim"] // c["n_heads"], seq_len, c.get("rope_theta", 10000.0))
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        self.register_buffer("mask", torch.full((seq_len, seq_len), float("-inf")).triu(1))

    def forward(self, tokens):
        x = self.emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.head(self.norm(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.config) as f:
        c = json.load(f)
    if c.get("chains", [1]) != [1] or "phd" in c:
        raise SystemExit(f"{a.config}: PyTorch anchor models plain LLaMA configs only")
    model = Llama(c, a.seq_len)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, c["vocab_size"], (a.batch_size, a.seq_len))
    targets = torch.randint(0, c["vocab_size"], (a.batch_size, a.seq_len))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model(tokens)
        loss = F.cross_entropy(logits.float().view(-1, c["vocab_size"]), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(json.dumps({"bench": "pytorch_train", "torch": torch.__version__, "config": a.config,
                      "precision": a.precision, "threads": a.threads, "params": params,
                      "batch_size": a.batch_size, "seq_len": a.seq_len, "steps": a.steps,
                      "step_ms": s * 1e3, "tokens_per_s": a.batch_size * a.seq_len / s}))


if __name__ == "__main__":
    main()
