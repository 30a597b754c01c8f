/*
 * pg_cluster.h — the throwaway PostgreSQL cluster of a test that needs one (test_pg_log,
 * test_pg_engine, test_pg_verify): scripts/pg-cluster run on the test's cluster directory, the
 * KEY='value' lines it writes, and a watchdog that stops the cluster before failing a test
 * that hangs (and a handler that stops it when one aborts), so no PostgreSQL outlives its test.
 */
#ifndef COFFER_TESTS_PG_CLUSTER_H
#define COFFER_TESTS_PG_CLUSTER_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Set by the test before the first pg_cluster_run: the script, the cluster's directory, and
 * the test's name for the watchdog's message. */
static const char *pg_cluster_script;
static char pg_cluster_dir[64];
static const char *pg_cluster_test = "test";

/* Runs `scripts/pg-cluster COMMAND DIR [NODE]`; its exit status, or -1. */
static inline int pg_cluster_run(const char *command, const char *node)
{
    pid_t child = fork();
    if (child == 0) {
        execl(pg_cluster_script, pg_cluster_script, command, pg_cluster_dir, node, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A SIGALRM handler: the test took too long; stop the cluster, then fail. */
static inline void pg_cluster_watchdog(int signal_number)
{
    (void)signal_number;
    static const char message[] = ": watchdog: too slow; stopping the cluster\n";
    ssize_t ignored = write(STDERR_FILENO, pg_cluster_test, strlen(pg_cluster_test));
    ignored = write(STDERR_FILENO, message, sizeof message - 1);
    (void)ignored;
    pg_cluster_run("stop", NULL);
    _exit(1);
}

/* A handler for the signals that end a test that crashed (an engine's failed assertion aborts):
 * stop the cluster, then die of the same signal. */
static inline void pg_cluster_crashed(int signal_number)
{
    static const char message[] = ": crashed; stopping the cluster\n";
    ssize_t ignored = write(STDERR_FILENO, pg_cluster_test, strlen(pg_cluster_test));
    ignored = write(STDERR_FILENO, message, sizeof message - 1);
    (void)ignored;
    pg_cluster_run("stop", NULL);
    signal(signal_number, SIG_DFL);
    raise(signal_number);
}

/* Reads KEY='value' from the cluster's cluster.env into `out`; false when it is not there. */
static inline bool pg_cluster_env(const char *key, char *out, size_t size)
{
    char path[128], line[1024];
    snprintf(path, sizeof(path), "%s/cluster.env", pg_cluster_dir);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return false;
    bool found = false;
    size_t key_length = strlen(key);
    while (!found && fgets(line, sizeof(line), file) != NULL) {
        if (strncmp(line, key, key_length) != 0 || strncmp(line + key_length, "='", 2) != 0)
            continue;
        char *value = line + key_length + 2;
        char *end = strrchr(value, '\'');
        if (end == NULL || (size_t)(end - value) >= size)
            break;
        memcpy(out, value, (size_t)(end - value));
        out[end - value] = '\0';
        found = true;
    }
    fclose(file);
    return found;
}

/* Starts `test`'s cluster (scripts/pg-cluster, named by COFFER_PG_CLUSTER) in a new directory
 * under /tmp, under a watchdog of `watchdog_seconds` for the whole program. Exits 77 (ctest's
 * skipped) when PostgreSQL 15 is not installed. False, having stopped what started, when the
 * cluster did not start. */
static inline bool pg_cluster_start(const char *test, unsigned watchdog_seconds)
{
    const char *pg_bin = getenv("PG_BIN") ? getenv("PG_BIN") : "/usr/lib/postgresql/15/bin";
    char initdb[300];
    snprintf(initdb, sizeof(initdb), "%s/initdb", pg_bin);
    if (access(initdb, X_OK) != 0) {
        printf("%s: SKIPPED: PostgreSQL 15 is not installed (%s not found);"
               " scripts/install-deps installs postgresql-15\n",
               test, initdb);
        exit(77);
    }
    pg_cluster_test = test;
    pg_cluster_script = getenv("COFFER_PG_CLUSTER");
    if (pg_cluster_script == NULL) {
        fprintf(stderr, "%s: COFFER_PG_CLUSTER (scripts/pg-cluster) is not set\n", test);
        return false;
    }
    snprintf(pg_cluster_dir, sizeof(pg_cluster_dir), "/tmp/coffer-pg-XXXXXX");
    if (mkdtemp(pg_cluster_dir) == NULL)
        return false;
    signal(SIGALRM, pg_cluster_watchdog);
    signal(SIGABRT, pg_cluster_crashed); /* cmocka catches SIGSEGV and the like itself */
    alarm(watchdog_seconds);
    if (pg_cluster_run("start", NULL) != 0) {
        fprintf(stderr, "%s: the cluster did not start\n", test);
        pg_cluster_run("stop", NULL);
        return false;
    }
    return true;
}

#endif
