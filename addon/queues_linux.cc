// The socket queue ioctls (tcp(7)): SIOCINQ (unread), SIOCOUTQ (unsent + unacked) and
// SIOCOUTQNSD (unsent). Only these three: each writes one int.
#include <errno.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "finwait.h"

namespace finwait {

Napi::Value IoctlInt(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int request = IntArg(info, 1);
  if (request != SIOCINQ && request != SIOCOUTQ && request != SIOCOUTQNSD) {
    throw ErrnoError(info.Env(), EINVAL, "ioctl");
  }
  int value = 0;
  if (ioctl(fd, request, &value) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "ioctl");
  }
  return Napi::Number::New(info.Env(), value);
}

}  // namespace finwait
