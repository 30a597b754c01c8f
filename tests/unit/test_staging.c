/*
 * test_staging.c — the index's staged puts sorted by key (src/index/staging.c): bytewise as
 * RocksDB orders keys, a key before the keys it is a prefix of, equal keys in put order (the
 * later put wins in the table). Checked against a comparison sort of the same puts, for keys
 * with long shared prefixes (ids from a counter, as coffer bench makes them), random bytes of
 * every value (0 and 255 included), empty keys and repeats, at sizes around the radix sort's
 * switch to insertion.
 */
#include "index/staging.h"
#include "support.h"

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t next_random(rng *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The reference order, by a plain comparison of whole keys. */
static const index_staging *reference_staging;

static int reference_compare(const void *left, const void *right)
{
    const staged_put *a = left, *b = right;
    size_t shorter = a->key_length < b->key_length ? a->key_length : b->key_length;
    int order = memcmp(staged_key(reference_staging, a), staged_key(reference_staging, b), shorter);
    if (order == 0)
        order = (a->key_length > b->key_length) - (a->key_length < b->key_length);
    if (order == 0)
        order = (a->order > b->order) - (a->order < b->order);
    return order;
}

/* One key of a random family into `key`; its length. */
static size_t make_key(rng *r, uint8_t *key, uint64_t serial)
{
    switch (next_random(r) % 5) {
    case 0: /* a transfer id from a counter: 'T', "t:", sixteen hex digits */
        return (size_t)snprintf((char *)key, 32, "Tt:%016llx", (unsigned long long)serial);
    case 1: { /* a history key: 'H', an account of a few hundred alike, a big-endian seq */
        size_t length =
            (size_t)snprintf((char *)key, 32, "Hu:%016llx", (unsigned long long)(serial % 300));
        for (int i = 7; i >= 0; i--)
            key[length++] = (uint8_t)(serial >> (8 * i));
        return length;
    }
    case 2: { /* random bytes, any value, 0 to 40 of them */
        size_t length = next_random(r) % 41;
        for (size_t i = 0; i < length; i++)
            key[i] = (uint8_t)next_random(r);
        return length;
    }
    case 3: { /* few distinct bytes: many prefixes of one another, and repeats */
        size_t length = next_random(r) % 6;
        for (size_t i = 0; i < length; i++)
            key[i] = (uint8_t)(next_random(r) % 2 ? 0xff : 0x00);
        return length;
    }
    default: /* a repeat of a small set */
        return (size_t)snprintf((char *)key, 32, "R%llu", (unsigned long long)(serial % 7));
    }
}

static void check_sort(size_t count, uint64_t seed)
{
    rng r = {seed};
    index_staging staging = {0};
    uint8_t key[64];
    for (size_t i = 0; i < count; i++) {
        size_t length = make_key(&r, key, next_random(&r) % (count + 1));
        uint8_t value[8];
        memcpy(value, &i, sizeof value); /* the put's number, to tell repeats apart */
        assert_int_equal(staging_put(&staging, key, length, value, sizeof value), 0);
    }
    staged_put *expected = malloc((count ? count : 1) * sizeof *expected);
    assert_non_null(expected);
    if (count)
        memcpy(expected, staging.puts, count * sizeof *expected);
    reference_staging = &staging;
    qsort(expected, count, sizeof *expected, reference_compare);

    staging_sort(&staging);
    for (size_t i = 0; i < count; i++) {
        if (memcmp(&staging.puts[i], &expected[i], sizeof expected[i]) != 0)
            fail_msg("%zu puts, seed %llu: place %zu holds put %u, expected put %u", count,
                     (unsigned long long)seed, i, staging.puts[i].order, expected[i].order);
    }
    free(expected);
    staging_free(&staging);
}

static void test_sorts_as_a_comparison_sort_at_every_size(void **unused)
{
    (void)unused;
    const size_t sizes[] = {0, 1, 2, 3, 31, 32, 33, 64, 257, 1000, 4096, 50000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (uint64_t seed = 1; seed <= 5; seed++)
            check_sort(sizes[s], seed * 7919 + sizes[s]);
}

/* Every put of one key: they stay in put order, whatever their number. */
static void test_equal_keys_stay_in_put_order(void **unused)
{
    (void)unused;
    index_staging staging = {0};
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(
            staging_put(&staging, (const uint8_t *)"Tsame", 5, (const uint8_t *)&i, sizeof i), 0);
    assert_int_equal(staging_put(&staging, (const uint8_t *)"Tsam", 4, (const uint8_t *)"x", 1), 0);
    staging_sort(&staging);
    assert_int_equal(staging.puts[0].order, 1000); /* the prefix first */
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(staging.puts[i + 1].order, i);
    staging_free(&staging);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sorts_as_a_comparison_sort_at_every_size),
        cmocka_unit_test(test_equal_keys_stay_in_put_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
