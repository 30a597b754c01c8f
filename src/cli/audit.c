/*
 * audit.c — `coffer verify DIR|CONNINFO` and `coffer dump DIR|CONNINFO`: offline checks and the
 * log as JSON lines, through coffer_verify_dir() and coffer_dump_dir(), or coffer_verify_log()
 * and coffer_dump_log() for a log in PostgreSQL. Neither modifies anything.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "coffer.h"
#include "server/encode.h"

enum { VERIFY_JSON, VERIFY_LOG };

static const cli_option verify_options[] = {
    {VERIFY_JSON, "--json", NULL, "one JSON object instead of text"},
    {VERIFY_LOG, "--log", "CONNINFO",
     "with DIR: the log of DIR is in this PostgreSQL database\n(coffer serve --log): check DIR's "
     "snapshots against it"},
};

static const cli_spec verify_spec = {
    .name = "verify",
    .synopsis = "DIR|CONNINFO [--json] [--log CONNINFO]",
    .description =
        "Checks a data directory without changing it: the hash chain of every log record, a full\n"
        "replay into fresh state, the newest snapshot against that replay, what recovery would\n"
        "build against it, and every invariant (balances sum to zero per currency, accounts\n"
        "within their limits, held totals equal pending holds, one outcome per id).\n"
        "\n"
        "CONNINFO instead of DIR: the same checks of a log kept in PostgreSQL (coffer serve\n"
        "--log), read in one read-only transaction (no lease taken, nothing written). It is a\n"
        "URI (postgresql://..., postgres://...) or libpq key=value pairs (\"host=H dbname=D\"):\n"
        "an operand that starts with a word and '=' and names no existing file. The log's\n"
        "instances keep snapshots only in their DIR: check them with DIR --log CONNINFO.\n",
    .options = verify_options,
    .option_count = sizeof verify_options / sizeof *verify_options,
    .operand_name = "a data directory or a PostgreSQL conninfo (coffer verify DIR)",
    .operands_min = 1,
    .operands_max = 1,
    .epilog =
        "Exit status: 0 all good (warnings may be printed), 1 a problem was found, 2 bad\n"
        "usage (also: DIR whose log is in PostgreSQL, without --log), 3 the checks did\n"
        "not run: the log could not be read (a database unreachable, a session lost\n"
        "midway, no coffer log there) or no memory for them; not a verdict on the log.\n"
        "With --json, a failure to run prints {\"ok\":null,\"error\":{\"code\",\"message\"}}.\n",
};

static const cli_spec dump_spec = {
    .name = "dump",
    .synopsis = "DIR|CONNINFO",
    .description =
        "Prints every logged event as one JSON object per line, in seq order: seq, timestamp\n"
        "(ns since the epoch), segment and offset of its record, op and the event's fields;\n"
        "metadata as the JSON object it was given as. The events of an atomic batch carry\n"
        "\"atomic\": {\"first_seq\", \"events\"}. \"submitted_by\" names the token that\n"
        "submitted the event (null: none) and \"outcome\" says what it did: code, state,\n"
        "amount, both accounts after it; \"recorded\": false for a position of a failed atomic\n"
        "batch that recorded nothing. Records written before outcomes were logged have\n"
        "neither.\n"
        "\n"
        "CONNINFO instead of DIR (as for coffer verify): the log kept in PostgreSQL, read in one\n"
        "read-only transaction; \"segment\" is 0 and \"offset\" is the position of the record's\n"
        "row in coffer_log.\n",
    .operand_name = "a data directory or a PostgreSQL conninfo (coffer dump DIR)",
    .operands_min = 1,
    .operands_max = 1,
};

/* Is the operand a PostgreSQL log rather than a directory? A URI always is; libpq's key=value
 * form ("host=H dbname=D") is when it starts with a keyword and '=' and no file has that name
 * (a directory called "a=b" is still read as one). */
static bool is_postgresql(const char *operand)
{
    if (strncmp(operand, "postgresql://", 13) == 0 || strncmp(operand, "postgres://", 11) == 0)
        return true;
    const char *at = operand;
    while (*at == ' ' || *at == '\t')
        at++;
    const char *word = at;
    while (isalnum((unsigned char)*at) || *at == '_')
        at++;
    if (at == word)
        return false;
    while (*at == ' ' || *at == '\t')
        at++;
    return *at == '=' && access(operand, F_OK) != 0;
}

/* The end of a password= value that starts at `value` (quoted or not). */
static const char *password_end(const char *value)
{
    if (*value != '\'')
        return value + strcspn(value, " \t&");
    const char *at = value + 1;
    while (*at && *at != '\'')
        at += at[0] == '\\' && at[1] ? 2 : 1;
    return *at ? at + 1 : at;
}

/* Where a key that ends in "password" (password, sslpassword: any libpq key or URI parameter
 * ending so) ends, when one starts at `in`; NULL otherwise. A key starts after a separator, not
 * inside a word. */
static const char *password_key_end(const char *location, const char *in)
{
    if (in != location && (isalnum((unsigned char)in[-1]) || in[-1] == '_'))
        return NULL;
    const char *end = in;
    while (isalnum((unsigned char)*end) || *end == '_')
        end++;
    if (end - in < 8 || strncasecmp(end - 8, "password", 8) != 0)
        return NULL;
    return end;
}

/* The operand as it may be printed: a password in it (a URI's user info, or any key ending in
 * password: password=, sslpassword=) as "***". */
static void redacted(const char *location, char *out, size_t size)
{
    const char *hide_from = 0, *hide_to = 0; /* a URI's password */
    const char *scheme = strstr(location, "://");
    if (scheme) {
        const char *authority = scheme + 3, *at = 0;
        size_t length = strcspn(authority, "/?");
        for (size_t i = 0; i < length; i++)
            if (authority[i] == '@')
                at = authority + i;
        const char *colon = at ? memchr(authority, ':', (size_t)(at - authority)) : 0;
        if (colon)
            hide_from = colon + 1, hide_to = at;
    }
    size_t used = 0;
    for (const char *in = location; *in && used + 4 < size;) {
        const char *skip_to = 0;
        if (in == hide_from) {
            skip_to = hide_to;
        } else if (password_key_end(location, in)) {
            const char *value = password_key_end(location, in);
            while (*value == ' ')
                value++;
            if (*value == '=') {
                value++;
                while (*value == ' ')
                    value++;
                size_t keep = (size_t)(value - in); /* "password = " as it was written */
                if (keep > size - used - 4)
                    keep = size - used - 4;
                memcpy(out + used, in, keep);
                used += keep;
                in = value;
                skip_to = password_end(value);
            }
        }
        if (skip_to) {
            memcpy(out + used, "***", 3);
            used += 3;
            in = skip_to;
            continue;
        }
        out[used++] = *in++;
    }
    out[used] = 0;
}

static void show_progress(const char *stage, uint64_t done, uint64_t total, void *context)
{
    (void)context;
    static int last_percent = -1;
    int percent = total ? (int)(done * 100 / total) : 100;
    if (percent == last_percent)
        return;
    last_percent = percent;
    fprintf(stderr, "\r%s: %3d%%", stage, percent);
    if (percent == 100)
        fputc('\n', stderr);
}

static void print_human(const char *dir, const coffer_dir_report *r)
{
    printf("coffer verify %s: %s\n", dir, r->ok ? "OK" : "PROBLEMS FOUND");
    if (r->log_postgresql)
        printf("  log: %llu records and %llu term rows in PostgreSQL%s, last seq %llu, chain %s\n",
               (unsigned long long)r->records, (unsigned long long)r->term_rows,
               r->log_standby ? " (a hot standby)" : "", (unsigned long long)r->last_seq,
               r->chain_ok ? "intact" : "BROKEN");
    else
        printf("  log: %llu records in %llu segments, last seq %llu, chain %s\n",
               (unsigned long long)r->records, (unsigned long long)r->segments,
               (unsigned long long)r->last_seq, r->chain_ok ? "intact" : "BROKEN");
    printf("  chain tip hash: %s\n", r->tip_hash);
    if (r->chain_error[0])
        printf("    %s\n", r->chain_error);
    if (r->torn_bytes)
        printf("  a torn tail of %llu bytes: cut at the next open unless it holds acknowledged "
               "records (a problem above then says so)\n",
               (unsigned long long)r->torn_bytes);
    if (r->snapshot_found && r->snapshot_unchecked)
        printf("  snapshot at seq %llu: not checked (warning)\n",
               (unsigned long long)r->snapshot_seq);
    else if (r->snapshot_found)
        printf("  snapshot at seq %llu: %s the replay; recovery from it %s the full replay\n",
               (unsigned long long)r->snapshot_seq,
               r->snapshot_matches ? "matches" : "DIFFERS FROM",
               r->recovery_matches ? "matches" : "DIFFERS FROM");
    else
        printf("  no snapshot: recovery replays the whole log\n");
    if (r->snapshot_error[0])
        printf("    %s\n", r->snapshot_error);
    printf("  invariants: %llu accounts, %llu transfers: %s\n",
           (unsigned long long)r->invariants.accounts_checked,
           (unsigned long long)r->invariants.transfers_checked,
           r->invariants.ok ? "all hold" : "VIOLATED");
    for (uint32_t i = 0; i < r->invariants.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++)
        printf("    %s\n", r->invariants.problems[i]);
    /* A missing index is a warning (the next start builds it), a damaged one a problem. A log
     * in PostgreSQL read without a DIR has none to check. */
    if (r->log_postgresql && !r->index_found && !r->index_error[0])
        return;
    if (!r->index_found)
        printf("  index: missing (warning: coffer serve builds it from the log)\n    %s\n",
               r->index_error);
    else if (r->index_ok)
        printf("  index: up to seq %llu (from seq %llu), matches the log\n",
               (unsigned long long)r->index_applied_seq,
               (unsigned long long)r->index_covers_from_seq);
    else
        printf("  index: DAMAGED: %s\n", r->index_error);
}

static void json_text(const char *text)
{
    putchar('"');
    for (; *text; text++) {
        if (*text == '"' || *text == '\\')
            putchar('\\');
        if (*text == '\n' || *text == '\t') { /* libpq's messages have both */
            fputs(*text == '\n' ? "\\n" : "\\t", stdout);
            continue;
        }
        if ((unsigned char)*text < 0x20)
            continue;
        putchar(*text);
    }
    putchar('"');
}

static void print_json(const coffer_dir_report *r)
{
    printf("{\"ok\":%s,\"log\":{\"records\":%llu,\"segments\":%llu,\"last_seq\":%llu,"
           "\"chain_ok\":%s,\"tip_hash\":\"%s\",\"torn_bytes\":%llu,",
           r->ok ? "true" : "false", (unsigned long long)r->records,
           (unsigned long long)r->segments, (unsigned long long)r->last_seq,
           r->chain_ok ? "true" : "false", r->tip_hash, (unsigned long long)r->torn_bytes);
    if (r->log_postgresql)
        printf("\"postgresql\":true,\"standby\":%s,\"term_rows\":%llu,",
               r->log_standby ? "true" : "false", (unsigned long long)r->term_rows);
    printf("\"error\":");
    json_text(r->chain_error);
    printf("},\"snapshot\":{\"found\":%s,\"checked\":%s,\"seq\":%llu,\"matches_replay\":%s,"
           "\"recovery_matches\":%s,\"error\":",
           r->snapshot_found ? "true" : "false",
           r->snapshot_found && !r->snapshot_unchecked ? "true" : "false",
           (unsigned long long)r->snapshot_seq, r->snapshot_matches ? "true" : "false",
           r->recovery_matches ? "true" : "false");
    json_text(r->snapshot_error);
    printf("},\"invariants\":{\"ok\":%s,\"accounts\":%llu,\"transfers\":%llu,\"problems\":[",
           r->invariants.ok ? "true" : "false", (unsigned long long)r->invariants.accounts_checked,
           (unsigned long long)r->invariants.transfers_checked);
    for (uint32_t i = 0; i < r->invariants.problem_count && i < COFFER_VERIFY_PROBLEMS_MAX; i++) {
        if (i)
            putchar(',');
        json_text(r->invariants.problems[i]);
    }
    printf("]},\"index\":{\"found\":%s,\"ok\":%s,\"applied_seq\":%llu,\"covers_from_seq\":%llu,"
           "\"error\":",
           r->index_found ? "true" : "false", r->index_ok ? "true" : "false",
           (unsigned long long)r->index_applied_seq, (unsigned long long)r->index_covers_from_seq);
    json_text(r->index_error);
    printf("}}\n");
}

int cli_verify(int argc, char **argv, const cli_globals *globals)
{
    cli_parsed parsed;
    int status = cli_parse(&verify_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    const char *operand = parsed.operands[0];
    const char *log = parsed.values[VERIFY_LOG];
    bool json = globals->json || parsed.values[VERIFY_JSON];
    bool postgresql = is_postgresql(operand);
    if (postgresql && log)
        return cli_usage(&verify_spec, "--log goes with a data directory, not a conninfo");
    if (log && !is_postgresql(log))
        return cli_usage(&verify_spec, "--log takes a PostgreSQL conninfo or URI");
    if (!postgresql && access(operand, R_OK | X_OK) != 0)
        return cli_usage(&verify_spec, "cannot read %s", operand);
    char shown[1024];
    redacted(operand, shown, sizeof shown);
    coffer_progress_fn progress = !json && isatty(2) ? show_progress : NULL;
    coffer_dir_report report;
    int code = postgresql ? coffer_verify_log(operand, NULL, NULL, progress, NULL, &report)
               : log      ? coffer_verify_log(log, operand, NULL, progress, NULL, &report)
                          : coffer_verify_dir(operand, NULL, progress, NULL, &report);
    if (code != COFFER_OK) {
        /* The checks did not run: no verdict. The reason when the library gave one (a
         * directory of a PostgreSQL log, a database that cannot be read), else the code's
         * message. */
        const char *reason = report.chain_error[0] ? report.chain_error : coffer_strerror(code);
        fprintf(stderr, "coffer verify: %s\n", reason);
        if (json) {
            printf("{\"ok\":null,\"error\":{\"code\":");
            json_text(coffer_code_name(code) ? coffer_code_name(code) : "unknown");
            printf(",\"message\":");
            json_text(reason);
            printf("}}\n");
        }
        /* A directory whose log is in PostgreSQL needs --log: a usage mistake. */
        return code == COFFER_NOT_SUPPORTED ? CLI_EXIT_USAGE : CLI_EXIT_NOT_RUN;
    }
    if (json)
        print_json(&report);
    else
        print_human(shown, &report);
    return report.ok ? 0 : CLI_EXIT_ERROR;
}

/* ---- dump ---------------------------------------------------------------------------------- */

static const char *op_name(uint8_t op)
{
    switch (op) {
    case COFFER_OP_CREATE_ACCOUNT:
        return "create_account";
    case COFFER_OP_TRANSFER:
        return "transfer";
    case COFFER_OP_POST:
        return "post";
    case COFFER_OP_VOID:
        return "void";
    case COFFER_OP_EXPIRE:
        return "expire";
    default:
        return "unknown";
    }
}

/* Metadata is stored verbatim: the JSON object it was given as; text that does not parse as
 * one (possible through the embedded API) is kept as a string rather than lost. */
static json_t *metadata_value(const coffer_event *event)
{
    json_t *object = json_loadb(event->metadata, event->metadata_len, 0, NULL);
    if (json_is_object(object))
        return object;
    json_decref(object);
    return json_stringn(event->metadata, event->metadata_len);
}

/* The fields of one event by op; the strings an op does not use are NULL. */
static void add_event_fields(json_t *line, const coffer_event *e)
{
    json_object_set_new(line, "op", json_string(op_name(e->op)));
    if (e->op == COFFER_OP_EXPIRE) {
        json_object_set_new(line, "hold", json_string(e->hold_id));
        return;
    }
    json_object_set_new(line, "id", json_string(e->id));
    if (e->op == COFFER_OP_CREATE_ACCOUNT) {
        json_object_set_new(line, "currency", json_string(e->currency));
        json_object_set_new(line, "min_balance",
                            e->flags & COFFER_FLAG_MIN_UNBOUNDED ? json_null()
                                                                 : json_integer(e->min_balance));
        if (e->flags & COFFER_FLAG_HAS_MAX)
            json_object_set_new(line, "max_balance", json_integer(e->max_balance));
    } else if (e->op == COFFER_OP_TRANSFER) {
        json_object_set_new(line, "from", json_string(e->from));
        json_object_set_new(line, "to", json_string(e->to));
        json_object_set_new(line, "amount", json_integer(e->amount));
        if (e->hold_timeout_ms)
            json_object_set_new(line, "hold_timeout_ms",
                                json_integer((json_int_t)e->hold_timeout_ms));
        if (e->flags & COFFER_FLAG_UP_TO)
            json_object_set_new(line, "up_to", json_true());
        if (e->flags & COFFER_FLAG_EXPECT_FROM)
            json_object_set_new(line, "expect_from_version",
                                json_integer((json_int_t)e->expect_from_version));
        if (e->flags & COFFER_FLAG_EXPECT_TO)
            json_object_set_new(line, "expect_to_version",
                                json_integer((json_int_t)e->expect_to_version));
    } else {
        json_object_set_new(line, e->op == COFFER_OP_POST ? "post" : "void",
                            json_string(e->hold_id));
        if (e->op == COFFER_OP_POST && e->amount)
            json_object_set_new(line, "amount", json_integer(e->amount));
    }
    if (e->metadata_len)
        json_object_set_new(line, "metadata", metadata_value(e));
}

static json_t *after_json(const coffer_account_after *after)
{
    return json_pack("{sI sI sI}", "balance", (json_int_t)after->balance, "available",
                     (json_int_t)after->available, "version", (json_int_t)after->version);
}

/* What the event did, with only the fields its outcome has. */
static json_t *outcome_json(const coffer_result *r)
{
    json_t *out = json_pack("{ss ss}", "code",
                            coffer_code_name(r->code) ? coffer_code_name(r->code) : "unknown",
                            "state", encode_state_name(r->state));
    if (r->seq == 0)
        json_object_set_new(out, "recorded", json_false());
    if (r->amount)
        json_object_set_new(out, "amount", json_integer(r->amount));
    if (r->expires_at)
        json_object_set_new(out, "expires_at", json_integer((json_int_t)r->expires_at));
    if (r->from.version)
        json_object_set_new(out, "from", after_json(&r->from));
    if (r->to.version)
        json_object_set_new(out, "to", after_json(&r->to));
    if (r->hold_from[0] || r->hold_to[0])
        json_object_set_new(out, "hold",
                            json_pack("{ss ss}", "from", r->hold_from, "to", r->hold_to));
    if (r->available)
        json_object_set_new(out, "available", json_integer(r->available));
    if (r->actual_version)
        json_object_set_new(out, "actual_version", json_integer((json_int_t)r->actual_version));
    if (r->field)
        json_object_set_new(out, "field", json_string(r->field));
    return out;
}

/* One line per event; a failed write stops the dump (a closed pipe, a full disk). */
static int print_log_entry(const coffer_log_entry *entry, void *context)
{
    (void)context;
    json_t *line = json_pack("{sI sI si sI}", "seq", (json_int_t)entry->seq, "timestamp",
                             (json_int_t)entry->timestamp, "segment", (int)entry->segment, "offset",
                             (json_int_t)entry->offset);
    if (!line)
        return COFFER_OUT_OF_MEMORY;
    if (entry->atomic_events)
        json_object_set_new(line, "atomic",
                            json_pack("{sI sI}", "first_seq", (json_int_t)entry->atomic_first_seq,
                                      "events", (json_int_t)entry->atomic_events));
    add_event_fields(line, entry->event);
    if (entry->outcome) {
        json_object_set_new(line, "submitted_by",
                            entry->submitted_by ? json_string(entry->submitted_by) : json_null());
        json_object_set_new(line, "outcome", outcome_json(entry->outcome));
    }
    int failed =
        json_dumpf(line, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 || putchar('\n') == EOF;
    json_decref(line);
    return failed ? COFFER_INTERNAL : 0;
}

int cli_dump(int argc, char **argv, const cli_globals *globals)
{
    (void)globals;
    cli_parsed parsed;
    int status = cli_parse(&dump_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    char error[1024];
    const char *operand = parsed.operands[0];
    int code = is_postgresql(operand)
                   ? coffer_dump_log(operand, print_log_entry, NULL, error, sizeof error)
                   : coffer_dump_dir(operand, print_log_entry, NULL, error, sizeof error);
    if (fflush(stdout) != 0 && code == COFFER_OK)
        code = COFFER_INTERNAL;
    if (code == COFFER_INTERNAL)
        snprintf(error, sizeof error, "cannot write the output");
    if (code == COFFER_OUT_OF_MEMORY)
        snprintf(error, sizeof error, "out of memory");
    if (code != COFFER_OK) {
        fprintf(stderr, "coffer dump: %s\n", error);
        return CLI_EXIT_ERROR;
    }
    return 0;
}
