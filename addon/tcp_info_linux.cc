// getsockopt(TCP_INFO): the caller's buffer is filled and the length the kernel wrote back is
// returned, so the decoder (TypeScript) knows which fields this kernel filled.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "finwait.h"

namespace finwait {

Napi::Value TcpInfo(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> buffer = Uint8ArrayArg(info, 1);
  socklen_t len = static_cast<socklen_t>(buffer.ByteLength());
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, buffer.Data(), &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  return Napi::Number::New(info.Env(), len);
}

// tcpi_state is the first byte: asking for one byte copies nothing else to user space.
static int ReadState(int fd, uint8_t* state) {
  socklen_t len = sizeof(*state);
  return getsockopt(fd, IPPROTO_TCP, TCP_INFO, state, &len);
}

Napi::Value TcpState(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  uint8_t state = 0;
  if (ReadState(fd, &state) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "getsockopt");
  }
  return Napi::Number::New(info.Env(), state);
}

Napi::Value TcpStates(const Napi::CallbackInfo& info) {
  Napi::TypedArrayOf<int32_t> fds = Int32ArrayArg(info, 0);
  Napi::TypedArrayOf<int32_t> out = Int32ArrayArg(info, 1);
  if (out.ElementLength() < fds.ElementLength()) {
    Napi::RangeError error = Napi::RangeError::New(info.Env(), "out is shorter than fds");
    error.Set("code", Napi::String::New(info.Env(), "ERR_OUT_OF_RANGE"));
    throw error;
  }
  const int32_t* in = fds.Data();
  int32_t* states = out.Data();
  for (size_t i = 0, n = fds.ElementLength(); i < n; i++) {
    uint8_t state = 0;
    if (ReadState(in[i], &state) != 0) {
      int err = errno;
      states[i] = uv_translate_sys_error(err);
    } else {
      states[i] = state;
    }
  }
  return info.Env().Undefined();
}

}  // namespace finwait
