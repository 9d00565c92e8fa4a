// Linux socket primitives for the agent's data path: epoll, eventfd, accept4 and socket options,
// behind plain functions Swift can call (epoll_event is packed on x86-64).
#ifndef CPOOLIO_H
#define CPOOLIO_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/// One readiness event: the registered token and the EPOLL* bits.
typedef struct {
    uint64_t token;
    uint32_t events;
} cpoolio_event;

enum {
    CPOOLIO_IN = 0x001,
    CPOOLIO_OUT = 0x004,
    CPOOLIO_ERR = 0x008,
    CPOOLIO_HUP = 0x010,
};

int cpoolio_epoll_create(void);
/// op: 0 add, 1 modify, 2 delete.
int cpoolio_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
/// Waits for up to `capacity` events; returns their count, or -1 with errno.
int cpoolio_epoll_wait(int epfd, cpoolio_event *events, int capacity, int timeout_ms);

int cpoolio_eventfd(void);
void cpoolio_eventfd_signal(int fd);
void cpoolio_eventfd_drain(int fd);

/// recv, send and sendmsg as plain system calls: the libc wrappers are thread-cancellation points, whose
/// bookkeeping the agent's loop thread does not need.
ssize_t cpoolio_recv(int fd, void *buffer, size_t length);
ssize_t cpoolio_send(int fd, const void *buffer, size_t length);
ssize_t cpoolio_sendv(int fd, const struct iovec *vectors, int count);

/// A batch of sends made with one system call (io_uring): each is a non-blocking send(2) or sendmsg(2) that
/// the kernel makes, in order, while `cpoolio_batch_submit` runs, so the buffers need to live only until it
/// returns. NULL from `cpoolio_batch_create` (with errno) when the kernel has no io_uring or forbids it.
typedef struct cpoolio_batch cpoolio_batch;
cpoolio_batch *cpoolio_batch_create(unsigned entries);
void cpoolio_batch_destroy(cpoolio_batch *batch);
/// Adds a send of `count` vectors (1 to CPOOLIO_BATCH_VECTORS, copied) to `fd`; returns its index in the
/// batch, -1 when the batch is full, or -2 for a count out of range.
int cpoolio_batch_add(cpoolio_batch *batch, int fd, const struct iovec *vectors, int count);
/// Makes the batch's sends and empties it. results[i] gets what send i returned (bytes sent or -errno), or
/// CPOOLIO_BATCH_NOT_SENT when the kernel did not take it. Returns how many it took, or -errno when it
/// could not take them all.
int cpoolio_batch_submit(cpoolio_batch *batch, int32_t *results);

enum { CPOOLIO_BATCH_VECTORS = 64, CPOOLIO_BATCH_NOT_SENT = INT32_MIN };

/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; -1 with errno when nothing is waiting.
int cpoolio_accept(int fd);
int cpoolio_set_nonblocking(int fd);
int cpoolio_set_nodelay(int fd);
/// SO_PEERCRED of a Unix socket.
int cpoolio_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// The peer's family (AF_INET, AF_INET6 or AF_UNIX), its address bytes (4 or 16, into `address`) and port.
int cpoolio_peer_address(int fd, int *family, uint8_t *address, int *port);

/// A listening socket: TCP on `host`:`port` (numeric address) or a Unix socket at `path` when host is NULL.
/// A new non-blocking socket connecting to the address `fd` is connected to (its peer): the descriptor,
/// connected or still connecting (EPOLLOUT tells), or -1 with errno.
int cpoolio_connect_to_peer_of(int fd);
/// The outcome of a non-blocking connect: 0, or the errno it failed with.
int cpoolio_connect_error(int fd);
/// Finds the cancel key in libpq's PGcancel (before protocol 3.2's variable keys): the int after the
/// backend's pid, which follows the server address. 0 when found; -1 when the layout is not the expected one.
int cpoolio_cancel_key(const void *cancel, int32_t pid, int32_t *key);

/// Sends one sd_notify datagram (`READY=1`, `STATUS=…`) to the socket systemd named in NOTIFY_SOCKET (a path,
/// or "@name" for an abstract socket); 0, or -1 with errno. Never blocks.
int cpoolio_notify(const char *socket_path, const char *message);

int cpoolio_listen_tcp(const char *host, int port, int backlog);
int cpoolio_listen_unix(const char *path, int backlog);

/// TLS to a PostgreSQL server after libpq's login (UpstreamTLS.c). `session` is libpq's OpenSSL `SSL *`
/// (PQsslStruct) or one made by `cpoolio_tls_client_session`; `message` gets an error's text.
/// Moves the session onto memory buffers: ciphertext is fed in and taken out by the caller.
int cpoolio_tls_adopt(void *session);
/// Hands the session ciphertext read from the socket; 0, or -1 when out of memory.
int cpoolio_tls_feed(void *session, const void *bytes, int length);
/// Plaintext into `buffer`: its length, 0 when more ciphertext is needed, -1 when the peer sent close_notify,
/// -2 on an error.
int cpoolio_tls_read(void *session, void *buffer, int capacity, char *message, size_t message_capacity);
/// Encrypts all of `bytes`; 0, or -1 on an error.
int cpoolio_tls_write(void *session, const void *bytes, int length, char *message, size_t message_capacity);
/// Ciphertext waiting to be sent, and taking it (returns the bytes taken).
int cpoolio_tls_output_length(void *session);
int cpoolio_tls_take_output(void *session, void *buffer, int capacity);
/// Queues a close_notify.
void cpoolio_tls_shutdown(void *session);
void cpoolio_tls_free(void *session);
/// The file of trusted roots OpenSSL uses by default (sslrootcert=system).
const char *cpoolio_tls_default_roots(void);

/// What new sessions to the same server need: libpq's context (roots, CRLs, certificate chain, versions,
/// verify mode) and the client's private key, both kept alive by this.
typedef struct cpoolio_tls_client cpoolio_tls_client;
cpoolio_tls_client *cpoolio_tls_client_from(void *session);
void cpoolio_tls_client_free(cpoolio_tls_client *client);
/// A new client session on memory buffers: SNI `server_name` and certificate check against `verify_host`
/// (an IP address or a DNS name) where not NULL. NULL on an error.
void *cpoolio_tls_client_session(cpoolio_tls_client *client, const char *server_name, const char *verify_host,
                                 char *message, size_t message_capacity);
/// Drives the handshake: 1 done, 0 when it waits for ciphertext, -1 when it failed.
int cpoolio_tls_handshake(void *session, char *message, size_t message_capacity);

#endif
