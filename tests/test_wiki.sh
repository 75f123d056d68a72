#!/usr/bin/env bash
# scripts/wiki_to_text.py: a small dump built here with the real dump's structure (the export
# namespace, <siteinfo> with <namespaces>, articles, redirects of both kinds, other namespaces, a
# page without text) and every kind of markup the extractor strips gives the output written below by
# hand, byte for byte, whether the dump is plain, .bz2, .gz, on standard input, of another schema
# version or without <ns> elements, and on 1 or 2 processes. Bad inputs (truncated or corrupt
# compression, invalid XML, not a dump, an empty dump) fail with a message saying what and where,
# and leave no output behind. Then the text goes through `prepare` and one training step.
source "$(dirname "$0")/lib.sh"
X=$PWD/scripts/wiki_to_text.py
T=$TMP
PAGE_ID=0

# page TITLE NS [REDIRECT_TARGET]: a <page> as the dumps write it, its wikitext (stdin) XML-escaped
page() {
    PAGE_ID=$((PAGE_ID + 1))
    printf '  <page>\n    <title>%s</title>\n    <ns>%s</ns>\n    <id>%d</id>\n' "$1" "$2" "$PAGE_ID"
    [ -n "${3:-}" ] && printf '    <redirect title="%s" />\n' "$3"
    printf '    <revision>\n      <id>%d</id>\n      <timestamp>2024-05-01T00:00:00Z</timestamp>\n' \
        $((PAGE_ID + 1000))
    printf '      <contributor>\n        <username>Example</username>\n        <id>7</id>\n'
    printf '      </contributor>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n'
    printf '      <text bytes="0" xml:space="preserve">'
    sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' | head -c -1
    printf '</text>\n      <sha1>phoiac9h4m842xq45sp7s6u21eteeq1</sha1>\n    </revision>\n  </page>\n'
}

header() {
    cat <<'EOF'
<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.43.0-wmf.2</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Media</namespace>
      <namespace key="-1" case="first-letter">Special</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
EOF
}

D=$T/dump.xml
{
header
page "Zorblat" 0 <<'EOF'
{{Short description|Island in the Example Sea}}
{{Infobox island
| name = Zorblat
| image = [[File:Zorblat.jpg|250px]]
| population = {{convert|1200|people}}
| note = {{nowrap|{{lang|fr|Île}} nested}}
}}
'''Zorblat''' (French: {{lang|fr|Île de Zorblat}}; {{IPA-fr|zɔʁ.bla}}) is an island in the [[Example Sea]].<ref name="atlas">{{cite book |title=Atlas |page=5}}</ref> It covers {{convert|12|km2}} and is home to the [[Zorblat lizard|lizard]]s of ''[[Dr. Mira Holm]]''.<ref>Holm, M. (1999).</ref> The island was mapped by J. R. R. Tolkien's cousin, e.g. in 1901. The main port is St. Anne.

The population was 3.14 thousand in 2001 (approx. 3,140 people).<ref group="note" /> Its name means "white rock." The [[United States|U.S.]] navy visited in 1944... Nobody knows why! Was it by chance? Some say so.<!-- a hidden
comment --> Others (e.g. Dr. Holm) disagree.

== History ==
Early settlers arrived from [[Ölgii|the east]]&nbsp;&ndash; a journey of {{convert|300|to|400|km}}. See [https://example.org the museum].
The museum's site[https://example.org/x] is old.
[[File:Zorblat map.png|thumb|A map with [[Example Sea|the sea]] and {{tl|x}}.]]
The temperature follows <math>T = a \cdot {b \over c}</math> closely.

=== Wildlife ===
{| class="wikitable"
|-
! Species !! Count
|-
| Lizard || {{formatnum:12000}}
|-
| {{nowrap|Gull}} || 400
|}
Lizards live on the cliffs.
* The '''Zorblat lizard''', an endemic species.
* The [[Herring gull|gull]] &amp; the [[tern]].
# Visitors from Σίσυφος Bay and 東京 arrive by boat.

== See also ==
* [[Example Sea]]
* [[List of islands]]

== References ==
{{Reflist}}

[[Category:Islands]]
[[fr:Zorblat]]
[[de:Zorblat]]
EOF
page "Zorblat Island" 0 "Zorblat" <<'EOF'
#REDIRECT [[Zorblat]] {{R from alternative name}}
EOF
page "Zorblat isle" 0 <<'EOF'
#redirect [[Zorblat]]
EOF
page "Talk:Zorblat" 1 <<'EOF'
This talk page has sentences. They must not appear in the output.
EOF
page "Template:Infobox island" 10 <<'EOF'
{| class="infobox"
| {{{name|}}}
|}
EOF
page "Category:Islands" 14 <<'EOF'
Islands of the world. Every one of them.
EOF
page "Café Müller" 0 <<'EOF'
{{Infobox person
| name = Anna
|}}
'''Café Müller''' is a café in [[Paris, Texas|]]. It opened in No. 5 Rue Émile in 1921 &mdash; or so it is said.
{{Quote box|quote=
{| class="x"
| inner {{nowrap|cell}}
|}
|width=30%}}
The owner wrote ''The Art of Coffee'' (pp. 12&ndash;14) with Mt. Kea in mind. Prices rose by 2.5% in 1950. Some said "too much!" The café is listed in the [[:Category:Islands|islands category]] by mistake.
<div class="note">Its motto is &quot;Kaffee &amp; Kuchen&quot; &lt;sic&gt;.</div>Coffee costs 3&nbsp;€ per cup.<br />Tea costs less... which surprises nobody.
EOF
page "Tiny Rock" 0 <<'EOF'
'''Tiny Rock''' is a rock in the [[Example Sea]].{{geo-stub}}
EOF
printf '  <page>\n    <title>Lost Page</title>\n    <ns>0</ns>\n    <id>99</id>\n    <revision>\n      <id>1099</id>\n      <text bytes="0" deleted="deleted" />\n    </revision>\n  </page>\n'
page "Lighthouse of Zorblat" 0 <<'EOF'
The '''Lighthouse of Zorblat''' is {{convert|40|m}} tall.<ref>{{cite web|url=https://example.org|title=Light}}</ref> Its lamp covers 12 m<sup>2</sup> of glass.

It was built by [[Kenji Sato]] (佐藤 健二) in 1890? No: in 1891.
EOF
echo '</mediawiki>'
} >"$D"

# the expected text, written by hand from the rules in docs/data.md
cat >"$T/expected.txt" <<'EOF'
Zorblat (French: Île de Zorblat) is an island in the Example Sea.
It covers 12 km2 and is home to the lizards of Dr. Mira Holm.
The island was mapped by J. R. R. Tolkien's cousin, e.g. in 1901.
The main port is St. Anne.
The population was 3.14 thousand in 2001 (approx. 3,140 people).
Its name means "white rock."
The U.S. navy visited in 1944...
Nobody knows why!
Was it by chance?
Some say so.
Others (e.g. Dr. Holm) disagree.
Early settlers arrived from the east – a journey of 300 to 400 km.
See the museum.
The museum's site is old.
The temperature follows closely.
Lizards live on the cliffs.
The Zorblat lizard, an endemic species.
The gull & the tern.
Visitors from Σίσυφος Bay and 東京 arrive by boat.

Café Müller is a café in Paris.
It opened in No. 5 Rue Émile in 1921 — or so it is said.
The owner wrote The Art of Coffee (pp. 12–14) with Mt. Kea in mind.
Prices rose by 2.5% in 1950.
Some said "too much!"
The café is listed in the islands category by mistake.
Its motto is "Kaffee & Kuchen" <sic>.
Coffee costs 3 € per cup.
Tea costs less... which surprises nobody.

The Lighthouse of Zorblat is 40 m tall.
Its lamp covers 12 m2 of glass.
It was built by Kenji Sato (佐藤 健二) in 1890?
No: in 1891.
EOF

# extract NAME OUT ARGS...: runs the extractor, its summary in $T/NAME.sum, its errors in $T/NAME.err
extract() {
    local name=$1
    shift
    run /usr/bin/python3 "$X" "$@"
    cp "$TMP/out" "$T/$name.sum"
    cp "$TMP/err" "$T/$name.err"
}
diff_of() { diff "$T/expected.txt" "$1" | head -20; }

# ---------------------------------------------------------------------------------------------
extract plain "$D" "$T/plain.txt"
require "plain XML: exit 0 ($(tail -n 2 "$T/plain.err"))" [ "$rc" -eq 0 ]
check "plain XML: the expected text, byte for byte $(diff_of "$T/plain.txt")" cmp -s "$T/expected.txt" "$T/plain.txt"
row() { grep -qE "^  $1 +$2\$" "$T/plain.sum"; }
check "summary: 10 pages read" row "pages read" 10
check "summary: 3 articles kept" row "articles kept" 3
check "summary: 2 redirects (<redirect> and #REDIRECT)" row redirects 2
check "summary: 3 pages of other namespaces" row "other namespaces" 3
check "summary: 1 too short" row "too short" "1 \(fewer than 2 sentences\)"
check "summary: 1 without text" row "without text" 1
check "summary: 32 sentences" row sentences 32
check "summary: the bytes written are the file's" row "bytes written" "$(stat -c %s "$T/plain.txt")"
check "a warning names the page without text" grep -q "warning: 1 article page(s) without text, skipped (first: 'Lost Page')" "$T/plain.err"
check "no temporary file left" [ -z "$(find "$T" -name '*.tmp.*')" ]

bzip2 -c "$D" >"$T/dump.xml.bz2"
gzip -c "$D" >"$T/dump.xml.gz"
extract bz2 "$T/dump.xml.bz2" "$T/bz2.txt"
check "bzip2: exit 0 ($(tail -n 1 "$T/bz2.err"))" [ "$rc" -eq 0 ]
check "bzip2: the same text as the plain XML" cmp -s "$T/plain.txt" "$T/bz2.txt"
extract gz "$T/dump.xml.gz" "$T/gz.txt"
check "gzip: exit 0 ($(tail -n 1 "$T/gz.err"))" [ "$rc" -eq 0 ]
check "gzip: the same text as the plain XML" cmp -s "$T/plain.txt" "$T/gz.txt"
run /usr/bin/python3 "$X" - "$T/stdin.txt" <"$T/dump.xml.bz2"
check "standard input (\"-\"): the same text" cmp -s "$T/plain.txt" "$T/stdin.txt"
sed 's/export-0\.10/export-0.11/g; s/version="0.10"/version="0.11"/' "$D" >"$T/v11.xml"
extract v11 "$T/v11.xml" "$T/v11.txt"
check "export schema 0.11: the same text" cmp -s "$T/plain.txt" "$T/v11.txt"
grep -v '<ns>' "$D" >"$T/nons.xml"
extract nons "$T/nons.xml" "$T/nons.txt"
check "no <ns> (schemas before 0.5): namespaces from the title prefixes, the same text" \
    cmp -s "$T/plain.txt" "$T/nons.txt"
extract jobs "$T/dump.xml.bz2" "$T/jobs.txt" --jobs 2
check "--jobs 2: the same text" cmp -s "$T/plain.txt" "$T/jobs.txt"
extract min1 "$D" "$T/min1.txt" --min-sentences 1
check "--min-sentences 1 keeps the one-sentence article" grep -qx "Tiny Rock is a rock in the Example Sea." "$T/min1.txt"
extract max "$D" "$T/max.txt" --max-pages 1
check "--max-pages 1: one page read, one kept" grep -qE "^  pages read +1$" "$T/max.sum"
check "--max-pages 1: the first article only" cmp -s "$T/max.txt" <(sed '/^$/q' "$T/expected.txt" | sed '$d')

# ---------------------------------------------------------------------------------------------
# bad inputs: exit 1, a message naming the file and saying what and where, no output left behind
# expect_fail NAME WANT DUMP: the extractor fails on DUMP with WANT (a grep -E pattern) in its error
expect_fail() {
    local name=$1 want=$2 dump=$3
    rm -f "$T/bad.txt"
    extract bad "$dump" "$T/bad.txt"
    check "$name: exit 1 (got $rc)" [ "$rc" -eq 1 ]
    check "$name: the message matches '$want' ($(head -c 300 "$T/bad.err"))" grep -qE -- "$want" "$T/bad.err"
    check "$name: no output and no temporary file" [ ! -e "$T/bad.txt" -a -z "$(find "$T" -name '*.tmp.*')" ]
}
size=$(stat -c %s "$T/dump.xml.bz2")
head -c $((size / 2)) "$T/dump.xml.bz2" >"$T/cut.xml.bz2"
expect_fail "truncated .bz2" "cut.xml.bz2: the bzip2 data ends early, after $((size / 2)) of $((size / 2)) bytes of input and [0-9]+ pages: the file is truncated" "$T/cut.xml.bz2"
size=$(stat -c %s "$T/dump.xml.gz")
head -c $((size * 3 / 4)) "$T/dump.xml.gz" >"$T/cut.xml.gz"
expect_fail "truncated .gz" "cut.xml.gz: the gzip data ends early, after $((size * 3 / 4)) of $((size * 3 / 4)) bytes .* the file is truncated" "$T/cut.xml.gz"
cp "$T/dump.xml.gz" "$T/flip.xml.gz"
printf '\xff\xff\xff\xff' | dd of="$T/flip.xml.gz" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_fail "corrupt .gz" "flip.xml.gz: corrupt gzip data, after [0-9]+ of $size bytes" "$T/flip.xml.gz"
# a mismatched end tag: expat points at the name in "</titel>", column 26 counted from 1
line=$(grep -n '<title>Talk:Zorblat</title>' "$D" | cut -d: -f1)
sed "${line}s|</title>|</titel>|" "$D" >"$T/badtag.xml"
expect_fail "invalid XML" "badtag.xml: invalid XML at line $line, column 26 of the XML: mismatched tag" "$T/badtag.xml"
bzip2 -c "$T/badtag.xml" >"$T/badtag.xml.bz2"
expect_fail "invalid XML inside .bz2" "badtag.xml.bz2: invalid XML at line $line, column 26" "$T/badtag.xml.bz2"
head -c 2000 "$D" >"$T/cut.xml"
expect_fail "truncated XML" "cut.xml: invalid XML at line [0-9]+, column [0-9]+ of the XML: (unclosed token|no element found)" "$T/cut.xml"
echo '<html><body>not a dump</body></html>' >"$T/page.html"
expect_fail "not a dump" "page.html: not a MediaWiki dump \(the root element is <html>, expected <mediawiki>\)" "$T/page.html"
{ header; echo '</mediawiki>'; } | bzip2 -c >"$T/empty.xml.bz2"
expect_fail "an empty dump" "empty.xml.bz2: nothing kept: 0 pages read" "$T/empty.xml.bz2"
{ header; page "Zorblat Island" 0 "Zorblat" <<<"#REDIRECT [[Zorblat]]"; echo '</mediawiki>'; } >"$T/redir.xml"
expect_fail "a dump of redirects only" "redir.xml: nothing kept: 1 pages read, 1 redirects" "$T/redir.xml"
expect_fail "a missing file" "$T/missing.xml.bz2: cannot open: No such file or directory" "$T/missing.xml.bz2"

# ---------------------------------------------------------------------------------------------
# end to end: the text -> prepare (it builds the vocab) -> one training step on a tiny model
mkdir -p "$T/e2e"
cat >"$T/e2e/cfg.yaml" <<EOF
model: {preset: bert-tiny, layers: 1, hidden: 16, heads: 2, intermediate: 32, max_position: 32}
data: {vocab: vocab.txt, vocab_size: 200, input: [$T/plain.txt], train: shards/train,
       eval: shards/eval, eval_fraction: 0.34}
optimizer: {name: lamb}
schedule: {lr: 1.0e-3, warmup_ratio: 0.0}
phases:
  - {seq_len: 32, batch_size: 2, steps: 1, max_predictions_per_seq: 4}
training: {micro_batch: 2, seed: 3, run_dir: run, log_every: 1, eval_every: 0}
EOF
run "$BP_BIN" prepare "$T/e2e/cfg.yaml"
require "prepare on the extracted text: exit 0 ($(tail -n 3 "$TMP/err"))" [ "$rc" -eq 0 ]
check "prepare built the vocab and both shards" [ -s "$T/e2e/vocab.txt" -a -s "$T/e2e/shards/train" -a -s "$T/e2e/shards/eval" ]
check "prepare read the 3 documents" grep -q "documents  3 " "$TMP/out"
check "prepare read the 32 sentences" grep -q "sentences  32 " "$TMP/out"
run "$BP_BIN" "$T/e2e/cfg.yaml"
check "one training step: exit 0 ($(tail -n 3 "$TMP/err"))" [ "$rc" -eq 0 ]
check "one step record with a finite loss" grep -qE '"type":"step","step":1,.*"loss":[0-9]' "$T/e2e/run/metrics.jsonl"
finish
