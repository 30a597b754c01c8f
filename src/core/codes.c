/*
 * codes.c — lookups into the one result-code table of include/coffer.h. Everything that names,
 * describes or maps a code to HTTP goes through these functions.
 */
#include "coffer.h"

struct code_info {
    const char *name;
    const char *message;
    int http_status;
};

static const struct code_info code_table[COFFER_CODE_LIMIT] = {
#define CODE_ROW(NAME, name, value, http, message) [value] = {#name, message, http},
    COFFER_CODE_MAP(CODE_ROW)
#undef CODE_ROW
};

static const struct code_info *code_lookup(int code)
{
    if (code < 0 || code >= COFFER_CODE_LIMIT || code_table[code].name == 0)
        return 0;
    return &code_table[code];
}

const char *coffer_strerror(int code)
{
    const struct code_info *info = code_lookup(code);
    return info ? info->message : "unknown code";
}

const char *coffer_code_name(int code)
{
    const struct code_info *info = code_lookup(code);
    return info ? info->name : 0;
}

int coffer_code_http_status(int code)
{
    const struct code_info *info = code_lookup(code);
    return info ? info->http_status : 500;
}

bool coffer_code_is_success(int code)
{
    return code == COFFER_OK || code == COFFER_CREATED || code == COFFER_EXISTS;
}
