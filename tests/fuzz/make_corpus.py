#!/usr/bin/env python3
"""Rebuilds the seed corpora in tests/fuzz/corpus/<target>/ from the project's own fixtures and
configs and from files the built program writes (a tiny prepared corpus, a 2-step run's checkpoint,
its export and a batch file): valid inputs plus a few broken ones per target.

    tests/fuzz/make_corpus.py ./bert_pretrain

Only needed when a format changes; the corpora are committed. Inputs of targets that take a mode
byte (shard, ckpt, textfile, tokenize) start with it (see each tests/fuzz/fuzz_*.c)."""
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(REPO, "tests", "fuzz", "corpus")
SEP = b"\n--section--\n"  # fuzz_run_ckpt.c

TINY_YAML = """\
model: {preset: bert-tiny, layers: 1, hidden: 8, heads: 2, intermediate: 16, max_position: 16}
data: {vocab: vocab.txt, vocab_size: 130, input: [%s],
       train: shards/train, eval: shards/eval, eval_fraction: 0.2, eval_examples: 4}
optimizer: {name: lamb}
schedule: {lr: 2.0e-2, warmup_ratio: 0.1}
phases:
  - {seq_len: 16, batch_size: 4, steps: 2, max_predictions_per_seq: 3}
training: {micro_batch: 4, seed: 7, run_dir: run, checkpoint_every: 1, keep_checkpoints: 10, log_every: 1}
"""


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def ckpt_sections(blob):
    """(name, bytes) of a checkpoint container, in table order (checkpoint.h's layout)."""
    n = struct.unpack_from("<I", blob, 12)[0]
    out = []
    for i in range(n):
        e = 16 + 52 * i
        name = blob[e:e + 32].rstrip(b"\0")
        off, size = struct.unpack_from("<QQ", blob, e + 32)
        out.append((name, blob[off:off + size]))
    return out


def ckpt_container(sections):
    """A container as ckpt_write lays it out (CRCs included)."""
    head_len = 16 + 52 * len(sections) + 4
    align = lambda x: (x + 7) // 8 * 8
    table, off = b"", align(head_len)
    for name, data in sections:
        table += name.ljust(32, b"\0") + struct.pack("<QQI", off, len(data), zlib.crc32(data))
        off = align(off + len(data))
    head = b"BPCKPT01" + struct.pack("<II", 1, len(sections)) + table
    head += struct.pack("<I", zlib.crc32(head))
    out = head
    for _, data in sections:
        out += b"\0" * (align(len(out)) - len(out)) + data
    return out


def run_ckpt_input(sections):
    return SEP.join(name + b"\0" + data for name, data in sections)


def make_artifacts(binary, work):
    with open(os.path.join(work, "tiny.yaml"), "w") as f:
        f.write(TINY_YAML % os.path.join(REPO, "tests/fixtures/tokenizer/train.txt"))
    run = lambda *args: subprocess.run([binary, *args], cwd=work, check=True, capture_output=True)
    run("prepare", "tiny.yaml")
    run("tiny.yaml")
    run("export", "run/ckpt-00000002.bin", "out")
    run("show-batch", "tiny.yaml", "--n", "2", "--out", "batch.safetensors")
    return run("tiny.yaml", "--dry-run", "--set", "training.run_dir=dry").stdout


def config_seeds(resolved):
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        if name.endswith(".yaml"):
            put("config_yaml", name, read(os.path.join(REPO, "configs", name)))
    put("config_yaml", "include_top.yaml", read(os.path.join(REPO, "tests/fixtures/config/include/top.yaml")))
    put("config_yaml", "tiny.yaml", (TINY_YAML % "corpus.txt").encode())
    put("config_yaml", "base.yaml", b"base: base.yaml\nmodel: {layers: 2}\n")
    put("config_yaml", "cycle.yaml", b"base: input.yaml\n")
    put("config_yaml", "alias.yaml", b"model: &m {layers: 2}\ndata: *m\n")
    put("config_yaml", "deep.yaml", b"model: " + b"[" * 200 + b"]" * 200 + b"\n")
    put("config_yaml", "phases.yaml", b"phases:\n  - {seq_len: 128, batch_size: 64, steps: 9, "
        b"max_predictions_per_seq: 20, restart_schedule: true, lr: 1e-3}\n  - {seq_len: 512, "
        b"batch_size: 32, steps: 1, max_predictions_per_seq: 80, micro_batch: 2}\n")
    for i, line in enumerate([b"model.layers=2", b"model.preset=bert-large\nmodel.hidden=64",
                              b"phases=[{seq_len: 64, batch_size: 8, steps: 3, max_predictions_per_seq: 9}]",
                              b"phases.0.seq_len=32", b"model=", b"training.seed=-1",
                              b"optimizer.exclude_from_weight_decay=[bias, LayerNorm]",
                              b"schedule.lr=1e999", b"data.input=[a.txt, b.gz]", b"base=x.yaml",
                              b"optimizer.name=lars\noptimizer.lars_form=classic"]):
        put("config_set", "set%02d" % i, line)
    put("config_resolved", "tiny.json", resolved)
    put("config_resolved", "alias.json", resolved.replace(b'"model": {', b'"model": &a {', 1))
    put("config_resolved", "base.json", resolved.replace(b"{", b'{"base": "x.yaml",', 1))
    put("config_resolved", "deep.json", b"[" * 100000)
    changed = resolved.replace(b'"layers": 1', b'"layers": 2').replace(b'"log_every": 1', b'"log_every": 5')
    put("config_diff", "same", resolved)
    put("config_diff", "changed", resolved + b"\0" + changed)
    put("config_diff", "alias_bomb", b"a: &a [x,x,x,x]\nb: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\0{}")
    put("config_diff", "nested", b"[" * 1000 + b"\0" + b"{a: [1, [2, {b: 3}]]}")


def file_seeds(work):
    st = read(os.path.join(work, "out/model.safetensors"))
    batch = read(os.path.join(work, "batch.safetensors"))
    fixture_batch = read(os.path.join(REPO, "tests/fixtures/model/batch.safetensors"))
    for target in ("safetensors", "batch"):
        put(target, "batch.safetensors", batch)
        put(target, "fixture_batch.safetensors", fixture_batch)
        put(target, "truncated.safetensors", batch[:len(batch) // 2])
        put(target, "huge_header.safetensors", struct.pack("<Q", 1 << 62) + batch[8:])
    put("safetensors", "model.safetensors", st)

    for name in ("train", "eval"):
        shard = read(os.path.join(work, "shards", name))
        put("shard", name, b"\1" + shard)
        put("shard", name + "_truncated", b"\1" + shard[:200])
        put("shard", name + "_flipped", b"\0" + shard[:300] + bytes([shard[300] ^ 1]) + shard[301:])

    blob = read(os.path.join(work, "run/ckpt-00000002.bin"))
    secs = ckpt_sections(blob)
    small = [(n, d) for n, d in secs if n in (b"state", b"config.json", b"vocab")]
    put("ckpt", "run_ckpt", b"\1" + blob)
    put("ckpt", "three_sections", b"\1" + ckpt_container(small))
    put("ckpt", "empty_table", b"\1" + ckpt_container([]))
    put("ckpt", "bad_crc", b"\0" + ckpt_container(small)[:-1] + b"?")
    put("ckpt", "trailing", b"\1" + ckpt_container(small) + b"\0" * 8)

    put("run_ckpt", "run_ckpt", run_ckpt_input(secs))
    state = dict(secs)[b"state"]
    cfg = dict(secs)[b"config.json"]
    rest = [(n, d) for n, d in secs if n not in (b"state", b"config.json")]
    bad = [
        ("negative_step", state[:16] + struct.pack("<q", -1) + state[24:], cfg),
        ("format1", b"bert_pretrain/1\0" + state[16:], cfg),
        ("huge_layers", state, cfg.replace(b'"layers": 1', b'"layers": 1000000')),
        ("big_model", state, cfg.replace(b'"layers": 1', b'"layers": 200').replace(b'"hidden": 8', b'"hidden": 1024')),
        ("alias", state, cfg.replace(b'"model": {', b'"model": &m {', 1)),
    ]
    for name, s, c in bad:
        put("run_ckpt", name, run_ckpt_input([(b"state", s), (b"config.json", c)] + rest))
    put("run_ckpt", "no_params", run_ckpt_input([(n, d) for n, d in secs if n != b"params"]))

    vocab = read(os.path.join(work, "vocab.txt"))
    put("vocab", "vocab.txt", vocab)
    for name in ("vocab_small.txt", "vocab_built_cased.txt", "vocab_built_uncased.txt"):
        put("vocab", name, read(os.path.join(REPO, "tests/fixtures/tokenizer", name)))
    put("vocab", "duplicate.txt", vocab + b"[PAD]\n")
    put("vocab", "empty_line.txt", vocab.replace(b"\n", b"\n\n", 1))
    put("vocab", "bom_crlf.txt", b"\xef\xbb\xbf" + vocab.replace(b"\n", b"\r\n"))
    put("vocab", "no_specials.txt", b"a\nb\n##c\n")


def text_seeds():
    train = read(os.path.join(REPO, "tests/fixtures/tokenizer/train.txt"))
    cases = read(os.path.join(REPO, "tests/fixtures/tokenizer/cases.txt")).split(b"\n")
    for i, line in enumerate(cases[:40:4]):
        fields = line.split(b"\t")
        if len(fields) >= 3:
            put("tokenize", "case%02d" % i, bytes([int(fields[1]) & 1]) + bytes.fromhex(fields[2].decode()))
    put("tokenize", "train", b"\1" + train)
    put("tokenize", "invalid_utf8", b"\0caf\xe9 \xff\xfe na\xc3\xafve \xf0\x9f\x98")
    put("tokenize", "long_word", b"\1" + b"x" * 300 + b" ##y " + "日本語".encode())

    gz = gzip.compress(train)
    put("textfile", "plain", b"\0" + train)
    put("textfile", "compress_me", b"\1" + train)
    put("textfile", "gzip", b"\2" + gz)
    put("textfile", "gzip_truncated", b"\2" + gz[:len(gz) // 2])
    put("textfile", "gzip_trailing", b"\2" + gz + b"garbage")
    put("textfile", "two_members", b"\2" + gz + gzip.compress(b"more\r\nlines"))
    put("textfile", "latin1", b"\0" + train.decode().encode("latin-1", "replace") + b"caf\xe9\n" * 20)
    put("textfile", "crlf_no_final", b"\0a\r\nb\r\n\r\nlast")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="bp_corpus_")
    try:
        resolved = make_artifacts(binary, work)
        shutil.rmtree(CORPUS, ignore_errors=True)
        config_seeds(resolved)
        file_seeds(work)
        text_seeds()
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
