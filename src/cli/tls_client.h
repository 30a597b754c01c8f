/*
 * tls_client.h — the byte stream under `coffer bench --server`: a TCP socket, plain or through
 * GnuTLS, read and written the same way whether the socket blocks (setup, the final check) or
 * not (the load, driven by epoll).
 */
#ifndef COFFER_CLI_TLS_CLIENT_H
#define COFFER_CLI_TLS_CLIENT_H

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What every TLS connection of a run shares: the trusted CAs and the name the server's
 * certificate must carry. */
typedef struct tls_client {
    gnutls_certificate_credentials_t credentials;
    char server_name[256]; /* a DNS name or an IP address, without brackets */
    bool name_is_address;  /* an IP address is checked but not sent as SNI */
} tls_client;

/* Trusts the CAs in `cacert` (a PEM file; NULL: the system's) for `server_name`. False with
 * the reason in `error`. */
bool tls_client_open(tls_client *tls, const char *cacert, const char *server_name, char *error,
                     size_t error_size);
void tls_client_close(tls_client *tls);

typedef struct stream {
    int fd;
    gnutls_session_t session; /* NULL: plain TCP */
    bool handshake_done;
    int tls_error;    /* the GnuTLS error that ended it; 0: none */
    int system_error; /* the errno that ended a plain stream; 0: none */
} stream;

/* Returns of stream_handshake, stream_read and stream_write besides byte counts. */
#define STREAM_AGAIN (-1)  /* the socket would block: wait for epoll (or a blocking timeout) */
#define STREAM_FAILED (-2) /* the connection is broken; stream_error() says why */

/* Wraps a connected (or connecting) socket; plain when tls is NULL. False when GnuTLS cannot
 * start a session (the fd is left open). */
bool stream_open(stream *s, int fd, const tls_client *tls);
/* 1 once the TLS handshake is done (at once for plain TCP), else STREAM_AGAIN or
 * STREAM_FAILED. Call it until 1 before reading or writing. */
int stream_handshake(stream *s);
/* Bytes moved (> 0), 0 for the peer's end of stream (reads only), STREAM_AGAIN or
 * STREAM_FAILED. A write that said STREAM_AGAIN is repeated with the same bytes. */
ssize_t stream_read(stream *s, void *buffer, size_t size);
ssize_t stream_write(stream *s, const void *buffer, size_t size);
/* Why the stream broke, for a message: the certificate check's reason, GnuTLS's, or errno's. */
const char *stream_error(const stream *s, char *out, size_t size);
bool stream_error_is_certificate(const stream *s);
void stream_close(stream *s);

#endif
