/*
 * stunload: blast RFC 5389 Binding requests at a STUN server on loopback and count the
 * Binding success responses.
 *
 *   stunload IP PORT [DURATION_S [WINDOW [BATCH]]]
 *
 * Keeps WINDOW requests outstanding on one UDP socket, sends and receives in batches of up to
 * BATCH datagrams (sendmmsg/recvmmsg), and runs for DURATION_S seconds (at most 60). Each
 * request's transaction id names a window slot and a generation; a response counts only if it
 * is a well-formed Binding success (type 0x0101, magic cookie, matching length, an
 * (XOR-)MAPPED-ADDRESS) for a slot that is still outstanding. A slot with no answer after
 * TIMEOUT_MS counts as lost and is reused. Only 127.0.0.0/8 targets are accepted.
 *
 * Prints one line of key=value pairs, e.g.
 *   responses_per_s=123456.7 sent=... ok=... lost=... invalid=... late=... loss=0.0012
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WINDOW 8192
#define MAX_BATCH 256
#define MAX_DURATION_S 60.0
#define TIMEOUT_MS 200
#define DRAIN_MS 200
#define RESP_BUF 576

static const uint8_t COOKIE[4] = {0x21, 0x12, 0xA4, 0x42};

struct slot {
    uint32_t gen;
    int outstanding;
    double sent_at;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* A Binding success for one of our requests? Returns the slot index or -1. */
static int parse_response(const uint8_t *buf, ssize_t len, uint32_t run_id, int window,
                          uint32_t *gen_out) {
    if (len < 20 || buf[0] != 0x01 || buf[1] != 0x01) return -1;
    if (memcmp(buf + 4, COOKIE, 4) != 0) return -1;
    size_t body = ((size_t)buf[2] << 8) | buf[3];
    if (body + 20 != (size_t)len || (body & 3) != 0) return -1;
    if (get32(buf + 8) != run_id) return -1;
    uint32_t slot = get32(buf + 12);
    if (slot >= (uint32_t)window) return -1;
    /* Walk the attributes: there must be an XOR-MAPPED-ADDRESS or MAPPED-ADDRESS. */
    size_t off = 20;
    int mapped = 0;
    while (off + 4 <= (size_t)len) {
        unsigned type = ((unsigned)buf[off] << 8) | buf[off + 1];
        size_t alen = ((size_t)buf[off + 2] << 8) | buf[off + 3];
        if (off + 4 + alen > (size_t)len) return -1;
        if (type == 0x0020 || type == 0x0001) mapped = 1;
        off += 4 + ((alen + 3) & ~(size_t)3);
    }
    if (!mapped) return -1;
    *gen_out = get32(buf + 16);
    return (int)slot;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s IP PORT [DURATION_S [WINDOW [BATCH]]]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in dst;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1 ||
        (ntohl(dst.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "stunload: only IPv4 loopback (127.0.0.0/8) targets, got %s\n", argv[1]);
        return 2;
    }
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "stunload: bad port %s\n", argv[2]);
        return 2;
    }
    dst.sin_port = htons((uint16_t)port);
    double duration = argc > 3 ? atof(argv[3]) : 3.0;
    int window = argc > 4 ? atoi(argv[4]) : 128;
    int batch = argc > 5 ? atoi(argv[5]) : 32;
    if (!(duration > 0 && duration <= MAX_DURATION_S) || window < 1 || window > MAX_WINDOW ||
        batch < 1 || batch > MAX_BATCH) {
        fprintf(stderr, "stunload: need 0 < duration <= %.0f, 1 <= window <= %d, "
                        "1 <= batch <= %d\n", MAX_DURATION_S, MAX_WINDOW, MAX_BATCH);
        return 2;
    }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int bufsize = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("connect");
        return 1;
    }

    static struct slot slots[MAX_WINDOW];
    static int free_list[MAX_WINDOW];
    int n_free = 0;
    for (int i = window - 1; i >= 0; i--) free_list[n_free++] = i;

    uint32_t run_id = (uint32_t)getpid() ^ (uint32_t)(now_s() * 1e6);

    static uint8_t req[MAX_BATCH][20];
    static struct iovec req_iov[MAX_BATCH];
    static struct mmsghdr req_msg[MAX_BATCH];
    static uint8_t resp[MAX_BATCH][RESP_BUF];
    static struct iovec resp_iov[MAX_BATCH];
    static struct mmsghdr resp_msg[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) {
        req_iov[i].iov_base = req[i];
        req_iov[i].iov_len = 20;
        req_msg[i].msg_hdr.msg_iov = &req_iov[i];
        req_msg[i].msg_hdr.msg_iovlen = 1;
        resp_iov[i].iov_base = resp[i];
        resp_iov[i].iov_len = RESP_BUF;
        resp_msg[i].msg_hdr.msg_iov = &resp_iov[i];
        resp_msg[i].msg_hdr.msg_iovlen = 1;
    }

    uint64_t sent = 0, ok = 0, ok_in_time = 0, lost = 0, invalid = 0, late = 0;
    double start = now_s();
    double deadline = start + duration;
    double hard_stop = deadline + DRAIN_MS / 1000.0;
    double next_sweep = start + 0.01;
    int outstanding = 0;

    for (;;) {
        double t = now_s();
        int sending = t < deadline;
        if (!sending && (outstanding == 0 || t >= hard_stop)) break;

        /* Fill the window. */
        while (sending && n_free > 0) {
            int n = n_free < batch ? n_free : batch;
            for (int i = 0; i < n; i++) {
                int s = free_list[n_free - 1 - i];
                uint8_t *p = req[i];
                p[0] = 0x00; p[1] = 0x01; p[2] = 0x00; p[3] = 0x00;
                memcpy(p + 4, COOKIE, 4);
                put32(p + 8, run_id);
                put32(p + 12, (uint32_t)s);
                put32(p + 16, ++slots[s].gen);
            }
            int m = sendmmsg(fd, req_msg, (unsigned)n, MSG_DONTWAIT);
            if (m < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED ||
                    errno == ENOBUFS)
                    break;
                perror("sendmmsg");
                return 1;
            }
            for (int i = 0; i < m; i++) {
                int s = free_list[--n_free];
                slots[s].outstanding = 1;
                slots[s].sent_at = t;
            }
            sent += (uint64_t)m;
            outstanding += m;
            if (m < n) break;
        }

        /* Collect responses. */
        int got = recvmmsg(fd, resp_msg, (unsigned)batch, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNREFUSED &&
                errno != EINTR) {
                perror("recvmmsg");
                return 1;
            }
            struct pollfd pfd = {fd, POLLIN, 0};
            poll(&pfd, 1, 1); /* nothing yet: wait at most 1 ms */
            got = 0;
        }
        double t_recv = got > 0 ? now_s() : t;
        for (int i = 0; i < got; i++) {
            uint32_t gen;
            int s = parse_response(resp[i], (ssize_t)resp_msg[i].msg_len, run_id, window, &gen);
            if (s < 0) {
                invalid++;
            } else if (!slots[s].outstanding || slots[s].gen != gen) {
                late++; /* answered after we gave up on it, or a duplicate */
            } else {
                slots[s].outstanding = 0;
                free_list[n_free++] = s;
                outstanding--;
                ok++;
                if (t_recv <= deadline) ok_in_time++;
            }
        }

        /* Give up on requests with no answer after TIMEOUT_MS. */
        if (t >= next_sweep) {
            next_sweep = t + 0.01;
            for (int s = 0; s < window; s++) {
                if (slots[s].outstanding && t - slots[s].sent_at > TIMEOUT_MS / 1000.0) {
                    slots[s].outstanding = 0;
                    free_list[n_free++] = s;
                    outstanding--;
                    lost++;
                }
            }
        }
    }
    lost += (uint64_t)outstanding; /* still unanswered when the drain ended */
    close(fd);

    printf("responses_per_s=%.1f sent=%llu ok=%llu lost=%llu invalid=%llu late=%llu "
           "loss=%.6f duration=%.3f window=%d batch=%d\n",
           (double)ok_in_time / duration, (unsigned long long)sent, (unsigned long long)ok,
           (unsigned long long)lost, (unsigned long long)invalid, (unsigned long long)late,
           sent ? (double)lost / (double)sent : 0.0, duration, window, batch);
    return ok > 0 ? 0 : 3;
}
