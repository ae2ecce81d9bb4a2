/*
 * The floor of any libpq prober: a fresh connection, `SELECT 1` and PQfinish, in a loop, with
 * nothing else around it. scripts/bench runs it at the daemon's own cadence (a process sleeping
 * between probes pays for waking up and for cold caches; a loop without pauses does not) and
 * without pauses.
 *
 * usage: libpq-floor CONNINFO INTERVAL_MS PROBES
 * Prints one line of JSON: the probes made, failures, and the CPU they took (getrusage, taken
 * just before the first probe and just after the last, so start-up and exit are not counted).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_ms(struct timeval user, struct timeval sys) {
    return (user.tv_sec + sys.tv_sec) * 1e3 + (user.tv_usec + sys.tv_usec) / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CONNINFO INTERVAL_MS PROBES\n", argv[0]);
        return 2;
    }
    const char *conninfo = argv[1];
    long interval_ms = atol(argv[2]);
    long probes = atol(argv[3]);
    long failures = 0;

    struct rusage before, after;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    getrusage(RUSAGE_SELF, &before);
    for (long i = 0; i < probes; i++) {
        PGconn *conn = PQconnectdb(conninfo);
        PGresult *result = NULL;
        if (PQstatus(conn) == CONNECTION_OK) result = PQexec(conn, "SELECT 1");
        if (result == NULL || PQresultStatus(result) != PGRES_TUPLES_OK) failures++;
        PQclear(result);
        PQfinish(conn);
        if (interval_ms > 0 && i + 1 < probes) {
            next.tv_nsec += (interval_ms % 1000) * 1000000L;
            next.tv_sec += interval_ms / 1000 + next.tv_nsec / 1000000000L;
            next.tv_nsec %= 1000000000L;
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
            }
        }
    }
    getrusage(RUSAGE_SELF, &after);
    printf("{\"probes\": %ld, \"failures\": %ld, \"cpu_ms\": %.3f, \"user_ms\": %.3f, \"sys_ms\": %.3f}\n", probes, failures,
           cpu_ms(after.ru_utime, after.ru_stime) - cpu_ms(before.ru_utime, before.ru_stime),
           cpu_ms(after.ru_utime, (struct timeval){0, 0}) - cpu_ms(before.ru_utime, (struct timeval){0, 0}),
           cpu_ms((struct timeval){0, 0}, after.ru_stime) - cpu_ms((struct timeval){0, 0}, before.ru_stime));
    return failures == 0 ? 0 : 1;
}
