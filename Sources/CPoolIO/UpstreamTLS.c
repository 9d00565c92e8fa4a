// TLS to PostgreSQL servers after libpq's login: the OpenSSL session libpq negotiated (PQsslStruct) carries on
// over memory buffers the agent's loop fills and drains, and cancel requests open new sessions with libpq's
// context. libpq links this same OpenSSL, so the objects are shared, never copied.

#include "CPoolIO.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

int cpoolio_tls_adopt(void *session) {
    SSL *ssl = session;
    BIO *in = BIO_new(BIO_s_mem());
    BIO *out = BIO_new(BIO_s_mem());
    if (in == NULL || out == NULL) {
        BIO_free(in);
        BIO_free(out);
        return -1;
    }
    // An empty buffer means "more later", not the end of the stream.
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    // Frees libpq's socket BIO: from here on the session reads and writes only these buffers.
    SSL_set_bio(ssl, in, out);
    return 0;
}

int cpoolio_tls_feed(void *session, const void *bytes, int length) {
    return BIO_write(SSL_get_rbio(session), bytes, length) == length ? 0 : -1;
}

/// Describes the first error OpenSSL queued (and the certificate check's result when it failed) into `message`.
static void describe_error(SSL *ssl, char *message, size_t capacity) {
    unsigned long code = ERR_get_error();
    long verify = ssl == NULL ? X509_V_OK : SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
        snprintf(message, capacity, "certificate verify failed: %s", X509_verify_cert_error_string(verify));
    } else if (code != 0) {
        const char *reason = ERR_reason_error_string(code);
        snprintf(message, capacity, "%s", reason != NULL ? reason : "TLS error");
    } else {
        snprintf(message, capacity, "TLS error");
    }
    ERR_clear_error();
}

int cpoolio_tls_read(void *session, void *buffer, int capacity, char *message, size_t message_capacity) {
    SSL *ssl = session;
    ERR_clear_error();
    int read = SSL_read(ssl, buffer, capacity);
    if (read > 0) return read;
    switch (SSL_get_error(ssl, read)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return -1;
    default:
        describe_error(ssl, message, message_capacity);
        return -2;
    }
}

int cpoolio_tls_write(void *session, const void *bytes, int length, char *message, size_t message_capacity) {
    SSL *ssl = session;
    ERR_clear_error();
    // Into a memory buffer: all of it is taken, as records of up to 16 KiB.
    int written = SSL_write(ssl, bytes, length);
    if (written == length) return 0;
    describe_error(ssl, message, message_capacity);
    return -1;
}

int cpoolio_tls_output_length(void *session) {
    return (int)BIO_ctrl_pending(SSL_get_wbio(session));
}

int cpoolio_tls_take_output(void *session, void *buffer, int capacity) {
    int taken = BIO_read(SSL_get_wbio(session), buffer, capacity);
    return taken > 0 ? taken : 0;
}

void cpoolio_tls_shutdown(void *session) {
    ERR_clear_error();
    SSL_shutdown(session);
    ERR_clear_error();
}

struct cpoolio_tls_client {
    SSL_CTX *context;
    EVP_PKEY *key;
    int verify_mode;
};

cpoolio_tls_client *cpoolio_tls_client_from(void *session) {
    SSL *ssl = session;
    cpoolio_tls_client *client = calloc(1, sizeof *client);
    if (client == NULL) return NULL;
    // libpq's context holds the root certificates, CRLs, the client's certificate chain and the protocol
    // versions; the private key and the verify mode it sets on its session, so they are copied from there.
    client->context = SSL_get_SSL_CTX(ssl);
    SSL_CTX_up_ref(client->context);
    client->key = SSL_get_privatekey(ssl);
    if (client->key != NULL) EVP_PKEY_up_ref(client->key);
    client->verify_mode = SSL_get_verify_mode(ssl);
    return client;
}

void cpoolio_tls_client_free(cpoolio_tls_client *client) {
    if (client == NULL) return;
    EVP_PKEY_free(client->key);
    SSL_CTX_free(client->context);
    free(client);
}

void *cpoolio_tls_client_session(cpoolio_tls_client *client, const char *server_name, const char *verify_host,
                                 char *message, size_t message_capacity) {
    ERR_clear_error();
    SSL *ssl = SSL_new(client->context);
    if (ssl == NULL) {
        describe_error(NULL, message, message_capacity);
        return NULL;
    }
    if ((client->key != NULL && SSL_use_PrivateKey(ssl, client->key) != 1)
        || (server_name != NULL && SSL_set_tlsext_host_name(ssl, server_name) != 1)
        || cpoolio_tls_adopt(ssl) != 0) {
        describe_error(NULL, message, message_capacity);
        SSL_free(ssl);
        return NULL;
    }
    // Verification as libpq's session has it (its callback only passes OpenSSL's verdict on), so a chain or,
    // below, a name that does not check out fails the handshake. libpq 16+ puts a certificate callback that
    // points at its connection on the context; the connection may be gone by now, and it only records
    // whether a certificate was asked for.
    SSL_set_verify(ssl, client->verify_mode, NULL);
    SSL_set_cert_cb(ssl, NULL, NULL);
    if (verify_host != NULL) {
        X509_VERIFY_PARAM *parameters = SSL_get0_param(ssl);
        // An IP address is matched against the certificate's IP entries, a name against its DNS names.
        int set = X509_VERIFY_PARAM_set1_ip_asc(parameters, verify_host) == 1
            || X509_VERIFY_PARAM_set1_host(parameters, verify_host, 0) == 1;
        if (!set) {
            snprintf(message, message_capacity, "cannot check the server's certificate against \"%s\"", verify_host);
            SSL_free(ssl);
            return NULL;
        }
        ERR_clear_error();
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

int cpoolio_tls_handshake(void *session, char *message, size_t message_capacity) {
    SSL *ssl = session;
    ERR_clear_error();
    int done = SSL_do_handshake(ssl);
    if (done == 1) {
        if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) && SSL_get_verify_result(ssl) != X509_V_OK) {
            describe_error(ssl, message, message_capacity);
            return -1;
        }
        return 1;
    }
    switch (SSL_get_error(ssl, done)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    default:
        describe_error(ssl, message, message_capacity);
        return -1;
    }
}

const char *cpoolio_tls_default_roots(void) {
    return X509_get_default_cert_file();
}

void cpoolio_tls_free(void *session) {
    SSL_free(session);
}
