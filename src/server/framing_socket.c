/*
 * framing_socket.c — the framing scanner under libmicrohttpd (framing_socket.h): a table of
 * scanned connections by descriptor, the recv() that consults it, and the refusal's answer.
 */
#include "server/framing_socket.h"

#include <dlfcn.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "server/encode.h"
#include "server/framing.h"

/* Descriptors at or above this are not scanned (none is, with the connection limits). */
#define SCANNED_DESCRIPTORS_MAX (1u << 20)
/* Bytes of a refused connection read and dropped before it is closed, so that its close sends
 * no reset that could cut the answer off. */
#define DRAIN_BYTES_MAX (64 * 1024)

typedef struct scanned {
    framing framing;
    bool tls;             /* scanned in gnutls_record_recv(), after decryption */
    uint64_t answered;    /* requests libmicrohttpd has answered */
    bool refusal_pending; /* refused; answered once the requests before it are */
    framing_refusal refusal;
} scanned;

static _Atomic(scanned *) *table;
static size_t table_size;
static atomic_uint_fast64_t refused;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_allocate(void)
{
    struct rlimit limit;
    size_t size = SCANNED_DESCRIPTORS_MAX;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < size)
        size = (size_t)limit.rlim_cur;
    table = calloc(size, sizeof *table);
    table_size = table ? size : 0;
}

bool framing_sockets_start(void)
{
    pthread_once(&table_once, table_allocate);
    return table != NULL;
}

uint64_t framing_sockets_refused(void)
{
    return atomic_load(&refused);
}

static int descriptor_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info ? info->connect_fd : -1;
}

static scanned *scanned_at(int fd)
{
    if (fd < 0 || (size_t)fd >= table_size)
        return 0;
    return atomic_load_explicit(&table[fd], memory_order_acquire);
}

void framing_socket_notify(struct MHD_Connection *connection,
                           enum MHD_ConnectionNotificationCode code, bool tls)
{
    int fd = descriptor_of(connection);
    if (fd < 0 || (size_t)fd >= table_size)
        return;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        scanned *s = calloc(1, sizeof *s);
        if (s) {
            framing_init(&s->framing);
            s->tls = tls;
        }
        /* Without memory the connection goes unscanned: libmicrohttpd and head.c still apply. */
        atomic_store_explicit(&table[fd], s, memory_order_release);
        return;
    }
    free(atomic_exchange(&table[fd], 0));
}

void framing_socket_answered(struct MHD_Connection *connection)
{
    scanned *s = scanned_at(descriptor_of(connection));
    if (s)
        s->answered++;
}

static ssize_t system_recv(int fd, void *buffer, size_t length, int flags)
{
    return syscall(SYS_recvfrom, fd, buffer, length, flags, NULL, NULL);
}

/* The TLS library's own calls, found once: this program's gnutls_record_recv() stands in
 * front of the library's, so the library's is the next one in the lookup order. */
typedef ssize_t (*record_recv_fn)(gnutls_session_t session, void *data, size_t size);
static record_recv_fn library_record_recv;
static pthread_once_t library_once = PTHREAD_ONCE_INIT;

static void library_resolve(void)
{
    library_record_recv = (record_recv_fn)dlsym(RTLD_NEXT, "gnutls_record_recv");
}

/* Writes all of `bytes` on the connection, as plain bytes or as TLS records (best effort: the
 * connection's buffer is empty, since every earlier answer was sent). */
static void send_all(int fd, gnutls_session_t session, const char *bytes, size_t length)
{
    if (session)
        gnutls_record_send(session, bytes, length);
    else
        syscall(SYS_sendto, fd, bytes, length, MSG_NOSIGNAL, NULL, 0);
}

/* Sends the refusal's problem+json answer, drops what the client sent after it (on plain
 * HTTP, so that the close sends no reset that could cut the answer off) and ends the writing
 * side. */
static void answer_refusal(int fd, gnutls_session_t session, const framing_refusal *refusal)
{
    encoded problem;
    encode_problem(&problem, refusal->code, 0, refusal->detail);
    char head[256];
    int head_length = snprintf(head, sizeof head,
                               "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Type: "
                               "application/problem+json\r\nContent-Length: %zu\r\n\r\n",
                               problem.status, MHD_get_reason_phrase_for(problem.status),
                               problem.body ? problem.length : 0);
    if (head_length > 0 && (size_t)head_length < sizeof head) {
        send_all(fd, session, head, (size_t)head_length);
        if (problem.body)
            send_all(fd, session, problem.body, problem.length);
    }
    free(problem.body);
    char sink[4096];
    for (size_t drained = 0; !session && drained < DRAIN_BYTES_MAX;) {
        ssize_t got = system_recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (got <= 0)
            break;
        drained += (size_t)got;
    }
    shutdown(fd, SHUT_WR);
    atomic_fetch_add(&refused, 1);
}

/* A refused connection: answered now when libmicrohttpd owes no earlier answer, and the read
 * reports the end of the stream (0); else the read reports "nothing yet" (false), and the
 * read side is shut so that libmicrohttpd reads again (and is answered) once it is ready for
 * another request. */
static bool refusal_read(int fd, gnutls_session_t session, scanned *s)
{
    if (s->answered < s->framing.requests) {
        shutdown(fd, SHUT_RD);
        return false;
    }
    answer_refusal(fd, session, &s->refusal);
    return true;
}

/* Scans `got` bytes just read; returns how many libmicrohttpd may have (all of them, only the
 * requests before a refused one, or 0 for the end of the stream), or -1 for "nothing yet". */
static ssize_t scan_read(scanned *s, int fd, gnutls_session_t session, const void *bytes,
                         ssize_t got)
{
    if (framing_scan(&s->framing, bytes, (size_t)got, &s->refusal))
        return got;
    s->refusal_pending = true;
    if (s->refusal.request_start > 0) {
        shutdown(fd, SHUT_RD); /* it reads again, and is refused, after these are answered */
        return (ssize_t)s->refusal.request_start;
    }
    return refusal_read(fd, session, s) ? 0 : -1;
}

/* Every recv() of the process: libmicrohttpd's plain-HTTP reads land here, and only its
 * registered connections are scanned (a TLS connection's records pass, and are scanned once
 * decrypted, below). */
ssize_t recv(int fd, void *buffer, size_t length, int flags)
{
    scanned *s = scanned_at(fd);
    if (s && s->tls)
        s = 0;
    if (s && s->refusal_pending) {
        if (refusal_read(fd, 0, s))
            return 0;
        errno = EAGAIN;
        return -1;
    }
    ssize_t got = system_recv(fd, buffer, length, flags);
    if (!s || got <= 0 || (flags & MSG_PEEK))
        return got;
    ssize_t passed = scan_read(s, fd, 0, buffer, got);
    if (passed < 0)
        errno = EAGAIN;
    return passed;
}

/* Every TLS record read of the process: libmicrohttpd's for a registered connection are
 * scanned once decrypted, as plain-HTTP bytes are in recv(). */
ssize_t gnutls_record_recv(gnutls_session_t session, void *data, size_t size)
{
    pthread_once(&library_once, library_resolve);
    if (!library_record_recv)
        return GNUTLS_E_INTERNAL_ERROR;
    int fd = gnutls_transport_get_int(session);
    scanned *s = scanned_at(fd);
    if (s && !s->tls)
        s = 0;
    if (s && s->refusal_pending)
        return refusal_read(fd, session, s) ? 0 : GNUTLS_E_AGAIN;
    ssize_t got = library_record_recv(session, data, size);
    if (!s || got <= 0)
        return got;
    ssize_t passed = scan_read(s, fd, session, data, got);
    return passed < 0 ? GNUTLS_E_AGAIN : passed;
}
