// A listener that lets the handshakes under way finish but starts no new one: a classic BPF socket
// filter (SO_ATTACH_FILTER; on a TCP socket Linux 6.18 allows it only with CAP_NET_ADMIN, else
// EPERM) that drops every segment with SYN set and ACK clear. On a listener the kernel runs it on each segment before the segment is processed, so a
// new client's SYN goes unanswered (its kernel sends it again after a second), while the ACK that
// completes a handshake passes and its connection joins the accept queue. A connection accepted
// afterwards inherits the filter: detachFilter() gives it back as the kernel made it.
//
// The filter belongs to the socket, not to an fd: another process holding the same listening
// socket (a Node cluster worker with a shared handle, a server sent to a child process, the
// listening socket systemd passes on) would keep a sealed listener after this one closes its fd.
// So the seal holds a copy of the fd (dup), and its release, after the caller closed its own fd,
// detaches the filter and closes the copy in one call: a socket nobody else holds closes then
// (nothing can have joined its queue while sealed), one held elsewhere lives on unsealed. The copy
// is closed with the object, or with its environment (a Worker that ends).
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "finwait.h"

namespace finwait {

namespace {

// Offsets are from the start of the TCP header, where the kernel points a TCP socket's filter.
struct sock_filter kDropSyns[] = {
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),           // the flags byte
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),        // SYN | ACK
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),  // SYN without ACK:
    BPF_STMT(BPF_RET | BPF_K, 0),                     //   dropped
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),            // anything else: kept whole
};

// SO_DETACH_FILTER; ENOENT (no filter attached) is no error.
int Detach(int fd) {
  int unused = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)) != 0 && errno != ENOENT) {
    return errno;
  }
  return 0;
}

class SealedListener : public Napi::ObjectWrap<SealedListener> {
 public:
  explicit SealedListener(const Napi::CallbackInfo& info);
  ~SealedListener() override { Release(); }
  Napi::Value ReleaseMethod(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

 private:
  void Release() {
    if (copy_ < 0) return;
    Detach(copy_);  // then at once the close: no JavaScript (no GC pause) between the two
    close(copy_);
    copy_ = -1;
  }

  int copy_ = -1;
};

SealedListener::SealedListener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SealedListener>(info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(env, EBADF, "setsockopt");
  struct sock_fprog program = {sizeof(kDropSyns) / sizeof(kDropSyns[0]), kDropSyns};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "setsockopt");
  }
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    int err = errno;
    Detach(fd);
    throw ErrnoError(env, err, "fcntl");
  }
  copy_ = copy;
}

}  // namespace

Napi::Function SealedListenerClass(Napi::Env env) {
  return SealedListener::DefineClass(env, "SealedListener",
                                     {SealedListener::InstanceMethod<&SealedListener::ReleaseMethod>("release")});
}

Napi::Value DetachFilter(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(info.Env(), EBADF, "setsockopt");
  int err = Detach(fd);
  if (err != 0) throw ErrnoError(info.Env(), err, "setsockopt");
  return info.Env().Undefined();
}

}  // namespace finwait
