/*
 * text.h — a growing text buffer for responses built piece by piece (batch answers, /metrics).
 * An allocation failure is sticky: check `failed` once at the end.
 */
#ifndef COFFER_SERVER_TEXT_H
#define COFFER_SERVER_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct text_buffer {
    char *bytes; /* NUL-terminated; owned by the caller once built (free) */
    size_t length, capacity;
    bool failed;
} text_buffer;

void text_append(text_buffer *t, const char *bytes, size_t length);
/* Appends `value` in decimal. */
void text_append_u64(text_buffer *t, uint64_t value);
/* Appends a string literal, its length known at compile time. */
#define TEXT_PUT(t, literal) text_append((t), literal, sizeof(literal) - 1)
void text_printf(text_buffer *t, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif
