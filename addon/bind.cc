// bind(2) with a socket address built by the caller (struct sockaddr_in or sockaddr_in6 bytes):
// for sockets that Node did not create and so cannot bind, such as one made in another network
// namespace and handed to Node with `new net.Socket({ fd })` or `server.listen({ fd })`.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

Napi::Value Bind(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> address = Uint8ArrayArg(info, 1);
  if (address.ByteLength() < sizeof(sa_family_t) || address.ByteLength() > sizeof(sockaddr_storage)) {
    throw ErrnoError(info.Env(), EINVAL, "bind");
  }
  sockaddr_storage storage = {};
  memcpy(&storage, address.Data(), address.ByteLength());
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), static_cast<socklen_t>(address.ByteLength())) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "bind");
  }
  return info.Env().Undefined();
}

}  // namespace finwait
