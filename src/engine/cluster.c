/*
 * cluster.c — what an instance says about its part in the ledger (coffer_cluster_get): its
 * role, the leader it knows, the seq it has applied and whether it is ready. A standalone
 * engine (its own log, or none) is the only instance and always its own writer; with the log
 * in PostgreSQL the follow thread (follow.c) keeps what it learns from the log here.
 */
#include <stdatomic.h>
#include <string.h>

#include "base/clock.h"
#include "coffer.h"
#include "engine/engine.h"

/* A follower that has not read the log to its end for this long is not ready. */
#define FOLLOWER_READY_NS (2000ull * 1000 * 1000)

const char *coffer_role_name(int role)
{
    switch (role) {
    case COFFER_ROLE_STANDALONE:
        return "standalone";
    case COFFER_ROLE_LEADER:
        return "leader";
    case COFFER_ROLE_FOLLOWER:
        return "follower";
    case COFFER_ROLE_CANDIDATE:
        return "candidate";
    default:
        return 0;
    }
}

/* A log in PostgreSQL: the leader, term and members the follow thread last learned. */
static void cluster_status(coffer *db, coffer_cluster_status *status)
{
    engine_cluster *c = &db->cluster;
    status->role = atomic_load(&db->role);
    pthread_mutex_lock(&c->mutex);
    memcpy(status->leader, c->leader, sizeof status->leader);
    status->term = c->term;
    status->members_count = c->members_count;
    memcpy(status->members, c->members, c->members_count * sizeof c->members[0]);
    uint64_t caught_up_at_ns = c->caught_up_at_ns;
    pthread_mutex_unlock(&c->mutex);
    if (status->role == COFFER_ROLE_LEADER)
        status->ready = !atomic_load(&db->storage_failed);
    else
        status->ready = status->role == COFFER_ROLE_FOLLOWER && caught_up_at_ns != 0 &&
                        !atomic_load(&db->storage_failed) &&
                        clock_monotonic_ns() - caught_up_at_ns < FOLLOWER_READY_NS;
}

int coffer_cluster_get_sized(coffer *db, coffer_cluster_status *out, size_t size_bytes)
{
    if (!db || !out || size_bytes == 0)
        return COFFER_INVALID_ARGUMENT;
    coffer_cluster_status status = {.role = COFFER_ROLE_STANDALONE};
    if (db->dir) { /* the seq and hash of one moment */
        _Static_assert(sizeof status.applied_hash == RECORD_HASH_BYTES, "a record's hash");
        status.applied_seq = engine_tip(db, status.applied_hash);
        status.has_applied_hash = true;
    }
    status.ready = !atomic_load(&db->storage_failed);
    if (db->cluster.on)
        cluster_status(db, &status);
    memset(out, 0, size_bytes);
    memcpy(out, &status, size_bytes < sizeof status ? size_bytes : sizeof status);
    return COFFER_OK;
}
