/*
 * text.c — see text.h.
 */
#include "server/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for `more` bytes and the NUL after them. */
static bool text_reserve(text_buffer *t, size_t more)
{
    if (t->failed)
        return false;
    if (t->length + more + 1 <= t->capacity)
        return true;
    size_t capacity = t->capacity ? t->capacity : 4096;
    while (capacity < t->length + more + 1)
        capacity *= 2;
    char *grown = realloc(t->bytes, capacity);
    if (!grown) {
        t->failed = true;
        return false;
    }
    t->bytes = grown;
    t->capacity = capacity;
    return true;
}

void text_append(text_buffer *t, const char *bytes, size_t length)
{
    if (!text_reserve(t, length))
        return;
    memcpy(t->bytes + t->length, bytes, length);
    t->length += length;
    t->bytes[t->length] = 0;
}

void text_append_u64(text_buffer *t, uint64_t value)
{
    char digits[20];
    size_t used = 0;
    do {
        digits[sizeof digits - ++used] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    text_append(t, digits + sizeof digits - used, used);
}

void text_printf(text_buffer *t, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    int needed = vsnprintf(0, 0, format, arguments);
    va_end(arguments);
    if (needed < 0) {
        t->failed = true;
        return;
    }
    if (!text_reserve(t, (size_t)needed))
        return;
    va_start(arguments, format);
    vsnprintf(t->bytes + t->length, (size_t)needed + 1, format, arguments);
    va_end(arguments);
    t->length += (size_t)needed;
}
