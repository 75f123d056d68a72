#!/usr/bin/python3
"""Turns a MediaWiki XML dump into the text format `bert_pretrain prepare` reads: one sentence per
line, a blank line between documents (one document per kept article).

    wiki_to_text.py [options] DUMP OUT.txt

DUMP is enwiki-*-pages-articles*.xml.bz2, a .gz or the uncompressed XML (the compression is told
by the file's first bytes, not its name), or "-" for standard input. OUT is written atomically
(OUT.tmp.PID, then a rename): a failed run leaves no OUT and no temporary file.

Options:
    --min-sentences N   drop an article with fewer than N sentences after clean-up (default 2)
    --max-pages N       stop after N pages of any namespace (for quick tries)
    --jobs N            clean articles in N processes (default 1); the output does not depend on N

Kept: pages in namespace 0 that are not redirects. The markup rules, the sentence rule and the
reasons for the threshold are in docs/data.md. Standard library only, memory bounded whatever the
dump's size: the XML is streamed (iterparse) and each page is cleared once read.

Exit status: 0 on success (warnings, such as pages without text, are counted in the summary),
1 when the dump is unreadable (truncated or corrupt compression, invalid XML, not a MediaWiki
dump) or nothing was kept, 2 on a usage error.
"""
import argparse
import bz2
import collections
import gzip
import html
import io
import os
import queue
import re
import stat
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zlib

PROG = "wiki_to_text"


class DumpError(Exception):
    """A problem with the input that ends the run; the message is for the user."""


# ---------------------------------------------------------------------------------------------
# Input: compression by magic bytes, a byte count of the raw input for progress

class CountingReader(io.RawIOBase):
    """Counts the bytes read from the raw (possibly compressed) input, so that progress and error
    messages can say how far into the file a run got."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.count = 0

    def readable(self):
        return True

    def readinto(self, b):
        data = self.f.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        return n


class Prefetch(io.RawIOBase):
    """Decompresses in a thread, up to `depth` chunks ahead of the parser: bz2 and zlib release
    the GIL while they work, so decompression and XML parsing overlap on two cores. An error of
    the decompressor is raised to the reader at the point in the stream where it happened."""

    def __init__(self, f, chunk=1 << 20, depth=8):
        super().__init__()
        self.f, self.chunk = f, chunk
        self.q = queue.Queue(depth)
        self.buf, self.pos, self.eof = b"", 0, False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            while True:
                data = self.f.read(self.chunk)
                self.q.put(data)
                if not data:
                    return
        except BaseException as e:  # handed over to the reading thread, which reports it
            self.q.put(e)

    def readable(self):
        return True

    def readinto(self, b):
        if self.pos == len(self.buf) and not self.eof:
            item = self.q.get()
            if isinstance(item, BaseException):
                self.eof = True
                raise item
            self.buf, self.pos, self.eof = item, 0, not item
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos:self.pos + n]
        self.pos += n
        return n


def open_dump(path):
    """Returns (xml_stream, counter, compression, size or None)."""
    if path == "-":
        raw = sys.stdin.buffer
        size = None
    else:
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise DumpError(f"{path}: cannot open: {e.strerror}")
        st = os.fstat(raw.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
    magic = raw.peek(4)[:4]
    counter = CountingReader(raw)
    if magic[:3] == b"BZh":
        return Prefetch(bz2.BZ2File(counter)), counter, "bzip2", size
    if magic[:2] == b"\x1f\x8b":
        return Prefetch(gzip.GzipFile(fileobj=counter, mode="rb")), counter, "gzip", size
    return io.BufferedReader(counter), counter, "none", size


# ---------------------------------------------------------------------------------------------
# The XML: pages, namespaces, redirects, whatever the export schema's version

def local(tag):
    """'{http://www.mediawiki.org/xml/export-0.11/}page' -> 'page': the namespace URI carries the
    schema version, which must not matter."""
    return tag.rsplit("}", 1)[-1]


def child_text(el, name):
    for c in el:
        if local(c.tag) == name:
            return c.text or ""
    return None


Page = collections.namedtuple("Page", "title ns redirect text")
REDIRECT_TEXT = re.compile(r"\s*#redirect\b", re.I)


def read_page(el, ns_by_name):
    title = child_text(el, "title") or ""
    ns_text = child_text(el, "ns")
    if ns_text is not None and ns_text.strip().lstrip("-").isdigit():
        ns = int(ns_text)
    else:  # schema versions before 0.5 have no <ns>: the title's prefix names the namespace
        prefix, colon, _ = title.partition(":")
        ns = ns_by_name.get(prefix.strip().lower(), 0) if colon else 0
    redirect = False
    text = None
    for c in el:
        name = local(c.tag)
        if name == "redirect":
            redirect = True
        elif name == "revision":  # full-history dumps hold several: the last is the current one
            for r in c:
                if local(r.tag) == "text":
                    text = None if r.get("deleted") is not None else (r.text or "")
    if text is not None and REDIRECT_TEXT.match(text):
        redirect = True
    return Page(title, ns, redirect, text)


def iter_pages(stream, name, siteinfo):
    """Yields Page tuples; fills siteinfo['names'] (ns id -> names) from <siteinfo> first."""
    root = None
    ns_by_name = {}
    try:
        for event, el in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                if root is None:
                    root = el
                    if local(el.tag) != "mediawiki":
                        raise DumpError(f"{name}: not a MediaWiki dump (the root element is "
                                        f"<{local(el.tag)}>, expected <mediawiki>)")
                continue
            tag = local(el.tag)
            if tag == "namespace" and el.get("key", "").lstrip("-").isdigit():
                key = int(el.get("key"))
                siteinfo.setdefault(key, set()).add((el.text or "").strip().lower())
                ns_by_name[(el.text or "").strip().lower()] = key
            elif tag == "siteinfo":
                root.clear()
            elif tag == "page":
                page = read_page(el, ns_by_name)
                root.clear()  # the page and everything before it: memory stays bounded
                yield page
    except ET.ParseError as e:
        line, col = e.position
        reason = str(e).split(":")[0]
        raise DumpError(f"{name}: invalid XML at line {line}, column {col + 1} of the XML: {reason}")


# ---------------------------------------------------------------------------------------------
# Markup

# elements dropped with their content (math, references, galleries, code, ...)
DROPPED_ELEMENTS = ("ref|references|math|chem|ce|score|gallery|timeline|graph|imagemap|"
                    "syntaxhighlight|source|pre|hiero|templatedata|mapframe|maplink|inputbox|"
                    "categorytree|indicator|includeonly")
DROPPED_ELEMENT = re.compile(
    rf"<({DROPPED_ELEMENTS})\b[^>]*?/>|<({DROPPED_ELEMENTS})\b[^>]*>.*?</\2\s*>", re.S | re.I)
COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
MAGIC_WORD = re.compile(r"__[A-Z]+__")
# HTML tags whose content is text: the tags go, the content stays. A block tag (line break,
# paragraph, list item, cell) separates words: a space; an inline one (m<sup>2</sup>) does not.
BLOCK_HTML_TAG = re.compile(
    r"</?(?:blockquote|br|center|dd|div|dl|dt|h[1-6]|hr|li|ol|p|poem|section|table|td|th|tr|ul)"
    r"\b[^>]*>", re.I)
INLINE_HTML_TAG = re.compile(
    r"</?(?:abbr|b|bdi|bdo|big|cite|code|del|em|font|i|ins|kbd|mark|nowiki|noinclude|onlyinclude|"
    r"q|rp|rt|ruby|s|samp|small|span|strike|strong|sub|sup|tt|u|var|wbr)\b[^>]*>", re.I)
BLOCK_TOKEN = re.compile(r"\{\{|\}\}|^[ \t]*\{\||^[ \t]*\|\}", re.M)
LINK_TOKEN = re.compile(r"\[\[|\]\]")
CLOSER_OF = {"}}": "{{", "|}": "{|", "]]": "[["}
EXTERNAL_LINK = re.compile(
    r"\[(?:https?:|ftp:|ftps:|sftp:|//|mailto:|news:|irc:|ircs:|gopher:|telnet:|git:)[^\s\]]*"
    r"(?:[ \t]+([^\]\n]*))?\]", re.I)
BOLD_ITALIC = re.compile(r"'''''|'''|''")
HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
INTERLANGUAGE = re.compile(r"^(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple)$")
INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060\ufeff]")
EMPTY_PARENS = re.compile(r"\(\s*(?:[,;:]\s*)*\)")
OPEN_PAREN_PUNCT = re.compile(r"\(\s*[,;:]\s*")
CLOSE_PAREN_PUNCT = re.compile(r"\s*[,;:]\s*\)")
SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]])")
SPACE_AFTER_OPEN = re.compile(r"([(\[])\s+")
SPACES = re.compile(r"\s+")
# end-of-article sections that are lists of citations and links, not prose
SKIPPED_SECTIONS = {"references", "external links", "see also", "further reading", "notes",
                    "bibliography", "sources", "citations", "footnotes", "notes and references",
                    "works cited"}
# inline templates whose rendering is running text; every other template is dropped
TEMPLATE_TEXT = {"nowrap": 1, "nobr": 1, "small": 1, "big": 1, "lang": 2, "transl": -1,
                 "transliteration": -1}
TEMPLATE_SYMBOL = {"ndash": "\u2013", "mdash": "\u2014", "snd": " \u2013 ", "spaced ndash": " \u2013 "}
CONVERT_RANGE = {"-", "\u2013", "to", "and", "or", "by", "x", "+/-", "to(-)"}


def split_args(s):
    """Splits a template's inner text at the '|' that are not inside [[...]] or {{...}}."""
    args, depth, start, i = [], 0, 0, 0
    while i < len(s):
        two = s[i:i + 2]
        if two in ("[[", "{{"):
            depth += 1
            i += 2
        elif two in ("]]", "}}") and depth:
            depth -= 1
            i += 2
        else:
            if s[i] == "|" and depth == 0:
                args.append(s[start:i])
                start = i + 1
            i += 1
    args.append(s[start:])
    return args


def replace_nested(text, token_re, replace):
    """Replaces every outermost balanced block opened by '{{', '{|' or '[[' (those token_re finds)
    with replace(opener, inner text); nested blocks belong to the outermost one. A closer that
    does not match the innermost open block is text (a '|}' inside a template is its argument
    separator followed by '}', so the scan goes on one character further). An opener never
    closed is text too, as MediaWiki shows it: it is dropped and the scan resumes after it."""
    out, stack = [], []
    pos = last = 0
    while True:
        m = token_re.search(text, pos)
        if m is None:
            if not stack:
                break
            opener, start, inner = stack[0]
            out.append(text[last:start])
            stack.clear()
            pos = last = inner
            continue
        tok = m.group().strip()
        if tok in CLOSER_OF:
            if stack and stack[-1][0] == CLOSER_OF[tok]:
                opener, start, inner = stack.pop()
                if not stack:
                    out.append(text[last:start])
                    out.append(replace(opener, text[inner:m.start()]))
                    last = m.end()
                pos = m.end()
            else:
                pos = m.start() + 1
        else:
            stack.append((tok, m.start(), m.end()))
            pos = m.end()
    out.append(text[last:])
    return "".join(out)


class Cleaner:
    """Wiki markup -> paragraphs of plain text. Holds the namespace names of the dump (files and
    categories are named in the site's language)."""

    def __init__(self, siteinfo):
        self.dropped_prefixes = {"file", "image", "category", "media"}
        for key in (-2, 6, 14):  # Media, File, Category
            self.dropped_prefixes |= siteinfo.get(key, set())

    def template(self, opener, inner):
        if opener == "{|":
            return ""  # a table: data, not prose
        args = split_args(inner)
        name = args[0].strip().replace("_", " ").lower()
        positional = [a for a in args[1:] if "=" not in a]
        if name in TEMPLATE_SYMBOL:
            return TEMPLATE_SYMBOL[name]
        pick = TEMPLATE_TEXT.get(name, 1 if name.startswith("lang-") else None)
        if pick is not None and len(positional) >= abs(pick) and positional:
            return self.blocks(positional[pick - 1 if pick > 0 else pick])
        if name in ("convert", "cvt") and len(positional) >= 2:
            words = [positional[0]]
            if len(positional) >= 4 and positional[1].strip() in CONVERT_RANGE:
                words += positional[1:3]
                positional = positional[2:]
            words.append(positional[1])
            return " ".join(w.strip() for w in words)
        return ""

    def blocks(self, text):
        return replace_nested(text, BLOCK_TOKEN, self.template)

    def link(self, _opener, inner):
        target, bar, label = inner.partition("|")
        target = target.strip()
        leading_colon = target.startswith(":")
        target = target.lstrip(":").strip()
        prefix, colon, rest = target.partition(":")
        prefix = prefix.strip().lower()
        if colon and not leading_colon:
            if prefix in self.dropped_prefixes:
                return ""
            if not bar and INTERLANGUAGE.match(prefix):
                return ""
        if not bar:
            return target
        if label.strip():
            return self.links(label)
        # the pipe trick: [[Paris, Texas|]] -> Paris, [[Help:Contents|]] -> Contents
        shown = rest if colon else target
        shown = re.sub(r"\s*\([^()]*\)\s*$", "", shown)
        return shown.split(",")[0].strip()

    def links(self, text):
        return replace_nested(text, LINK_TOKEN, self.link)

    def paragraphs(self, wikitext):
        """The article's paragraphs as plain text; a list item is a paragraph of its own, a heading
        ends a paragraph and is dropped."""
        text = COMMENT.sub("", wikitext)
        text = DROPPED_ELEMENT.sub("", text)
        text = self.links(self.blocks(text))
        text = MAGIC_WORD.sub("", text)
        paras, cur, skip_level = [], [], 0
        for line in text.split("\n"):
            s = line.strip()
            h = HEADING.match(s) if s.startswith("=") else None
            if h:
                level = len(h.group(1))
                if skip_level and level <= skip_level:
                    skip_level = 0
                if not skip_level and h.group(2).strip().lower() in SKIPPED_SECTIONS:
                    skip_level = level
            if skip_level or h or not s or s.startswith("----"):
                paras.append(" ".join(cur))
                cur = []
                continue
            if s[0] in "*#:;":
                paras.append(" ".join(cur))
                cur = []
                paras.append(s.lstrip("*#:; \t"))
                continue
            cur.append(s)
        paras.append(" ".join(cur))
        out = []
        for p in paras:
            p = inline(p) if p else p
            if p:
                out.append(p)
        return out


def inline(p):
    p = EXTERNAL_LINK.sub(lambda m: m.group(1) or "", p)
    p = BOLD_ITALIC.sub("", p)
    p = BLOCK_HTML_TAG.sub(" ", p)
    p = INLINE_HTML_TAG.sub("", p)
    p = html.unescape(p)
    p = INVISIBLE.sub("", p)
    p = SPACES.sub(" ", p)
    p = EMPTY_PARENS.sub("", p)
    p = OPEN_PAREN_PUNCT.sub("(", p)
    p = CLOSE_PAREN_PUNCT.sub(")", p)
    p = SPACE_AFTER_OPEN.sub(r"\1", p)
    p = SPACE_BEFORE_PUNCT.sub(r"\1", p)
    return SPACES.sub(" ", p).strip()


# ---------------------------------------------------------------------------------------------
# Sentences

# a candidate end: terminators, closing quotes or brackets, then white space
SENTENCE_END = re.compile(r"(\.\.\.|\u2026|[.!?]+)([\"'\u201d\u2019\u00bb)\]]*)\s+")
OPENERS = "\"'\u201c\u2018\u00ab(["
# abbreviations that never end a sentence before a capital (lower case, without the final dot)
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "ft", "lt", "col", "gen",
                 "sgt", "capt", "cmdr", "adm", "gov", "sen", "rep", "rev", "hon", "pres", "messrs",
                 "vs", "cf", "al", "approx", "ca", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
                 "sep", "sept", "oct", "nov", "dec"}
# abbreviations that do not end a sentence before a number ("No. 5", "pp. 12", "Vol. 3")
NUMBER_ABBREVIATIONS = {"no", "nos", "nr", "p", "pp", "vol", "vols", "fig", "figs", "ch", "art",
                        "sec", "op", "ed"}
DOTTED = re.compile(r"^(?:[^\W\d_]\.)+[^\W\d_]$")  # letters only: "3.5." may end one


def ends_sentence(p, m):
    """Whether the candidate end m in paragraph p ends a sentence (the rule is in docs/data.md)."""
    j = m.end()
    while j < len(p) and p[j] in OPENERS:
        j += 1
    if j >= len(p):
        return False
    nxt = p[j]
    if not (nxt.isupper() or nxt.isdigit()):
        return False
    if m.group(1) != ".":
        return True
    word = p[p.rfind(" ", 0, m.start()) + 1:m.start()].lstrip(OPENERS).lower()
    if len(word) == 1 and word.isalpha():
        return False  # an initial: "J. R. R. Tolkien"
    if DOTTED.match(word):
        return False  # "U.S.", "e.g.", "i.e."
    if word in ABBREVIATIONS:
        return False
    return not (word in NUMBER_ABBREVIATIONS and nxt.isdigit())


def sentences(p):
    out, start = [], 0
    for m in SENTENCE_END.finditer(p):
        if ends_sentence(p, m):
            out.append(p[start:m.end(2)])
            start = m.end()
    out.append(p[start:])
    return [s.strip() for s in out if any(c.isalnum() for c in s)]


def article_sentences(cleaner, wikitext):
    return [s for p in cleaner.paragraphs(wikitext) for s in sentences(p)]


# ---------------------------------------------------------------------------------------------
# The run

class Stats:
    FIELDS = ("pages", "kept", "redirects", "other_ns", "too_short", "no_text", "sentences",
              "bytes")

    def __init__(self):
        for f in self.FIELDS:
            setattr(self, f, 0)
        self.no_text_titles = []


class Progress:
    def __init__(self, counter, size):
        self.counter, self.size = counter, size
        self.t0 = self.t_last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def line(self, stats, force=False):
        now = time.monotonic()
        if not force and now - self.t_last < (0.5 if self.tty else 10.0):
            return
        self.t_last = now
        el = max(now - self.t0, 1e-9)
        mb = self.counter.count / 1e6
        s = f"{PROG}: {stats.pages} pages ({stats.pages / el:.0f}/s), {stats.kept} kept  {mb:.1f}"
        if self.size:
            frac = self.counter.count / self.size
            s += f"/{self.size / 1e6:.1f} MB ({mb / el:.1f} MB/s) {100 * frac:3.0f}%"
            if 0 < frac < 1:
                s += f"  ETA {fmt_duration(el * (1 - frac) / frac)}"
        else:
            s += f" MB ({mb / el:.1f} MB/s)"
        print(("\r" if self.tty else "") + s + ("\033[K" if self.tty else ""), end="" if self.tty
              else "\n", file=sys.stderr, flush=True)


def fmt_duration(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def read_errors_named(pages, name, compression, counter, size, stats):
    """Turns a failure of the decompressor into a message naming the file and how far it got.
    Only errors raised while reading pass through here, never those of writing the output."""
    def where():
        total = f" of {size}" if size else ""
        return f"after {counter.count}{total} bytes of input and {stats.pages} pages"
    try:
        yield from pages
    except EOFError:
        raise DumpError(f"{name}: the {compression} data ends early, {where()}: the file is "
                        "truncated (an interrupted download?)") from None
    except (OSError, zlib.error) as e:
        raise DumpError(f"{name}: corrupt {compression} data, {where()}: {e}") from None


def article_texts(pages, stats, max_pages, progress):
    """Counts every page and yields the wikitext of the kept ones (namespace 0, no redirect)."""
    for page in pages:
        stats.pages += 1
        progress.line(stats)
        if page.ns != 0:
            stats.other_ns += 1
        elif page.redirect:
            stats.redirects += 1
        elif not page.text or not page.text.strip():
            stats.no_text += 1
            if len(stats.no_text_titles) < 3:
                stats.no_text_titles.append(page.title)
        else:
            yield page.text
        if max_pages and stats.pages >= max_pages:
            return


_worker_cleaner = None


def _init_worker(siteinfo):
    global _worker_cleaner
    _worker_cleaner = Cleaner(siteinfo)


def _clean_batch(texts):
    return [article_sentences(_worker_cleaner, t) for t in texts]


def documents(texts, siteinfo, jobs):
    """Sentences of each article, in dump order. With jobs > 1, batches of articles go to a pool
    with at most 2 * jobs batches in flight, so memory stays bounded and the order is kept."""
    if jobs <= 1:
        cleaner = None
        for t in texts:
            cleaner = cleaner or Cleaner(siteinfo)  # siteinfo is complete once the first page came
            yield article_sentences(cleaner, t)
        return
    import multiprocessing
    pool, pending, batch = None, collections.deque(), []
    try:
        for t in texts:
            batch.append(t)
            if len(batch) < 64:
                continue
            pool = pool or multiprocessing.Pool(jobs, _init_worker, (siteinfo,))
            pending.append(pool.apply_async(_clean_batch, (batch,)))
            batch = []
            while len(pending) >= 2 * jobs:
                yield from pending.popleft().get()
        if batch:
            pool = pool or multiprocessing.Pool(jobs, _init_worker, (siteinfo,))
            pending.append(pool.apply_async(_clean_batch, (batch,)))
        while pending:
            yield from pending.popleft().get()
    finally:
        if pool:
            pool.terminate()


def extract(args, out_f, stats):
    stream, counter, compression, size = open_dump(args.dump)
    name = "standard input" if args.dump == "-" else args.dump
    progress = Progress(counter, size)
    siteinfo = {}
    pages = read_errors_named(iter_pages(stream, name, siteinfo), name, compression, counter,
                              size, stats)
    texts = article_texts(pages, stats, args.max_pages, progress)
    for sents in documents(texts, siteinfo, args.jobs):
        if len(sents) < args.min_sentences:
            stats.too_short += 1
            continue
        # a blank line between documents, none after the last
        data = (("\n" if stats.kept else "") + "\n".join(sents) + "\n").encode("utf-8")
        out_f.write(data)
        stats.kept += 1
        stats.sentences += len(sents)
        stats.bytes += len(data)
    progress.line(stats, force=True)
    if progress.tty:
        print(file=sys.stderr)
    return time.monotonic() - progress.t0, counter.count


def summary(args, stats, seconds, nbytes):
    w = f"{PROG}: {args.dump} -> {args.out}\n"
    rows = [("pages read", stats.pages), ("articles kept", stats.kept),
            ("redirects", stats.redirects), ("other namespaces", stats.other_ns),
            ("too short", f"{stats.too_short} (fewer than {args.min_sentences} sentences)"),
            ("without text", stats.no_text), ("sentences", stats.sentences),
            ("bytes written", stats.bytes)]
    for k, v in rows:
        w += f"  {k:<17}{v}\n"
    w += (f"  {'time':<17}{seconds:.1f} s ({stats.pages / max(seconds, 1e-9):.0f} pages/s, "
          f"{nbytes / 1e6 / max(seconds, 1e-9):.2f} MB/s of input)")
    if args.max_pages and stats.pages >= args.max_pages:
        w += f"\n  stopped at --max-pages {args.max_pages}"
    return w


def run(args):
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{args.out}.tmp.{os.getpid()}"
    stats = Stats()
    try:
        with open(tmp, "wb", buffering=1 << 20) as f:
            seconds, nbytes = extract(args, f, stats)
            f.flush()
            os.fsync(f.fileno())
        if stats.no_text:
            print(f"{PROG}: warning: {stats.no_text} article page(s) without text, skipped "
                  f"(first: {', '.join(repr(t) for t in stats.no_text_titles)})", file=sys.stderr)
        if stats.kept == 0:
            raise DumpError(f"{args.dump}: nothing kept: {stats.pages} pages read, "
                            f"{stats.redirects} redirects, {stats.other_ns} in other namespaces, "
                            f"{stats.too_short} too short, {stats.no_text} without text")
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(summary(args, stats, seconds, nbytes))


def main(argv):
    ap = argparse.ArgumentParser(prog="wiki_to_text.py", usage="%(prog)s [options] DUMP OUT.txt",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("dump", metavar="DUMP", help='the dump (.xml.bz2, .xml.gz, .xml) or "-"')
    ap.add_argument("out", metavar="OUT.txt")
    ap.add_argument("--min-sentences", type=int, default=2, metavar="N")
    ap.add_argument("--max-pages", type=int, default=0, metavar="N")
    ap.add_argument("--jobs", type=int, default=1, metavar="N")
    args = ap.parse_args(argv[1:])
    if args.min_sentences < 1 or args.max_pages < 0 or args.jobs < 1:
        ap.error("--min-sentences and --jobs must be >= 1, --max-pages >= 0")
    try:
        run(args)
    except DumpError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted, {args.out} not written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
