#!/usr/bin/env python3
"""torch_bert.py: the PyTorch speed peer of `bert_pretrain bench` (scripts/bench.sh runs both).

It times the same training step as `bert_pretrain bench`: a BERT for pretraining (the layout of
Hugging Face's BertForPreTraining, written here with torch.nn: embeddings, post-LN encoder layers,
the MLM head with its decoder tied to the word embeddings, the pooler and the NSP classifier),
dropout 0.1, on a random batch with no padding where every prediction slot is real, then one AdamW
update. Like our model, the MLM head runs on the P masked positions only (gathered first), so
both sides do the same matrix products and their FLOPs are counted the same way
(model_flops_per_example in src/model.c: every product of the step, forward plus backward).

Each precision (fp32, and bf16 under torch.autocast("cpu", dtype=torch.bfloat16) with fp32 master
weights) runs at every thread count from 1 to the number of cores; the fastest count is reported.
On a small machine torch's intra-op pool and OpenBLAS's can fight, so more threads is not always
faster.

Needs Debian's python3-torch (apt-get install python3-torch), no transformers package:
    /usr/bin/python3 scripts/torch_bert.py --layers 4 --hidden 256 --heads 4 --seq 128 --batch 32
One line per (precision, threads), then one flat JSON line: the fp32 figures under step_s,
tokens_per_s, gflops and threads, the bf16 ones under the same names prefixed with bf16_.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

LN_EPS = 1e-12  # BERT's LayerNorm epsilon (model.layer_norm_eps in our configs)


def norm(layer, x):
    """LayerNorm in fp32: under CPU autocast torch 1.13 leaves layer_norm alone and refuses a bf16
    input with fp32 weights, so the bf16 products' outputs are widened first."""
    return layer(x.float())


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch BERT pretraining step speed (fp32 and bf16 autocast).")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=0, help="FFN width (default 4 x hidden)")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--max-position", type=int, default=512)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--predictions", type=int, default=0, help="prediction slots per example (default round(0.15 T))")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seconds", type=float, default=8.0, help="time each configuration at least this long")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts to try (default 1 .. cores)")
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    a = p.parse_args()
    a.intermediate = a.intermediate or 4 * a.hidden
    a.predictions = a.predictions or max(1, round(0.15 * a.seq))
    if a.hidden % a.heads or a.seq > a.max_position or not 1 <= a.predictions < a.seq:
        p.error("need hidden divisible by heads, seq <= max-position and 1 <= predictions < seq")
    if a.threads is None:
        a.threads = list(range(1, len(os.sched_getaffinity(0)) + 1))
    return a


def step_flops(a):
    """Matrix-product FLOPs of one step, counted as model_flops_per_example does: each product
    (rows x in) @ (in x out) costs 2 rows in out forward, and the same again for its weight gradient
    and for its input gradient, so the step is 3x the forward."""
    H, I, T, P, B = a.hidden, a.intermediate, a.seq, a.predictions, a.batch
    tokens, preds = B * T, B * P
    linear = [(tokens, H, 3 * H), (tokens, H, H), (tokens, H, I), (tokens, I, H)]  # per layer
    forward = a.layers * sum(2 * rows * fan_in * fan_out for rows, fan_in, fan_out in linear)
    forward += a.layers * B * 2 * (2 * T * T * H)  # Q K^T and P V over all heads
    forward += 2 * preds * H * H + 2 * preds * H * a.vocab  # MLM transform, tied decoder
    forward += 2 * B * H * H  # pooler
    return 3 * forward


class EncoderLayer(nn.Module):
    def __init__(self, a):
        super().__init__()
        H = a.hidden
        self.heads, self.p = a.heads, a.dropout
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.attn_out, self.attn_norm = nn.Linear(H, H), nn.LayerNorm(H, eps=LN_EPS)
        self.ffn_in, self.ffn_out = nn.Linear(H, a.intermediate), nn.Linear(a.intermediate, H)
        self.ffn_norm = nn.LayerNorm(H, eps=LN_EPS)

    def split(self, x):  # (B, T, H) -> (B, heads, T, H / heads)
        b, t, h = x.shape
        return x.view(b, t, self.heads, h // self.heads).transpose(1, 2)

    def forward(self, x, key_bias):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + key_bias
        probs = F.dropout(scores.softmax(dim=-1), self.p, self.training)
        ctx = (probs @ v).transpose(1, 2).flatten(2)
        x = norm(self.attn_norm, x + F.dropout(self.attn_out(ctx), self.p, self.training))
        return norm(self.ffn_norm, x + F.dropout(self.ffn_out(F.gelu(self.ffn_in(x))), self.p, self.training))


class BertPretraining(nn.Module):
    def __init__(self, a):
        super().__init__()
        H = a.hidden
        self.p = a.dropout
        self.word, self.position, self.token_type = nn.Embedding(a.vocab, H), nn.Embedding(a.max_position, H), nn.Embedding(2, H)
        self.embed_norm = nn.LayerNorm(H, eps=LN_EPS)
        self.layers = nn.ModuleList(EncoderLayer(a) for _ in range(a.layers))
        self.mlm_dense, self.mlm_norm = nn.Linear(H, H), nn.LayerNorm(H, eps=LN_EPS)
        self.mlm_bias = nn.Parameter(torch.zeros(a.vocab))
        self.pooler, self.nsp = nn.Linear(H, H), nn.Linear(H, 2)

    def forward(self, ids, types, mask, positions, labels, nsp_labels):
        T = ids.shape[1]
        x = self.word(ids) + self.position.weight[:T] + self.token_type(types)
        x = F.dropout(norm(self.embed_norm, x), self.p, self.training)
        key_bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0  # BERT's additive mask
        for layer in self.layers:
            x = layer(x, key_bias)
        picked = x.gather(1, positions[:, :, None].expand(-1, -1, x.shape[-1]))
        h = norm(self.mlm_norm, F.gelu(self.mlm_dense(picked)))
        mlm_logits = h @ self.word.weight.t() + self.mlm_bias
        nsp_logits = self.nsp(torch.tanh(self.pooler(x[:, 0])))
        mlm = F.cross_entropy(mlm_logits.float().flatten(0, 1), labels.flatten())
        return mlm + F.cross_entropy(nsp_logits.float(), nsp_labels)


def random_batch(a, gen):
    B, T, P = a.batch, a.seq, a.predictions
    ids = torch.randint(0, a.vocab, (B, T), generator=gen)
    types = (torch.arange(T) >= T // 2).long().expand(B, T).contiguous()  # segment A, then B
    mask = torch.ones(B, T)
    # P distinct positions per example, never [CLS] at 0
    positions = torch.stack([1 + torch.randperm(T - 1, generator=gen)[:P] for _ in range(B)])
    labels = torch.randint(0, a.vocab, (B, P), generator=gen)
    nsp_labels = torch.randint(0, 2, (B,), generator=gen)
    return ids, types, mask, positions, labels, nsp_labels


def median_step(a, dtype, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertPretraining(a).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batch = random_batch(a, torch.Generator().manual_seed(1))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(*batch)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, oneDNN kernels, optimizer state
        step()
    times, stop = [], time.perf_counter() + a.seconds
    while len(times) < 3 or time.perf_counter() < stop:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    a = parse_args()
    flops = step_flops(a)
    tokens = a.batch * a.seq
    out = {"peer": "pytorch", "version": torch.__version__, "layers": a.layers, "hidden": a.hidden,
           "heads": a.heads, "intermediate": a.intermediate, "seq": a.seq, "batch": a.batch,
           "predictions": a.predictions, "vocab": a.vocab, "flops_per_step": flops}
    for dtype in a.dtypes:
        best = None
        for threads in a.threads:
            s = median_step(a, dtype, threads)
            print(f"torch {torch.__version__} {dtype} threads={threads}: L={a.layers} H={a.hidden} A={a.heads} "
                  f"T={a.seq} B={a.batch} P={a.predictions} V={a.vocab}: median step {1e3 * s:.1f} ms, "
                  f"{tokens / s:.0f} tokens/s, {flops / s / 1e9:.1f} GFLOP/s", flush=True)
            if best is None or s < best[1]:
                best = (threads, s)
        prefix = "" if dtype == "fp32" else dtype + "_"
        out.update({prefix + "threads": best[0], prefix + "step_s": best[1], prefix + "tokens_per_s": tokens / best[1],
                    prefix + "gflops": flops / best[1] / 1e9})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
