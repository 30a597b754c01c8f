/*
 * events.c — `coffer events`: the ledger's changes in seq order (GET /v1/events), one line per
 * change, readable or with --json the server's JSON. --follow long-polls for new changes until
 * SIGINT or SIGTERM, and after a lost connection resumes after the last change it printed.
 */
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "cli/client.h"

/* The server holds a long-poll this long when nothing is newer; under the transport's 30 s. */
#define EVENTS_WAIT_MS "25000"
#define EVENTS_BACKOFF_MS_FIRST 100
#define EVENTS_BACKOFF_MS_MAX 5000
#define EVENTS_SLEEP_STEP_MS 50

static const client_command events_command;

/* Set by SIGINT or SIGTERM under --follow; the loop ends at the next page or poll. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int signal_number)
{
    (void)signal_number;
    stop_requested = 1;
}

/* libcurl calls this about once a second even while a long-poll is idle; non-zero aborts. */
static int on_transfer_progress(void *context, curl_off_t download_total, curl_off_t downloaded,
                                curl_off_t upload_total, curl_off_t uploaded)
{
    (void)context, (void)download_total, (void)downloaded, (void)upload_total, (void)uploaded;
    return stop_requested ? 1 : 0;
}

/* No SA_RESTART: a signal also cuts short the backoff sleep. */
static void watch_stop_signals(client *server)
{
    struct sigaction action = {0};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    curl_easy_setopt(server->curl, CURLOPT_XFERINFOFUNCTION, on_transfer_progress);
    curl_easy_setopt(server->curl, CURLOPT_NOPROGRESS, 0L);
}

/* Sleeps up to `milliseconds`, waking early when a stop was asked for. */
static void sleep_unless_stopped(unsigned milliseconds)
{
    for (unsigned slept = 0; slept < milliseconds && !stop_requested;
         slept += EVENTS_SLEEP_STEP_MS) {
        struct timespec step = {0, EVENTS_SLEEP_STEP_MS * 1000000L};
        nanosleep(&step, NULL);
    }
}

/* "2026-12-06T21:52:33.123Z": the change's nanosecond time cut to the millisecond. */
static void print_time(const char *timestamp)
{
    const char *dot = timestamp ? strchr(timestamp, '.') : NULL;
    if (!dot || strlen(dot) < 5 || timestamp[strlen(timestamp) - 1] != 'Z')
        fputs(timestamp ? timestamp : "?", stdout);
    else
        printf("%.*sZ", (int)(dot - timestamp) + 4, timestamp);
}

/* " (alice 1500, bob 700)": the accounts after the change; available when it differs. */
static void print_accounts_after(const json_t *accounts, const json_t *transfer)
{
    static const char *const sides[] = {"from", "to"};
    const char *separator = " (";
    for (size_t i = 0; i < 2; i++) {
        const json_t *account = json_object_get(accounts, sides[i]);
        if (!json_is_object(account))
            continue;
        char balance[CLIENT_NUMBER_BYTES], available[CLIENT_NUMBER_BYTES];
        const char *id =
            text_field(account, "id") ? text_field(account, "id") : text_field(transfer, sides[i]);
        printf("%s%s %s", separator, id ? id : sides[i],
               field_text(account, "balance", false, "?", balance));
        if (!json_equal(json_object_get(account, "balance"), json_object_get(account, "available")))
            printf(" available %s", field_text(account, "available", false, "?", available));
        separator = ", ";
    }
    if (strcmp(separator, " ("))
        putchar(')');
}

/* " t-17 alice -> bob 500", with "post of h-1" or "void of h-1" for a hold's resolution and
 * the code of a rejection. */
static void print_transfer_change(const json_t *transfer, const json_t *accounts)
{
    char amount[CLIENT_NUMBER_BYTES];
    const char *id = text_field(transfer, "id"), *from = text_field(transfer, "from"),
               *to = text_field(transfer, "to"), *state = text_field(transfer, "state");
    printf(" %s", id ? id : "?");
    if (text_field(transfer, "post"))
        printf(" post of %s", text_field(transfer, "post"));
    if (text_field(transfer, "void"))
        printf(" void of %s", text_field(transfer, "void"));
    if (from && to)
        printf(" %s -> %s", from, to);
    if (json_object_get(transfer, "amount"))
        printf(" %s", field_text(transfer, "amount", false, "?", amount));
    if (state && !strcmp(state, "rejected"))
        printf(" rejected: %s", text_field(transfer, "code") ? text_field(transfer, "code") : "?");
    print_accounts_after(accounts, transfer);
}

/* One change as a line: "#42 <time> transfer.posted t-17 alice -> bob 500 (...) by shop". */
static void print_change(const json_t *change)
{
    char seq[CLIENT_NUMBER_BYTES];
    const char *type = text_field(change, "type");
    printf("#%s ", field_text(change, "seq", false, "?", seq));
    print_time(text_field(change, "timestamp"));
    printf(" %s", type ? type : "?");
    const json_t *account = json_object_get(change, "account"),
                 *transfer = json_object_get(change, "transfer");
    if (json_is_object(account))
        printf(" %s %s", text_field(account, "id") ? text_field(account, "id") : "?",
               text_field(account, "currency") ? text_field(account, "currency") : "?");
    else if (json_is_object(transfer))
        print_transfer_change(transfer, json_object_get(change, "accounts"));
    if (text_field(change, "submitted_by"))
        printf(" by %s", text_field(change, "submitted_by"));
    putchar('\n');
}

static int malformed_page(const client *server, const char *why)
{
    fflush(stdout);
    fprintf(stderr, "error: the server at %s answered an events page %s; stopping\n",
            server->server, why);
    return CLI_EXIT_ERROR;
}

/* Prints a page's changes and moves `*after` to its next_after. Every seq must be past the
 * last one printed and within the page, so that nothing is ever printed twice. */
static int print_page(const client *server, const json_t *page, uint64_t *after,
                      uint64_t *durable_seq)
{
    const json_t *changes = json_object_get(page, "events"), *change;
    const json_t *next = json_object_get(page, "next_after"),
                 *durable = json_object_get(page, "durable_seq");
    if (!json_is_array(changes) || !json_is_integer(next) || !json_is_integer(durable) ||
        json_integer_value(next) < 0 || json_integer_value(durable) < 0)
        return malformed_page(server, "without events, next_after or durable_seq");
    uint64_t next_after = (uint64_t)json_integer_value(next), last = *after;
    if (next_after < *after)
        return malformed_page(server, "whose next_after goes back");
    /* Changes are durable up to durable_seq, so a page after an older seq must move on. */
    if (next_after == *after && (uint64_t)json_integer_value(durable) > *after)
        return malformed_page(server, "that does not move past its after");
    size_t index;
    json_array_foreach(changes, index, change)
    {
        const json_t *seq = json_object_get(change, "seq");
        if (!json_is_integer(seq) || json_integer_value(seq) <= 0 ||
            (uint64_t)json_integer_value(seq) <= last ||
            (uint64_t)json_integer_value(seq) > next_after)
            return malformed_page(server, "with a seq out of order");
        last = (uint64_t)json_integer_value(seq);
        if (server->json) {
            json_dumpf(change, stdout, JSON_COMPACT);
            putchar('\n');
        } else {
            print_change(change);
        }
    }
    *after = next_after;
    *durable_seq = (uint64_t)json_integer_value(durable);
    return flush_output() ? CLI_EXIT_ERROR : CLI_GO_ON;
}

/* One GET /v1/events after `after`; under --follow it waits on the server for new changes. */
static int request_page(client *server, const cli_parsed *line, uint64_t after, bool follow,
                        response *answer)
{
    char after_text[CLIENT_NUMBER_BYTES];
    snprintf(after_text, sizeof after_text, "%" PRIu64, after);
    url_builder url;
    url_start(&url, server, "/v1/events");
    url_query(&url, "after", after_text);
    url_query(&url, "limit", line->values[OPTION_LIMIT]);
    url_query(&url, "types", line->values[OPTION_TYPES]);
    url_query(&url, "account", line->values[OPTION_ACCOUNT]);
    url_query(&url, "wait_ms", follow ? EVENTS_WAIT_MS : NULL);
    return client_call(server, &url, NULL, NULL, answer);
}

/* Under --follow, a lost connection or a server that is restarting or overloaded (503) is
 * waited out, with a backoff that doubles up to EVENTS_BACKOFF_MS_MAX. */
static bool wait_to_retry(int status, const response *answer, unsigned *backoff_ms)
{
    bool unavailable = status == CLI_GO_ON && answer->status == 503;
    if (status != CLI_EXIT_UNREACHABLE && !unavailable)
        return false;
    *backoff_ms = *backoff_ms ? *backoff_ms * 2 : EVENTS_BACKOFF_MS_FIRST;
    if (*backoff_ms > EVENTS_BACKOFF_MS_MAX)
        *backoff_ms = EVENTS_BACKOFF_MS_MAX;
    fprintf(stderr, "coffer: events: %s; retrying in %.1f s\n",
            unavailable ? "the server is unavailable (503)" : "no answer", *backoff_ms / 1000.0);
    sleep_unless_stopped(*backoff_ms);
    return true;
}

/* A refusal: its code and detail on stderr, exit 1. With --json too, the problem goes to
 * stderr only, so that the JSON lines on stdout are changes and nothing else. */
static int report_refusal(client *server, const response *answer)
{
    bool json = server->json;
    server->json = false;
    /* No printer: this is a refusal, or a 2xx without a JSON page (an error too). */
    int status = client_finish(server, answer, NULL, NULL);
    server->json = json;
    return status;
}

static int events_run(client *server, const cli_parsed *line)
{
    const cli_spec *spec = &events_command.spec;
    uint64_t after = 0, limit = 0, durable_seq = 0, target = 0;
    if (!cli_value_u64(spec, line, OPTION_AFTER, 0, INT64_MAX, &after) ||
        !cli_value_u64(spec, line, OPTION_LIMIT, 1, 1000, &limit))
        return CLI_EXIT_USAGE;
    bool follow = line->values[OPTION_FOLLOW] != NULL;
    if (follow)
        watch_stop_signals(server);
    unsigned backoff_ms = 0;
    for (bool first = true; !stop_requested; first = false) {
        response answer;
        int status = request_page(server, line, after, follow, &answer);
        if (follow && wait_to_retry(status, &answer, &backoff_ms)) {
            response_free(&answer);
            continue;
        }
        if (status == CLI_GO_ON && (!response_is_success(&answer) || !answer.json))
            status = report_refusal(server, &answer);
        else if (status == CLI_GO_ON)
            status = print_page(server, answer.json, &after, &durable_seq);
        response_free(&answer);
        if (status == CLIENT_CALL_STOPPED)
            break;
        if (status != CLI_GO_ON)
            return status;
        backoff_ms = 0;
        /* Without --follow: up to the durable seq of the first answer, so that the command
         * ends even while the ledger keeps changing. */
        if (first)
            target = durable_seq;
        if (!follow && after >= target)
            break;
    }
    return flush_output();
}

static const cli_option events_options[] = {
    {OPTION_AFTER, "--after", "SEQ", "only changes after this seq (default 0: from the start)"},
    {OPTION_LIMIT, "--limit", "N", "changes per request, 1-1000 (default: the server's)"},
    {OPTION_FOLLOW, "--follow", NULL,
     "then wait for new changes and print them as they come, until\nSIGINT or SIGTERM (exit "
     "0); a lost connection is retried"},
    {OPTION_TYPES, "--types", "A,B",
     "only these types (account.created, transfer.posted,\nhold.created, hold.posted, "
     "hold.voided, hold.expired,\ntransfer.rejected); default: all but transfer.rejected"},
    {OPTION_ACCOUNT, "--account", "ID", "only changes of this account"},
};

static const client_command events_command = {
    {.name = "events",
     .synopsis = "[--after SEQ] [--limit N] [--follow] [--types A,B] [--account ID]",
     .description =
         "Prints the server's changes (GET /v1/events) oldest first, one line per change:\n"
         "  #42 2026-12-06T21:52:33.123Z transfer.posted t-17 alice -> bob 500 (alice 1500, "
         "bob 700) by shop\n"
         "with the accounts' balances after it (and available when it differs) and the token "
         "that\nsubmitted it. With --json, each change as the server's JSON, one per line "
         "(the same\nwhether or not the output is a terminal). Without --follow it ends at the "
         "last change\nthat was durable when it started.\n",
     .options = events_options,
     .option_count = sizeof events_options / sizeof *events_options,
     .common = client_common_options,
     .common_count = CLIENT_COMMON_COUNT},
    events_run,
};

int cli_events(int argc, char **argv, const cli_globals *globals)
{
    return client_run(&events_command, argc, argv, globals);
}
