/*
 * test_tokens.c — the tokens file (src/server/tokens.c): parsing and its refusals, round trips
 * through token_format_line, bearer authentication, and what scopes and prefixes allow.
 */
#include <string.h>

#include "server/tokens.h"
#include "support.h"

static const char header[] = "coffer-tokens 1\n";

/* A table of one token named `name` with `scope` and `prefixes` (NULL: every account); its
 * secret goes to `secret`. */
static tokens *one_token(const char *name, int scope, const char *prefixes,
                         char secret[TOKEN_SECRET_LENGTH + 1])
{
    token t = {0};
    snprintf(t.name, sizeof t.name, "%s", name);
    t.scope = (uint8_t)scope;
    t.created_at_s = 1796581731;
    token_secret_new(secret, t.hash);
    for (const char *p = prefixes; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t length = comma ? (size_t)(comma - p) : strlen(p);
        memcpy(t.prefixes[t.prefix_count++], p, length);
        p = comma ? comma + 1 : p + length;
    }
    char text[4096];
    strcpy(text, header);
    assert_true(token_format_line(&t, text + strlen(text), sizeof text - strlen(text)));
    char error[200];
    tokens *table = tokens_parse(text, strlen(text), error, sizeof error);
    assert_non_null(table);
    return table;
}

static void authenticates_only_its_secret(void **state)
{
    (void)state;
    char secret[TOKEN_SECRET_LENGTH + 1], other[TOKEN_SECRET_LENGTH + 1];
    tokens *table = one_token("deploy-bot", TOKEN_SCOPE_WRITE, NULL, secret);
    tokens *unused = one_token("other", TOKEN_SCOPE_READ, NULL, other);
    char header_value[128];
    snprintf(header_value, sizeof header_value, "Bearer %s", secret);
    const token *t = tokens_authenticate(table, header_value);
    assert_non_null(t);
    assert_string_equal(t->name, "deploy-bot");
    assert_int_equal(t->scope, TOKEN_SCOPE_WRITE);
    snprintf(header_value, sizeof header_value, "bearer %s", secret); /* scheme: any case */
    assert_non_null(tokens_authenticate(table, header_value));
    snprintf(header_value, sizeof header_value, "Bearer %s", other);
    assert_null(tokens_authenticate(table, header_value));
    secret[10] ^= 1;
    snprintf(header_value, sizeof header_value, "Bearer %s", secret);
    assert_null(tokens_authenticate(table, header_value));
    secret[10] ^= 1;
    snprintf(header_value, sizeof header_value, "Basic %s", secret);
    assert_null(tokens_authenticate(table, header_value));
    snprintf(header_value, sizeof header_value, "Bearer %s ", secret);
    assert_null(tokens_authenticate(table, header_value));
    assert_null(tokens_authenticate(table, NULL));
    assert_null(tokens_authenticate(NULL, header_value));
    tokens_release(table);
    tokens_release(unused);
}

static void scopes_grow_and_prefixes_limit(void **state)
{
    (void)state;
    char secret[TOKEN_SECRET_LENGTH + 1];
    tokens *table = one_token("shop", TOKEN_SCOPE_WRITE, "shop:,order:", secret);
    const token *t = tokens_at(table, 0);
    assert_true(token_allows_scope(t, TOKEN_SCOPE_READ));
    assert_true(token_allows_scope(t, TOKEN_SCOPE_WRITE));
    assert_false(token_allows_scope(t, TOKEN_SCOPE_ADMIN));
    assert_true(token_allows_account(t, "shop:1"));
    assert_true(token_allows_account(t, "order:77"));
    assert_true(token_allows_account(t, "shop:"));
    assert_false(token_allows_account(t, "shop"));
    assert_false(token_allows_account(t, "user:1"));
    tokens_release(table);
    table = one_token("all", TOKEN_SCOPE_READ, NULL, secret);
    assert_true(token_allows_account(tokens_at(table, 0), "anything"));
    assert_false(token_allows_scope(tokens_at(table, 0), TOKEN_SCOPE_WRITE));
    tokens_release(table);
}

static void format_and_parse_round_trip(void **state)
{
    (void)state;
    char secret[TOKEN_SECRET_LENGTH + 1];
    tokens *table = one_token("a.b:c@d-e_f", TOKEN_SCOPE_ADMIN, "x/y,z", secret);
    const token *t = tokens_at(table, 0);
    assert_string_equal(t->name, "a.b:c@d-e_f");
    assert_int_equal(t->prefix_count, 2);
    assert_string_equal(t->prefixes[0], "x/y");
    assert_string_equal(t->prefixes[1], "z");
    assert_int_equal(t->created_at_s, 1796581731);
    assert_int_equal(strlen(secret), TOKEN_SECRET_LENGTH);
    assert_memory_equal(secret, TOKEN_SECRET_PREFIX, strlen(TOKEN_SECRET_PREFIX));
    tokens_release(table);
}

static void refuses_malformed_files(void **state)
{
    (void)state;
    static const char hash[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    static const char other[] = "ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char bad[][300] = {
        "coffer-tokens 2\n",
        "not a tokens file\n",
        "coffer-tokens 1\nname read * 1\n",
        "coffer-tokens 1\nname superuser * 1 %s\n",
        "coffer-tokens 1\nna/me read * 1 %s\n",
        "coffer-tokens 1\nname read a,,b 1 %s\n",
        "coffer-tokens 1\nname read * -1 %s\n",
        "coffer-tokens 1\nname read * 1 %.63s\n",
        "coffer-tokens 1\nname read * 1 %s extra\n",
        "coffer-tokens 1\nname  read * 1 %s\n",
        "coffer-tokens 1\nname read * 1 %s\nname write * 1 " /* two of one name */,
        "coffer-tokens 1\nname read * 1 %s\nother write * 1 " /* two of one hash */,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[600];
        snprintf(text, sizeof text, bad[i], hash);
        if (i == 10)
            strcat(text, other);
        if (i == 11)
            strcat(text, hash);
        char error[200] = "";
        tokens *table = tokens_parse(text, strlen(text), error, sizeof error);
        if (table)
            fail_msg("accepted case %zu: %s", i, text);
        assert_true(strlen(error) > 0);
    }
    char text[600];
    snprintf(text, sizeof text, "coffer-tokens 1\n# a comment\n\nname read * 1 %s\n", hash);
    char error[200];
    tokens *table = tokens_parse(text, strlen(text), error, sizeof error);
    assert_non_null(table);
    assert_int_equal(tokens_count(table), 1);
    tokens_release(table);
    table = tokens_parse("", 0, error, sizeof error);
    assert_non_null(table);
    assert_int_equal(tokens_count(table), 0);
    tokens_release(table);
}

static void scope_names(void **state)
{
    (void)state;
    assert_int_equal(token_scope_parse("read"), TOKEN_SCOPE_READ);
    assert_int_equal(token_scope_parse("write"), TOKEN_SCOPE_WRITE);
    assert_int_equal(token_scope_parse("admin"), TOKEN_SCOPE_ADMIN);
    assert_int_equal(token_scope_parse("root"), 0);
    assert_int_equal(token_scope_parse(NULL), 0);
    assert_true(token_name_valid("ci-bot"));
    assert_false(token_name_valid(""));
    assert_false(token_name_valid("a b"));
    assert_true(token_prefix_valid("seat:C1/"));
    assert_false(token_prefix_valid("seat C1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(authenticates_only_its_secret),
        cmocka_unit_test(scopes_grow_and_prefixes_limit),
        cmocka_unit_test(format_and_parse_round_trip),
        cmocka_unit_test(refuses_malformed_files),
        cmocka_unit_test(scope_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
