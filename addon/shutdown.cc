#include <errno.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int how = IntArg(info, 1);
  if (shutdown(fd, how) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "shutdown");
  }
  return info.Env().Undefined();
}

}  // namespace finwait
