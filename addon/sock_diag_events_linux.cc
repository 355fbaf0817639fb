// The sock_diag destroy multicast (what `ss -E` listens to): a NETLINK_SOCK_DIAG socket bound to
// the kernel and joined to the TCP destroy groups receives one SOCK_DIAG_BY_FAMILY message for
// every full TCP socket freed in its network namespace (struct inet_diag_msg with the cookie,
// then attributes, among them INET_DIAG_INFO: the final tcp_info). No privilege is needed. Here:
// making the socket, joining and leaving a group, and reading what is queued in one batch into
// the caller's buffer. src/diag.ts decodes the messages; what they mean is decided in TypeScript.
// The socket is an object that owns its fd (closed with its environment); the calls take the fd.
#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "finwait.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270  // linux/socket.h; older libc headers lack it
#endif

namespace finwait {

namespace {

// Owns the netlink socket: closed by close(), or when the object is collected or its environment
// ends (a Worker terminated with it open), so that no joined socket outlives its environment (the
// kernel would go on building a message for every TCP socket freed in its namespace).
class EventsSocket : public Napi::ObjectWrap<EventsSocket> {
 public:
  explicit EventsSocket(const Napi::CallbackInfo& info);
  ~EventsSocket() override { Close(); }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Close();
    return info.Env().Undefined();
  }

 private:
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
};

EventsSocket::EventsSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventsSocket>(info) {
  Napi::Env env = info.Env();
  int rcvbuf = IntArg(info, 1);  // checked before the socket is made
  // Non-blocking: it is read only when libuv says it is readable, and read until EAGAIN.
  int fd = MakeFd(info, 0, "socket", [] {
    return socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG);
  });
  // Room for a burst of messages (each ~1 KiB of buffer): one that does not fit is lost.
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, err, "setsockopt");
  }
  // Multicast is delivered only to a bound socket; the kernel picks the port id.
  sockaddr_nl local = {};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, err, "bind");
  }
  fd_ = fd;
}

}  // namespace

Napi::Function SockDiagEventsSocketClass(Napi::Env env) {
  return EventsSocket::DefineClass(env, "SockDiagEventsSocket",
                                   {EventsSocket::InstanceAccessor<&EventsSocket::Fd>("fd"),
                                    EventsSocket::InstanceMethod<&EventsSocket::CloseMethod>("close")});
}

static Napi::Value Membership(const Napi::CallbackInfo& info, int option) {
  int fd = IntArg(info, 0);
  int group = IntArg(info, 1);
  if (setsockopt(fd, SOL_NETLINK, option, &group, sizeof(group)) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "setsockopt");
  }
  return info.Env().Undefined();
}

Napi::Value SockDiagJoin(const Napi::CallbackInfo& info) {
  return Membership(info, NETLINK_ADD_MEMBERSHIP);
}

Napi::Value SockDiagLeave(const Napi::CallbackInfo& info) {
  return Membership(info, NETLINK_DROP_MEMBERSHIP);
}

Napi::Value SockDiagReadEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> buffer = Uint8ArrayArg(info, 1);
  Napi::TypedArrayOf<int32_t> lengths = Int32ArrayArg(info, 2);
  // One datagram per message, each into a slot of its own: slot i is bytes [i * size, (i + 1) * size).
  constexpr size_t kMaxBatch = 256;
  size_t slots = lengths.ElementLength() < kMaxBatch ? lengths.ElementLength() : kMaxBatch;
  size_t size = slots == 0 ? 0 : buffer.ByteLength() / slots;
  if (slots == 0 || size < NLMSG_HDRLEN) throw OutOfRange(env, "buffer too short for the slots");
  mmsghdr msgs[kMaxBatch];
  iovec iovs[kMaxBatch];
  memset(msgs, 0, sizeof(msgs));
  for (size_t i = 0; i < slots; i++) {
    iovs[i] = {buffer.Data() + i * size, size};
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int got;
  do {
    got = recvmmsg(fd, msgs, static_cast<unsigned>(slots), MSG_DONTWAIT, nullptr);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    int err = errno;
    // Nothing queued, and messages lost to a full receive buffer: results, not errors. The
    // caller decides what a loss means (every socket it follows may have ended unseen).
    if (err == EAGAIN || err == EWOULDBLOCK) return Napi::Number::New(env, 0);
    if (err == ENOBUFS) return Napi::Number::New(env, -ENOBUFS);
    throw ErrnoError(env, err, "recvmmsg");
  }
  int32_t* out = lengths.Data();
  for (int i = 0; i < got; i++) {
    // A message cut to its slot is marked by a negative length (the bytes it had).
    bool cut = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
    out[i] = cut ? -static_cast<int32_t>(msgs[i].msg_len) : static_cast<int32_t>(msgs[i].msg_len);
  }
  return Napi::Number::New(env, got);
}

}  // namespace finwait
