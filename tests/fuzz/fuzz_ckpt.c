/* Fuzz target: the checkpoint container (ckpt_open) and its sections.
 *
 * Input: one mode byte, then the file. Mode bit 0 set: the table CRC and every section CRC whose
 * entry lies inside the file are recomputed before it is written, so mutations reach the checks of
 * names, offsets, padding and trailing data. */
#include "checkpoint.h"
#include "fuzz.h"

#define FIXED 16
#define ENTRY (CKPT_NAME_LEN + 8 + 8 + 4)

static void fix_crcs(uint8_t *m, size_t len) {
    if (len < FIXED + 4) return;
    uint64_t n = fuzz_get_u32(m + 12);
    if (n > (len - FIXED - 4) / ENTRY) return;
    size_t table_end = FIXED + (size_t)n * ENTRY;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = m + FIXED + i * ENTRY;
        uint64_t off = fuzz_get_u64(e + CKPT_NAME_LEN), bytes = fuzz_get_u64(e + CKPT_NAME_LEN + 8);
        if (off <= len && bytes <= len - off) fuzz_put_u32(e + CKPT_NAME_LEN + 16, bp_crc32(0, m + off, bytes));
    }
    fuzz_put_u32(m + table_end, bp_crc32(0, m, table_end));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *path = fuzz_file_fixing_crcs("ckpt.bin", data, size, fix_crcs);
    BpError err;
    CkptFile *f = ckpt_open(path, &err);
    if (!f) return 0;
    uint64_t sum = 0;
    int n = ckpt_section_count(f);
    for (int i = 0; i < n; i++) {
        const char *name = ckpt_section_name(f, i);
        size_t bytes = 0;
        const uint8_t *p = ckpt_section(f, name, &bytes);
        if (!p && bytes) abort();
        for (size_t k = 0; k < bytes; k++) sum += p[k];
    }
    if (ckpt_section_name(f, n) != NULL || ckpt_section_name(f, -1) != NULL) abort();
    fuzz_sink = sum;
    ckpt_close(f);
    return 0;
}
