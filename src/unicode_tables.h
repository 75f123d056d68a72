/* unicode_tables.h: the Unicode data BERT's BasicTokenizer needs, generated from Python's
 * unicodedata by scripts/gen_unicode_tables.py into unicode_tables.c (do not edit that file).
 *
 * Python's unicodedata is the reference because Google's tokenization.py and Hugging Face's
 * BertTokenizer use it: matching it makes our tokens identical to theirs for the same text. */
#ifndef BP_UNICODE_TABLES_H
#define BP_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

/* What the BasicTokenizer does with a code point (derived from its general category). */
enum {
    UC_OTHER = 0,
    UC_DROP = 1,  /* U+0000, U+FFFD, Cc/Cf other than \t \n \r: removed by _clean_text */
    UC_SPACE = 2, /* space \t \n \r, Zs, and U+2028/U+2029 (str.split() splits on them) */
    UC_PUNCT = 3, /* ASCII 33-47 58-64 91-96 123-126, and P* */
    UC_MN = 4,    /* nonspacing mark: removed after NFD when lower-casing */
};
/* flags: the two properties Python's str.lower() consults to pick the final sigma */
#define UC_CASED 1u
#define UC_CASE_IGNORABLE 2u

/* The class of each ASCII code point (the fast path). */
extern const uint8_t uc_ascii_cls[128];

/* Maximal runs of code points that share class, combining class and flags, sorted by start;
 * a run ends where the next begins (the last runs to U+10FFFF). */
typedef struct {
    uint32_t start;
    uint8_t cls, ccc, flags;
} UcRange;
extern const UcRange uc_ranges[];
extern const size_t uc_n_ranges;

/* Simple lower-case mappings (cp -> one code point), sorted by cp. U+0130 lowers to two code
 * points (i + U+0307) and U+03A3 depends on context: both are handled in tokenizer.c. */
typedef struct {
    uint32_t cp, lower;
} UcLower;
extern const UcLower uc_lower[];
extern const size_t uc_n_lower;

/* Full canonical decompositions (NFD of one code point, already canonically ordered), sorted by
 * cp, except Hangul syllables, which decompose algorithmically. Entry i spans
 * uc_decomp_pool[off, off + len). */
typedef struct {
    uint32_t cp;
    uint16_t off;
    uint8_t len;
} UcDecomp;
extern const UcDecomp uc_decomp[];
extern const size_t uc_n_decomp;
extern const uint32_t uc_decomp_pool[];

/* The Unicode version of the data (Python's unicodedata.unidata_version). */
extern const char uc_unicode_version[];

#endif
