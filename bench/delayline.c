/* delayline: a user-space delay line between two TUN devices, for
 * `make bench-wan` (bench/wan.py), where `tc netem` is not available.
 *
 *     delayline [-d MS] [-q SLOTS] [-r] [NETNS:]IFNAME_A [NETNS:]IFNAME_B
 *
 * Creates the TUN device IFNAME_A (in the network namespace whose file is
 * NETNS, e.g. /run/netns/NAME, when given) and IFNAME_B (likewise), prints
 * "ready IFNAME_A IFNAME_B" on stdout, then carries every packet read from
 * one device to the other MS milliseconds (default 10, fractions allowed:
 * 0.5) after it was read, in the order they came. The caller brings the
 * devices up and gives them addresses (ip -n NETNS ...); the devices go away
 * when this program exits.
 *
 * Each direction is a FIFO of SLOTS packets (default 4096) stamped with the
 * time they are due; as the delay is the same for all, the head is always
 * the next one due. One timerfd (absolute CLOCK_MONOTONIC time) is armed for
 * the earliest head, and poll() waits on the two devices, the timer and a
 * signalfd: nothing spins. A packet that finds its queue full is dropped
 * (counted). Timer slack is set to 1 ns; -r asks for SCHED_FIFO (priority
 * 10, root), so that a busy machine delays the timer's wake-up less (it
 * never spins, so it cannot starve anything).
 *
 * SIGUSR1 prints the counters on stdout; SIGTERM, SIGINT or SIGHUP print
 * them and exit 0:
 *     stats a_to_b=N b_to_a=N dropped=N late_mean_us=X late_max_us=X late_over_1ms=N
 * where "late" is how long after its due time a packet was written (the
 * timer's wake-up latency plus the work before it: the line's own error). */

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SLOT_BYTES 2048 /* the devices' MTU is 1500: a packet never exceeds it */

struct slot {
    uint64_t due_ns;
    size_t len;
    unsigned char data[SLOT_BYTES];
};

struct queue {
    struct slot *slots;
    size_t cap, head, count;
    uint64_t forwarded, dropped;
};

struct stats {
    uint64_t late_sum_ns, late_max_ns, late_n, late_over_1ms;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "delayline: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Open a TUN device named ifname; when spec is "NETNS:IFNAME", inside the
 * network namespace whose file is NETNS (the device belongs to the
 * namespace the fd was opened in). */
static int open_tun(const char *spec, char *ifname, size_t ifname_size)
{
    const char *colon = strrchr(spec, ':');
    const char *name = colon ? colon + 1 : spec;
    if (!*name || strlen(name) >= IFNAMSIZ || strlen(name) >= ifname_size) {
        fprintf(stderr, "delayline: bad interface name in '%s'\n", spec);
        exit(2);
    }
    snprintf(ifname, ifname_size, "%s", name);
    if (colon) {
        char path[4096];
        size_t n = (size_t)(colon - spec);
        if (n == 0 || n >= sizeof path) {
            fprintf(stderr, "delayline: bad namespace in '%s'\n", spec);
            exit(2);
        }
        memcpy(path, spec, n);
        path[n] = '\0';
        int ns = open(path, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
            die(path);
        if (setns(ns, CLONE_NEWNET) != 0)
            die("setns");
        close(ns);
    }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    memcpy(ifr.ifr_name, ifname, strlen(ifname));
    if (ioctl(fd, TUNSETIFF, &ifr) != 0)
        die(ifname);
    return fd;
}

static void arm(int tfd, const struct queue *q, size_t nq)
{
    uint64_t due = 0;
    for (size_t i = 0; i < nq; i++)
        if (q[i].count && (!due || q[i].slots[q[i].head].due_ns < due))
            due = q[i].slots[q[i].head].due_ns;
    struct itimerspec its;
    memset(&its, 0, sizeof its); /* all zero disarms */
    if (due) {
        its.it_value.tv_sec = (time_t)(due / 1000000000u);
        its.it_value.tv_nsec = (long)(due % 1000000000u);
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        die("timerfd_settime");
}

/* Read what the device has into q, each packet due delay_ns from now. */
static void take_in(int fd, struct queue *q, uint64_t delay_ns)
{
    static unsigned char scratch[SLOT_BYTES];
    for (;;) {
        struct slot *s = NULL;
        if (q->count < q->cap)
            s = &q->slots[(q->head + q->count) % q->cap];
        ssize_t n = read(fd, s ? s->data : scratch, SLOT_BYTES);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("read");
        }
        if (!s) {
            q->dropped++;
            continue;
        }
        s->len = (size_t)n;
        s->due_ns = now_ns() + delay_ns;
        q->count++;
    }
}

/* Write every packet of q that is due to the device fd. */
static void release(int fd, struct queue *q, struct stats *st)
{
    uint64_t now = now_ns();
    while (q->count && q->slots[q->head].due_ns <= now) {
        struct slot *s = &q->slots[q->head];
        /* EIO: the far device is down (not up yet): the packet is lost,
         * as on a link that is down. */
        if (write(fd, s->data, s->len) < 0) {
            if (errno != EAGAIN && errno != ENOBUFS && errno != EIO)
                die("write");
            q->dropped++;
        } else {
            q->forwarded++;
        }
        uint64_t late = now - s->due_ns;
        st->late_sum_ns += late;
        st->late_n++;
        if (late > 1000000u)
            st->late_over_1ms++;
        if (late > st->late_max_ns)
            st->late_max_ns = late;
        q->head = (q->head + 1) % q->cap;
        q->count--;
        now = now_ns();
    }
}

static void print_stats(const struct queue *q, const struct stats *st)
{
    printf("stats a_to_b=%llu b_to_a=%llu dropped=%llu late_mean_us=%.1f late_max_us=%.1f "
           "late_over_1ms=%llu\n",
           (unsigned long long)q[0].forwarded, (unsigned long long)q[1].forwarded,
           (unsigned long long)(q[0].dropped + q[1].dropped),
           st->late_n ? (double)st->late_sum_ns / (double)st->late_n / 1e3 : 0.0,
           (double)st->late_max_ns / 1e3, (unsigned long long)st->late_over_1ms);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: delayline [-d MS] [-q SLOTS] [-r] [NETNS:]IFNAME_A [NETNS:]IFNAME_B\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double delay_ms = 10.0;
    long slots = 4096;
    int opt, realtime = 0;
    while ((opt = getopt(argc, argv, "d:q:r")) != -1) {
        char *end;
        if (opt == 'd') {
            delay_ms = strtod(optarg, &end);
            if (*end || end == optarg || delay_ms < 0 || delay_ms > 10000)
                usage();
        } else if (opt == 'q') {
            slots = strtol(optarg, &end, 10);
            if (*end || end == optarg || slots < 1 || slots > 1 << 20)
                usage();
        } else if (opt == 'r') {
            realtime = 1;
        } else {
            usage();
        }
    }
    if (argc - optind != 2)
        usage();
    uint64_t delay_ns = (uint64_t)(delay_ms * 1e6 + 0.5);

    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    if (realtime) {
        struct sched_param sp = {.sched_priority = 10};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
            fprintf(stderr, "delayline: SCHED_FIFO: %s (going on without)\n", strerror(errno));
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");

    char name[2][IFNAMSIZ];
    int fd[2];
    fd[0] = open_tun(argv[optind], name[0], sizeof name[0]);
    fd[1] = open_tun(argv[optind + 1], name[1], sizeof name[1]);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create");

    struct queue q[2]; /* q[0]: read on A, written to B; q[1]: B to A */
    struct stats st = {0, 0, 0, 0};
    for (int i = 0; i < 2; i++) {
        memset(&q[i], 0, sizeof q[i]);
        q[i].cap = (size_t)slots;
        q[i].slots = calloc(q[i].cap, sizeof(struct slot));
        if (!q[i].slots)
            die("calloc");
    }
    printf("ready %s %s\n", name[0], name[1]);
    fflush(stdout);

    struct pollfd pfd[4] = {
        {.fd = fd[0], .events = POLLIN},
        {.fd = fd[1], .events = POLLIN},
        {.fd = tfd, .events = POLLIN},
        {.fd = sfd, .events = POLLIN},
    };
    for (;;) {
        if (poll(pfd, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (pfd[3].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                print_stats(q, &st);
                if (si.ssi_signo != SIGUSR1) {
                    free(q[0].slots);
                    free(q[1].slots);
                    return 0;
                }
            }
        }
        if (pfd[2].revents) {
            uint64_t expirations;
            if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                die("timerfd read");
        }
        /* Due packets first, then what arrived: each queue stays in order. */
        release(fd[1], &q[0], &st);
        release(fd[0], &q[1], &st);
        for (int i = 0; i < 2; i++) {
            if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
                fprintf(stderr, "delayline: %s went away\n", name[i]);
                return 1;
            }
            if (pfd[i].revents & POLLIN)
                take_in(fd[i], &q[i], delay_ns);
        }
        arm(tfd, q, 2);
    }
}
