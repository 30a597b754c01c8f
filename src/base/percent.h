/*
 * percent.h — text appended to a URL under construction, percent-encoded where it must be
 * (RFC 3986): the CLI's request URLs and the server's redirect Locations share it.
 */
#ifndef COFFER_BASE_PERCENT_H
#define COFFER_BASE_PERCENT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Appends `text` to out[*length] (size bytes, kept NUL-terminated). Unreserved bytes
 * ([A-Za-z0-9-._~]) and the printable ones in `keep` stay as they are, every other byte is
 * percent-encoded; `keep` NULL: every byte stays. What does not fit sets *overflow, which is
 * sticky: nothing more is appended. */
static inline void percent_append(char *out, size_t size, size_t *length, bool *overflow,
                                  const char *text, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *text && !*overflow; text++) {
        unsigned char c = (unsigned char)*text;
        bool plain = !keep || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || strchr("-._~", c) ||
                     (c > ' ' && c < 127 && strchr(keep, c));
        if (*length + (plain ? 1 : 3) >= size) {
            *overflow = true;
            break;
        }
        if (plain) {
            out[(*length)++] = (char)c;
        } else {
            out[(*length)++] = '%';
            out[(*length)++] = hex[c >> 4];
            out[(*length)++] = hex[c & 15];
        }
    }
    out[*length] = 0;
}

#endif
