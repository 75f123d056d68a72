#!/usr/bin/python3
"""Writes a synthetic MediaWiki XML dump with the structure and the markup mix of the English
Wikipedia's pages-articles dump, to measure scripts/wiki_to_text.py at scale without downloading
one (the text is made-up words; only its shape is realistic).

    gen_wiki_dump.py [--mb N] [--seed S] OUT.xml[.bz2|.gz]

--mb: the size of the uncompressed XML to write (default 60); the compression follows OUT's name.
The mix follows enwiki's proportions (dumps of 2023-2024, rounded): of every 100 pages about 30
are articles, 45 redirects (namespace 0) and 25 pages of other namespaces (categories, files,
templates, project pages); an article's wikitext averages about 9 KB: an infobox with nested
templates, paragraphs with links, references holding citation templates, headings, lists, now and
then a table or a formula, reference and category sections at the end.
"""
import argparse
import bz2
import gzip
import random
import sys

SYLLABLES = ["ka", "lo", "mer", "tin", "sa", "ve", "ro", "dan", "el", "is", "on", "ar", "bel",
             "cor", "du", "fen", "gra", "hal", "ith", "jor", "kem", "lun", "mor", "nal", "os",
             "pra", "qui", "rest", "sul", "tor", "um", "vin", "wes", "xan", "yor", "zel"]
OTHER_NS = [(14, "Category"), (6, "File"), (10, "Template"), (4, "Wikipedia"), (1, "Talk")]


class Words:
    def __init__(self, rng, n=6000):
        self.rng = rng
        self.vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
                      for _ in range(n)]
        self.weights = [1.0 / (i + 1) for i in range(n)]  # Zipf, as word frequencies are

    def some(self, k):
        return self.rng.choices(self.vocab, self.weights, k=k)

    def name(self):
        return " ".join(w.capitalize() for w in self.rng.choices(self.vocab[200:], k=2))


def sentence(rng, words):
    ws = words.some(rng.randint(6, 28))
    ws[0] = ws[0].capitalize()
    for i in range(1, len(ws) - 1):
        r = rng.random()
        if r < 0.06:
            ws[i] = f"[[{words.name()}]]"
        elif r < 0.09:
            ws[i] = f"[[{words.name()}|{ws[i]}]]"
        elif r < 0.10:
            ws[i] = f"'''{ws[i]}'''"
        elif r < 0.11:
            ws[i] = f"{rng.randint(1, 2000)}.{rng.randint(0, 99)}"
        elif r < 0.115:
            ws[i] = f"{{{{convert|{rng.randint(1, 900)}|km}}}}"
        elif r < 0.12:
            ws[i] = "Dr. " + words.name()
    s = " ".join(ws) + rng.choice((".", ".", ".", ".", "?", "!"))
    if rng.random() < 0.25:
        s += (f'<ref name="r{rng.randint(1, 99)}">{{{{cite web |url=https://example.org/'
              f'{rng.randint(1, 10**6)} |title={words.name()} |date={rng.randint(1900, 2024)}}}}}'
              '</ref>')
    return s


def article(rng, words, title):
    parts = [f"{{{{Short description|{' '.join(words.some(5))}}}}}",
             "{{Infobox place\n| name = " + title + "\n| image = [[File:" + words.name() +
             ".jpg|250px]]\n| area = {{convert|" + str(rng.randint(1, 999)) +
             "|km2}}\n| native = {{lang|fr|" + words.name() + "}}\n}}"]
    n_par = max(1, int(rng.lognormvariate(2.0, 0.6)))
    for i in range(n_par):
        if i and rng.random() < 0.35:
            parts.append(f"== {words.name()} ==")
        if rng.random() < 0.15:
            parts.append("\n".join(f"* {sentence(rng, words)}" for _ in range(rng.randint(2, 6))))
        if rng.random() < 0.05:
            rows = "\n|-\n".join(f"| {words.name()} || {rng.randint(1, 10**5)}"
                                 for _ in range(rng.randint(2, 8)))
            parts.append('{| class="wikitable"\n|-\n! Name !! Value\n|-\n' + rows + "\n|}")
        if rng.random() < 0.03:
            parts.append(":<math>x^2 + {y \\over 2} = z</math>")
        parts.append(" ".join(sentence(rng, words) for _ in range(rng.randint(2, 9))))
    parts.append("== References ==\n{{Reflist}}")
    parts += [f"[[Category:{words.name()}]]" for _ in range(rng.randint(1, 5))]
    return "\n\n".join(parts)


def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def page_xml(page_id, title, ns, text, redirect=None):
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    body = escape(text)
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
            f"{red}    <revision>\n      <id>{page_id + 10**8}</id>\n      <timestamp>2024-01-01T00:00:00Z"
            "</timestamp>\n      <contributor>\n        <username>Example</username>\n        <id>1</id>\n"
            "      </contributor>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{body}</text>\n'
            "      <sha1>0000000000000000000000000000000</sha1>\n    </revision>\n  </page>\n")


HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ \
http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.42.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Media</namespace>
      <namespace key="-1" case="first-letter">Special</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="4" case="first-letter">Wikipedia</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""


def generate(out, target_bytes, seed):
    rng = random.Random(seed)
    words = Words(rng)
    out.write(HEADER.encode())
    written, page_id, last_article = 0, 0, "Main Page"
    while written < target_bytes:
        page_id += 1
        r = rng.random()
        if r < 0.30:
            last_article = words.name()
            xml = page_xml(page_id, last_article, 0, article(rng, words, last_article))
        elif r < 0.75:
            xml = page_xml(page_id, words.name(), 0, f"#REDIRECT [[{last_article}]]", last_article)
        else:
            ns, prefix = rng.choice(OTHER_NS)
            xml = page_xml(page_id, f"{prefix}:{words.name()}", ns,
                           " ".join(sentence(rng, words) for _ in range(rng.randint(1, 4))))
        data = xml.encode()
        out.write(data)
        written += len(data)
    out.write(b"</mediawiki>\n")
    return page_id


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", metavar="OUT.xml[.bz2|.gz]")
    ap.add_argument("--mb", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv[1:])
    if args.out.endswith(".bz2"):
        f = bz2.open(args.out, "wb")
    elif args.out.endswith(".gz"):
        f = gzip.open(args.out, "wb")
    else:
        f = open(args.out, "wb")
    with f:
        pages = generate(f, int(args.mb * 1e6), args.seed)
    print(f"{args.out}: {pages} pages, {args.mb:g} MB of XML")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
