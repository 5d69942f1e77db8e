/* Hold every queued packet for a fixed delay, then accept it (a netem stand-in).
 *
 * usage: nfq_delay DELAY_NS QUEUE_NUM TAG NETNS_PATH...
 *
 * For each network namespace given (e.g. /run/netns/ct-host0) it binds
 * NFQUEUE QUEUE_NUM inside that namespace; one event loop serves them all.
 * Packets are released in arrival order once DELAY_NS has passed: every packet
 * of a queue that is due gets one batch verdict (packet ids rise within a queue,
 * and all share the delay, so "accept up to id" releases exactly the due ones).
 * TAG is only there so that the cleanup code can recognise its own helpers in /proc.
 * One verdict per packet cost a third of a core on 3 hosts x 2 Gbit/s x 1 ms;
 * the batch verdicts cost a fifth, and the emulated hosts' DDP steps that share
 * the cores with it vary less (experiments/investigations/results/nfq_batch.md).
 * Prints "ready" on stdout once every queue is bound. SIGTERM/SIGINT release
 * all held packets and exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <libnfnetlink/libnfnetlink.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

#define RING_CAP (1u << 18)
#define MAX_NS 256

struct held {
    struct nfq_q_handle *qh;
    uint32_t id;
    uint64_t due;
};

static struct held *ring;
static size_t head, count;
static uint64_t delay_ns;
static volatile sig_atomic_t stop;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Release every held packet due by t: one batch verdict per queue, up to its last due id. */
static void release_due(uint64_t t)
{
    struct nfq_q_handle *qhs[MAX_NS];
    uint32_t ids[MAX_NS];
    int nq = 0;
    while (count && ring[head].due <= t) {
        struct held *h = &ring[head];
        int j = 0;
        while (j < nq && qhs[j] != h->qh)
            j++;
        if (j == nq)
            qhs[nq++] = h->qh;
        ids[j] = h->id;
        head = (head + 1) % RING_CAP;
        count--;
    }
    for (int j = 0; j < nq; j++)
        nfq_set_verdict_batch(qhs[j], ids[j], NF_ACCEPT);
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
    (void)msg;
    (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (count == RING_CAP) { /* never drop: release at once when full */
        nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
        return 0;
    }
    ring[(head + count) % RING_CAP] = (struct held){qh, id, now_ns() + delay_ns};
    count++;
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "nfq_delay: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s DELAY_NS QUEUE_NUM TAG NETNS_PATH...\n", argv[0]);
        return 2;
    }
    delay_ns = strtoull(argv[1], NULL, 10);
    int qnum = atoi(argv[2]);
    int n = argc - 4;
    if (n > MAX_NS) {
        fprintf(stderr, "nfq_delay: at most %d namespaces\n", MAX_NS);
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    ring = calloc(RING_CAP, sizeof *ring);
    if (!ring)
        die("calloc", NULL);

    struct nfq_handle *handles[MAX_NS];
    struct pollfd pfds[MAX_NS];
    int self_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self_ns < 0)
        die("open", "/proc/self/ns/net");
    for (int i = 0; i < n; i++) {
        const char *path = argv[4 + i];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die("open", path);
        if (setns(fd, CLONE_NEWNET) != 0)
            die("setns", path);
        close(fd);
        struct nfq_handle *h = nfq_open();
        if (!h)
            die("nfq_open in", path);
        struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)qnum, &on_packet, NULL);
        if (!qh)
            die("nfq_create_queue in", path);
        if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0)
            die("nfq_set_mode in", path);
        nfq_set_queue_maxlen(qh, 65536);
        uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        nfq_set_queue_flags(qh, flags, flags);
        nfnl_rcvbufsiz(nfq_nfnlh(h), 16 * 1024 * 1024);
        int sfd = nfq_fd(h);
        int one = 1;
        setsockopt(sfd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
        fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK);
        handles[i] = h;
        pfds[i] = (struct pollfd){.fd = sfd, .events = POLLIN};
    }
    if (setns(self_ns, CLONE_NEWNET) != 0)
        die("setns", "back");
    close(self_ns);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("ready\n");
    fflush(stdout);

    static char buf[256 * 1024] __attribute__((aligned));
    while (!stop) {
        uint64_t t = now_ns();
        release_due(t);
        struct timespec to, *top = NULL;
        if (count) {
            uint64_t d = ring[head].due - t;
            to.tv_sec = (time_t)(d / 1000000000ull);
            to.tv_nsec = (long)(d % 1000000000ull);
            top = &to;
        }
        int r = ppoll(pfds, (nfds_t)n, top, NULL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("ppoll", NULL);
        }
        for (int i = 0; i < n && r > 0; i++) {
            if (!(pfds[i].revents & POLLIN))
                continue;
            for (;;) {
                ssize_t len = recv(pfds[i].fd, buf, sizeof buf, MSG_DONTWAIT);
                if (len <= 0)
                    break;
                nfq_handle_packet(handles[i], buf, (int)len);
            }
        }
    }
    release_due(UINT64_MAX);
    for (int i = 0; i < n; i++)
        nfq_close(handles[i]);
    return 0;
}
