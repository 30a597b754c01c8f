/*
 * deadline.h — hard deadlines on receiving a request: its headers within a bound of the moment
 * the connection became ready for it (accepted, or the previous answer sent), its body within
 * a bound of its headers. libmicrohttpd's own timeout only closes connections that send
 * nothing, so a client trickling a byte a second could hold a connection for ever; a watcher
 * thread shuts such connections down through a duplicate of their socket.
 */
#ifndef COFFER_SERVER_DEADLINE_H
#define COFFER_SERVER_DEADLINE_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct deadlines deadlines;

/* Starts the watcher, which adds every connection it shuts down to *closed (a metric): NULL
 * when a thread or memory could not be had. */
deadlines *deadlines_start(uint64_t header_ns, uint64_t body_ns, atomic_uint_fast64_t *closed);
/* Stops the watcher; after the daemon has stopped (every connection was closed). */
void deadlines_stop(deadlines *d);

/* MHD_OPTION_NOTIFY_CONNECTION's callback, with the deadlines as its closure. */
void deadlines_notify(void *closure, struct MHD_Connection *connection, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);

/* A request's headers are in: its body is due now. */
void deadlines_headers_received(struct MHD_Connection *connection);
/* Its body is in too: no deadline while it is answered. */
void deadlines_body_received(struct MHD_Connection *connection);
/* Its answer was sent: the next request's headers are due. */
void deadlines_answered(struct MHD_Connection *connection);

#endif
