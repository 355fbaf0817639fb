// close(2) of an fd the addon itself made (a netlink socket, a namespace's fd): closed here, not
// with fs.closeSync(), which in a Worker warns about an fd Node did not open. Never for an fd
// Node or libuv owns (a socket's): finwait only borrows those.
#include <errno.h>
#include <unistd.h>

#include "finwait.h"

namespace finwait {

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(info.Env(), EBADF, "close");
  // Linux closes the fd even when close() reports EINTR: never retried.
  if (close(fd) != 0 && errno != EINTR) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "close");
  }
  return info.Env().Undefined();
}

}  // namespace finwait
