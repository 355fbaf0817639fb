// A listening socket that shares its port (SO_REUSEPORT), for Node versions whose listen() has no
// `reusePort` option (before 22.12): the socket is made here with the option set, bound by
// bind.cc, and handed to `server.listen({ fd })`, which calls listen(2) itself. listen(2) alone is
// for a listener nobody accepts from, whose accept queue the kernel tests look at.
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "finwait.h"

namespace finwait {

Napi::Value ReusePortSocket(const Napi::CallbackInfo& info) {
  int family = IntArg(info, 0);
  // Close-on-exec and non-blocking, as libuv makes its own sockets.
  int fd = MakeFd(info, 1, "socket",
                  [&] { return socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); });
  // Before bind(2), which refuses a port in use unless every socket on it has SO_REUSEPORT.
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(info.Env(), err, "setsockopt");
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Listen(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int backlog = IntArg(info, 1);
  if (listen(fd, backlog) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "listen");
  }
  return info.Env().Undefined();
}

}  // namespace finwait
