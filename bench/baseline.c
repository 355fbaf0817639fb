/*
 * The C baseline for `npm run bench`: the same getsockopt(TCP_INFO) calls finwait makes, on the
 * same sockets (inherited from the benchmark as fds 3, 4, ...), timed with CLOCK_MONOTONIC.
 *
 *   baseline state <iterations>          one-byte TCP_INFO on fd 3, ns per call
 *   baseline info <iterations>           512-byte TCP_INFO on fd 3, ns per call
 *   baseline batch <sweeps> <count>      one-byte TCP_INFO on fds 3..3+count-1, ns per sweep
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int read_info(int fd, void *buf, socklen_t size) {
  socklen_t len = size;
  return getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &len);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: baseline state|info <iterations> | batch <sweeps> <count>\n");
    return 2;
  }
  const char *mode = argv[1];
  long n = atol(argv[2]);
  static uint8_t buf[512];
  volatile unsigned sink = 0;
  double start, end;
  if (strcmp(mode, "batch") == 0) {
    int count = argc > 3 ? atoi(argv[3]) : 0;
    start = now_ns();
    for (long s = 0; s < n; s++) {
      for (int i = 0; i < count; i++) {
        uint8_t state = 0;
        if (read_info(3 + i, &state, 1) != 0) { perror("getsockopt"); return 1; }
        sink += state;
      }
    }
    end = now_ns();
  } else {
    socklen_t size = strcmp(mode, "info") == 0 ? sizeof(buf) : 1;
    start = now_ns();
    for (long i = 0; i < n; i++) {
      if (read_info(3, buf, size) != 0) { perror("getsockopt"); return 1; }
      sink += buf[0];
    }
    end = now_ns();
  }
  printf("%.1f\n", (end - start) / (double)n);
  return sink == 0xffffffff;
}
