// Platforms without a back-end yet: everything compiles and every call throws ENOTSUP, so
// callers get a clear error instead of a silent wrong answer.
#include <errno.h>

#include "finwait.h"

namespace finwait {

static Napi::Value NotSupported(const Napi::CallbackInfo& info, const char* syscall) {
  throw ErrnoError(info.Env(), ENOTSUP, syscall);
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) { return NotSupported(info, "shutdown"); }
Napi::Value GetLinger(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }
Napi::Value SetLinger(const Napi::CallbackInfo& info) { return NotSupported(info, "setsockopt"); }
Napi::Value GetIntOption(const Napi::CallbackInfo& info) {
  return NotSupported(info, "getsockopt");
}
Napi::Value SetIntOption(const Napi::CallbackInfo& info) {
  return NotSupported(info, "setsockopt");
}
Napi::Value TcpInfo(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }
Napi::Value TcpState(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }
Napi::Value TcpStates(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }
Napi::Value IoctlInt(const Napi::CallbackInfo& info) { return NotSupported(info, "ioctl"); }
Napi::Value SockDiag(const Napi::CallbackInfo& info) { return NotSupported(info, "socket"); }
Napi::Value SockDiagSocket(const Napi::CallbackInfo& info) { return NotSupported(info, "socket"); }
Napi::Value SockDiagFind(const Napi::CallbackInfo& info) { return NotSupported(info, "sendto"); }
Napi::Value SockDiagId(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockname"); }
Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  return NotSupported(info, "getsockopt");
}
Napi::Value SocketNetnsCookie(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }
Napi::Value SocketNetns(const Napi::CallbackInfo& info) { return NotSupported(info, "ioctl"); }
Napi::Value NetnsCookie(const Napi::CallbackInfo& info) { return NotSupported(info, "getsockopt"); }

Napi::Value NetnsSocket(const Napi::CallbackInfo& info) { return NotSupported(info, "setns"); }
Napi::Value NetnsOpen(const Napi::CallbackInfo& info) { return NotSupported(info, "setns"); }
Napi::Value Bind(const Napi::CallbackInfo& info) { return NotSupported(info, "bind"); }
Napi::Value CloseFd(const Napi::CallbackInfo& info) { return NotSupported(info, "close"); }
Napi::Value TunSetIff(const Napi::CallbackInfo& info) { return NotSupported(info, "ioctl"); }
Napi::Value TunRead(const Napi::CallbackInfo& info) { return NotSupported(info, "read"); }
Napi::Value TunWrite(const Napi::CallbackInfo& info) { return NotSupported(info, "write"); }

Napi::Function FdPollClass(Napi::Env env) {
  return Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return NotSupported(info, "uv_poll_init"); },
                             "FdPoll");
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  c.Set("supported", Napi::Boolean::New(env, false));
  return c;
}

}  // namespace finwait
