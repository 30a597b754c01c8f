/*
 * tls_client.c — plain or TLS byte streams for the load generator (tls_client.h). TLS goes
 * through GnuTLS with its own socket I/O; the certificate is checked during the handshake
 * against the trusted CAs and the URL's host.
 */
#include "cli/tls_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool tls_client_open(tls_client *tls, const char *cacert, const char *server_name, char *error,
                     size_t error_size)
{
    *tls = (tls_client){0};
    snprintf(tls->server_name, sizeof tls->server_name, "%s", server_name);
    unsigned char address[16];
    tls->name_is_address = inet_pton(AF_INET, server_name, address) == 1 ||
                           inet_pton(AF_INET6, server_name, address) == 1;
    int status = gnutls_certificate_allocate_credentials(&tls->credentials);
    if (status < 0) {
        snprintf(error, error_size, "cannot start GnuTLS: %s", gnutls_strerror(status));
        return false;
    }
    status = cacert ? gnutls_certificate_set_x509_trust_file(tls->credentials, cacert,
                                                             GNUTLS_X509_FMT_PEM)
                    : gnutls_certificate_set_x509_system_trust(tls->credentials);
    if (status > 0)
        return true;
    if (cacert)
        snprintf(error, error_size, "--cacert %s: %s", cacert,
                 status == 0 ? "holds no PEM certificate" : gnutls_strerror(status));
    else
        snprintf(error, error_size, "cannot read the system's CA certificates: %s",
                 status == 0 ? "there are none" : gnutls_strerror(status));
    tls_client_close(tls);
    return false;
}

void tls_client_close(tls_client *tls)
{
    if (tls->credentials)
        gnutls_certificate_free_credentials(tls->credentials);
    tls->credentials = NULL;
}

bool stream_open(stream *s, int fd, const tls_client *tls)
{
    *s = (stream){.fd = fd};
    if (!tls)
        return true;
    gnutls_session_t session;
    if (gnutls_init(&session, GNUTLS_CLIENT) < 0)
        return false;
    bool ok =
        gnutls_set_default_priority(session) >= 0 &&
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, tls->credentials) >= 0 &&
        (tls->name_is_address || gnutls_server_name_set(session, GNUTLS_NAME_DNS, tls->server_name,
                                                        strlen(tls->server_name)) >= 0);
    if (!ok) {
        gnutls_deinit(session);
        return false;
    }
    /* The handshake fails unless the chain leads to a trusted CA and names this host. */
    gnutls_session_set_verify_cert(session, tls->server_name, 0);
    gnutls_transport_set_int(session, fd);
    s->session = session;
    return true;
}

/* A GnuTLS return other than a byte count (not GNUTLS_E_INTERRUPTED: the callers retry it). */
static int tls_outcome(stream *s, int status)
{
    if (status == GNUTLS_E_AGAIN)
        return STREAM_AGAIN;
    s->tls_error = status; /* a warning alert too: this client takes no renegotiation */
    return STREAM_FAILED;
}

/* A failed read or write on a plain socket (not EINTR: the callers retry it). */
static int system_outcome(stream *s)
{
    if (errno == EAGAIN)
        return STREAM_AGAIN;
    s->system_error = errno;
    return STREAM_FAILED;
}

int stream_handshake(stream *s)
{
    if (!s->session || s->handshake_done)
        return 1;
    int status;
    do
        status = gnutls_handshake(s->session);
    while (status == GNUTLS_E_INTERRUPTED);
    if (status == GNUTLS_E_SUCCESS) {
        s->handshake_done = true;
        return 1;
    }
    return tls_outcome(s, status);
}

ssize_t stream_read(stream *s, void *buffer, size_t size)
{
    ssize_t got;
    if (!s->session) {
        do
            got = read(s->fd, buffer, size);
        while (got < 0 && errno == EINTR);
        return got >= 0 ? got : system_outcome(s);
    }
    do
        got = gnutls_record_recv(s->session, buffer, size);
    while (got == GNUTLS_E_INTERRUPTED);
    if (got == GNUTLS_E_PREMATURE_TERMINATION)
        return 0; /* closed without close_notify: as the end of a plain stream */
    return got >= 0 ? got : tls_outcome(s, (int)got);
}

ssize_t stream_write(stream *s, const void *buffer, size_t size)
{
    ssize_t wrote;
    if (!s->session) {
        do
            wrote = write(s->fd, buffer, size);
        while (wrote < 0 && errno == EINTR);
        return wrote >= 0 ? wrote : system_outcome(s);
    }
    do
        wrote = gnutls_record_send(s->session, buffer, size);
    while (wrote == GNUTLS_E_INTERRUPTED);
    return wrote >= 0 ? wrote : tls_outcome(s, (int)wrote);
}

bool stream_error_is_certificate(const stream *s)
{
    return s->tls_error == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR ||
           s->tls_error == GNUTLS_E_CERTIFICATE_ERROR;
}

const char *stream_error(const stream *s, char *out, size_t size)
{
    gnutls_datum_t reason = {0};
    if (s->session && s->tls_error == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
        gnutls_certificate_verification_status_print(
            gnutls_session_get_verify_cert_status(s->session), GNUTLS_CRT_X509, &reason, 0) == 0)
        snprintf(out, size, "%s", (const char *)reason.data);
    else if (s->tls_error)
        snprintf(out, size, "%s", gnutls_strerror(s->tls_error));
    else if (s->system_error)
        snprintf(out, size, "%s", strerror(s->system_error));
    else
        snprintf(out, size, "the connection closed");
    gnutls_free(reason.data);
    for (size_t length = strlen(out); length && out[length - 1] == ' ';) /* GnuTLS ends so */
        out[--length] = 0;
    return out;
}

void stream_close(stream *s)
{
    if (s->session)
        gnutls_deinit(s->session);
    if (s->fd >= 0)
        close(s->fd);
    *s = (stream){.fd = -1};
}
