/*
 * test_filter.c — the index's id filter (src/index/filter.c): every id added is "maybe" (no
 * false negative over millions of ids, across slices), ids never added are "maybe" at a
 * measured rate under a bound, and a reader on another thread sees every id published to it
 * while the adder goes on.
 */
#include "unit/support.h"

#include <pthread.h>
#include <stdatomic.h>

#include "index/filter.h"
#include "store/store.h"

/* Small slices, so that millions of ids span several. */
#define SLICE_IDS (1u << 20)

/* The engine's hash of the id "t-<n>" (added ids) or "u-<n>" (ids never added). */
static uint64_t id_hash(char kind, uint64_t n)
{
    char id[32];
    int length = snprintf(id, sizeof id, "%c-%llu", kind, (unsigned long long)n);
    return store_hash(id, (size_t)length);
}

/* The share of `probes` ids never added that the filter calls "maybe". */
static double false_positive_rate(const id_filter *filter, uint64_t probes)
{
    uint64_t maybe = 0;
    for (uint64_t i = 0; i < probes; i++)
        maybe += filter_maybe(filter, id_hash('u', i));
    return (double)maybe / (double)probes;
}

static void filter_has_no_false_negatives(void **state)
{
    (void)state;
    id_filter filter;
    filter_init(&filter, SLICE_IDS);
    assert_false(filter_maybe(&filter, id_hash('t', 0))); /* empty: nothing is maybe */
    assert_int_equal(filter_bytes(&filter), 0);

    /* One full slice: the rate of one slice, near a Bloom filter's ~1% at 10 bits per id. */
    for (uint64_t i = 0; i < SLICE_IDS; i++)
        assert_int_equal(filter_add(&filter, id_hash('t', i)), COFFER_OK);
    double one_slice = false_positive_rate(&filter, 1000000);
    print_message("false positives, 1 full slice: %.3f%%\n", 100 * one_slice);
    assert_true(one_slice > 0 && one_slice < 0.015);
    uint64_t slice_bytes = filter_bytes(&filter);
    assert_true(slice_bytes >= SLICE_IDS * FILTER_BITS_PER_ID / 8 &&
                slice_bytes < SLICE_IDS * FILTER_BITS_PER_ID / 8 + 64);

    /* Four slices and a bit: every id added is still maybe; each full slice adds its rate. */
    uint64_t total = 4 * SLICE_IDS + 12345;
    for (uint64_t i = SLICE_IDS; i < total; i++)
        assert_int_equal(filter_add(&filter, id_hash('t', i)), COFFER_OK);
    for (uint64_t i = 0; i < total; i++)
        if (!filter_maybe(&filter, id_hash('t', i)))
            fail_msg("id t-%llu was added but the filter says never", (unsigned long long)i);
    double five_slices = false_positive_rate(&filter, 1000000);
    print_message("false positives, 4 full slices and 1 started: %.3f%%\n", 100 * five_slices);
    assert_true(five_slices < 4 * 0.015 + 0.001);
    assert_int_equal(filter_ids(&filter), total);
    assert_int_equal(filter_bytes(&filter), 5 * slice_bytes);
    filter_free(&filter);
}

/* The adder publishes how many ids it has added (release); the reader asks only about those. */
typedef struct race {
    id_filter filter;
    atomic_uint_fast64_t published;
    atomic_bool done;
    uint64_t total, checked, misses;
} race;

static void *race_reader(void *argument)
{
    race *r = argument;
    uint64_t probe = 0;
    while (!atomic_load(&r->done)) {
        uint64_t published = atomic_load_explicit(&r->published, memory_order_acquire);
        for (int i = 0; i < 64 && published > 0; i++) {
            /* Mostly the newest ids, where a missed publication would show. */
            uint64_t n = i % 2 ? published - 1 - (probe % (published < 1000 ? published : 1000))
                               : probe % published;
            r->misses += !filter_maybe(&r->filter, id_hash('t', n));
            r->checked++;
            probe = probe * 6364136223846793005ULL + 1442695040888963407ULL;
        }
    }
    return 0;
}

static void filter_reader_sees_published_ids(void **state)
{
    (void)state;
    race *r = calloc(1, sizeof *r);
    assert_non_null(r);
    filter_init(&r->filter, 1u << 16); /* slices added while the reader reads */
    r->total = 1u << 20;
    pthread_t reader;
    assert_int_equal(pthread_create(&reader, 0, race_reader, r), 0);
    for (uint64_t i = 0; i < r->total; i++) {
        assert_int_equal(filter_add(&r->filter, id_hash('t', i)), COFFER_OK);
        if (i % 256 == 255 || i + 1 == r->total)
            atomic_store_explicit(&r->published, i + 1, memory_order_release);
    }
    atomic_store(&r->done, true);
    assert_int_equal(pthread_join(reader, 0), 0);
    print_message("reader checked %llu ids while the adder added\n",
                  (unsigned long long)r->checked);
    assert_true(r->checked > 0);
    assert_int_equal(r->misses, 0);
    filter_free(&r->filter);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(filter_has_no_false_negatives),
        cmocka_unit_test(filter_reader_sees_published_ids),
    };
    return cmocka_run_group_tests(tests, 0, 0);
}
