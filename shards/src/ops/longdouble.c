/* INCRBYFLOAT in C's long double, the type Redis uses for it, so that parsing (strtold,
 * hex floats included), the range, the rounding and the printed text ("%.17Lf" with the
 * trailing zeros removed) are exactly Redis's. Rust has no long double type. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redis's MAX_LONG_DOUBLE_CHARS: the longest text a long double is parsed from or printed as. */
#define TESSERA_LD_MAX_CHARS (5 * 1024)

/* Parses like Redis's string2ld. Returns 1 on success. */
static int parse_ld(const char *s, size_t len, long double *out) {
    char buf[TESSERA_LD_MAX_CHARS + 1];
    char *end;
    if (len == 0 || len >= TESSERA_LD_MAX_CHARS) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    long double v = strtold(buf, &end);
    /* (end - buf) != len catches a NUL inside the text. */
    if (isspace((unsigned char)buf[0]) || *end != '\0' || (size_t)(end - buf) != len ||
        (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO)) ||
        isnan(v))
        return 0;
    *out = v;
    return 1;
}

/* current may be NULL (missing key: 0). Writes the new value's text to out.
 * Returns 0 on success, 1 if current is not a float, 2 if incr is not, 3 for NaN/Inf,
 * 4 if the text does not fit. */
int tessera_incrbyfloat(const char *current, size_t current_len, const char *incr,
                        size_t incr_len, char *out, size_t out_cap, size_t *out_len) {
    long double value = 0, by;
    if (current != NULL && !parse_ld(current, current_len, &value)) return 1;
    if (!parse_ld(incr, incr_len, &by)) return 2;
    value += by;
    if (isnan(value) || isinf(value)) return 3;
    int l = snprintf(out, out_cap, "%.17Lf", value);
    if (l < 0 || (size_t)l + 1 > out_cap) return 4;
    if (strchr(out, '.') != NULL) {
        char *p = out + l - 1;
        while (*p == '0') { p--; l--; }
        if (*p == '.') l--;
    }
    if (l == 2 && out[0] == '-' && out[1] == '0') { out[0] = '0'; l = 1; }
    *out_len = (size_t)l;
    return 0;
}

/* Whether text parses as a float the way Redis's string2ld accepts it. */
int tessera_is_float(const char *s, size_t len) {
    long double v;
    return parse_ld(s, len, &v);
}
