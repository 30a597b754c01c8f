/*
 * test_codes.c — the one table of result codes (COFFER_CODE_MAP): unique values, names,
 * messages, HTTP statuses by family (docs/api.md, Codes), and the lookups on unknown values.
 */
#include <limits.h>

#include "support.h"

typedef struct code_row {
    int code;
    const char *name;
    int http_status;
    const char *message;
} code_row;

#define CODE_ROW(NAME, name, value, http, message) {COFFER_##NAME, #name, http, message},
static const code_row code_rows[] = {COFFER_CODE_MAP(CODE_ROW)};
#undef CODE_ROW
#define CODE_ROW_COUNT (sizeof(code_rows) / sizeof(code_rows[0]))

/* The HTTP status of each code's family, written out independently of the table. */
typedef struct expected_status {
    const char *name;
    int http_status;
} expected_status;

static const expected_status family_statuses[] = {
    {"ok", 200},
    {"created", 201},
    {"exists", 200},
    {"invalid_json", 400},
    {"invalid_field", 400},
    {"batch_too_large", 400},
    {"body_too_large", 413},
    {"invalid_argument", 400},
    {"route_not_found", 404},
    {"method_not_allowed", 405},
    {"uri_too_long", 414},
    {"headers_too_large", 431},
    {"account_not_found", 422},
    {"hold_not_found", 422},
    {"currency_mismatch", 422},
    {"same_account", 422},
    {"transfer_not_found", 404},
    {"webhook_not_found", 404},
    {"id_reused", 422},
    {"request_in_progress", 409},
    {"insufficient_balance", 409},
    {"exceeds_max_balance", 409},
    {"version_mismatch", 409},
    {"hold_expired", 409},
    {"hold_already_posted", 409},
    {"hold_already_voided", 409},
    {"hold_amount_exceeded", 409},
    {"batch_failed", 409},
    {"overflow", 409},
    {"overloaded", 503},
    {"storage_failed", 503},
    {"shutting_down", 503},
    {"capacity_exceeded", 503},
    {"out_of_memory", 503},
    {"internal", 500},
    {"unauthorized", 401},
    {"forbidden", 403},
    {"not_supported", 501},
    {"not_leader", 307},
    {"no_leader", 503},
    {"seq_not_applied", 503},
};
#define FAMILY_STATUS_COUNT (sizeof(family_statuses) / sizeof(family_statuses[0]))

static const code_row *row_named(const char *name)
{
    for (size_t i = 0; i < CODE_ROW_COUNT; i++) {
        if (strcmp(code_rows[i].name, name) == 0)
            return &code_rows[i];
    }
    return NULL;
}

static void test_values_are_unique_and_below_limit(void **state)
{
    (void)state;
    int largest = 0;
    for (size_t i = 0; i < CODE_ROW_COUNT; i++) {
        assert_in_range(code_rows[i].code, 0, COFFER_CODE_LIMIT - 1);
        if (code_rows[i].code > largest)
            largest = code_rows[i].code;
        for (size_t j = i + 1; j < CODE_ROW_COUNT; j++) {
            assert_int_not_equal(code_rows[i].code, code_rows[j].code);
            assert_string_not_equal(code_rows[i].name, code_rows[j].name);
        }
    }
    assert_int_equal(largest + 1, COFFER_CODE_LIMIT);
    assert_int_equal(COFFER_OK, 0);
}

static void test_every_code_has_name_and_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < CODE_ROW_COUNT; i++) {
        const code_row *row = &code_rows[i];
        assert_field(coffer_code_name(row->code), row->name);
        assert_non_null(coffer_strerror(row->code));
        assert_string_equal(coffer_strerror(row->code), row->message);
        assert_true(strlen(row->message) > 0);
        assert_string_not_equal(row->message, "unknown code");
        assert_int_equal(coffer_code_http_status(row->code), row->http_status);
        for (const char *c = row->name; *c != '\0'; c++) {
            assert_true((*c >= 'a' && *c <= 'z') || *c == '_');
        }
    }
}

/* Every code listed above exists, with the status of its family. */
static void test_statuses_follow_families(void **state)
{
    (void)state;
    for (size_t i = 0; i < FAMILY_STATUS_COUNT; i++) {
        const code_row *row = row_named(family_statuses[i].name);
        if (row == NULL)
            fail_msg("code %s is missing from the table", family_statuses[i].name);
        assert_int_equal(row->http_status, family_statuses[i].http_status);
        assert_int_equal(coffer_code_http_status(row->code), family_statuses[i].http_status);
    }
    /* And the table holds no code that is not placed in a family above. */
    assert_int_equal(CODE_ROW_COUNT, FAMILY_STATUS_COUNT);
}

static void test_unknown_values(void **state)
{
    (void)state;
    const int unknown[] = {-1, 3, 8, 9, 19, 26, 32, 49, COFFER_CODE_LIMIT, 1000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_null(coffer_code_name(unknown[i]));
        assert_non_null(coffer_strerror(unknown[i]));
        assert_string_equal(coffer_strerror(unknown[i]), "unknown code");
        assert_int_equal(coffer_code_http_status(unknown[i]), 500);
        assert_false(coffer_code_is_success(unknown[i]));
    }
}

/* Only created and exists mean an event applied (or replays an applied one). COFFER_OK is
 * the call-level success and never an event's code, so it is left out on purpose. */
static void test_is_success(void **state)
{
    (void)state;
    assert_true(coffer_code_is_success(COFFER_CREATED));
    assert_true(coffer_code_is_success(COFFER_EXISTS));
    for (size_t i = 0; i < CODE_ROW_COUNT; i++) {
        int code = code_rows[i].code;
        if (code == COFFER_OK || code == COFFER_CREATED || code == COFFER_EXISTS)
            continue;
        if (coffer_code_is_success(code))
            fail_msg("%s counts as success", code_rows[i].name);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_are_unique_and_below_limit),
        cmocka_unit_test(test_every_code_has_name_and_message),
        cmocka_unit_test(test_statuses_follow_families),
        cmocka_unit_test(test_unknown_values),
        cmocka_unit_test(test_is_success),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
