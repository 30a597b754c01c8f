/*
 * cluster.c — what an instance says about its part in the ledger (coffer_cluster_get): its
 * role, the leader it knows, the seq it has applied and whether it is ready. A standalone
 * engine (its own log, or none) is the only instance and always its own writer.
 */
#include <stdatomic.h>
#include <string.h>

#include "coffer.h"
#include "engine/engine.h"

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

int coffer_cluster_get_sized(coffer *db, coffer_cluster_status *out, size_t size_bytes)
{
    if (!db || !out || size_bytes == 0)
        return COFFER_INVALID_ARGUMENT;
    coffer_cluster_status status = {.role = COFFER_ROLE_STANDALONE};
    status.applied_seq = db->dir ? atomic_load(&db->durable_seq) : 0;
    status.ready = !atomic_load(&db->storage_failed);
    memset(out, 0, size_bytes);
    memcpy(out, &status, size_bytes < sizeof status ? size_bytes : sizeof status);
    return COFFER_OK;
}
