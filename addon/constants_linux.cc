#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* name, int value) { c.Set(name, Napi::Number::New(env, value)); };
  c.Set("supported", Napi::Boolean::New(env, true));
  set("SHUT_RD", SHUT_RD);
  set("SHUT_WR", SHUT_WR);
  set("SHUT_RDWR", SHUT_RDWR);
  set("SOL_SOCKET", SOL_SOCKET);
  set("IPPROTO_TCP", IPPROTO_TCP);
  set("SO_ERROR", SO_ERROR);
  set("SO_KEEPALIVE", SO_KEEPALIVE);
  set("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT);
  set("TCP_LINGER2", TCP_LINGER2);
  set("TCP_KEEPIDLE", TCP_KEEPIDLE);
  set("TCP_KEEPINTVL", TCP_KEEPINTVL);
  set("TCP_KEEPCNT", TCP_KEEPCNT);
  set("SIOCINQ", SIOCINQ);
  set("SIOCOUTQ", SIOCOUTQ);
  set("SIOCOUTQNSD", SIOCOUTQNSD);
  set("SO_REUSEADDR", SO_REUSEADDR);
  set("SO_REUSEPORT", SO_REUSEPORT);
  set("SO_RCVBUF", SO_RCVBUF);
  set("SO_SNDBUF", SO_SNDBUF);
  set("AF_INET", AF_INET);
  set("AF_INET6", AF_INET6);
  set("SOCK_STREAM", SOCK_STREAM);
  set("AF_UNIX", AF_UNIX);
  set("SO_TYPE", SO_TYPE);
  set("SO_PROTOCOL", SO_PROTOCOL);
  set("IFF_TUN", IFF_TUN);
  set("IFF_NO_PI", IFF_NO_PI);
  return c;
}

}  // namespace finwait
