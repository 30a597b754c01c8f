/*
 * framing_socket.h — the framing scanner (framing.h) placed under libmicrohttpd: this program
 * defines recv() and gnutls_record_recv(), which the dynamic linker binds libmicrohttpd's calls
 * to ahead of the C library's and GnuTLS's, so every byte read from a registered connection
 * (plain, or decrypted from TLS records) is scanned before libmicrohttpd parses it. A refused
 * request is answered here, in problem+json, once every earlier request on the connection has
 * been answered, and libmicrohttpd then reads the end of the stream and closes the connection.
 * Connections not registered (clients, libpq) pass through untouched.
 */
#ifndef COFFER_SERVER_FRAMING_SOCKET_H
#define COFFER_SERVER_FRAMING_SOCKET_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Makes room for every descriptor the process may open; false when there is no memory (the
 * server must not start unchecked). Idempotent and shared by every server of the process. */
bool framing_sockets_start(void);

/* Starts scanning a connection (MHD_CONNECTION_NOTIFY_STARTED) or stops (..._CLOSED); `tls`:
 * its bytes are scanned as gnutls_record_recv() returns them, decrypted. */
void framing_socket_notify(struct MHD_Connection *connection,
                           enum MHD_ConnectionNotificationCode code, bool tls);
/* A request on `connection` was answered (MHD_OPTION_NOTIFY_COMPLETED). */
void framing_socket_answered(struct MHD_Connection *connection);

/* Requests refused by the scanner since the process started (a metric). */
uint64_t framing_sockets_refused(void);

#endif
