/*
 * test_cluster_http.c — how the HTTP API answers a write a follower refused
 * (src/server/cluster_http.c): 307 not_leader naming the leader, 503 no_leader, and the
 * Location built from the leader's URL and the request's path and query, escaped. A standalone
 * engine never refuses, so these answers are only reachable here and with several instances.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "server/cluster_http.h"
#include "support.h"

static json_t *body_of(const encoded *response)
{
    assert_non_null(response->body);
    json_t *body = json_loadb(response->body, response->length, 0, NULL);
    assert_non_null(body);
    return body;
}

static void not_leader_redirects_to_the_leader(void **state)
{
    (void)state;
    encoded response;
    int code = cluster_encode_refusal(&response, COFFER_NOT_LEADER, "http://10.0.0.2:8080");
    assert_int_equal(code, COFFER_NOT_LEADER);
    assert_int_equal(response.status, 307);
    assert_int_equal(response.code, COFFER_NOT_LEADER);
    assert_string_equal(response.content_type, "application/problem+json");
    json_t *body = body_of(&response);
    assert_string_equal(json_string_value(json_object_get(body, "code")), "not_leader");
    assert_string_equal(json_string_value(json_object_get(body, "leader")), "http://10.0.0.2:8080");
    assert_int_equal(json_integer_value(json_object_get(body, "status")), 307);
    assert_non_null(strstr(json_string_value(json_object_get(body, "detail")), "10.0.0.2:8080"));
    json_decref(body);
    free(response.body);
}

static void no_leader_is_a_503(void **state)
{
    (void)state;
    /* none known, and refused as a follower whose leader has gone since: both 503 */
    const int codes[] = {COFFER_NO_LEADER, COFFER_NOT_LEADER};
    for (size_t i = 0; i < 2; i++) {
        encoded response;
        assert_int_equal(cluster_encode_refusal(&response, codes[i], ""), COFFER_NO_LEADER);
        assert_int_equal(response.status, 503);
        json_t *body = body_of(&response);
        assert_string_equal(json_string_value(json_object_get(body, "code")), "no_leader");
        assert_null(json_object_get(body, "leader"));
        json_decref(body);
        free(response.body);
    }
    assert_true(cluster_refuses(COFFER_NOT_LEADER));
    assert_true(cluster_refuses(COFFER_NO_LEADER));
    assert_false(cluster_refuses(COFFER_OK));
    assert_false(cluster_refuses(COFFER_SEQ_NOT_APPLIED));
}

static void location_keeps_path_and_query(void **state)
{
    (void)state;
    cluster_location *location = malloc(sizeof *location);
    assert_non_null(location);
    cluster_location_start(location, "https://leader.example:8443/", "/v1/holds/seat:C1/7/post");
    cluster_location_query(location, "at", "2026-11-24T23:38:00+00:00");
    cluster_location_query(location, "flag", NULL);
    cluster_location_query(location, "account", "a b&c=d%");
    assert_false(location->overflow);
    assert_string_equal(location->text, "https://leader.example:8443/v1/holds/seat:C1/7/post"
                                        "?at=2026-11-24T23:38:00%2B00:00&flag"
                                        "&account=a%20b%26c%3Dd%25");
    /* The path as unescaped: bytes outside ASCII and reserved ones go back escaped. */
    cluster_location_start(location, "http://l:1", "/v1/accounts/caf\xc3\xa9?#");
    assert_string_equal(location->text, "http://l:1/v1/accounts/caf%C3%A9%3F%23");
    free(location);
}

static void location_overflow_is_sticky(void **state)
{
    (void)state;
    cluster_location *location = malloc(sizeof *location);
    char *long_value = malloc(CLUSTER_LOCATION_MAX);
    assert_non_null(location);
    assert_non_null(long_value);
    memset(long_value, ' ', CLUSTER_LOCATION_MAX - 1); /* each space takes three bytes */
    long_value[CLUSTER_LOCATION_MAX - 1] = 0;
    cluster_location_start(location, "http://l:1", "/v1/transfers");
    cluster_location_query(location, "x", long_value);
    assert_true(location->overflow);
    assert_true(location->length < sizeof location->text);
    cluster_location_query(location, "y", "1");
    assert_true(location->overflow);
    free(long_value);
    free(location);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(not_leader_redirects_to_the_leader),
        cmocka_unit_test(no_leader_is_a_503),
        cmocka_unit_test(location_keeps_path_and_query),
        cmocka_unit_test(location_overflow_is_sticky),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
