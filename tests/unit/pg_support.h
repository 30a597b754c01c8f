/*
 * pg_support.h — what the tests of engines on a log in PostgreSQL share (test_pg_engine,
 * test_pg_evict): statements run on the test's primary, the monotonic clock, an engine's cluster
 * status and a bounded wait for a role, and a session that queues for an engine's lease (the
 * log's advisory lock) so that a test can hold it once the leader lets go.
 */
#ifndef COFFER_TESTS_PG_SUPPORT_H
#define COFFER_TESTS_PG_SUPPORT_H

#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "unit/support.h"

/* Runs one statement on the database at `conninfo`; returns whether it succeeded. */
static inline bool pg_sql(const char *conninfo, const char *statement)
{
    PGconn *conn = PQconnectdb(conninfo);
    PGresult *result = PQexec(conn, statement);
    ExecStatusType status = PQresultStatus(result);
    bool ok = status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "%s: %s", statement, PQerrorMessage(conn));
    PQclear(result);
    PQfinish(conn);
    return ok;
}

static inline uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

static inline coffer_cluster_status cluster_of(coffer *db)
{
    coffer_cluster_status status;
    assert_int_equal(coffer_cluster_get(db, &status), COFFER_OK);
    return status;
}

/* Waits, bounded, until `db` has the role; the milliseconds it took, or fails the test. */
static inline uint64_t wait_role(coffer *db, int role, uint64_t bound_ms)
{
    uint64_t start = now_ms();
    while (cluster_of(db).role != role) {
        if (now_ms() - start > bound_ms)
            fail_msg("not %s after %llu ms (role %s)", coffer_role_name(role),
                     (unsigned long long)bound_ms, coffer_role_name(cluster_of(db).role));
        usleep(10 * 1000);
    }
    return now_ms() - start;
}

/* A session on the log at `conninfo` that asks for its lease (the engine's advisory lock) and
 * waits for it: it holds it as soon as the engine that leads lets go (lease_taken). */
static inline PGconn *queue_for_lease(const char *conninfo)
{
    PGconn *conn = PQconnectdb(conninfo);
    assert_int_equal(PQsendQuery(conn, "SELECT pg_advisory_lock(1128680519,"
                                       " hashtext(coalesce(current_schema(), '')))"),
                     1);
    return conn;
}

static inline void lease_taken(PGconn *conn)
{
    PGresult *result = PQgetResult(conn); /* waits for the lock */
    assert_int_equal(PQresultStatus(result), PGRES_TUPLES_OK);
    PQclear(result);
    assert_null(PQgetResult(conn));
}

#endif
