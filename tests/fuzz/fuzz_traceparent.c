/* fuzz_traceparent — arbitrary bytes into trace_parse_traceparent.
 *
 * Invariants on every accepted input:
 *   - the context is valid (lowercase hex, non-zero ids) and formats;
 *   - parse(format(ctx)) == ctx;
 *   - for version 00 the input is exactly its own formatting (format(parse(x))
 *     == x): a strict parser accepts one spelling only;
 * and trace_tracestate_bound never reads or returns outside its input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy: reads past the end are caught by ASan. */
    char *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    if (size)
        memcpy(p, data, size);
    struct str in = str_make(p, size);

    struct trace_ctx c;
    if (trace_parse_traceparent(in, &c) == 0) {
        char out[TRACE_TRACEPARENT_LEN + 1];
        if (!trace_ctx_is_valid(&c) || trace_format_traceparent(&c, out) != 0)
            abort();
        struct trace_ctx c2;
        if (trace_parse_traceparent(str_from_cstr(out), &c2) != 0 || strcmp(c.trace_id, c2.trace_id) ||
            strcmp(c.span_id, c2.span_id) || c.flags != c2.flags)
            abort();
        if (size >= 2 && p[0] == '0' && p[1] == '0' &&
            (size != TRACE_TRACEPARENT_LEN || memcmp(out, p, TRACE_TRACEPARENT_LEN) != 0))
            abort();
        if (size > TRACE_TRACEPARENT_LEN && p[TRACE_TRACEPARENT_LEN] != '-')
            abort();
    }

    struct str ts = trace_tracestate_bound(in);
    if (ts.n > TRACE_TRACESTATE_MAX || (ts.n && (ts.p < p || ts.p + ts.n > p + size)))
        abort();

    free(p);
    return 0;
}
