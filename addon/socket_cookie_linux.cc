// getsockopt(SO_COOKIE): the 64-bit id the kernel gives a socket (Linux 4.12+), which sock_diag,
// the destroy multicast and the BPF program name it by. One syscall, where sockDiagId reads five
// to also name the connection's 4-tuple. And getsockopt(SO_NETNS_COOKIE) of the same socket: its
// network namespace's id, as the BPF program's port filter names it, with no privilege.
#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>

#include "finwait.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57  // asm-generic/socket.h; older libc headers lack it
#endif

namespace finwait {

Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(info.Env(), EBADF, "getsockopt");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  return Napi::BigInt::New(info.Env(), cookie);
}

Napi::Value SocketNetnsCookie(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(info.Env(), EBADF, "getsockopt");
  return Napi::BigInt::New(info.Env(), NetnsCookieOf(info.Env(), fd));
}

}  // namespace finwait
