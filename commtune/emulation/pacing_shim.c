/* LD_PRELOAD shim: cap every TCP socket's pacing rate (SO_MAX_PACING_RATE).
 *
 * The rate in bytes per second comes from the environment variable
 * COMMTUNE_PACING_BPS; unset, empty or 0 leaves sockets alone. It applies to
 * sockets made by socket() and to those returned by accept()/accept4(), so both
 * the connecting and the accepting side of a TCP stream pace themselves. With
 * no fq qdisc the kernel's internal TCP pacing enforces the cap per stream.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#ifndef SO_MAX_PACING_RATE
#define SO_MAX_PACING_RATE 47
#endif

static unsigned long long pacing_rate(void)
{
    static int loaded;
    static unsigned long long rate;
    if (!loaded) {
        const char *s = getenv("COMMTUNE_PACING_BPS");
        rate = (s && *s) ? strtoull(s, NULL, 10) : 0;
        loaded = 1;
    }
    return rate;
}

static void pace(int fd)
{
    unsigned long long rate = pacing_rate();
    int saved = errno;
    if (rate == 0)
        return;
    if (rate < 0xffffffffULL) {
        unsigned int v = (unsigned int)rate;
        setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof v);
    } else {
        uint64_t v = rate;
        if (setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof v) != 0) {
            unsigned int v32 = 0xfffffffeU;
            setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &v32, sizeof v32);
        }
    }
    errno = saved;
}

static void pace_if_tcp(int fd)
{
    int type = 0, domain = 0, saved = errno;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM) {
        len = sizeof domain;
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
            (domain == AF_INET || domain == AF_INET6))
            pace(fd);
    }
    errno = saved;
}

int socket(int domain, int type, int protocol)
{
    static int (*real)(int, int, int);
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    if (fd >= 0 && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM)
        pace(fd);
    return fd;
}

int accept(int sockfd, struct sockaddr *addr, socklen_t *addrlen)
{
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int fd = real(sockfd, addr, addrlen);
    if (fd >= 0)
        pace_if_tcp(fd);
    return fd;
}

int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int fd = real(sockfd, addr, addrlen, flags);
    if (fd >= 0)
        pace_if_tcp(fd);
    return fd;
}
