// Network namespaces. Creating a file descriptor inside another one: setns(2) moves only the
// calling thread, and a socket (or a TUN device, or a /proc/sys/net file) belongs to the
// namespace its creator was in when it was made, for its whole life. So the thread enters the
// namespace, makes the one call, and goes home at once; no JavaScript runs in between. And which
// namespace a socket lives in: its namespace's fd (SIOCGSKNS) and cookie (SO_NETNS_COOKIE).
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "finwait.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71  // asm-generic/socket.h, Linux 5.14
#endif

namespace finwait {

// Shared with sock_diag_linux.cc (a sock_diag socket in a lab host's namespace); see finwait.h.
int InNetns(Napi::Env env, int ns_fd, const char* syscall, const std::function<int()>& make) {
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    int err = errno;
    throw ErrnoError(env, err, "open");
  }
  // Coming home needs CAP_SYS_ADMIN over the home namespace's user namespace, leaving only over
  // the target's: a process in a user namespace of its own may enter a namespace it made and
  // then be refused the way back (EPERM). Entering home first, where the thread already is,
  // asks the kernel that question before anything moves.
  if (setns(home, CLONE_NEWNET) != 0 || setns(ns_fd, CLONE_NEWNET) != 0) {
    int err = errno;
    close(home);
    throw ErrnoError(env, err, "setns");
  }
  int fd = make();
  int err = errno;
  // Checked above, so going home can now fail only for lack of memory; a JavaScript thread left
  // in the wrong namespace would make every later socket there, so that is not an error to
  // recover from.
  if (setns(home, CLONE_NEWNET) != 0) {
    Napi::Error::Fatal("finwait", "setns(2) back to the thread's own network namespace failed");
  }
  close(home);
  if (fd < 0) throw ErrnoError(env, err, syscall);
  return fd;
}

int MakeFd(const Napi::CallbackInfo& info, size_t i, const char* syscall, const std::function<int()>& make) {
  if (!info[i].IsNull() && !info[i].IsUndefined()) return InNetns(info.Env(), IntArg(info, i), syscall, make);
  int fd = make();
  if (fd < 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, syscall);
  }
  return fd;
}

uint64_t NetnsCookieOf(Napi::Env env, int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    int err = errno;
    if (err != ENOPROTOOPT) throw ErrnoError(env, err, "getsockopt");
    return 0;
  }
  return cookie;
}

Napi::Value NetnsSocket(const Napi::CallbackInfo& info) {
  int ns_fd = IntArg(info, 0);
  int family = IntArg(info, 1);
  int type = IntArg(info, 2);
  // Close-on-exec and non-blocking, as libuv makes its own sockets.
  int fd = InNetns(info.Env(), ns_fd, "socket",
                   [&] { return socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); });
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value NetnsOpen(const Napi::CallbackInfo& info) {
  int ns_fd = IntArg(info, 0);
  if (!info[1].IsString()) throw ErrnoError(info.Env(), EINVAL, "open");
  std::string path = info[1].As<Napi::String>().Utf8Value();
  int flags = IntArg(info, 2);
  // Nothing is created (open() would take a mode this call does not have), and an open that
  // would wait (a FIFO without a peer, a device) fails instead of holding the event loop, and the
  // thread, in the other namespace. Close-on-exec, as libuv opens every file.
  if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) throw ErrnoError(info.Env(), EINVAL, "open");
  int fd = InNetns(info.Env(), ns_fd, "open",
                   [&] { return open(path.c_str(), flags | O_NONBLOCK | O_CLOEXEC); });
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value SocketNetns(const Napi::CallbackInfo& info) {
  int fd = ioctl(IntArg(info, 0), SIOCGSKNS);
  if (fd < 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "ioctl");
  }
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(info.Env(), err, "fcntl");
  }
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = MakeFd(info, 0, "socket", [] { return socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0); });
  uint64_t cookie;
  try {
    cookie = NetnsCookieOf(env, fd);
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  return Napi::BigInt::New(env, cookie);
}

}  // namespace finwait
