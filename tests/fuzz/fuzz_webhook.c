/*
 * fuzz_webhook.c — libFuzzer target for the webhook registration decoder (src/server/webhooks.c):
 * any bytes as the body of POST /v1/webhooks, and as a secret. A body that decodes is a webhook
 * the delivery can use: a valid id, an http(s) URL within its bound, known types and at least
 * one, a batch of 1 to 1,000, a wait only with batches and within its bound, and a secret of 24
 * to 64 bytes when one was given. A secret that parses formats back to text that parses to the
 * same bytes.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coffer.h"
#include "server/webhooks.h"

static void check_config(const webhook_config *config)
{
    size_t id_length = strnlen(config->id, sizeof config->id);
    size_t url_length = strnlen(config->url, sizeof config->url);
    uint32_t known = 0;
    for (int type = 1; type <= COFFER_CHANGE_TRANSFER_REJECTED; type++)
        known |= COFFER_CHANGE_BIT(type);
    if (id_length == 0 || id_length > COFFER_ACCOUNT_ID_MAX || url_length > WEBHOOK_URL_MAX)
        abort();
    static const char id_bytes[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/-";
    if (strspn(config->id, id_bytes) != id_length)
        abort(); /* an id of other bytes */
    if (config->account[0] && strspn(config->account, id_bytes) != strlen(config->account))
        abort();
    if (strncmp(config->url, "http://", 7) != 0 && strncmp(config->url, "https://", 8) != 0)
        abort();
    if (config->types == 0 || (config->types & ~known) != 0)
        abort();
    if (config->batch < 1 || config->batch > WEBHOOK_BATCH_MAX)
        abort();
    if (config->batch_wait_ms > WEBHOOK_BATCH_WAIT_MS_MAX ||
        (config->batch_wait_ms > 0 && config->batch == 1))
        abort();
    if (config->secret_length != 0 && (config->secret_length < WEBHOOK_SECRET_BYTES_MIN ||
                                       config->secret_length > WEBHOOK_SECRET_BYTES_MAX))
        abort();
}

static void check_secret(const char *text)
{
    uint8_t secret[WEBHOOK_SECRET_BYTES_MAX], again[WEBHOOK_SECRET_BYTES_MAX];
    size_t length = 0, again_length = 0;
    if (!webhook_secret_parse(text, secret, &length))
        return;
    if (length < WEBHOOK_SECRET_BYTES_MIN || length > WEBHOOK_SECRET_BYTES_MAX)
        abort();
    char formatted[WEBHOOK_SECRET_TEXT_MAX + 1];
    webhook_secret_format(secret, length, formatted);
    if (!webhook_secret_parse(formatted, again, &again_length) || again_length != length ||
        memcmp(secret, again, length) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = {"id",    "url",   "types",         "account", "secret",
                                          "after", "batch", "batch_wait_ms", 0};
    json_t *object = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, 0);
    if (json_is_object(object)) {
        webhook_config config;
        const char *field = 0, *detail = 0;
        if (webhook_config_decode(object, allowed, &config, &field, &detail) == COFFER_OK)
            check_config(&config);
        else if (!field || field[0] != '/' || !detail)
            abort(); /* a refusal names its field and says why */
    }
    json_decref(object);
    char *text = malloc(size + 1);
    if (text) {
        memcpy(text, data, size);
        text[size] = 0;
        check_secret(text);
        free(text);
    }
    return 0;
}

#ifdef FUZZ_DRIVER
#include "fuzz/driver.h"

int main(int argc, char **argv)
{
    return fuzz_driver_main("fuzz_webhook", argc, argv);
}
#endif
