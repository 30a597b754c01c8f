/*
 * test_docs.c — the docs cannot drift from the one table of result codes: every code of
 * COFFER_CODE_MAP is a row of the code table in docs/api.md (same value, HTTP status and
 * message) and a value of the Code enum in docs/openapi.yaml, and neither lists a code the
 * table does not have. The test runs from the build directory, so it finds the repository
 * from this file's own path (__FILE__ ends in tests/unit/test_docs.c).
 */
#include "support.h"

typedef struct code_row {
    const char *name;
    int value;
    int http_status;
    const char *message;
} code_row;

#define CODE_ROW(NAME, name, value, http, message) {#name, value, http, message},
static const code_row code_rows[] = {COFFER_CODE_MAP(CODE_ROW)};
#undef CODE_ROW
#define CODE_ROW_COUNT (sizeof(code_rows) / sizeof(code_rows[0]))

/* What a document says about one code; value and status are -1 where it does not say. */
typedef struct doc_code {
    char name[64];
    int value;
    int http_status;
    char message[256];
} doc_code;

#define DOC_CODES_MAX 128
#define DOC_BYTES_MAX (4u << 20)

typedef struct doc_codes {
    doc_code codes[DOC_CODES_MAX];
    size_t count;
} doc_codes;

static const char this_file_tail[] = "tests/unit/test_docs.c";

/* The path of `relative` (e.g. "docs/api.md") in the repository this file belongs to. */
static void repository_path(char *out, size_t size, const char *relative)
{
    const char *file = __FILE__;
    size_t file_length = strlen(file), tail_length = strlen(this_file_tail);
    assert_true(file_length >= tail_length);
    assert_string_equal(file + file_length - tail_length, this_file_tail);
    int written = snprintf(out, size, "%.*s%s", (int)(file_length - tail_length), file, relative);
    assert_true(written > 0 && (size_t)written < size);
}

/* The whole file, NUL-terminated; the caller frees it. */
static char *read_document(const char *relative)
{
    char path[4096];
    repository_path(path, sizeof path, relative);
    FILE *file = fopen(path, "rb");
    if (!file)
        fail_msg("cannot open %s (run from a source tree)", path);
    char *text = malloc(DOC_BYTES_MAX + 1);
    assert_non_null(text);
    size_t length = fread(text, 1, DOC_BYTES_MAX, file);
    assert_int_equal(ferror(file), 0);
    fclose(file);
    text[length] = 0;
    return text;
}

/* Splits `text` into lines in place: returns the current line and moves *cursor past it. */
static char *next_line(char **cursor)
{
    char *line = *cursor;
    if (!line || !*line)
        return NULL;
    char *end = strchr(line, '\n');
    *cursor = end ? end + 1 : line + strlen(line);
    if (end)
        *end = 0;
    return line;
}

static void add_code(doc_codes *codes, const char *name, int value, int http_status,
                     const char *message, size_t message_length)
{
    if (codes->count == DOC_CODES_MAX)
        fail_msg("more than %d codes in a document", DOC_CODES_MAX);
    doc_code *code = &codes->codes[codes->count++];
    snprintf(code->name, sizeof code->name, "%s", name);
    code->value = value;
    code->http_status = http_status;
    snprintf(code->message, sizeof code->message, "%.*s", (int)message_length, message);
}

/* One row of the api.md code table: | `name` | value | http | message |. */
static bool parse_table_row(const char *line, doc_codes *codes)
{
    char name[64];
    int value, http_status, message_start = -1;
    int matched =
        sscanf(line, "| `%63[a-z_]` | %d | %d | %n", name, &value, &http_status, &message_start);
    if (matched != 3 || message_start < 0)
        return false;
    const char *message = line + message_start;
    const char *end = strstr(message, " |");
    if (!end)
        return false;
    add_code(codes, name, value, http_status, message, (size_t)(end - message));
    return true;
}

/* The rows of the table under "## Codes" in docs/api.md, up to the next heading. */
static void api_md_codes(doc_codes *codes)
{
    char *text = read_document("docs/api.md"), *cursor = text, *line;
    bool in_section = false;
    codes->count = 0;
    while ((line = next_line(&cursor))) {
        if (strncmp(line, "## ", 3) == 0) {
            in_section = strcmp(line, "## Codes") == 0;
            continue;
        }
        if (in_section && strncmp(line, "| `", 3) == 0 && !parse_table_row(line, codes))
            fail_msg("docs/api.md: a row of the Codes table does not parse: %s", line);
    }
    free(text);
    if (codes->count == 0)
        fail_msg("docs/api.md: no \"## Codes\" table found");
}

static size_t indentation(const char *line)
{
    size_t spaces = 0;
    while (line[spaces] == ' ')
        spaces++;
    return spaces;
}

/* The items of `enum:` in the schema "Code:" under components/schemas of docs/openapi.yaml. */
static void openapi_codes(doc_codes *codes)
{
    char *text = read_document("docs/openapi.yaml"), *cursor = text, *line;
    enum { BEFORE, IN_SCHEMA, IN_ENUM, AFTER } where = BEFORE;
    codes->count = 0;
    while (where != AFTER && (line = next_line(&cursor))) {
        size_t indent = indentation(line);
        const char *content = line + indent;
        if (where == BEFORE) {
            if (indent == 4 && strcmp(content, "Code:") == 0)
                where = IN_SCHEMA;
        } else if (*content && indent <= 4) {
            where = AFTER; /* the next schema */
        } else if (where == IN_SCHEMA && strcmp(content, "enum:") == 0) {
            where = IN_ENUM;
        } else if (where == IN_ENUM && strncmp(content, "- ", 2) == 0) {
            add_code(codes, content + 2, -1, -1, "", 0);
        } else if (where == IN_ENUM && *content) {
            where = AFTER; /* the key after the enum */
        }
    }
    free(text);
    if (codes->count == 0)
        fail_msg("docs/openapi.yaml: no enum in components/schemas/Code");
}

static const doc_code *doc_code_named(const doc_codes *codes, const char *name)
{
    for (size_t i = 0; i < codes->count; i++)
        if (strcmp(codes->codes[i].name, name) == 0)
            return &codes->codes[i];
    return NULL;
}

static bool table_has(const char *name)
{
    for (size_t i = 0; i < CODE_ROW_COUNT; i++)
        if (strcmp(code_rows[i].name, name) == 0)
            return true;
    return false;
}

/* Nothing documented that the table lacks, and no code documented twice. */
static void check_no_strays(const doc_codes *codes, const char *document)
{
    for (size_t i = 0; i < codes->count; i++) {
        const char *name = codes->codes[i].name;
        if (!table_has(name))
            fail_msg("%s lists code '%s', which COFFER_CODE_MAP does not have", document, name);
        if (doc_code_named(codes, name) != &codes->codes[i])
            fail_msg("%s lists code '%s' twice", document, name);
    }
}

static void test_api_md_code_table_matches_code_map(void **state)
{
    (void)state;
    static doc_codes codes;
    api_md_codes(&codes);
    for (size_t i = 0; i < CODE_ROW_COUNT; i++) {
        const code_row *row = &code_rows[i];
        const doc_code *doc = doc_code_named(&codes, row->name);
        if (!doc)
            fail_msg("docs/api.md: code '%s' is missing from the Codes table", row->name);
        if (doc->value != row->value)
            fail_msg("docs/api.md: code '%s' has value %d, COFFER_CODE_MAP says %d", row->name,
                     doc->value, row->value);
        if (doc->http_status != row->http_status)
            fail_msg("docs/api.md: code '%s' has HTTP %d, COFFER_CODE_MAP says %d", row->name,
                     doc->http_status, row->http_status);
        if (strcmp(doc->message, row->message) != 0)
            fail_msg("docs/api.md: code '%s' reads \"%s\", COFFER_CODE_MAP says \"%s\"", row->name,
                     doc->message, row->message);
    }
    check_no_strays(&codes, "docs/api.md");
    assert_int_equal(codes.count, CODE_ROW_COUNT);
}

static void test_openapi_code_enum_matches_code_map(void **state)
{
    (void)state;
    static doc_codes codes;
    openapi_codes(&codes);
    for (size_t i = 0; i < CODE_ROW_COUNT; i++)
        if (!doc_code_named(&codes, code_rows[i].name))
            fail_msg("docs/openapi.yaml: code '%s' is missing from the Code enum",
                     code_rows[i].name);
    check_no_strays(&codes, "docs/openapi.yaml");
    assert_int_equal(codes.count, CODE_ROW_COUNT);
}

/* The parser itself, on rows written out here, so a silently empty parse cannot pass. */
static void test_table_row_parser(void **state)
{
    (void)state;
    static doc_codes codes;
    codes.count = 0;
    assert_true(parse_table_row("| `hold_expired` | 43 | 409 | the hold has expired |", &codes));
    assert_false(parse_table_row("| code | value | HTTP | meaning |", &codes));
    assert_false(parse_table_row("| `broken` | x | 409 | no value |", &codes));
    assert_int_equal(codes.count, 1);
    assert_string_equal(codes.codes[0].name, "hold_expired");
    assert_int_equal(codes.codes[0].value, 43);
    assert_int_equal(codes.codes[0].http_status, 409);
    assert_string_equal(codes.codes[0].message, "the hold has expired");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_row_parser),
        cmocka_unit_test(test_api_md_code_table_matches_code_map),
        cmocka_unit_test(test_openapi_code_enum_matches_code_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
