// TUN devices (Documentation/networking/tuntap.rst): attach an open /dev/net/tun to a device
// (TUNSETIFF), and read or write one IP packet per call on its non-blocking fd.
#include <errno.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <string>

#include "finwait.h"

namespace finwait {

Napi::Value TunSetIff(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (!info[1].IsString()) throw ErrnoError(info.Env(), EINVAL, "ioctl");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  int flags = IntArg(info, 2);
  if (name.size() >= IFNAMSIZ) throw ErrnoError(info.Env(), EINVAL, "ioctl");
  ifreq request = {};
  memcpy(request.ifr_name, name.c_str(), name.size());
  request.ifr_flags = static_cast<short>(flags);
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "ioctl");
  }
  // The kernel writes back the device's name (it fills in a "%d" pattern).
  return Napi::String::New(info.Env(), request.ifr_name, strnlen(request.ifr_name, IFNAMSIZ));
}

// One read(2) is one packet. EAGAIN (nothing waiting) is the expected end of every drain, so
// it is returned as 0 rather than thrown; a packet is never empty.
Napi::Value TunRead(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> buffer = Uint8ArrayArg(info, 1);
  // A read into nothing would return 0, "no packet", and leave the packet queued.
  if (buffer.ByteLength() == 0) throw OutOfRange(info.Env(), "argument 1 must not be empty");
  ssize_t n = read(fd, buffer.Data(), buffer.ByteLength());
  if (n < 0) {
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return Napi::Number::New(info.Env(), 0);
    throw ErrnoError(info.Env(), err, "read");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// One write(2) of the first `length` bytes is one packet handed to the device's stack.
Napi::Value TunWrite(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> buffer = Uint8ArrayArg(info, 1);
  int length = IntArg(info, 2);
  if (length < 0 || static_cast<size_t>(length) > buffer.ByteLength()) {
    throw ErrnoError(info.Env(), EINVAL, "write");
  }
  ssize_t n = write(fd, buffer.Data(), static_cast<size_t>(length));
  if (n < 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "write");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

}  // namespace finwait
