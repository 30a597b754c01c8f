/*
 * parse.h — the small texts of a request besides its body: query parameters (numbers) and the
 * `at` of a past read (a seq or an RFC 3339 UTC time). Pure functions on NUL-terminated
 * strings, fuzzed by fuzz_parse.
 */
#ifndef COFFER_SERVER_PARSE_H
#define COFFER_SERVER_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* A whole decimal number in [min, max] (no sign, no space); false on anything else. */
bool parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *out);

/* A size in bytes: digits with an optional K, M, G or T (powers of 1024; "48M", "2g"), in
 * [min, max]. False on anything else (no sign, space, fraction or "B"), leaving *out alone. */
bool parse_size(const char *text, uint64_t min, uint64_t max, uint64_t *out);

/* RFC 3339 UTC ("2026-11-24T23:38:00Z", optional fraction up to ns) to ns since the epoch. */
bool parse_time(const char *text, uint64_t *out);

/* A past read's point: digits are a seq (COFFER_AT_SEQ), else an RFC 3339 UTC time
 * (COFFER_AT_TIMESTAMP). False when it is neither. */
bool parse_at(const char *text, int *at, uint64_t *at_value);

/* A comma-separated list of change type names ("hold.posted,hold.expired") to their
 * COFFER_CHANGE_BIT()s. False on an empty list, an empty item or an unknown name. */
bool parse_change_types(const char *text, uint32_t *types);

#endif
