/*
 * relayload: push fixed-size datagrams through a TURN relay's channel (or straight between two
 * sockets, the baseline) on loopback and count what arrives; or ping through it.
 *
 *   relayload MODE -c CLIENT_FD -p PEER_FD -C IP:PORT -P IP:PORT [-k CHANNEL] [-s SIZE]
 *             [-d DURATION_S] [-w WINDOW] [-b BATCH] [-n COUNT] [-i INTERVAL_US]
 *
 * CLIENT_FD and PEER_FD are UDP sockets inherited from the caller: the client socket that owns
 * the allocation (its 5-tuple is what the relay knows) and the peer's socket. relayload
 * connects the client socket to -C (the TURN server; the peer itself for the baseline) and the
 * peer socket to -P (the allocation's relayed address; the client itself for the baseline).
 * With -k CHANNEL the client side speaks ChannelData on that channel (4-byte header + SIZE
 * payload bytes); without it (-k 0) both sides send the bare payload.
 *
 * Modes:
 *   up     client -> relay -> peer: WINDOW datagrams outstanding, a slot is freed when the
 *          peer receives its datagram
 *   down   peer -> relay -> client
 *   echo   client -> relay -> peer, which sends each one back -> relay -> client (round trips)
 *   ping   echo with one datagram at a time, one every INTERVAL_US, COUNT of them: prints the
 *          round-trip time's median, p99, min and mean in microseconds
 *
 * Each payload names a run, a window slot and a generation; only well-formed datagrams for a
 * slot still outstanding count. A slot with no delivery after TIMEOUT_MS counts as lost and is
 * reused. Sends and receives go in batches of up to BATCH (sendmmsg/recvmmsg). Only
 * 127.0.0.0/8 addresses are accepted, and a run lasts at most 60 s.
 *
 * Prints one line of key=value pairs, e.g.
 *   rate=123456.7 sent=... ok=... lost=... invalid=... late=... loss=0.0012 ...
 *   pings=2000 lost=0 rtt_med_us=41.2 rtt_p99_us=80.3 rtt_min_us=30.1 rtt_mean_us=44.0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
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
#define MAX_SIZE 8192
#define MAX_COUNT 1000000
#define MAX_DURATION_S 60.0
#define TIMEOUT_MS 200
#define DRAIN_MS 200
#define HDR 4
#define BUF (MAX_SIZE + HDR + 64)

enum mode { UP, DOWN, ECHO, PING };

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

static int parse_addr(const char *text, struct sockaddr_in *out) {
    char ip[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof ip) return -1;
    memcpy(ip, text, (size_t)(colon - text));
    ip[colon - text] = '\0';
    long port = strtol(colon + 1, NULL, 10);
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    if (inet_pton(AF_INET, ip, &out->sin_addr) != 1 || port <= 0 || port > 65535) return -1;
    if ((ntohl(out->sin_addr.s_addr) >> 24) != 127) return -1; /* loopback only */
    out->sin_port = htons((uint16_t)port);
    return 0;
}

/* Global run parameters. */
static uint32_t run_id;
static int size = 1200, channel = 0, window = 64;

/* Writes a datagram for (slot, gen) to p; framed = ChannelData. Returns its length. */
static size_t build(uint8_t *p, int framed, uint32_t slot, uint32_t gen) {
    uint8_t *payload = p;
    size_t len = (size_t)size;
    if (framed) {
        p[0] = (uint8_t)(channel >> 8);
        p[1] = (uint8_t)channel;
        p[2] = (uint8_t)(size >> 8);
        p[3] = (uint8_t)size;
        payload = p + HDR;
        len += HDR;
    }
    put32(payload, run_id);
    put32(payload + 4, slot);
    put32(payload + 8, gen);
    return len;
}

/* The slot of a datagram of ours, or -1; framed = expect ChannelData on our channel. */
static int parse(const uint8_t *p, size_t len, int framed, uint32_t *gen_out) {
    if (framed) {
        /* Over UDP the relay may pad ChannelData to a multiple of 4 (RFC 8656 12.5). */
        if (len < HDR || ((p[0] << 8) | p[1]) != channel || ((p[2] << 8) | p[3]) != size ||
            len < (size_t)size + HDR || len > (size_t)size + HDR + 3)
            return -1;
        p += HDR;
    } else if (len != (size_t)size) {
        return -1;
    }
    if (get32(p) != run_id) return -1;
    uint32_t slot = get32(p + 4);
    if (slot >= (uint32_t)window) return -1;
    *gen_out = get32(p + 8);
    return (int)slot;
}

static int transient(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == ECONNREFUSED || err == ENOBUFS ||
           err == EINTR;
}

static void drain(int fd) {
    static uint8_t junk[BUF];
    while (recv(fd, junk, sizeof junk, MSG_DONTWAIT) >= 0 || errno == ECONNREFUSED) {
    }
}

static uint8_t tx[MAX_BATCH][BUF], rx[MAX_BATCH][BUF], ex[MAX_BATCH][BUF];
static struct iovec tx_iov[MAX_BATCH], rx_iov[MAX_BATCH], ex_iov[MAX_BATCH];
static struct mmsghdr tx_msg[MAX_BATCH], rx_msg[MAX_BATCH], ex_msg[MAX_BATCH];

static void init_msgs(void) {
    for (int i = 0; i < MAX_BATCH; i++) {
        tx_iov[i].iov_base = tx[i];
        tx_msg[i].msg_hdr.msg_iov = &tx_iov[i];
        tx_msg[i].msg_hdr.msg_iovlen = 1;
        rx_iov[i].iov_base = rx[i];
        rx_iov[i].iov_len = BUF;
        rx_msg[i].msg_hdr.msg_iov = &rx_iov[i];
        rx_msg[i].msg_hdr.msg_iovlen = 1;
        ex_iov[i].iov_base = ex[i];
        ex_msg[i].msg_hdr.msg_iov = &ex_iov[i];
        ex_msg[i].msg_hdr.msg_iovlen = 1;
        memset(tx[i], 0xA5, BUF); /* filler beyond the 12 bytes we stamp */
    }
}

/* Echo side (the peer): whatever arrived on fd goes back out of fd, unchanged. Returns the
 * number of datagrams echoed, -1 on a hard error. */
static int echo_some(int fd, int batch) {
    for (int i = 0; i < batch; i++) ex_iov[i].iov_len = BUF;
    int got = recvmmsg(fd, ex_msg, (unsigned)batch, MSG_DONTWAIT, NULL);
    if (got < 0) return transient(errno) ? 0 : -1;
    for (int i = 0; i < got; i++) ex_iov[i].iov_len = ex_msg[i].msg_len;
    int done = 0;
    while (done < got) {
        int m = sendmmsg(fd, ex_msg + done, (unsigned)(got - done), MSG_DONTWAIT);
        if (m <= 0) break; /* a full buffer: lost, as it would be for a real peer */
        done += m;
    }
    return got;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_ping(int client_fd, int peer_fd, int count, long interval_us) {
    double *rtt = malloc(sizeof(double) * (size_t)count);
    if (rtt == NULL) return 1;
    int ok = 0, lost = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int i = 0; i < count; i++) {
        size_t len = build(tx[0], channel != 0, 0, (uint32_t)i);
        double t0 = now_s();
        if (send(client_fd, tx[0], len, 0) < 0 && !transient(errno)) {
            perror("send");
            return 1;
        }
        double give_up = t0 + TIMEOUT_MS / 1000.0;
        int answered = 0;
        while (!answered) {
            double t = now_s();
            if (t >= give_up) break;
            struct pollfd pfd[2] = {{client_fd, POLLIN, 0}, {peer_fd, POLLIN, 0}};
            int wait_ms = (int)((give_up - t) * 1000.0) + 1;
            if (poll(pfd, 2, wait_ms) <= 0) continue;
            if (pfd[1].revents) echo_some(peer_fd, 1);
            if (pfd[0].revents) {
                ssize_t n = recv(client_fd, rx[0], BUF, MSG_DONTWAIT);
                double t1 = now_s();
                uint32_t gen;
                if (n > 0 && parse(rx[0], (size_t)n, channel != 0, &gen) == 0 &&
                    gen == (uint32_t)i) {
                    rtt[ok++] = (t1 - t0) * 1e6;
                    answered = 1;
                }
            }
        }
        if (!answered) lost++;
        next.tv_nsec += interval_us * 1000;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
    }
    double med = 0, p99 = 0, mn = 0, mean = 0;
    if (ok > 0) {
        qsort(rtt, (size_t)ok, sizeof(double), cmp_double);
        med = ok % 2 ? rtt[ok / 2] : (rtt[ok / 2 - 1] + rtt[ok / 2]) / 2;
        int k = (int)(0.99 * (ok - 1) + 0.5);
        p99 = rtt[k];
        mn = rtt[0];
        for (int i = 0; i < ok; i++) mean += rtt[i];
        mean /= ok;
    }
    printf("pings=%d ok=%d lost=%d rtt_med_us=%.1f rtt_p99_us=%.1f rtt_min_us=%.1f "
           "rtt_mean_us=%.1f\n", count, ok, lost, med, p99, mn, mean);
    free(rtt);
    return ok > 0 ? 0 : 3;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s up|down|echo|ping -c FD -p FD -C IP:PORT -P IP:PORT "
                        "[-k CHANNEL] [-s SIZE] [-d S] [-w WINDOW] [-b BATCH] [-n COUNT] "
                        "[-i INTERVAL_US]\n", argv[0]);
        return 2;
    }
    enum mode mode;
    if (!strcmp(argv[1], "up")) mode = UP;
    else if (!strcmp(argv[1], "down")) mode = DOWN;
    else if (!strcmp(argv[1], "echo")) mode = ECHO;
    else if (!strcmp(argv[1], "ping")) mode = PING;
    else {
        fprintf(stderr, "relayload: unknown mode %s\n", argv[1]);
        return 2;
    }
    int client_fd = -1, peer_fd = -1, batch = 32, count = 2000;
    long interval_us = 1000;
    double duration = 3.0;
    struct sockaddr_in client_dst, peer_dst;
    int have_c = 0, have_p = 0, opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "c:p:C:P:k:s:d:w:b:n:i:")) != -1) {
        switch (opt) {
        case 'c': client_fd = atoi(optarg); break;
        case 'p': peer_fd = atoi(optarg); break;
        case 'C': have_c = parse_addr(optarg, &client_dst) == 0; break;
        case 'P': have_p = parse_addr(optarg, &peer_dst) == 0; break;
        case 'k': channel = (int)strtol(optarg, NULL, 0); break;
        case 's': size = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'n': count = atoi(optarg); break;
        case 'i': interval_us = atol(optarg); break;
        default: return 2;
        }
    }
    if (client_fd < 0 || peer_fd < 0 || !have_c || !have_p) {
        fprintf(stderr, "relayload: need -c, -p and loopback (127.0.0.0/8) -C and -P\n");
        return 2;
    }
    if (!(duration > 0 && duration <= MAX_DURATION_S) || window < 1 || window > MAX_WINDOW ||
        batch < 1 || batch > MAX_BATCH || size < 12 || size > MAX_SIZE ||
        (channel != 0 && (channel < 0x4000 || channel > 0x7FFF)) || count < 1 ||
        count > MAX_COUNT || interval_us < 0 || interval_us > 1000000 ||
        (mode == PING && count * (interval_us / 1e6) > MAX_DURATION_S)) {
        fprintf(stderr, "relayload: bad parameters\n");
        return 2;
    }
    int bufsize = 4 << 20;
    int fds[2] = {client_fd, peer_fd};
    for (int i = 0; i < 2; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
        setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
    }
    if (connect(client_fd, (struct sockaddr *)&client_dst, sizeof client_dst) < 0 ||
        connect(peer_fd, (struct sockaddr *)&peer_dst, sizeof peer_dst) < 0) {
        perror("connect");
        return 1;
    }
    drain(client_fd);
    drain(peer_fd);
    init_msgs();
    run_id = (uint32_t)getpid() ^ (uint32_t)(now_s() * 1e6);

    if (mode == PING) {
        window = 1;
        return run_ping(client_fd, peer_fd, count, interval_us);
    }

    /* Who sends and who counts; framed = that side speaks ChannelData. */
    int tx_fd = mode == DOWN ? peer_fd : client_fd;
    int rx_fd = mode == UP ? peer_fd : client_fd;
    int tx_framed = channel != 0 && mode != DOWN;
    int rx_framed = channel != 0 && mode != UP;

    static struct slot slots[MAX_WINDOW];
    static int free_list[MAX_WINDOW];
    int n_free = 0;
    for (int i = window - 1; i >= 0; i--) free_list[n_free++] = i;

    uint64_t sent = 0, ok = 0, ok_in_time = 0, lost = 0, invalid = 0, late = 0, echoed = 0;
    double start = now_s();
    double deadline = start + duration;
    double hard_stop = deadline + DRAIN_MS / 1000.0;
    double next_sweep = start + 0.01;
    int outstanding = 0;

    for (;;) {
        double t = now_s();
        int sending = t < deadline;
        if (!sending && (outstanding == 0 || t >= hard_stop)) break;

        while (sending && n_free > 0) {
            int n = n_free < batch ? n_free : batch;
            for (int i = 0; i < n; i++) {
                int s = free_list[n_free - 1 - i];
                tx_iov[i].iov_len = build(tx[i], tx_framed, (uint32_t)s, ++slots[s].gen);
            }
            int m = sendmmsg(tx_fd, tx_msg, (unsigned)n, MSG_DONTWAIT);
            if (m < 0) {
                if (transient(errno)) break;
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

        int bounced = 0;
        if (mode == ECHO) {
            bounced = echo_some(peer_fd, batch);
            if (bounced < 0) {
                perror("echo");
                return 1;
            }
            echoed += (uint64_t)bounced;
        }

        int got = recvmmsg(rx_fd, rx_msg, (unsigned)batch, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (!transient(errno)) {
                perror("recvmmsg");
                return 1;
            }
            got = 0;
            if (bounced == 0) {
                struct pollfd pfd[2] = {{rx_fd, POLLIN, 0}, {peer_fd, POLLIN, 0}};
                poll(pfd, mode == ECHO ? 2 : 1, 1); /* nothing yet: wait at most 1 ms */
            }
        }
        double t_recv = got > 0 ? now_s() : t;
        for (int i = 0; i < got; i++) {
            uint32_t gen;
            int s = parse(rx[i], rx_msg[i].msg_len, rx_framed, &gen);
            if (s < 0) {
                invalid++;
            } else if (!slots[s].outstanding || slots[s].gen != gen) {
                late++;
            } else {
                slots[s].outstanding = 0;
                free_list[n_free++] = s;
                outstanding--;
                ok++;
                if (t_recv <= deadline) ok_in_time++;
            }
        }

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
    lost += (uint64_t)outstanding;

    printf("rate=%.1f sent=%llu ok=%llu lost=%llu invalid=%llu late=%llu echoed=%llu "
           "loss=%.6f duration=%.3f window=%d batch=%d size=%d\n",
           (double)ok_in_time / duration, (unsigned long long)sent, (unsigned long long)ok,
           (unsigned long long)lost, (unsigned long long)invalid, (unsigned long long)late,
           (unsigned long long)echoed, sent ? (double)lost / (double)sent : 0.0, duration, window,
           batch, size);
    return ok > 0 ? 0 : 3;
}
