// closeLook: what watch() reads of a socket just before Node closes its fd, in one call (the
// kernel decides at close(2) between FIN and RST on these). A call per value cost more than the
// syscalls themselves once the socket can outlive its fd. Which states need only the state is
// the caller's to say (a mask), not decided here.
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

namespace {
// out: [tcpi_state, l_onoff, l_linger, SIOCINQ, TCP_LINGER2, tcpi_data_segs_in].
constexpr size_t kCloseLookLength = 6;
constexpr size_t kTcpInfoDataSegsIn = 152;
}  // namespace

Napi::Value CloseLook(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<int32_t> out = Int32ArrayArg(info, 1);
  if (out.ElementLength() < kCloseLookLength) throw OutOfRange(env, "out must have 6 elements");
  uint32_t stop_states = static_cast<uint32_t>(IntArg(info, 2));
  int32_t* values = out.Data();
  // The kernel's struct tcp_info, newer than libc's: read by offset (tcpi_state at 0,
  // tcpi_data_segs_in at 152, since Linux 4.6; -1 where the kernel wrote less).
  uint8_t tcp[kTcpInfoDataSegsIn + 4] = {};
  socklen_t len = sizeof(tcp);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, tcp, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  uint8_t state = tcp[0];
  values[0] = state;
  uint32_t segs_in = 0;
  memcpy(&segs_in, tcp + kTcpInfoDataSegsIn, sizeof(segs_in));
  values[5] = len >= sizeof(tcp) ? static_cast<int32_t>(segs_in) : -1;
  values[1] = values[2] = values[3] = values[4] = 0;
  if (state < 32 && (stop_states & (1u << state)) != 0) return Napi::Boolean::New(env, false);
  struct linger linger = {0, 0};
  len = sizeof(linger);
  if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  values[1] = linger.l_onoff;
  values[2] = linger.l_linger;
  int unread = 0;
  if (ioctl(fd, SIOCINQ, &unread) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "ioctl");
  }
  values[3] = unread;
  int linger2 = 0;
  len = sizeof(linger2);
  if (getsockopt(fd, IPPROTO_TCP, TCP_LINGER2, &linger2, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  values[4] = linger2;
  return Napi::Boolean::New(env, true);
}

}  // namespace finwait
