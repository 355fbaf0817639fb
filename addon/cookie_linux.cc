// SO_COOKIE (socket(7), Linux 4.12+): the kernel's 64-bit id of a socket, the number sock_diag
// reports as idiag_cookie. The kernel makes it on first use; a TIME_WAIT socket copies the one
// its connection had by then, so read it before TIME_WAIT begins.
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
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  return Napi::BigInt::New(info.Env(), cookie);
}

}  // namespace finwait
