/*
 * tokens.h — bearer tokens for `coffer serve --tokens FILE`: the tokens file (parsed, fuzzed),
 * authentication of an Authorization header, and what a token's scope and account prefixes
 * allow. Only a hash of each token is stored; the token itself is shown once, at creation.
 */
#ifndef COFFER_SERVER_TOKENS_H
#define COFFER_SERVER_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coffer.h"

/* Limits of the tokens file; a file beyond them is refused with a message naming the line. */
#define TOKENS_MAX 4096
#define TOKEN_NAME_MAX 64
#define TOKEN_PREFIXES_MAX 16
#define TOKEN_LINE_MAX 2048
#define TOKEN_HASH_BYTES 32
/* "cft_" and 32 random bytes in hex: 68 characters. */
#define TOKEN_SECRET_PREFIX "cft_"
#define TOKEN_SECRET_LENGTH 68

/* Scopes grow: a write token may do what a read token may, and admin what write may. */
enum token_scope { TOKEN_SCOPE_READ = 1, TOKEN_SCOPE_WRITE = 2, TOKEN_SCOPE_ADMIN = 3 };

typedef struct token {
    char name[TOKEN_NAME_MAX + 1];
    uint8_t scope;        /* enum token_scope */
    uint8_t prefix_count; /* 0: every account */
    char prefixes[TOKEN_PREFIXES_MAX][COFFER_ACCOUNT_ID_MAX + 1];
    uint64_t created_at_s; /* seconds since the epoch */
    uint8_t hash[TOKEN_HASH_BYTES];
} token;

/* A loaded tokens file, sorted by hash; immutable once built, shared by reference count so a
 * SIGHUP can swap in a new one while requests still hold the old. */
typedef struct tokens tokens;

/* Parses a tokens file's text. NULL with a one-line reason in `error` (naming the line) when it
 * is malformed or beyond the limits. An empty file is a valid table with no tokens. */
tokens *tokens_parse(const char *text, size_t length, char *error, size_t error_size);
/* Reads and parses `path` (at most TOKENS_MAX lines of TOKEN_LINE_MAX bytes). */
tokens *tokens_load(const char *path, char *error, size_t error_size);
tokens *tokens_retain(tokens *table);
void tokens_release(tokens *table); /* NULL is a no-op; frees with the last reference */
size_t tokens_count(const tokens *table);
const token *tokens_at(const tokens *table, size_t index);

/* The token an `Authorization: Bearer SECRET` header value names, or NULL (missing header,
 * another scheme, an unknown or revoked token). The lookup is by the secret's hash, so its
 * timing depends only on the hash, which tells an attacker nothing about other secrets; the
 * final comparison is constant-time. */
const token *tokens_authenticate(const tokens *table, const char *authorization);

bool token_allows_scope(const token *t, int scope);
/* True when the token has no prefixes or `account_id` starts with one of them. */
bool token_allows_account(const token *t, const char *account_id);

const char *token_scope_name(int scope);
/* The scope named `name` ("read", "write", "admin"), or 0. */
int token_scope_parse(const char *name);

/* A new random secret (TOKEN_SECRET_LENGTH characters and a NUL) and its hash. */
void token_secret_new(char secret[TOKEN_SECRET_LENGTH + 1], uint8_t hash[TOKEN_HASH_BYTES]);
void token_secret_hash(const char *secret, size_t length, uint8_t hash[TOKEN_HASH_BYTES]);
/* The file line for `t` (with its newline) into out; false when it does not fit. */
bool token_format_line(const token *t, char *out, size_t size);
/* Checks a name or prefix list entry before it is written: false with a reason. */
bool token_name_valid(const char *name);
bool token_prefix_valid(const char *prefix);

#endif
