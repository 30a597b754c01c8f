/*
 * test_webhooks.c — webhooks without a network: the signature against the Standard Webhooks
 * test vector, one computed apart (Python's hmac) and libsodium's over bodies of every size,
 * secrets, the retry schedule, what a webhook may be, the registry's answers and bound, and its
 * file across a reopen or damage.
 */
#define _GNU_SOURCE
#include "support.h"

#include <ftw.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/webhooks.h"

/* ---- signing ------------------------------------------------------------------------------- */

static void signs_the_standard_webhooks_test_vector(void **state)
{
    (void)state;
    /* The vector every Standard Webhooks library checks (its reference implementations). */
    uint8_t secret[WEBHOOK_SECRET_BYTES_MAX];
    size_t length = 0;
    assert_true(webhook_secret_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret, &length));
    assert_int_equal(length, 24);
    const char *body = "{\"test\": 2432232314}";
    char signature[WEBHOOK_SIGNATURE_MAX];
    assert_true(webhook_sign(secret, length, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body,
                             strlen(body), signature));
    assert_string_equal(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void signs_a_body_of_ours_as_python_does(void **state)
{
    (void)state;
    /* hmac.new(bytes(range(64)), b"evt_17.1796593953." + body, hashlib.sha256), base64. */
    uint8_t secret[64];
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (uint8_t)i;
    const char *body = "{\"type\":\"transfer.posted\",\"timestamp\":\"2026-12-06T21:52:33."
                       "123456789Z\",\"data\":{\"seq\":17}}";
    char signature[WEBHOOK_SIGNATURE_MAX];
    assert_true(
        webhook_sign(secret, sizeof secret, "evt_17", 1796593953, body, strlen(body), signature));
    assert_string_equal(signature, "v1,/oUfaJiex4BBmCBKLy734GCNw+B5ohnu8tmwj5Ojtic=");
    /* One byte more of body: another signature. */
    assert_true(webhook_sign(secret, sizeof secret, "evt_17", 1796593953, body, strlen(body) - 1,
                             signature));
    assert_string_not_equal(signature, "v1,/oUfaJiex4BBmCBKLy734GCNw+B5ohnu8tmwj5Ojtic=");
}

/* Batches' bodies run to megabytes: every length around SHA-256's 64-byte blocks and up to
 * 200 KiB signs as libsodium's HMAC-SHA256 does over the same bytes. */
static void signs_bodies_of_every_size_as_libsodium_does(void **state)
{
    (void)state;
    enum { BODY_MAX = 200 * 1024 };
    char *body = malloc(BODY_MAX);
    assert_non_null(body);
    for (size_t i = 0; i < BODY_MAX; i++)
        body[i] = (char)(' ' + (i * 31 + i / 7) % 90);
    uint8_t secret[32];
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (uint8_t)(255 - i);
    const size_t lengths[] = {0,   1,   45,  46,  47,   63,    64,    65,    109,    110,
                              111, 127, 128, 129, 4096, 65535, 65536, 65537, 123457, BODY_MAX};
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        char signature[WEBHOOK_SIGNATURE_MAX], expected[WEBHOOK_SIGNATURE_MAX];
        assert_true(webhook_sign(secret, sizeof secret, "evt_5-9", 1796593953, body, lengths[k],
                                 signature));
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state hmac;
        crypto_auth_hmacsha256_init(&hmac, secret, sizeof secret);
        crypto_auth_hmacsha256_update(&hmac, (const uint8_t *)"evt_5-9.1796593953.", 19);
        crypto_auth_hmacsha256_update(&hmac, (const uint8_t *)body, lengths[k]);
        crypto_auth_hmacsha256_final(&hmac, mac);
        memcpy(expected, "v1,", 3);
        sodium_bin2base64(expected + 3, sizeof expected - 3, mac, sizeof mac,
                          sodium_base64_VARIANT_ORIGINAL);
        assert_string_equal(signature, expected);
    }
    free(body);
}

static void secrets_are_24_to_64_bytes_of_padded_base64(void **state)
{
    (void)state;
    uint8_t secret[WEBHOOK_SECRET_BYTES_MAX], bytes[65];
    size_t length = 0;
    char text[WEBHOOK_SECRET_TEXT_MAX + 1];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7);
    webhook_secret_format(bytes, 64, text);
    /* Python: "whsec_" + base64.b64encode(bytes(i * 7 % 256 for i in range(64))). */
    assert_string_equal(text, "whsec_AAcOFRwjKjE4P0ZNVFtiaXB3foWMk5qhqK+2vcTL0tng5+71/"
                              "AMKERgfJi00O0JJUFdeZWxzeoGIj5adpKuyuQ==");
    assert_true(webhook_secret_parse(text, secret, &length));
    assert_int_equal(length, 64);
    assert_memory_equal(secret, bytes, 64);
    char longer[WEBHOOK_SECRET_TEXT_MAX + 8];
    webhook_secret_format(bytes, 23, text); /* too short */
    assert_false(webhook_secret_parse(text, secret, &length));
    webhook_secret_format(bytes, 24, text);
    assert_true(webhook_secret_parse(text, secret, &length));
    assert_false(webhook_secret_parse(text + 6, secret, &length)); /* no prefix */
    snprintf(longer, sizeof longer, "%s!", text);                  /* not base64 */
    assert_false(webhook_secret_parse(longer, secret, &length));
    assert_false(webhook_secret_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", secret, &length));
}

/* ---- retries ------------------------------------------------------------------------------- */

static void backoff_doubles_to_its_cap_with_full_jitter(void **state)
{
    (void)state;
    webhooks_options options;
    webhooks_options_init(&options);
    const uint64_t bounds[] = {500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
    for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++)
        assert_int_equal(webhook_backoff_bound_ms(&options, i + 1), bounds[i]);
    assert_int_equal(webhook_backoff_bound_ms(&options, 1000000), 60000);
    /* Uniform over [0, bound]: never above it, and spread (not one value, not all low). */
    uint64_t lowest = UINT64_MAX, highest = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t delay = webhook_backoff_ms(&options, 3);
        assert_true(delay <= 2000);
        lowest = delay < lowest ? delay : lowest;
        highest = delay > highest ? delay : highest;
    }
    assert_true(lowest < 200);
    assert_true(highest > 1800);
}

/* ---- what a webhook may be ----------------------------------------------------------------- */

static int decode_text(const char *text, webhook_config *config, const char **field)
{
    static const char *const allowed[] = {"id",     "url",   "types",         "account",
                                          "secret", "batch", "batch_wait_ms", 0};
    json_t *object = json_loads(text, 0, 0);
    assert_non_null(object);
    const char *detail = 0;
    *field = 0;
    int code = webhook_config_decode(object, allowed, config, field, &detail);
    json_decref(object);
    return code;
}

static void refused(const char *text, const char *expected_field)
{
    webhook_config config;
    const char *field;
    assert_int_equal(decode_text(text, &config, &field), COFFER_INVALID_FIELD);
    assert_string_equal(field, expected_field);
}

static void checks_what_a_webhook_may_be(void **state)
{
    (void)state;
    webhook_config config;
    const char *field;
    assert_int_equal(decode_text("{\"id\": \"shop:orders\", \"url\": \"https://example.com/h\", "
                                 "\"types\": [\"hold.posted\", \"transfer.rejected\"], "
                                 "\"account\": \"shop/1\"}",
                                 &config, &field),
                     COFFER_OK);
    assert_string_equal(config.id, "shop:orders");
    assert_int_equal(config.types, COFFER_CHANGE_BIT(COFFER_CHANGE_HOLD_POSTED) |
                                       COFFER_CHANGE_BIT(COFFER_CHANGE_TRANSFER_REJECTED));
    assert_string_equal(config.account, "shop/1");
    assert_int_equal(config.secret_length, 0);
    assert_int_equal(decode_text("{\"id\": \"a\", \"url\": \"http://h\"}", &config, &field),
                     COFFER_OK);
    assert_int_equal(config.types, COFFER_CHANGE_DEFAULT_TYPES);
    refused("{\"url\": \"http://h\"}", "/id");
    refused("{\"id\": \"a b\", \"url\": \"http://h\"}", "/id");
    refused("{\"id\": \"a\", \"url\": \"ftp://h\"}", "/url");
    refused("{\"id\": \"a\", \"url\": \"http://h x\"}", "/url");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"types\": []}", "/types");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"types\": [\"transfer\"]}", "/types");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"account\": \"\"}", "/account");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"secret\": \"whsec_AAAA\"}", "/secret");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"retries\": 3}", "/retries");
    assert_int_equal(decode_text("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 100, "
                                 "\"batch_wait_ms\": 10000}",
                                 &config, &field),
                     COFFER_OK);
    assert_int_equal(config.batch, 100);
    assert_int_equal(config.batch_wait_ms, 10000);
    assert_int_equal(decode_text("{\"id\": \"a\", \"url\": \"http://h\", \"batch_wait_ms\": 0}",
                                 &config, &field),
                     COFFER_OK);
    assert_int_equal(config.batch_wait_ms, 0);
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 0}", "/batch");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 1001}", "/batch");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch_wait_ms\": 10}", "/batch_wait_ms");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 2, \"batch_wait_ms\": -1}",
            "/batch_wait_ms");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 2, \"batch_wait_ms\": 10001}",
            "/batch_wait_ms");
    refused("{\"id\": \"a\", \"url\": \"http://h\", \"batch\": 2, \"batch_wait_ms\": 1.5}",
            "/batch_wait_ms");
    char text[WEBHOOK_URL_MAX + 64];
    int length = snprintf(text, sizeof text, "{\"id\": \"a\", \"url\": \"http://");
    memset(text + length, 'h', WEBHOOK_URL_MAX - 7);
    snprintf(text + length + WEBHOOK_URL_MAX - 7, 8, "\"}");
    assert_int_equal(decode_text(text, &config, &field), COFFER_OK); /* 2048 bytes */
    memset(text + length, 'h', WEBHOOK_URL_MAX - 6);
    snprintf(text + length + WEBHOOK_URL_MAX - 6, 8, "\"}");
    refused(text, "/url"); /* 2049 */
}

/* ---- the registry and its file ------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
    coffer *db;
    webhooks *hooks;
} fixture;

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk)
{
    (void)info, (void)flag, (void)walk;
    return remove(path);
}

static void fixture_open(fixture *f)
{
    webhooks_options options;
    webhooks_options_init(&options);
    char error[512] = "";
    assert_true(webhooks_open(f->db, f->dir, &options, &f->hooks, error, sizeof error));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/coffer-webhooks-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    coffer_options options;
    coffer_options_init(&options);
    options.fsync_never = true;
    assert_int_equal(coffer_open(f->dir, &options, &f->db), COFFER_OK);
    fixture_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    webhooks_close(f->hooks);
    coffer_close(f->db);
    nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* The answer to `call`, its status checked; its body parsed (NULL for an empty one). */
static json_t *answered(encoded *response, unsigned status)
{
    assert_non_null(response->body);
    assert_int_equal(response->status, status);
    json_t *body = response->length ? json_loads(response->body, 0, 0) : 0;
    free(response->body);
    return body;
}

static json_t *create(fixture *f, const char *text, unsigned status, bool replayed)
{
    encoded response;
    webhooks_create(f->hooks, text, strlen(text), &response);
    assert_int_equal(response.replayed, replayed);
    return answered(&response, status);
}

static void answers_create_replay_conflict_and_delete(void **state)
{
    fixture *f = *state;
    const char *body = "{\"id\": \"w1\", \"url\": \"http://127.0.0.1:9/h\"}";
    json_t *created = create(f, body, 201, false);
    const char *secret = json_string_value(json_object_get(created, "secret"));
    assert_non_null(secret);
    uint8_t bytes[WEBHOOK_SECRET_BYTES_MAX];
    size_t length;
    assert_true(webhook_secret_parse(secret, bytes, &length));
    assert_int_equal(length, WEBHOOK_SECRET_BYTES_GENERATED);
    assert_string_equal(json_string_value(json_object_get(created, "state")), "active");
    json_t *again = create(f, body, 200, true); /* the same: a replay, without the secret */
    assert_null(json_object_get(again, "secret"));
    json_t *other =
        create(f, "{\"id\": \"w1\", \"url\": \"http://127.0.0.1:9/other\"}", 422, false);
    assert_string_equal(json_string_value(json_object_get(other, "code")), "id_reused");
    char with_secret[256];
    snprintf(with_secret, sizeof with_secret,
             "{\"id\": \"w1\", \"url\": \"http://127.0.0.1:9/h\", \"secret\": \"%s\"}", secret);
    json_decref(create(f, with_secret, 200, true));
    encoded response;
    webhooks_delete(f->hooks, "w1", &response);
    assert_null(answered(&response, 204));
    webhooks_delete(f->hooks, "w1", &response);
    json_t *missing = answered(&response, 404);
    assert_string_equal(json_string_value(json_object_get(missing, "code")), "webhook_not_found");
    json_decref(missing);
    json_decref(other);
    json_decref(again);
    json_decref(created);
}

static void holds_at_most_64(void **state)
{
    fixture *f = *state;
    char body[128];
    for (int i = 0; i < WEBHOOKS_MAX; i++) {
        snprintf(body, sizeof body, "{\"id\": \"w%d\", \"url\": \"http://127.0.0.1:9/\"}", i);
        json_decref(create(f, body, 201, false));
    }
    json_t *full =
        create(f, "{\"id\": \"one-more\", \"url\": \"http://127.0.0.1:9/\"}", 503, false);
    assert_string_equal(json_string_value(json_object_get(full, "code")), "capacity_exceeded");
    assert_non_null(strstr(json_string_value(json_object_get(full, "detail")), "64"));
    json_decref(full);
    /* A replay of one that exists is still answered. */
    json_decref(create(f, "{\"id\": \"w7\", \"url\": \"http://127.0.0.1:9/\"}", 200, true));
}

static void file_survives_a_reopen_and_damage_is_refused(void **state)
{
    fixture *f = *state;
    json_t *created = create(f,
                             "{\"id\": \"kept\", \"url\": \"https://example.com/x\", \"types\": "
                             "[\"hold.expired\"], \"account\": \"a1\"}",
                             201, false);
    char secret[WEBHOOK_SECRET_TEXT_MAX + 1];
    snprintf(secret, sizeof secret, "%s", json_string_value(json_object_get(created, "secret")));
    json_decref(created);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", f->dir, WEBHOOKS_FILE);
    struct stat info;
    assert_int_equal(stat(path, &info), 0);
    assert_int_equal(info.st_mode & 0777, 0600); /* it holds the secrets */
    webhooks_close(f->hooks);
    fixture_open(f);
    webhook_status status[2];
    assert_int_equal(webhooks_status_all(f->hooks, status, 2), 1);
    assert_string_equal(status[0].id, "kept");
    assert_string_equal(status[0].account, "a1");
    assert_int_equal(status[0].types, COFFER_CHANGE_BIT(COFFER_CHANGE_HOLD_EXPIRED));
    char replay[256]; /* the secret was kept: the same body with it is a replay */
    snprintf(replay, sizeof replay,
             "{\"id\": \"kept\", \"url\": \"https://example.com/x\", \"types\": "
             "[\"hold.expired\"], \"account\": \"a1\", \"secret\": \"%s\"}",
             secret);
    json_decref(create(f, replay, 200, true));
    webhooks_close(f->hooks);
    f->hooks = 0;
    assert_int_equal(truncate(path, 40), 0); /* cut short, as a torn copy would be */
    webhooks_options options;
    webhooks_options_init(&options);
    char error[512] = "";
    assert_false(webhooks_open(f->db, f->dir, &options, &f->hooks, error, sizeof error));
    assert_null(f->hooks);
    assert_non_null(strstr(error, path));
    assert_non_null(strstr(error, "damaged"));
}

/* The body is {"type", "timestamp", "data"} with the change as the feed writes it: the same
 * JSON as a tree of it, whichever way the change is written. */
static void the_body_is_the_change_in_an_envelope(void **state)
{
    (void)state;
    coffer_change change = {
        .seq = 9,
        .timestamp = 1795564080238899084ULL,
        .type = COFFER_CHANGE_TRANSFER_POSTED,
        .submitted_by = "shop",
        .event = {.op = COFFER_OP_TRANSFER, .id = "t-9", .from = "a", .to = "b", .amount = 3},
        .result = {.code = COFFER_CREATED,
                   .state = COFFER_STATE_POSTED,
                   .seq = 9,
                   .timestamp = 1795564080238899084ULL,
                   .amount = 3,
                   .from = {-3, -3, 2},
                   .to = {3, 3, 2}},
    };
    for (int with_metadata = 0; with_metadata < 2; with_metadata++) {
        change.event.metadata = with_metadata ? "{\"k\":\"v\"}" : 0;
        change.event.metadata_len = with_metadata ? 9 : 0;
        size_t length;
        char *body = webhook_body(&change, &length);
        assert_non_null(body);
        json_t *parsed = json_loadb(body, length, 0, 0);
        assert_non_null(parsed);
        char timestamp[48];
        encode_time(timestamp, sizeof timestamp, change.timestamp);
        json_t *expected = json_pack("{s:s, s:s, s:o}", "type", "transfer.posted", "timestamp",
                                     timestamp, "data", encode_change_json(&change));
        assert_true(json_equal(parsed, expected));
        json_decref(parsed);
        json_decref(expected);
        free(body);
    }
}

/* A batch webhook's body holds each change's own envelope, in order, between its first and last
 * seq; its webhook-id names both, a webhook without batches names the one seq. */
static void a_batch_holds_each_change_in_its_envelope(void **state)
{
    (void)state;
    coffer_change changes[3];
    for (int i = 0; i < 3; i++)
        changes[i] = (coffer_change){
            .seq = 40 + (uint64_t)i * 2, /* a filter may leave gaps */
            .timestamp = 1795564080238899084ULL + (uint64_t)i,
            .type = COFFER_CHANGE_ACCOUNT_CREATED,
            .event = {.op = COFFER_OP_CREATE_ACCOUNT, .id = "acc", .currency = "EUR"},
            .result = {.code = COFFER_CREATED, .seq = 40 + (uint64_t)i * 2},
        };
    for (size_t count = 1; count <= 3; count++) {
        size_t length;
        char *body = webhook_batch_body(changes, count, &length);
        assert_non_null(body);
        json_t *parsed = json_loadb(body, length, 0, 0);
        assert_non_null(parsed);
        json_t *list = json_array();
        for (size_t i = 0; i < count; i++) {
            size_t one_length;
            char *one = webhook_body(&changes[i], &one_length);
            json_array_append_new(list, json_loadb(one, one_length, 0, 0));
            free(one);
        }
        char timestamp[48];
        encode_time(timestamp, sizeof timestamp, changes[count - 1].timestamp);
        json_t *expected = json_pack("{s:s, s:s, s:{s:I, s:I, s:o}}", "type", "batch", "timestamp",
                                     timestamp, "data", "first_seq", (json_int_t)40, "last_seq",
                                     (json_int_t)changes[count - 1].seq, "changes", list);
        assert_true(json_equal(parsed, expected));
        json_decref(parsed);
        json_decref(expected);
        free(body);
    }
    webhook_config config = {.batch = 1};
    char id[48];
    webhook_delivery_id(&config, 40, 40, id);
    assert_string_equal(id, "evt_40");
    config.batch = 100;
    webhook_delivery_id(&config, 40, 44, id);
    assert_string_equal(id, "evt_40-44");
    webhook_delivery_id(&config, 40, 40, id);
    assert_string_equal(id, "evt_40-40");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(signs_the_standard_webhooks_test_vector),
        cmocka_unit_test(the_body_is_the_change_in_an_envelope),
        cmocka_unit_test(a_batch_holds_each_change_in_its_envelope),
        cmocka_unit_test(signs_a_body_of_ours_as_python_does),
        cmocka_unit_test(signs_bodies_of_every_size_as_libsodium_does),
        cmocka_unit_test(secrets_are_24_to_64_bytes_of_padded_base64),
        cmocka_unit_test(backoff_doubles_to_its_cap_with_full_jitter),
        cmocka_unit_test(checks_what_a_webhook_may_be),
        cmocka_unit_test_setup_teardown(answers_create_replay_conflict_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(holds_at_most_64, setup, teardown),
        cmocka_unit_test_setup_teardown(file_survives_a_reopen_and_damage_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
