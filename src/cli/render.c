/*
 * render.c — the client commands' output: numbers grouped for people, a refusal as its code,
 * title and fields on stderr, the answers shared by transfers and holds; with --json the
 * server's JSON as it came.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/client.h"

const char *text_field(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* Formats an integer for people: 10,000 and -1,500; with plus, +500 for a positive delta. */
const char *format_grouped(int64_t value, bool plus, char out[CLIENT_NUMBER_BYTES])
{
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    size_t at = 0;
    if (value < 0)
        out[at++] = '-';
    if (value > 0 && plus)
        out[at++] = '+';
    for (int i = count - 1; i >= 0; i--) {
        out[at++] = digits[i];
        if (i && i % 3 == 0)
            out[at++] = ',';
    }
    out[at] = 0;
    return out;
}

/* A field as text: grouped digits (or plain, for versions and seqs), the string itself,
 * `when_null` for null, "?" when missing. */
const char *field_text(const json_t *object, const char *key, bool grouped, const char *when_null,
                       char out[CLIENT_NUMBER_BYTES])
{
    const json_t *value = json_object_get(object, key);
    if (json_is_integer(value)) {
        if (grouped)
            return format_grouped(json_integer_value(value), false, out);
        snprintf(out, CLIENT_NUMBER_BYTES, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        return out;
    }
    if (json_is_string(value))
        return json_string_value(value);
    if (json_is_null(value))
        return when_null;
    return "?";
}

/* Prints a JSON value compactly (metadata, problem fields); strings as they are. */
void print_value(FILE *out, const json_t *value)
{
    if (json_is_string(value)) {
        fputs(json_string_value(value), out);
        return;
    }
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(text ? text : "?", out);
    free(text);
}

static void print_verbatim(const response *answer)
{
    if (!answer->length)
        return;
    fwrite(answer->body, 1, answer->length, stdout);
    if (answer->body[answer->length - 1] != '\n')
        putchar('\n');
}

/* A refusal on stderr: "error: <code>: <title>", then detail, field and the other fields. */
static void print_problem(const client *server, const response *answer)
{
    const json_t *problem = answer->json;
    const char *code = text_field(problem, "code"), *title = text_field(problem, "title");
    if (code) {
        fprintf(stderr, "error: %s: %s\n", code, title ? title : "(no title)");
    } else {
        fprintf(stderr, "error: HTTP %ld from %s", answer->status, server->server);
        if (answer->length)
            fputs(": ", stderr);
        for (size_t i = 0; i < answer->length && i < 200; i++) {
            unsigned char c = (unsigned char)answer->body[i];
            fputc(c < 0x20 || c == 0x7f ? ' ' : c, stderr);
        }
        fputc('\n', stderr);
    }
    static const char *const shown_elsewhere[] = {"type", "title", "status", "code", "instance"};
    const char *key;
    const json_t *value;
    const json_t *detail = json_object_get(problem, "detail");
    if (detail && !(title && json_is_string(detail) && !strcmp(json_string_value(detail), title))) {
        fputs("  detail: ", stderr);
        print_value(stderr, detail);
        fputc('\n', stderr);
    }
    json_object_foreach((json_t *)problem, key, value)
    {
        bool skip = !strcmp(key, "detail");
        for (size_t i = 0; i < sizeof shown_elsewhere / sizeof *shown_elsewhere; i++)
            skip = skip || !strcmp(key, shown_elsewhere[i]);
        if (skip)
            continue;
        fprintf(stderr, "  %s: ", key);
        print_value(stderr, value);
        fputc('\n', stderr);
    }
    if (answer->replayed)
        fputs("  replayed: this id was refused before and keeps that outcome; use a new id to "
              "try again\n",
              stderr);
    if (answer->retry_after[0])
        fprintf(stderr, "  retry after: %s s\n", answer->retry_after);
    if (answer->request_id[0])
        fprintf(stderr, "  request id: %s\n", answer->request_id);
}

int flush_output(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    fprintf(stderr, "coffer: cannot write the output\n");
    return CLI_EXIT_ERROR;
}

/* Turns an answer into output and the exit code: on success the printer (or, with --json, the
 * server's JSON as it came); else the problem on stderr (and with --json its JSON on stdout). */
int client_finish(const client *server, const response *answer, body_printer print,
                  const void *context)
{
    if (response_is_success(answer)) {
        if (server->json) {
            print_verbatim(answer);
            return flush_output();
        }
        if (!answer->json) {
            fprintf(stderr, "error: the server at %s answered %ld without a JSON object\n",
                    server->server, answer->status);
            return CLI_EXIT_ERROR;
        }
        print(answer->json, answer, context);
        return flush_output();
    }
    if (server->json)
        print_verbatim(answer);
    fflush(stdout);
    print_problem(server, answer);
    return CLI_EXIT_ERROR;
}

void print_metadata(const json_t *object)
{
    const json_t *metadata = json_object_get(object, "metadata");
    if (!json_is_object(metadata) || !json_object_size(metadata))
        return;
    fputs("  metadata: ", stdout);
    print_value(stdout, metadata);
    putchar('\n');
}

/* "user:1 -> shop 500 KRW (posted, seq 18)", and the like for holds, posts and voids. */
void print_transfer_summary(const json_t *transfer)
{
    char number[CLIENT_NUMBER_BYTES];
    const char *hold = text_field(transfer, "post"), *voided = text_field(transfer, "void");
    const char *from = text_field(transfer, "from"), *to = text_field(transfer, "to");
    if (hold)
        printf("post of hold %s", hold);
    if (voided)
        printf("void of hold %s", voided);
    if (from && to)
        printf("%s%s -> %s", hold || voided ? ", " : "", from, to);
    if (json_is_integer(json_object_get(transfer, "amount")))
        printf(" %s", field_text(transfer, "amount", true, "", number));
    if (json_is_integer(json_object_get(transfer, "amount_requested")))
        printf(" of %s requested", field_text(transfer, "amount_requested", true, "", number));
    if (text_field(transfer, "currency"))
        printf(" %s", text_field(transfer, "currency"));
    const char *state = text_field(transfer, "state"), *code = text_field(transfer, "code");
    printf(" (%s", state ? state : code ? code : "?");
    if (state && code && strcmp(code, "created") && strcmp(code, "exists"))
        printf(": %s", code);
    if (json_is_integer(json_object_get(transfer, "captured")))
        printf("%s %s", state && !strcmp(state, "captured") ? "" : ", captured",
               field_text(transfer, "captured", true, "", number));
    if (json_object_get(transfer, "seq"))
        printf(", seq %s", field_text(transfer, "seq", false, "?", number));
    if (state && !strcmp(state, "pending") && text_field(transfer, "expires_at"))
        printf(", expires %s", text_field(transfer, "expires_at"));
    if (text_field(transfer, "submitted_by"))
        printf(", by %s", text_field(transfer, "submitted_by"));
    putchar(')');
}

/* "; user:1 balance 9,500 v2, shop balance 500 v2" (available too when it differs). An
 * account without its id is named by the transfer's from/to, else by its side. */
static void print_account_changes(const json_t *accounts, const json_t *transfer)
{
    static const char *const sides[] = {"from", "to"};
    const char *separator = "; ";
    for (size_t i = 0; i < 2; i++) {
        const json_t *account = json_object_get(accounts, sides[i]);
        if (!json_is_object(account))
            continue;
        char balance[CLIENT_NUMBER_BYTES], available[CLIENT_NUMBER_BYTES],
            version[CLIENT_NUMBER_BYTES];
        const char *id = text_field(account, "id");
        if (!id)
            id = text_field(transfer, sides[i]);
        printf("%s%s balance %s", separator, id ? id : sides[i],
               field_text(account, "balance", true, "?", balance));
        if (!json_equal(json_object_get(account, "balance"), json_object_get(account, "available")))
            printf(" available %s", field_text(account, "available", true, "?", available));
        printf(" v%s", field_text(account, "version", false, "?", version));
        separator = ", ";
    }
}

/* A write's answer: "created pay-1: user:1 -> shop 500 (posted, seq 18); user:1 balance ...". */
void print_transfer_result(const json_t *body, const response *answer, const void *context)
{
    (void)context;
    const json_t *transfer = json_object_get(body, "transfer");
    const char *code = text_field(body, "code");
    printf("%s %s: ", code ? code : "done",
           text_field(transfer, "id") ? text_field(transfer, "id") : "?");
    print_transfer_summary(transfer);
    print_account_changes(json_object_get(body, "accounts"), transfer);
    puts(answer->replayed ? " (replayed)" : "");
}
