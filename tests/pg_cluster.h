/*
 * pg_cluster.h — the throwaway PostgreSQL cluster of a test that needs one (test_pg_log,
 * test_pg_engine): scripts/pg-cluster run on the test's cluster directory, and a watchdog that
 * stops the cluster before failing a test that hangs, so no PostgreSQL outlives its test.
 */
#ifndef COFFER_TESTS_PG_CLUSTER_H
#define COFFER_TESTS_PG_CLUSTER_H

#include <signal.h>
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

#endif
