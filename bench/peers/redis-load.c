/* redis-load: the Redis side of bench/peers. Keep-alive load on a Redis server over loopback,
 * shaped like `coffer bench --server`: C connections driven by one epoll thread, one request in
 * flight per connection, S seconds, every request one EVALSHA of a Lua script that does the
 * whole operation atomically. Prints one JSON line: requests/s, latency p50/p99/p999 and the
 * replies by value.
 *
 *   redis-load PORT WORKLOAD CONNECTIONS SECONDS ACCOUNTS SEATS SHA SEED
 *
 * WORKLOAD and the script SHA it calls (see transfer.lua, pay.lua, seat.lua beside this file):
 *   uniform  EVALSHA transfer 2 a:<i> a:<j> amount         i != j uniform over ACCOUNTS
 *   hot      EVALSHA transfer 2 hot a:<j> amount
 *   retries  EVALSHA pay 3 p:<key> b:<i> b:<j> amount       a third repeat one of the last
 *                                                           4,096 keys with the same content
 *   seats    EVALSHA seat 2 s:<i> holds <holder> 1000 <i>   i uniform over SEATS, 1 s TTL
 * Replies are integers (1 applied, 0 refused, 10+x a replay of outcome x); errors are counted.
 * Built by bench/peers/run with `cc -O2`; not part of the coffer build. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LATENCY_SLOTS 2000000 /* µs, up to 2 s */
#define RING 4096
#define REPLY_KINDS 32

enum { UNIFORM, HOT, RETRIES, SEATS };

typedef struct {
    int fd;
    char request[512];
    size_t length, sent;
    char reply[512];
    size_t received;
    uint64_t started_ns;
} connection;

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_random(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static int workload, port;
static uint64_t accounts, seats, next_id;
static const char *sha;
static char ring[RING][160]; /* retries: the arguments of earlier fresh payments */
static uint64_t ring_count;
static uint64_t *latency_us, requests, errors, failures, replies[REPLY_KINDS];
static char first_error[200];

/* RESP array of bulk strings. */
static size_t encode(char *out, size_t size, int argc, char **argv)
{
    size_t used = (size_t)snprintf(out, size, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        used +=
            (size_t)snprintf(out + used, size - used, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    return used;
}

static void prepare(connection *c)
{
    char a[32], b[32], k[48], amount[16], holder[32], seat[32];
    char *argv[10];
    int argc = 0;
    uint64_t i = next_random() % accounts, j = next_random() % accounts;
    if (i == j)
        j = (j + 1) % accounts;
    snprintf(amount, sizeof amount, "%d", 1 + (int)(next_random() % 100));
    argv[argc++] = "EVALSHA";
    argv[argc++] = (char *)sha;
    switch (workload) {
    case UNIFORM:
    case HOT:
        if (workload == HOT)
            snprintf(a, sizeof a, "hot");
        else
            snprintf(a, sizeof a, "a:%" PRIu64, i);
        snprintf(b, sizeof b, "a:%" PRIu64, j);
        argv[argc++] = "2", argv[argc++] = a, argv[argc++] = b, argv[argc++] = amount;
        break;
    case RETRIES:
        if (ring_count > 0 && next_random() % 3 == 0) {
            uint64_t back = next_random() % (ring_count < RING ? ring_count : RING);
            const char *saved = ring[(ring_count - 1 - back) % RING];
            sscanf(saved, "%47s %31s %31s %15s", k, a, b, amount);
        } else {
            snprintf(k, sizeof k, "p:%d:%" PRIu64, (int)(getpid()), next_id++);
            snprintf(a, sizeof a, "b:%" PRIu64, i);
            snprintf(b, sizeof b, "b:%" PRIu64, j);
            snprintf(ring[ring_count++ % RING], sizeof ring[0], "%s %s %s %s", k, a, b, amount);
        }
        argv[argc++] = "3", argv[argc++] = k, argv[argc++] = a, argv[argc++] = b;
        argv[argc++] = amount;
        break;
    case SEATS:
        i = next_random() % seats;
        snprintf(seat, sizeof seat, "s:%" PRIu64, i);
        snprintf(holder, sizeof holder, "%" PRIu64, next_id++);
        snprintf(b, sizeof b, "%" PRIu64, i);
        argv[argc++] = "2", argv[argc++] = seat, argv[argc++] = "holds";
        argv[argc++] = holder, argv[argc++] = "1000", argv[argc++] = b;
        break;
    }
    c->length = encode(c->request, sizeof c->request, argc, argv);
    c->sent = c->received = 0;
    c->started_ns = now_ns();
}

static int open_connection(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A complete one-line reply (integer or error) is in c->reply: account for it. */
static void account(connection *c)
{
    uint64_t latency = (now_ns() - c->started_ns) / 1000;
    latency_us[latency < LATENCY_SLOTS ? latency : LATENCY_SLOTS - 1]++;
    requests++;
    if (c->reply[0] == ':') {
        long value = strtol(c->reply + 1, 0, 10);
        replies[value >= 0 && value < REPLY_KINDS ? value : REPLY_KINDS - 1]++;
    } else {
        errors++;
        if (!first_error[0]) {
            char *end = memchr(c->reply, '\r', c->received);
            snprintf(first_error, sizeof first_error, "%.*s",
                     (int)(end ? end - c->reply : (long)c->received), c->reply);
        }
    }
}

/* Advances a connection; false when it broke. */
static int drive(connection *c, int running)
{
    while (c->sent < c->length) {
        ssize_t wrote = write(c->fd, c->request + c->sent, c->length - c->sent);
        if (wrote < 0)
            return errno == EAGAIN;
        c->sent += (size_t)wrote;
    }
    for (;;) {
        ssize_t got = read(c->fd, c->reply + c->received, sizeof c->reply - 1 - c->received);
        if (got < 0)
            return errno == EAGAIN;
        if (got == 0)
            return 0;
        c->received += (size_t)got;
        c->reply[c->received] = 0;
        if (!memmem(c->reply, c->received, "\r\n", 2))
            continue;
        account(c);
        if (!running) {
            c->length = c->sent = 0;
            return 1;
        }
        prepare(c);
        return drive(c, running);
    }
}

static uint64_t percentile(double fraction)
{
    uint64_t target = (uint64_t)((double)requests * fraction), seen = 0;
    for (uint64_t us = 0; us < LATENCY_SLOTS; us++) {
        seen += latency_us[us];
        if (seen > target)
            return us;
    }
    return LATENCY_SLOTS;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: redis-load PORT uniform|hot|retries|seats CONNECTIONS SECONDS "
                        "ACCOUNTS SEATS SHA SEED\n");
        return 2;
    }
    const char *names[] = {"uniform", "hot", "retries", "seats"};
    port = atoi(argv[1]);
    workload = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(argv[2], names[i]) == 0)
            workload = i;
    uint64_t count = strtoull(argv[3], 0, 10), seconds = strtoull(argv[4], 0, 10);
    accounts = strtoull(argv[5], 0, 10);
    seats = strtoull(argv[6], 0, 10);
    sha = argv[7];
    rng ^= strtoull(argv[8], 0, 10) * 0x9E3779B97F4A7C15ULL;
    if (workload < 0 || count < 1 || seconds < 1 || accounts < 2 || seats < 1) {
        fprintf(stderr, "redis-load: bad arguments\n");
        return 2;
    }
    next_id = (uint64_t)time(0) * 1000000ULL; /* fresh keys and holders across runs */
    latency_us = calloc(LATENCY_SLOTS, sizeof *latency_us);
    connection *connections = calloc(count, sizeof *connections);
    int epoll = epoll_create1(0);
    if (!latency_us || !connections || epoll < 0)
        return 1;
    for (uint64_t i = 0; i < count; i++) {
        connection *c = &connections[i];
        c->fd = open_connection();
        if (c->fd < 0) {
            fprintf(stderr, "redis-load: cannot connect to 127.0.0.1:%d\n", port);
            return 1;
        }
        prepare(c);
        struct epoll_event event = {EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
        epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &event);
    }
    uint64_t start = now_ns(), stop = start + seconds * 1000000000ULL;
    uint64_t deadline = stop + 10000000000ULL, open = count;
    struct epoll_event events[256];
    while (open > 0 && now_ns() < deadline) {
        int running = now_ns() < stop;
        int ready = epoll_wait(epoll, events, 256, 100);
        for (int i = 0; i < ready; i++) {
            connection *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            int idle = !running && c->length == 0;
            if (idle || !drive(c, running) || (!running && c->length == 0)) {
                if (!idle && running)
                    failures++;
                close(c->fd);
                c->fd = -1;
                open--;
            }
        }
        if (!running)
            for (uint64_t i = 0; i < count; i++)
                if (connections[i].fd >= 0 && connections[i].length == 0) {
                    close(connections[i].fd);
                    connections[i].fd = -1;
                    open--;
                }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    if (elapsed > (double)seconds)
        elapsed = (double)seconds;
    printf("{\"workload\":\"%s\",\"connections\":%" PRIu64 ",\"seconds\":%.3f,\"requests\":%" PRIu64
           ",\"requests_per_second\":%.0f,\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f},"
           "\"errors\":%" PRIu64 ",\"connection_failures\":%" PRIu64 ",\"first_error\":\"",
           names[workload], count, elapsed, requests, (double)requests / elapsed,
           (double)percentile(0.5) / 1000, (double)percentile(0.99) / 1000,
           (double)percentile(0.999) / 1000, errors, failures);
    for (const char *p = first_error; *p; p++)
        if (*p != '"' && *p != '\\')
            putchar(*p);
    printf("\",\"replies\":{");
    const char *separator = "";
    for (int i = 0; i < REPLY_KINDS; i++)
        if (replies[i]) {
            printf("%s\"%d\":%" PRIu64, separator, i, replies[i]);
            separator = ",";
        }
    printf("}}\n");
    return 0;
}
