/*
 * loadgen.c - SOCKS5 session load generator with a built-in sink.
 *
 * Single-threaded, epoll, non-blocking sockets. Built by bench/run.ts with
 * `cc -O2 -o <build>/loadgen bench/loadgen.c`.
 *
 * The sink (a TCP server on 127.0.0.1:<ephemeral>) runs in a forked child
 * with its own epoll loop; it reads and discards everything and closes on EOF.
 *
 * Modes
 *   sessions (default): keep --concurrency sessions in flight for
 *     --warmup + --duration seconds. Each session: connect to the proxy,
 *     greeting (05 01 00), wait for the method reply, CONNECT 127.0.0.1:<sink>,
 *     wait for the reply, send 1 byte, then (default, --close sink) the sink
 *     closes when the byte arrives and the client closes when that EOF has
 *     been relayed back; with --close client the client closes right after
 *     the byte and the sink closes on EOF. The default keeps the ephemeral
 *     ports on 127.0.0.1 free of TIME_WAIT sockets (only the sink and the
 *     proxy's listening side are active closers); with --close client the
 *     proxy's outgoing sockets pile up in TIME_WAIT, and a proxy that bind()s
 *     its outgoing sockets to port 0 (Dante with `external:`) cannot reuse
 *     them and fails once the ephemeral range is full. Only sessions that finish inside the
 *     measurement window (after the warmup) are counted. Latency: greeting
 *     sent -> CONNECT reply complete (hs_*), connect() -> reply (total_*).
 *     With --direct the client connects straight to the sink, sends 1 byte
 *     and closes (latency = TCP connect time).
 *   --hold N: attempt exactly N sessions (at most --concurrency in flight),
 *     keep the successful ones open and idle, print one JSON line, then wait
 *     until stdin becomes readable (a line or EOF) or --hold-max seconds pass,
 *     print a second JSON line and close everything.
 *
 * Output: JSON lines on stdout. Exit code 0 unless usage or setup failed.
 * Every loop is bounded in time (--duration, --timeout, --hold-max).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum {
  ST_FREE = 0, /* slot unused (may be waiting for a retry time) */
  ST_CONNECTING,
  ST_METHOD,
  ST_REPLY,
  ST_DRAIN, /* sink-closes mode: byte sent, waiting for the relayed EOF */
  ST_HELD,
  ST_DONE, /* hold mode: attempt finished (failed or dropped) */
};

enum {
  E_CONNECT = 0, /* connect() failed (immediately or asynchronously) */
  E_EOF,         /* peer closed before the handshake finished */
  E_IO,          /* read/write error during the handshake */
  E_PROTO,       /* malformed method reply / unexpected method */
  E_REPLY,       /* CONNECT reply with REP != 0 */
  E_TIMEOUT,     /* session took longer than --timeout */
  E_COUNT
};
static const char *err_names[E_COUNT] = {"connect", "eof", "io",
                                         "proto", "reply", "timeout"};

typedef struct {
  int fd;
  int state;
  uint64_t t_start; /* connect() called */
  uint64_t t_greet; /* greeting sent */
  uint64_t retry_at;
  int have;
  uint8_t buf[32];
  double lat_hs, lat_tot; /* microseconds, set when the reply arrived */
} sess_t;

static int g_direct = 0;
static int g_client_closes = 0; /* --close client: close right after the byte */
static struct sockaddr_in g_proxy, g_sink;
static int g_ep = -1;
static sess_t *g_s = NULL;
static int g_nslots = 0;
static uint64_t g_timeout_ns = 5000000000ull;
static int g_in_window = 0; /* sessions mode: count stats only inside window */
static long g_err[E_COUNT];
static long g_errno_cnt[256];
static int g_hold = 0;
static long g_held = 0, g_dropped = 0, g_attempted = 0;
static int g_releasing = 0;
static long g_released_eof = 0;
static long g_completed = 0, g_completed_total = 0;
static double *g_hs = NULL, *g_tot = NULL;
static size_t g_nlat = 0, g_caplat = 0;
static pid_t g_sink_pid = -1;
static volatile sig_atomic_t g_stop = 0;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  if (g_sink_pid > 0) kill(g_sink_pid, SIGKILL);
  exit(2);
}

static void on_term(int sig) {
  (void)sig;
  g_stop = 1;
}

static int parse_addr(const char *s, struct sockaddr_in *out) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)atoi(colon + 1));
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---------------------------------------------------------------- sink -- */

static void sink_run(int lfd, int report_fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) _exit(3);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event evs[256];
  char buf[16384];
  long accepted = 0, bytes = 0, accept_err = 0, open_now = 0, open_max = 0;
  while (!g_stop) {
    if (getppid() == 1) break; /* parent gone */
    int n = epoll_wait(ep, evs, 256, 200);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        for (int k = 0; k < 1024; k++) {
          int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
              accept_err++;
            break;
          }
          accepted++;
          open_now++;
          if (open_now > open_max) open_max = open_now;
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP,
                                    .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      int closeit = 0;
      for (int k = 0; k < 64; k++) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          bytes += r;
          if (!g_client_closes) { /* sink closes first (after the byte) */
            closeit = 1;
            break;
          }
          continue;
        }
        if (r == 0) closeit = 1;
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
          closeit = 1;
        break;
      }
      if (closeit) {
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
        open_now--;
      }
    }
  }
  char out[256];
  int len = snprintf(out, sizeof out,
                     "{\"accepted\":%ld,\"bytes\":%ld,\"accept_errors\":%ld,"
                     "\"open_max\":%ld}",
                     accepted, bytes, accept_err, open_max);
  if (write(report_fd, out, (size_t)len) < 0) _exit(4);
  _exit(0);
}

static int g_sink_report = -1;

static void sink_start(void) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("sink socket");
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("sink bind");
  if (listen(lfd, 65535) < 0) die("sink listen");
  socklen_t al = sizeof g_sink;
  if (getsockname(lfd, (struct sockaddr *)&g_sink, &al) < 0) die("getsockname");
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(pfd[0]);
    sink_run(lfd, pfd[1]);
  }
  close(pfd[1]);
  close(lfd);
  g_sink_pid = pid;
  g_sink_report = pfd[0];
}

/* Stop the sink and read its stats (bounded: 2 s). */
static void sink_stop(char *out, size_t outlen) {
  snprintf(out, outlen, "null");
  if (g_sink_pid <= 0) return;
  kill(g_sink_pid, SIGTERM);
  uint64_t deadline = now_ns() + 2000000000ull;
  size_t got = 0;
  fcntl(g_sink_report, F_SETFL, O_NONBLOCK);
  while (now_ns() < deadline && got + 1 < outlen) {
    ssize_t r = read(g_sink_report, out + got, outlen - 1 - got);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (r == 0) break;
    usleep(5000);
  }
  out[got] = 0;
  if (got == 0) snprintf(out, outlen, "null");
  int status;
  for (int i = 0; i < 200; i++) {
    if (waitpid(g_sink_pid, &status, WNOHANG) == g_sink_pid) {
      g_sink_pid = -1;
      return;
    }
    usleep(10000);
  }
  kill(g_sink_pid, SIGKILL);
  waitpid(g_sink_pid, &status, 0);
  g_sink_pid = -1;
}

/* ------------------------------------------------------------- client -- */

static void count_err(int kind, int err) {
  if (g_hold || g_in_window) {
    g_err[kind]++;
    if (err > 0 && err < 256) g_errno_cnt[err]++;
  }
}

static void lat_push(double hs_us, double tot_us) {
  if (g_nlat == g_caplat) {
    g_caplat = g_caplat ? g_caplat * 2 : 65536;
    g_hs = realloc(g_hs, g_caplat * sizeof *g_hs);
    g_tot = realloc(g_tot, g_caplat * sizeof *g_tot);
    if (!g_hs || !g_tot) die("realloc");
  }
  g_hs[g_nlat] = hs_us;
  g_tot[g_nlat] = tot_us;
  g_nlat++;
}

static void sess_close(sess_t *s) {
  if (s->fd >= 0) {
    close(s->fd); /* also removes it from epoll */
    s->fd = -1;
  }
}

/* End a session that failed; in sessions mode the slot is reused at once. */
static void sess_fail(sess_t *s, int kind, int err) {
  count_err(kind, err);
  sess_close(s);
  s->state = g_hold ? ST_DONE : ST_FREE;
  s->retry_at = 0;
}

static void sess_start(sess_t *s, uint64_t now) {
  s->have = 0;
  s->t_start = now;
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) {
    count_err(E_CONNECT, errno);
    s->state = g_hold ? ST_DONE : ST_FREE;
    s->retry_at = now + 1000000; /* 1 ms back-off, avoids a busy loop */
    return;
  }
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const struct sockaddr_in *dst = g_direct ? &g_sink : &g_proxy;
  int r = connect(s->fd, (const struct sockaddr *)dst, sizeof *dst);
  if (r < 0 && errno != EINPROGRESS) {
    int e = errno;
    sess_close(s);
    count_err(E_CONNECT, e);
    s->state = g_hold ? ST_DONE : ST_FREE;
    s->retry_at = now + 1000000;
    return;
  }
  s->state = ST_CONNECTING;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)(s - g_s)};
  if (epoll_ctl(g_ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) die("epoll_ctl add");
}

static int want(sess_t *s, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(s - g_s)};
  return epoll_ctl(g_ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static int send_all(int fd, const void *p, size_t n) {
  ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
  return w == (ssize_t)n ? 0 : -1;
}

/* A session completed: count it (if inside the window) and free the slot. */
static void sess_finish(sess_t *s) {
  sess_close(s);
  s->state = ST_FREE;
  s->retry_at = 0;
  g_completed_total++;
  if (g_in_window) {
    g_completed++;
    lat_push(s->lat_hs, s->lat_tot);
  }
}

/* The session reached its goal (connected / CONNECT succeeded). */
static void sess_success(sess_t *s, uint64_t now) {
  uint64_t ref = g_direct ? s->t_start : s->t_greet;
  if (g_hold) {
    g_held++;
    s->state = ST_HELD;
    /* Watch for the proxy dropping an idle relay. */
    if (want(s, EPOLLIN | EPOLLRDHUP) < 0) die("epoll_ctl mod");
    return;
  }
  static const uint8_t one_byte = 0x42;
  if (send_all(s->fd, &one_byte, 1) < 0) {
    sess_fail(s, E_IO, errno);
    return;
  }
  s->lat_hs = (double)(now - ref) / 1000.0;
  s->lat_tot = (double)(now - s->t_start) / 1000.0;
  if (g_client_closes) {
    sess_finish(s);
    return;
  }
  /* Wait until the sink's close is relayed back as EOF, then close: nobody
   * but the sink and the proxy's listening side ends in TIME_WAIT, so the
   * ephemeral ports on 127.0.0.1 are not exhausted by the benchmark. */
  s->state = ST_DRAIN;
  if (want(s, EPOLLIN | EPOLLRDHUP) < 0) die("epoll_ctl mod");
}

/* Read into s->buf until `need` bytes are there. 1 = complete, 0 = more,
 * -1 = failed (already counted). */
static int read_upto(sess_t *s, int need) {
  while (s->have < need) {
    ssize_t r = recv(s->fd, s->buf + s->have, (size_t)(need - s->have), 0);
    if (r > 0) {
      s->have += (int)r;
      continue;
    }
    if (r == 0) {
      sess_fail(s, E_EOF, 0);
      return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno == EINTR) continue;
    sess_fail(s, E_IO, errno);
    return -1;
  }
  return 1;
}

static void on_event(sess_t *s, uint32_t events, uint64_t now) {
  if (s->fd < 0) return;
  switch (s->state) {
  case ST_CONNECTING: {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
      sess_fail(s, E_CONNECT, err);
      return;
    }
    if (!(events & EPOLLOUT)) return;
    if (g_direct) {
      sess_success(s, now);
      return;
    }
    static const uint8_t greet[3] = {5, 1, 0};
    s->t_greet = now;
    if (send_all(s->fd, greet, 3) < 0) {
      sess_fail(s, E_IO, errno);
      return;
    }
    s->state = ST_METHOD;
    s->have = 0;
    if (want(s, EPOLLIN) < 0) die("epoll_ctl mod");
    return;
  }
  case ST_METHOD: {
    int r = read_upto(s, 2);
    if (r <= 0) return;
    if (s->buf[0] != 5 || s->buf[1] != 0) {
      sess_fail(s, E_PROTO, 0);
      return;
    }
    uint8_t req[10] = {5, 1, 0, 1};
    memcpy(req + 4, &g_sink.sin_addr, 4);
    memcpy(req + 8, &g_sink.sin_port, 2);
    if (send_all(s->fd, req, sizeof req) < 0) {
      sess_fail(s, E_IO, errno);
      return;
    }
    s->state = ST_REPLY;
    s->have = 0;
    return;
  }
  case ST_REPLY: {
    int r = read_upto(s, 5);
    if (r <= 0) return;
    int need;
    switch (s->buf[3]) {
    case 1: need = 10; break;
    case 4: need = 22; break;
    case 3: need = 7 + s->buf[4]; break;
    default: sess_fail(s, E_PROTO, 0); return;
    }
    if (s->buf[0] != 5) {
      sess_fail(s, E_PROTO, 0);
      return;
    }
    if (s->buf[1] != 0) {
      sess_fail(s, E_REPLY, 0);
      return;
    }
    if (need > (int)sizeof s->buf) {
      sess_fail(s, E_PROTO, 0);
      return;
    }
    r = read_upto(s, need);
    if (r <= 0) return;
    sess_success(s, now);
    return;
  }
  case ST_DRAIN: {
    char b[512];
    for (int k = 0; k < 16; k++) {
      ssize_t r = recv(s->fd, b, sizeof b, 0);
      if (r > 0) continue; /* unexpected data: ignore */
      if (r == 0) {
        sess_finish(s);
        return;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      sess_fail(s, E_IO, errno);
      return;
    }
    return;
  }
  case ST_HELD: {
    char b[512];
    ssize_t r = recv(s->fd, b, sizeof b, 0);
    if (r > 0) return; /* unexpected data, ignore */
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return;
    if (g_releasing) g_released_eof++;
    else g_dropped++;
    g_held--;
    sess_close(s);
    s->state = ST_DONE;
    return;
  }
  default:
    return;
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double q) {
  if (n == 0) return -1;
  size_t k = (size_t)ceil(q * (double)n);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

static void print_errors(FILE *f) {
  fprintf(f, "\"errors\":{");
  long total = 0;
  for (int i = 0; i < E_COUNT; i++) {
    fprintf(f, "%s\"%s\":%ld", i ? "," : "", err_names[i], g_err[i]);
    total += g_err[i];
  }
  fprintf(f, ",\"total\":%ld},\"errno\":{", total);
  int first = 1;
  for (int i = 1; i < 256; i++) {
    if (!g_errno_cnt[i]) continue;
    const char *nm = strerrorname_np(i);
    fprintf(f, "%s\"%s\":%ld", first ? "" : ",", nm ? nm : "?", g_errno_cnt[i]);
    first = 0;
  }
  fprintf(f, "}");
}

static long count_state(int st) {
  long n = 0;
  for (int i = 0; i < g_nslots; i++) n += g_s[i].state == st;
  return n;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen (--proxy 127.0.0.1:PORT | --direct)\n"
          "               [--concurrency N=32] [--duration S=5] [--warmup "
          "S=0.5]\n"
          "               [--timeout S=5] [--hold N] [--hold-max S=120]\n"
          "               [--close sink|client]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int conc = 32;
  double duration = 5, warmup = 0.5, timeout = 5, hold_max = 120;
  int have_proxy = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--direct")) {
      g_direct = 1;
    } else if (!strcmp(a, "--proxy") && v) {
      if (parse_addr(v, &g_proxy) < 0) usage();
      have_proxy = 1;
      i++;
    } else if (!strcmp(a, "--concurrency") && v) {
      conc = atoi(v);
      i++;
    } else if (!strcmp(a, "--duration") && v) {
      duration = atof(v);
      i++;
    } else if (!strcmp(a, "--warmup") && v) {
      warmup = atof(v);
      i++;
    } else if (!strcmp(a, "--timeout") && v) {
      timeout = atof(v);
      i++;
    } else if (!strcmp(a, "--hold") && v) {
      g_hold = atoi(v);
      i++;
    } else if (!strcmp(a, "--close") && v) {
      if (!strcmp(v, "client")) g_client_closes = 1;
      else if (!strcmp(v, "sink")) g_client_closes = 0;
      else usage();
      i++;
    } else if (!strcmp(a, "--hold-max") && v) {
      hold_max = atof(v);
      i++;
    } else {
      usage();
    }
  }
  if (!g_direct && !have_proxy) usage();
  if (conc < 1 || conc > 20000 || duration <= 0 || duration > 600 ||
      timeout <= 0 || g_hold < 0 || g_hold > 20000 || hold_max > 3600)
    usage();
  g_timeout_ns = (uint64_t)(timeout * 1e9);

  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: epoll_wait gets EINTR */
  sigaction(SIGINT, &sa, NULL);

  sink_start();

  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (g_ep < 0) die("epoll_create1");
  g_nslots = g_hold ? g_hold : conc;
  g_s = calloc((size_t)g_nslots, sizeof *g_s);
  if (!g_s) die("calloc");
  for (int i = 0; i < g_nslots; i++) g_s[i].fd = -1;

  struct epoll_event evs[1024];
  uint64_t t0 = now_ns();
  char sinkstats[512];

  if (!g_hold) {
    /* ------------------------------------------------ sessions mode -- */
    uint64_t t_begin = t0 + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_begin + (uint64_t)(duration * 1e9);
    for (int i = 0; i < g_nslots; i++) sess_start(&g_s[i], now_ns());
    uint64_t last_scan = t0;
    while (!g_stop) {
      uint64_t now = now_ns();
      if (now >= t_end) break;
      g_in_window = now >= t_begin;
      int n = epoll_wait(g_ep, evs, 1024, 1);
      if (n < 0 && errno != EINTR) die("epoll_wait");
      now = now_ns();
      g_in_window = now >= t_begin && now < t_end;
      for (int i = 0; i < n; i++) {
        sess_t *s = &g_s[evs[i].data.u32];
        on_event(s, evs[i].events, now);
        if (s->state == ST_FREE && s->retry_at == 0 && now < t_end)
          sess_start(s, now);
      }
      if (now - last_scan >= 1000000) { /* every 1 ms: retries, timeouts */
        last_scan = now;
        for (int i = 0; i < g_nslots; i++) {
          sess_t *s = &g_s[i];
          if (s->state == ST_FREE) {
            if (now >= s->retry_at) sess_start(s, now);
          } else if (now - s->t_start > g_timeout_ns) {
            sess_fail(s, E_TIMEOUT, 0);
            sess_start(s, now);
          }
        }
      }
    }
    double elapsed = (double)(now_ns() - t_begin) / 1e9;
    if (elapsed > duration) elapsed = duration;
    long inflight = g_nslots - count_state(ST_FREE);
    for (int i = 0; i < g_nslots; i++) sess_close(&g_s[i]);
    usleep(200000); /* let the last relayed bytes reach the sink */
    sink_stop(sinkstats, sizeof sinkstats);
    qsort(g_hs, g_nlat, sizeof *g_hs, cmp_d);
    qsort(g_tot, g_nlat, sizeof *g_tot, cmp_d);
    printf("{\"mode\":\"sessions\",\"direct\":%s,\"concurrency\":%d,"
           "\"duration_s\":%.3f,\"completed\":%ld,\"completed_total\":%ld,"
           "\"rate\":%.1f,\"inflight_at_end\":%ld,",
           g_direct ? "true" : "false", conc, elapsed, g_completed,
           g_completed_total, elapsed > 0 ? (double)g_completed / elapsed : 0,
           inflight);
    printf("\"hs_p50_us\":%.1f,\"hs_p99_us\":%.1f,\"hs_max_us\":%.1f,"
           "\"total_p50_us\":%.1f,\"total_p99_us\":%.1f,",
           pct(g_hs, g_nlat, 0.5), pct(g_hs, g_nlat, 0.99),
           pct(g_hs, g_nlat, 1.0), pct(g_tot, g_nlat, 0.5),
           pct(g_tot, g_nlat, 0.99));
    print_errors(stdout);
    printf(",\"sink\":%s,\"stopped\":%s}\n", sinkstats,
           g_stop ? "true" : "false");
    fflush(stdout);
    return 0;
  }

  /* ---------------------------------------------------------- hold mode -- */
  g_in_window = 1;
  int next = 0; /* next slot to start */
  uint64_t setup_deadline = t0 + (uint64_t)(hold_max * 1e9);
  uint64_t last_scan = t0;
  while (!g_stop) {
    uint64_t now = now_ns();
    long inflight = 0;
    for (int i = 0; i < next; i++) {
      int st = g_s[i].state;
      inflight += st == ST_CONNECTING || st == ST_METHOD || st == ST_REPLY;
    }
    while (next < g_nslots && inflight < conc) {
      g_attempted++;
      sess_start(&g_s[next++], now);
      inflight += g_s[next - 1].state == ST_CONNECTING;
    }
    if (next >= g_nslots && inflight == 0) break;
    if (now >= setup_deadline) break;
    int n = epoll_wait(g_ep, evs, 1024, 5);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    now = now_ns();
    for (int i = 0; i < n; i++) on_event(&g_s[evs[i].data.u32], evs[i].events, now);
    if (now - last_scan >= 50000000) {
      last_scan = now;
      for (int i = 0; i < next; i++) {
        sess_t *s = &g_s[i];
        int st = s->state;
        if ((st == ST_CONNECTING || st == ST_METHOD || st == ST_REPLY) &&
            now - s->t_start > g_timeout_ns)
          sess_fail(s, E_TIMEOUT, 0);
      }
    }
  }
  double setup_s = (double)(now_ns() - t0) / 1e9;
  long unfinished = 0;
  for (int i = 0; i < g_nslots; i++) {
    int st = g_s[i].state;
    if (st == ST_CONNECTING || st == ST_METHOD || st == ST_REPLY) {
      unfinished++;
      sess_fail(&g_s[i], E_TIMEOUT, 0);
    }
  }
  unfinished += g_nslots - next;
  printf("{\"mode\":\"hold\",\"target\":%d,\"attempted\":%ld,\"held\":%ld,"
         "\"not_started\":%d,\"setup_s\":%.3f,\"dropped\":%ld,",
         g_hold, g_attempted, g_held, g_nslots - next, setup_s, g_dropped);
  print_errors(stdout);
  printf("}\n");
  fflush(stdout);

  /* Hold until stdin is readable (line or EOF), a signal, or --hold-max. */
  struct epoll_event sev = {.events = EPOLLIN | EPOLLHUP, .data.u32 = UINT32_MAX};
  int stdin_ok = epoll_ctl(g_ep, EPOLL_CTL_ADD, 0, &sev) == 0;
  uint64_t hold_deadline = now_ns() + (uint64_t)(hold_max * 1e9);
  while (!g_stop && now_ns() < hold_deadline) {
    int n = epoll_wait(g_ep, evs, 1024, 200);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    int release = 0;
    uint64_t now = now_ns();
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u32 == UINT32_MAX) {
        release = 1;
        continue;
      }
      on_event(&g_s[evs[i].data.u32], evs[i].events, now);
    }
    if (release || !stdin_ok) break;
  }
  long still = g_held;
  /* Release: the sink closes first (its exit closes every socket), the proxy
   * relays the EOFs, then the client closes. Bounded: 3 s. */
  g_releasing = 1;
  sink_stop(sinkstats, sizeof sinkstats);
  uint64_t rel_deadline = now_ns() + 3000000000ull;
  while (g_held > 0 && now_ns() < rel_deadline) {
    int n = epoll_wait(g_ep, evs, 1024, 50);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    uint64_t now = now_ns();
    for (int i = 0; i < n; i++)
      if (evs[i].data.u32 != UINT32_MAX)
        on_event(&g_s[evs[i].data.u32], evs[i].events, now);
  }
  for (int i = 0; i < g_nslots; i++) sess_close(&g_s[i]);
  printf("{\"mode\":\"hold-release\",\"held_at_release\":%ld,"
         "\"dropped\":%ld,\"eof_relayed\":%ld,\"sink\":%s}\n",
         still, g_dropped, g_released_eof, sinkstats);
  fflush(stdout);
  return 0;
}
