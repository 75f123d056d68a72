#!/usr/bin/python3
"""PyTorch reference for bert_pretrain's model (src/model.c), through safetensors files.

The module below has Hugging Face BertForPreTraining's submodule names, so its state_dict keys are
the names bert_pretrain reads and writes (bert.embeddings.word_embeddings.weight, ...,
cls.predictions.bias, cls.seq_relationship.weight); the decoder is tied to the word embeddings and
has no tensor of its own. Computation runs in float64 for an accurate reference.

  fixtures [--out DIR]   writes DIR/{weights,batch,expected,expected_tanh}.safetensors
                         (default tests/fixtures/model): a tiny random model (L2 H32 A2 I64 V100,
                         32 positions), a batch with padding and unused prediction slots (B3 T16
                         P4), and for each GELU form the loss, mlm_loss, nsp_loss, the logits at
                         the real prediction slots (slot order) and every parameter's gradient,
                         computed in float64 and stored as float32.
  check --weights W --config config.json --batch B [--loss X] [--grads G]
                         builds the module from an HF config.json, loads W with
                         load_state_dict(strict=True), runs the batch and compares with the loss
                         and gradients bert_pretrain reported. Exit 1 on a mismatch.

Run with /usr/bin/python3 (Debian's python3-torch, python3-numpy).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# safetensors (the format is small enough that a reader and writer fit here; the package is not
# in Debian)

DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "F64": np.float64}


def st_write(path, tensors):
    """tensors: dict name -> numpy array (float32/int32/int64), written in insertion order"""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}[arr.dtype]
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).astype(DTYPES[info["dtype"]])
    return out


# ---------------------------------------------------------------------------------------------
# the model, with Hugging Face's module names

class Embeddings(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        s.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class SelfAttention(nn.Module):
    def __init__(s, c):
        super().__init__()
        H = c["hidden_size"]
        s.query, s.key, s.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)


class DenseLN(nn.Module):
    def __init__(s, c, n_in):
        super().__init__()
        s.dense = nn.Linear(n_in, c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class Attention(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.self = SelfAttention(c)
        s.output = DenseLN(c, c["hidden_size"])


class Intermediate(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])


class Layer(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.attention = Attention(c)
        s.intermediate = Intermediate(c)
        s.output = DenseLN(c, c["intermediate_size"])


class Encoder(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.layer = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))


class Pooler(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["hidden_size"])


class Bert(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.embeddings = Embeddings(c)
        s.encoder = Encoder(c)
        s.pooler = Pooler(c)


class Transform(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class Predictions(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.transform = Transform(c)
        s.bias = nn.Parameter(torch.zeros(c["vocab_size"]))  # the decoder is the word embedding


class Heads(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.predictions = Predictions(c)
        s.seq_relationship = nn.Linear(c["hidden_size"], 2)


class BertForPreTraining(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c = c
        s.bert = Bert(c)
        s.cls = Heads(c)

    def act(s, x):
        if s.c["hidden_act"] in ("gelu_new", "gelu_pytorch_tanh"):
            return F.gelu(x, approximate="tanh")
        assert s.c["hidden_act"] == "gelu", s.c["hidden_act"]
        return F.gelu(x)

    def forward(s, b):
        """b: dict of int64 tensors with BERT's batch names. Loss = mean MLM cross-entropy over the
        real prediction slots + mean NSP cross-entropy, as bert_pretrain defines it."""
        c, e = s.c, s.bert.embeddings
        ids, tt, mask = b["input_ids"], b["token_type_ids"], b["attention_mask"]
        B, T = ids.shape
        A = c["num_attention_heads"]
        H = c["hidden_size"]
        D = H // A
        x = e.word_embeddings(ids) + e.position_embeddings.weight[:T][None] + e.token_type_embeddings(tt)
        x = e.LayerNorm(x)
        bias = (1.0 - mask.to(x.dtype))[:, None, None, :] * -10000.0  # BERT's additive padding mask
        for layer in s.bert.encoder.layer:
            at = layer.attention.self
            q, k, v = (f(x).view(B, T, A, D).transpose(1, 2) for f in (at.query, at.key, at.value))
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + bias, dim=-1)
            ctx = (p @ v).transpose(1, 2).reshape(B, T, H)
            o = layer.attention.output
            x = o.LayerNorm(x + o.dense(ctx))
            f = s.act(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(x + layer.output.dense(f))
        w = b["masked_lm_weights"].reshape(-1) != 0
        rows = (torch.arange(B)[:, None] * T + b["masked_lm_positions"]).reshape(-1)[w]
        h = x.reshape(B * T, H)[rows]
        t = s.cls.predictions.transform
        h = t.LayerNorm(s.act(t.dense(h)))
        logits = h @ e.word_embeddings.weight.t() + s.cls.predictions.bias
        labels = b["masked_lm_ids"].reshape(-1)[w]
        n_real = int(w.sum())
        mlm = F.cross_entropy(logits, labels, reduction="sum") / max(n_real, 1)
        pooled = torch.tanh(s.bert.pooler.dense(x[:, 0]))
        nsp_logits = s.cls.seq_relationship(pooled)
        nsp = F.cross_entropy(nsp_logits, b["next_sentence_labels"].reshape(-1))
        return {"loss": mlm + nsp, "mlm_loss": mlm, "nsp_loss": nsp, "mlm_logits": logits, "nsp_logits": nsp_logits}


BATCH_NAMES = ["input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
               "masked_lm_weights", "next_sentence_labels"]


def run(model, batch):
    """float64 forward + backward; returns (outputs, {name: grad})"""
    model.zero_grad(set_to_none=True)
    out = model({k: torch.from_numpy(batch[k].astype(np.int64)) for k in BATCH_NAMES})
    out["loss"].backward()
    grads = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in model.named_parameters()}
    return out, grads


# ---------------------------------------------------------------------------------------------

def tiny_config(act):
    return {"architectures": ["BertForPreTraining"], "model_type": "bert", "vocab_size": 100, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": act,
            "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "initializer_range": 0.02, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def make_batch(gen, V, B=3, T=16, P=4):
    lens = [16, 11, 7]
    ids = np.zeros((B, T), np.int32)
    tt = np.zeros((B, T), np.int32)
    mask = np.zeros((B, T), np.int32)
    pos = np.zeros((B, P), np.int32)
    mids = np.zeros((B, P), np.int32)
    mw = np.zeros((B, P), np.int32)
    real_slots = [4, 3, 1]  # example 2 has three unused slots
    for i in range(B):
        n = lens[i]
        ids[i, :n] = torch.randint(1, V, (n,), generator=gen).numpy()
        ids[i, 0] = 1  # [CLS]-like
        tt[i, n // 2:n] = 1
        mask[i, :n] = 1
        chosen = (torch.randperm(n - 1, generator=gen)[:real_slots[i]] + 1).numpy()
        pos[i, :len(chosen)] = chosen
        mids[i, :len(chosen)] = torch.randint(0, V, (len(chosen),), generator=gen).numpy()
        mw[i, :len(chosen)] = 1
    nsp = np.array([0, 1, 1], np.int32)
    return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask, "masked_lm_positions": pos,
            "masked_lm_ids": mids, "masked_lm_weights": mw, "next_sentence_labels": nsp}


def cmd_fixtures(a):
    gen = torch.Generator().manual_seed(20240601)
    c = tiny_config("gelu")
    # A generic point (weights std 0.15 rather than BERT's 0.02, gains 1 +- 0.2, biases 0.1) so that
    # every term of every backward pass matters; generated in float32, which both sides then read.
    # (At std 0.3 the attention is nearly one-hot and fp32 rounding alone reaches the 1e-6 atol.)
    weights = {}
    model = BertForPreTraining(c)
    for name, p in model.named_parameters():
        z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name.endswith("LayerNorm.weight"):
            v = 1.0 + 0.2 * z
        elif name.endswith("bias"):
            v = 0.1 * z
        else:
            v = 0.15 * z
        weights[name] = v.numpy().astype(np.float32)
    batch = make_batch(gen, c["vocab_size"])
    os.makedirs(a.out, exist_ok=True)
    st_write(os.path.join(a.out, "weights.safetensors"), weights)
    st_write(os.path.join(a.out, "batch.safetensors"), batch)
    for act, fname in (("gelu", "expected.safetensors"), ("gelu_new", "expected_tanh.safetensors")):
        m = BertForPreTraining(tiny_config(act)).double()
        m.load_state_dict({k: torch.from_numpy(v).double() for k, v in weights.items()}, strict=True)
        out, grads = run(m, batch)
        exp = {k: np.array([out[k].item()], np.float32) for k in ("loss", "mlm_loss", "nsp_loss")}
        exp["mlm_logits"] = out["mlm_logits"].detach().numpy().astype(np.float32)
        exp["nsp_logits"] = out["nsp_logits"].detach().numpy().astype(np.float32)
        for n, g in grads.items():
            exp["grad." + n] = g.numpy().astype(np.float32)
        st_write(os.path.join(a.out, fname), exp)
        print(f"{fname}: {act}: loss {out['loss'].item():.9f} mlm {out['mlm_loss'].item():.9f} "
              f"nsp {out['nsp_loss'].item():.9f}")


def cmd_check(a):
    with open(a.config) as f:
        c = json.load(f)
    assert c.get("architectures") == ["BertForPreTraining"], c.get("architectures")
    m = BertForPreTraining(c).double()
    w = st_read(a.weights)
    # strict: every module parameter present under its HF name, nothing else in the file
    m.load_state_dict({k: torch.from_numpy(v).double() for k, v in w.items()}, strict=True)
    batch = st_read(a.batch)
    out, grads = run(m, batch)
    ok = True
    print(f"torch: loss {out['loss'].item():.9f} mlm {out['mlm_loss'].item():.9f} nsp {out['nsp_loss'].item():.9f}")
    if a.loss is not None:
        ref = out["loss"].item()
        if not abs(a.loss - ref) <= 1e-5 * abs(ref):
            print(f"MISMATCH: loss {a.loss!r} from bert_pretrain, {ref!r} from torch")
            ok = False
    if a.grads:
        g = st_read(a.grads)
        if set(g) != set(grads):
            print(f"MISMATCH: gradient names differ: {sorted(set(g) ^ set(grads))}")
            ok = False
        for n in sorted(set(g) & set(grads)):
            ref = grads[n].numpy()
            got = g[n].astype(np.float64)
            excess = np.abs(got - ref) - (1e-6 + 1e-3 * np.abs(ref))
            if excess.max() > 0:
                i = np.unravel_index(np.argmax(excess), ref.shape)
                print(f"MISMATCH: grad {n}{list(i)} = {got[i]!r}, torch {ref[i]!r} (atol 1e-6 + rtol 1e-3)")
                ok = False
    print("check: OK" if ok else "check: FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "model"))
    c = sub.add_parser("check")
    c.add_argument("--weights", required=True)
    c.add_argument("--config", required=True)
    c.add_argument("--batch", required=True)
    c.add_argument("--loss", type=float)
    c.add_argument("--grads")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "fixtures":
        cmd_fixtures(a)
        return 0
    return cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
