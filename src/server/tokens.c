/*
 * tokens.c — the tokens file and bearer authentication. The file is text, one token a line:
 *   coffer-tokens 1                          (the format line, first)
 *   NAME SCOPE PREFIXES CREATED_AT_S HASH    (PREFIXES: "*" or p1,p2,...; HASH: 64 hex digits)
 * with '#' comments and empty lines allowed. The hash is BLAKE2b-256 of the secret.
 */
#include "server/tokens.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENS_FORMAT_LINE "coffer-tokens 1"
#define TOKENS_FILE_BYTES_MAX ((size_t)TOKENS_MAX * TOKEN_LINE_MAX)

struct tokens {
    atomic_int references;
    size_t count, capacity;
    token *items; /* sorted by hash */
};

static bool fail(char *error, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(char *error, size_t size, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error, size, format, arguments);
    va_end(arguments);
    return false;
}

static bool name_char(char c, bool slash_allowed)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '@' || c == '-' || (slash_allowed && c == '/');
}

static bool word_valid(const char *text, size_t length, size_t max, bool slash_allowed)
{
    if (length == 0 || length > max)
        return false;
    for (size_t i = 0; i < length; i++)
        if (!name_char(text[i], slash_allowed))
            return false;
    return true;
}

bool token_name_valid(const char *name)
{
    return name && word_valid(name, strlen(name), TOKEN_NAME_MAX, false);
}

bool token_prefix_valid(const char *prefix)
{
    return prefix && word_valid(prefix, strlen(prefix), COFFER_ACCOUNT_ID_MAX, true);
}

const char *token_scope_name(int scope)
{
    switch (scope) {
    case TOKEN_SCOPE_READ:
        return "read";
    case TOKEN_SCOPE_WRITE:
        return "write";
    case TOKEN_SCOPE_ADMIN:
        return "admin";
    default:
        return "unknown";
    }
}

int token_scope_parse(const char *name)
{
    for (int scope = TOKEN_SCOPE_READ; scope <= TOKEN_SCOPE_ADMIN; scope++)
        if (name && !strcmp(name, token_scope_name(scope)))
            return scope;
    return 0;
}

/* Splits the next space-separated field of line[*at..length) into (start, length). */
static bool next_field(const char *line, size_t length, size_t *at, const char **field,
                       size_t *field_length)
{
    if (*at >= length)
        return false;
    size_t start = *at, end = start;
    while (end < length && line[end] != ' ')
        end++;
    *field = line + start;
    *field_length = end - start;
    *at = end < length ? end + 1 : end;
    return *field_length > 0;
}

static bool parse_prefixes(token *t, const char *text, size_t length)
{
    if (length == 1 && text[0] == '*')
        return true;
    size_t start = 0;
    while (start <= length) {
        size_t end = start;
        while (end < length && text[end] != ',')
            end++;
        if (t->prefix_count == TOKEN_PREFIXES_MAX ||
            !word_valid(text + start, end - start, COFFER_ACCOUNT_ID_MAX, true))
            return false;
        memcpy(t->prefixes[t->prefix_count], text + start, end - start);
        t->prefixes[t->prefix_count][end - start] = '\0';
        t->prefix_count++;
        start = end + 1;
    }
    return true;
}

static bool parse_decimal(const char *text, size_t length, uint64_t *out)
{
    if (length == 0 || length > 19)
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < length; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (uint64_t)(text[i] - '0');
    }
    *out = value;
    return true;
}

static bool parse_hash(const char *text, size_t length, uint8_t hash[TOKEN_HASH_BYTES])
{
    size_t decoded = 0;
    return length == 2 * TOKEN_HASH_BYTES &&
           sodium_hex2bin(hash, TOKEN_HASH_BYTES, text, length, NULL, &decoded, NULL) == 0 &&
           decoded == TOKEN_HASH_BYTES;
}

/* One token line into *t; false with the reason in `error`. */
static bool parse_line(const char *line, size_t length, token *t, char *error, size_t size)
{
    memset(t, 0, sizeof *t);
    const char *field[5];
    size_t field_length[5], at = 0;
    for (int i = 0; i < 5; i++)
        if (!next_field(line, length, &at, &field[i], &field_length[i]))
            return fail(error, size, "expected 5 fields separated by single spaces");
    if (at != length)
        return fail(error, size, "more than 5 fields");
    if (!word_valid(field[0], field_length[0], TOKEN_NAME_MAX, false))
        return fail(error, size, "the name is not 1-64 of [A-Za-z0-9._:@-]");
    memcpy(t->name, field[0], field_length[0]);
    char scope[8] = {0};
    if (field_length[1] < sizeof scope)
        memcpy(scope, field[1], field_length[1]);
    t->scope = (uint8_t)token_scope_parse(scope);
    if (!t->scope)
        return fail(error, size, "the scope is not read, write or admin");
    if (!parse_prefixes(t, field[2], field_length[2]))
        return fail(error, size, "the prefixes are not '*' or 1-16 account id prefixes");
    if (!parse_decimal(field[3], field_length[3], &t->created_at_s))
        return fail(error, size, "the creation time is not a number of seconds");
    if (!parse_hash(field[4], field_length[4], t->hash))
        return fail(error, size, "the hash is not 64 hex digits");
    return true;
}

static int compare_hash(const void *a, const void *b)
{
    return memcmp(((const token *)a)->hash, ((const token *)b)->hash, TOKEN_HASH_BYTES);
}

/* Sorts the table and refuses two tokens with one hash or one name (revoke goes by name). */
static bool seal(tokens *table, char *error, size_t size)
{
    qsort(table->items, table->count, sizeof *table->items, compare_hash);
    for (size_t i = 1; i < table->count; i++)
        if (!compare_hash(&table->items[i - 1], &table->items[i]))
            return fail(error, size, "two tokens have the same hash");
    for (size_t i = 0; i < table->count; i++)
        for (size_t j = i + 1; j < table->count; j++)
            if (!strcmp(table->items[i].name, table->items[j].name))
                return fail(error, size, "two tokens are named '%s'", table->items[i].name);
    return true;
}

/* Adds the line [line, line + length) (without its newline) to the table. */
static bool add_line(tokens *table, const char *line, size_t length, size_t number, char *error,
                     size_t size)
{
    char reason[160];
    if (number == 1)
        return (length == strlen(TOKENS_FORMAT_LINE) &&
                !memcmp(line, TOKENS_FORMAT_LINE, length)) ||
               fail(error, size, "line 1: not '" TOKENS_FORMAT_LINE "' (not a tokens file?)");
    if (length == 0 || line[0] == '#')
        return true;
    if (memchr(line, '\0', length))
        return fail(error, size, "line %zu: a NUL byte", number);
    if (table->count == TOKENS_MAX || table->count == table->capacity)
        return fail(error, size, "line %zu: more than %d tokens", number, TOKENS_MAX);
    if (!parse_line(line, length, &table->items[table->count], reason, sizeof reason))
        return fail(error, size, "line %zu: %s", number, reason);
    table->count++;
    return true;
}

tokens *tokens_parse(const char *text, size_t length, char *error, size_t error_size)
{
    /* At most one token a line: size the table by the lines, not by the limit. */
    size_t lines = 1;
    for (const char *at = text; (at = memchr(at, '\n', length - (size_t)(at - text))); at++)
        lines++;
    if (lines > TOKENS_MAX + 1)
        lines = TOKENS_MAX + 1;
    tokens *table = calloc(1, sizeof *table);
    if (!table || !(table->items = calloc(lines, sizeof *table->items))) {
        free(table);
        fail(error, error_size, "out of memory");
        return NULL;
    }
    atomic_init(&table->references, 1);
    table->capacity = lines;
    bool ok = true;
    size_t start = 0, number = 0;
    while (ok && start < length) {
        const char *newline = memchr(text + start, '\n', length - start);
        size_t end = newline ? (size_t)(newline - text) : length;
        number++;
        if (end - start > TOKEN_LINE_MAX)
            ok = fail(error, error_size, "line %zu: longer than %d bytes", number, TOKEN_LINE_MAX);
        else
            ok = add_line(table, text + start, end - start, number, error, error_size);
        start = end + 1;
    }
    if (ok && length > 0 && number == 0)
        ok = fail(error, error_size, "line 1: empty");
    if (ok)
        ok = seal(table, error, error_size);
    if (!ok) {
        tokens_release(table);
        return NULL;
    }
    return table;
}

tokens *tokens_load(const char *path, char *error, size_t error_size)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fail(error, error_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = malloc(TOKENS_FILE_BYTES_MAX + 1);
    size_t length = text ? fread(text, 1, TOKENS_FILE_BYTES_MAX + 1, file) : 0;
    bool read_failed = !text || ferror(file);
    fclose(file);
    tokens *table = NULL;
    char reason[200];
    if (read_failed)
        fail(error, error_size, "%s: could not be read", path);
    else if (length > TOKENS_FILE_BYTES_MAX)
        fail(error, error_size, "%s: larger than %zu bytes", path, TOKENS_FILE_BYTES_MAX);
    else if (!(table = tokens_parse(text, length, reason, sizeof reason)))
        fail(error, error_size, "%s: %s", path, reason);
    free(text);
    return table;
}

tokens *tokens_retain(tokens *table)
{
    if (table)
        atomic_fetch_add(&table->references, 1);
    return table;
}

void tokens_release(tokens *table)
{
    if (!table || atomic_fetch_sub(&table->references, 1) != 1)
        return;
    free(table->items);
    free(table);
}

size_t tokens_count(const tokens *table)
{
    return table ? table->count : 0;
}

const token *tokens_at(const tokens *table, size_t index)
{
    return table && index < table->count ? &table->items[index] : NULL;
}

void token_secret_hash(const char *secret, size_t length, uint8_t hash[TOKEN_HASH_BYTES])
{
    crypto_generichash(hash, TOKEN_HASH_BYTES, (const unsigned char *)secret, length, NULL, 0);
}

const token *tokens_authenticate(const tokens *table, const char *authorization)
{
    static const char scheme[] = "Bearer ";
    if (!table || !authorization || strncasecmp(authorization, scheme, sizeof scheme - 1))
        return NULL;
    const char *secret = authorization + sizeof scheme - 1;
    size_t length = strlen(secret);
    if (length != TOKEN_SECRET_LENGTH)
        return NULL;
    token key;
    token_secret_hash(secret, length, key.hash);
    const token *found = bsearch(&key, table->items, table->count, sizeof key, compare_hash);
    if (!found || sodium_memcmp(found->hash, key.hash, TOKEN_HASH_BYTES) != 0)
        return NULL;
    return found;
}

bool token_allows_scope(const token *t, int scope)
{
    return t && t->scope >= scope;
}

bool token_allows_account(const token *t, const char *account_id)
{
    if (!t || !account_id)
        return false;
    if (t->prefix_count == 0)
        return true;
    for (size_t i = 0; i < t->prefix_count; i++)
        if (!strncmp(account_id, t->prefixes[i], strlen(t->prefixes[i])))
            return true;
    return false;
}

void token_secret_new(char secret[TOKEN_SECRET_LENGTH + 1], uint8_t hash[TOKEN_HASH_BYTES])
{
    uint8_t random[32];
    randombytes_buf(random, sizeof random);
    memcpy(secret, TOKEN_SECRET_PREFIX, strlen(TOKEN_SECRET_PREFIX));
    sodium_bin2hex(secret + strlen(TOKEN_SECRET_PREFIX),
                   TOKEN_SECRET_LENGTH + 1 - strlen(TOKEN_SECRET_PREFIX), random, sizeof random);
    sodium_memzero(random, sizeof random);
    token_secret_hash(secret, TOKEN_SECRET_LENGTH, hash);
}

bool token_format_line(const token *t, char *out, size_t size)
{
    char prefixes[TOKEN_PREFIXES_MAX * (COFFER_ACCOUNT_ID_MAX + 1) + 2] = "*";
    size_t at = 0;
    for (size_t i = 0; i < t->prefix_count; i++) {
        size_t length = strlen(t->prefixes[i]);
        if (i)
            prefixes[at++] = ',';
        memcpy(prefixes + at, t->prefixes[i], length);
        at += length;
        prefixes[at] = '\0';
    }
    char hash[2 * TOKEN_HASH_BYTES + 1];
    sodium_bin2hex(hash, sizeof hash, t->hash, TOKEN_HASH_BYTES);
    int written = snprintf(out, size, "%s %s %s %llu %s\n", t->name, token_scope_name(t->scope),
                           prefixes, (unsigned long long)t->created_at_s, hash);
    return written > 0 && (size_t)written < size;
}
