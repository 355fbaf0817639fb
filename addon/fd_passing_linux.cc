// Passing connections between processes (the handoff of idle keep-alive connections to the next
// instance of a server): a Unix domain SOCK_SEQPACKET socket, the peer's credentials, and fds sent
// and received as SCM_RIGHTS. Every call is non-blocking: what would wait returns or throws
// EAGAIN, and the caller polls the fd (FdPoll). Which fds to send, to whom, and what to do with
// those received is decided in TypeScript.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "finwait.h"

namespace finwait {

namespace {

// The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD).
constexpr size_t kMaxFds = 253;

void CopyAddress(const Napi::CallbackInfo& info, size_t i, const char* syscall, sockaddr_un* address,
                 socklen_t* length) {
  Napi::TypedArrayOf<uint8_t> bytes = Uint8ArrayArg(info, i);
  if (bytes.ByteLength() < sizeof(sa_family_t) + 1 || bytes.ByteLength() > sizeof(sockaddr_un)) {
    throw ErrnoError(info.Env(), EINVAL, syscall);
  }
  memset(address, 0, sizeof(*address));
  memcpy(address, bytes.Data(), bytes.ByteLength());
  *length = static_cast<socklen_t>(bytes.ByteLength());
}

}  // namespace

Napi::Value SeqpacketSocket(const Napi::CallbackInfo& info) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "socket");
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  sockaddr_un address;
  socklen_t length;
  CopyAddress(info, 1, "connect", &address, &length);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "connect");
  }
  return info.Env().Undefined();
}

Napi::Value AcceptUnix(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int accepted = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (accepted < 0) {
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    throw ErrnoError(info.Env(), err, "accept4");
  }
  return Napi::Number::New(info.Env(), accepted);
}

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  ucred cred = {};
  socklen_t length = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("pid", Napi::Number::New(info.Env(), cred.pid));
  result.Set("uid", Napi::Number::New(info.Env(), cred.uid));
  result.Set("gid", Napi::Number::New(info.Env(), cred.gid));
  return result;
}

Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<int32_t> fds = Int32ArrayArg(info, 1);
  int count = IntArg(info, 2);
  Napi::TypedArrayOf<uint8_t> payload = Uint8ArrayArg(info, 3);
  if (count < 0 || static_cast<size_t>(count) > fds.ElementLength() || static_cast<size_t>(count) > kMaxFds) {
    throw OutOfRange(env, "The value of \"count\" is out of range. It must be >= 0 and <= the fds given and 253.");
  }
  // A message carries at least one byte: fds alone are not sent on a SOCK_SEQPACKET socket.
  if (payload.ByteLength() == 0) throw ErrnoError(env, EINVAL, "sendmsg");
  iovec iov = {payload.Data(), payload.ByteLength()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (count > 0) {
    memset(control, 0, sizeof(control));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    cmsghdr* header = CMSG_FIRSTHDR(&msg);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(header), fds.Data(), sizeof(int) * count);
  }
  ssize_t sent = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent < 0) {
    int err = errno;
    throw ErrnoError(env, err, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(sent));
}

Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> payload = Uint8ArrayArg(info, 1);
  Napi::TypedArrayOf<int32_t> fds = Int32ArrayArg(info, 2);
  iovec iov = {payload.Data(), payload.ByteLength()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t got = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (got < 0) {
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return Napi::Number::New(env, -1);
    throw ErrnoError(env, err, "recvmsg");
  }
  // Every fd that came is either handed to the caller or closed here, never leaked.
  size_t received = 0;
  for (cmsghdr* header = CMSG_FIRSTHDR(&msg); header != nullptr; header = CMSG_NXTHDR(&msg, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(header);
    for (size_t i = 0; i < n; i++) {
      int passed;
      memcpy(&passed, data + i * sizeof(int), sizeof(int));
      if (received < fds.ElementLength()) {
        fds[received++] = passed;
      } else {
        close(passed);
      }
    }
  }
  for (size_t i = received; i < fds.ElementLength(); i++) fds[i] = -1;
  if ((msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0) {
    for (size_t i = 0; i < received; i++) close(fds[i]);
    for (size_t i = 0; i < received; i++) fds[i] = -1;
    throw ErrnoError(env, EMSGSIZE, "recvmsg");
  }
  return Napi::Number::New(env, static_cast<double>(got));
}

}  // namespace finwait
