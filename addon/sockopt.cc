// SO_LINGER and the plain int socket options. SO_LINGER is set exactly as asked: refusing a
// positive linger (which would block Node's event loop in close()) is policy, in TypeScript.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

Napi::Value GetLinger(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  struct linger value = {0, 0};
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, SO_LINGER, &value, &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("onoff", Napi::Number::New(info.Env(), value.l_onoff));
  result.Set("linger", Napi::Number::New(info.Env(), value.l_linger));
  return result;
}

Napi::Value SetLinger(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  struct linger value = {IntArg(info, 1), IntArg(info, 2)};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, sizeof(value)) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "setsockopt");
  }
  return info.Env().Undefined();
}

Napi::Value GetIntOption(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int level = IntArg(info, 1);
  int name = IntArg(info, 2);
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, level, name, &value, &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  return Napi::Number::New(info.Env(), value);
}

Napi::Value SetIntOption(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  int level = IntArg(info, 1);
  int name = IntArg(info, 2);
  int value = IntArg(info, 3);
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "setsockopt");
  }
  return info.Env().Undefined();
}

}  // namespace finwait
