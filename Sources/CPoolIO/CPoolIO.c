#define _GNU_SOURCE
#include "CPoolIO.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

int cpoolio_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cpoolio_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = events;
    event.data.u64 = token;
    int operation = op == 0 ? EPOLL_CTL_ADD : op == 1 ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    return epoll_ctl(epfd, operation, fd, &event);
}

int cpoolio_epoll_wait(int epfd, cpoolio_event *events, int capacity, int timeout_ms) {
    struct epoll_event raw[256];
    if (capacity > 256) capacity = 256;
    int count = epoll_wait(epfd, raw, capacity, timeout_ms);
    for (int i = 0; i < count; i++) {
        events[i].token = raw[i].data.u64;
        events[i].events = raw[i].events;
    }
    return count;
}

int cpoolio_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void cpoolio_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t written = write(fd, &one, sizeof one);
    (void)written;
}

void cpoolio_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t got = read(fd, &value, sizeof value);
    (void)got;
}

ssize_t cpoolio_recv(int fd, void *buffer, size_t length) {
    return syscall(SYS_recvfrom, fd, buffer, length, 0, NULL, NULL);
}

ssize_t cpoolio_send(int fd, const void *buffer, size_t length) {
    return syscall(SYS_sendto, fd, buffer, length, MSG_NOSIGNAL, NULL, 0);
}

ssize_t cpoolio_sendv(int fd, const struct iovec *vectors, int count) {
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = (struct iovec *)vectors;
    message.msg_iovlen = (size_t)count;
    return syscall(SYS_sendmsg, fd, &message, MSG_NOSIGNAL);
}

int cpoolio_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int cpoolio_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int cpoolio_set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int cpoolio_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

int cpoolio_peer_address(int fd, int *family, uint8_t *address, int *port) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    if (getpeername(fd, (struct sockaddr *)&storage, &length) != 0) return -1;
    *family = storage.ss_family;
    *port = 0;
    if (storage.ss_family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
        memcpy(address, &in4->sin_addr, 4);
        *port = ntohs(in4->sin_port);
    } else if (storage.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
        memcpy(address, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
    }
    return 0;
}

int cpoolio_connect_to_peer_of(int fd) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    if (getpeername(fd, (struct sockaddr *)&storage, &length) != 0) return -1;
    int connecting = socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connecting < 0) return -1;
    if (connect(connecting, (struct sockaddr *)&storage, length) != 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(connecting);
        errno = saved;
        return -1;
    }
    return connecting;
}

int cpoolio_connect_error(int fd) {
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return errno;
    return error;
}

int cpoolio_cancel_key(const void *cancel, int32_t pid, int32_t *key) {
    // struct pg_cancel { SockAddr raddr; int be_pid; int be_key; ... } with SockAddr a sockaddr_storage and
    // its length: the pid sits right after those (128 + 4 bytes, aligned to 8 on LP64).
    const unsigned char *bytes = cancel;
    for (size_t offset = sizeof(struct sockaddr_storage) + sizeof(socklen_t); offset <= sizeof(struct sockaddr_storage) + 16; offset += 4) {
        int32_t found;
        memcpy(&found, bytes + offset, sizeof found);
        if (found == pid) {
            memcpy(key, bytes + offset + 4, sizeof *key);
            return 0;
        }
    }
    return -1;
}

static int listen_on(int fd, int backlog) {
    if (listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cpoolio_listen_tcp(const char *host, int port, int backlog) {
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int status = getaddrinfo(host, service, &hints, &found);
    if (status != 0) {
        errno = EADDRNOTAVAIL;
        return -1;
    }
    // A name with both families (localhost) listens on IPv4, as numeric addresses say what they mean.
    struct addrinfo *chosen = found;
    for (struct addrinfo *entry = found; entry != NULL; entry = entry->ai_next) {
        if (entry->ai_family == AF_INET) {
            chosen = entry;
            break;
        }
    }
    int fd = socket(chosen->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(found);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, chosen->ai_addr, chosen->ai_addrlen) != 0) {
        int saved = errno;
        freeaddrinfo(found);
        close(fd);
        errno = saved;
        return -1;
    }
    freeaddrinfo(found);
    return listen_on(fd, backlog);
}

int cpoolio_listen_unix(const char *path, int backlog) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return listen_on(fd, backlog);
}

// MARK: Batched sends

struct cpoolio_batch {
    int fd;
    unsigned entries;
    unsigned queued;
    void *ring;
    size_t ringSize;
    struct io_uring_sqe *sqes;
    size_t sqesSize;
    unsigned *sqHead;
    unsigned *sqTail;
    unsigned sqMask;
    unsigned *sqArray;
    unsigned *cqHead;
    unsigned *cqTail;
    unsigned cqMask;
    struct io_uring_cqe *cqes;
    struct msghdr *messages;
    struct iovec *vectors;
};

cpoolio_batch *cpoolio_batch_create(unsigned entries) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    int fd = (int)syscall(SYS_io_uring_setup, entries, &params);
    if (fd < 0) return NULL;
    if (!(params.features & IORING_FEAT_SINGLE_MMAP) || params.sq_entries < entries) {
        close(fd);
        errno = ENOTSUP;
        return NULL;
    }
    cpoolio_batch *batch = calloc(1, sizeof *batch);
    if (batch == NULL) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    batch->fd = fd;
    batch->entries = entries;
    size_t sqSize = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    size_t cqSize = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
    batch->ringSize = sqSize > cqSize ? sqSize : cqSize;
    batch->ring = mmap(NULL, batch->ringSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    batch->sqesSize = params.sq_entries * sizeof(struct io_uring_sqe);
    batch->sqes = mmap(NULL, batch->sqesSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    batch->messages = calloc(entries, sizeof(struct msghdr));
    batch->vectors = calloc((size_t)entries * CPOOLIO_BATCH_VECTORS, sizeof(struct iovec));
    if (batch->ring == MAP_FAILED || batch->sqes == MAP_FAILED || batch->messages == NULL || batch->vectors == NULL) {
        int saved = batch->ring == MAP_FAILED || batch->sqes == MAP_FAILED ? errno : ENOMEM;
        if (batch->ring == MAP_FAILED) batch->ring = NULL;
        if (batch->sqes == MAP_FAILED) batch->sqes = NULL;
        cpoolio_batch_destroy(batch);
        errno = saved;
        return NULL;
    }
    char *ring = batch->ring;
    batch->sqHead = (unsigned *)(ring + params.sq_off.head);
    batch->sqTail = (unsigned *)(ring + params.sq_off.tail);
    batch->sqMask = *(unsigned *)(ring + params.sq_off.ring_mask);
    batch->sqArray = (unsigned *)(ring + params.sq_off.array);
    batch->cqHead = (unsigned *)(ring + params.cq_off.head);
    batch->cqTail = (unsigned *)(ring + params.cq_off.tail);
    batch->cqMask = *(unsigned *)(ring + params.cq_off.ring_mask);
    batch->cqes = (struct io_uring_cqe *)(ring + params.cq_off.cqes);
    // Entry i always uses SQE i: the indirection array is fixed once.
    for (unsigned i = 0; i < params.sq_entries; i++) batch->sqArray[i] = i;
    return batch;
}

void cpoolio_batch_destroy(cpoolio_batch *batch) {
    if (batch == NULL) return;
    if (batch->sqes != NULL) munmap(batch->sqes, batch->sqesSize);
    if (batch->ring != NULL) munmap(batch->ring, batch->ringSize);
    close(batch->fd);
    free(batch->messages);
    free(batch->vectors);
    free(batch);
}

int cpoolio_batch_add(cpoolio_batch *batch, int fd, const struct iovec *vectors, int count) {
    if (count < 1 || count > CPOOLIO_BATCH_VECTORS) return -2;
    if (batch->queued == batch->entries) return -1;
    unsigned index = batch->queued;
    unsigned tail = *batch->sqTail;
    struct io_uring_sqe *sqe = &batch->sqes[tail & batch->sqMask];
    memset(sqe, 0, sizeof *sqe);
    sqe->fd = fd;
    // MSG_DONTWAIT makes a full socket complete with -EAGAIN at once instead of waiting in the kernel, so no
    // send outlives the submitting call.
    sqe->msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    sqe->user_data = index;
    if (count == 1) {
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)vectors[0].iov_base;
        sqe->len = (uint32_t)vectors[0].iov_len;
    } else {
        struct iovec *own = &batch->vectors[(size_t)index * CPOOLIO_BATCH_VECTORS];
        memcpy(own, vectors, (size_t)count * sizeof *own);
        struct msghdr *message = &batch->messages[index];
        memset(message, 0, sizeof *message);
        message->msg_iov = own;
        message->msg_iovlen = (size_t)count;
        sqe->opcode = IORING_OP_SENDMSG;
        sqe->addr = (uint64_t)(uintptr_t)message;
        sqe->len = 1;
    }
    __atomic_store_n(batch->sqTail, tail + 1, __ATOMIC_RELEASE);
    batch->queued += 1;
    return (int)index;
}

int cpoolio_batch_submit(cpoolio_batch *batch, int32_t *results) {
    unsigned queued = batch->queued;
    if (queued == 0) return 0;
    batch->queued = 0;
    for (unsigned i = 0; i < queued; i++) results[i] = CPOOLIO_BATCH_NOT_SENT;
    // Waiting for every completion costs nothing when all completed inline, as non-blocking sends do, and
    // guarantees that no buffer is read after this returns.
    unsigned taken = 0;
    int error = 0;
    while (taken < queued) {
        long count = syscall(SYS_io_uring_enter, batch->fd, queued - taken, queued - taken, IORING_ENTER_GETEVENTS, NULL, 0);
        if (count < 0) {
            if (errno == EINTR) continue;
            error = errno;
            break;
        }
        if (count == 0) {
            error = EAGAIN;
            break;
        }
        taken += (unsigned)count;
    }
    if (taken < queued) {
        // What the kernel did not take is taken back, so that a later call cannot send it.
        __atomic_store_n(batch->sqTail, __atomic_load_n(batch->sqHead, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
    }
    unsigned done = 0;
    while (done < taken) {
        unsigned head = *batch->cqHead;
        unsigned tail = __atomic_load_n(batch->cqTail, __ATOMIC_ACQUIRE);
        if (head == tail) {
            long waited = syscall(SYS_io_uring_enter, batch->fd, 0, taken - done, IORING_ENTER_GETEVENTS, NULL, 0);
            if (waited < 0 && errno != EINTR) {
                // Sends the kernel took whose outcome cannot be learnt: reported as failed, never sent twice.
                int saved = errno;
                for (unsigned i = 0; i < taken; i++) {
                    if (results[i] == CPOOLIO_BATCH_NOT_SENT) results[i] = -EIO;
                }
                return -saved;
            }
            continue;
        }
        while (head != tail) {
            struct io_uring_cqe *cqe = &batch->cqes[head & batch->cqMask];
            if (cqe->user_data < queued) results[cqe->user_data] = cqe->res;
            head += 1;
            done += 1;
        }
        __atomic_store_n(batch->cqHead, head, __ATOMIC_RELEASE);
    }
    return error == 0 ? (int)taken : -error;
}

int cpoolio_notify(const char *socket_path, const char *message) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    size_t length = strlen(socket_path);
    if (length == 0 || length >= sizeof address.sun_path) {
        errno = EINVAL;
        return -1;
    }
    memcpy(address.sun_path, socket_path, length);
    // "@name": an abstract socket, whose name starts with a NUL byte.
    if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t sent = sendto(fd, message, strlen(message), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&address,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length));
    int saved = errno;
    close(fd);
    errno = saved;
    return sent < 0 ? -1 : 0;
}
