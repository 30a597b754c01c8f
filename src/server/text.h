/*
 * text.h — a growing text buffer for responses built piece by piece (batch answers, /metrics).
 * An allocation failure is sticky: check `failed` once at the end.
 */
#ifndef COFFER_SERVER_TEXT_H
#define COFFER_SERVER_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct text_buffer {
    char *bytes; /* NUL-terminated; owned by the caller once built (free) */
    size_t length, capacity;
    bool failed;
} text_buffer;

void text_append(text_buffer *t, const char *bytes, size_t length);
void text_printf(text_buffer *t, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif
