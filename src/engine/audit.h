/*
 * audit.h — offline checks of a data directory, for `coffer verify DIR` and `coffer dump DIR`.
 * Nothing is modified: the directory may even belong to a running server.
 *
 * verify: (1) the hash chain of every record from the first; (2) a full replay into fresh
 * state; (3) the newest snapshot compared with the replay at the snapshot's seq; (4) what
 * recovery would build (snapshot + log after it) compared with the full replay; (5) every
 * invariant of the replayed state.
 */
#ifndef COFFER_ENGINE_AUDIT_H
#define COFFER_ENGINE_AUDIT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "coffer.h"

typedef struct audit_report {
    bool ok;
    /* The log. */
    bool chain_ok;
    uint64_t records, segments, last_seq, torn_bytes;
    char tip_hash[65]; /* hex: an anchor to compare with an external copy */
    char chain_error[1024];
    /* The snapshot. */
    bool snapshot_found;
    uint64_t snapshot_seq;
    bool snapshot_matches; /* snapshot == replay at its seq */
    bool recovery_matches; /* snapshot + later log == full replay */
    char snapshot_error[1024];
    /* The replayed state. */
    coffer_verify_report invariants;
} audit_report;

typedef struct audit_options {
    const coffer_options *limits; /* capacities for the rebuilt state; NULL: defaults */
    void (*progress)(const char *stage, uint64_t done, uint64_t total, void *context);
    void *progress_context;
} audit_options;

/* Fills *report. COFFER_OK when the audit ran (see report->ok for its verdict), or a code
 * when it could not (e.g. out of memory). */
int audit_verify(const char *dir, const audit_options *options, audit_report *report);

/* Writes every logged event as one JSON object per line. COFFER_OK or STORAGE_FAILED with
 * `error` set. */
int audit_dump(const char *dir, FILE *out, char *error, size_t error_size);

#endif
