// A listener that lets the handshakes under way finish but starts no new one: a classic BPF socket
// filter (SO_ATTACH_FILTER, no privilege needed) that drops every segment with SYN set and ACK
// clear. On a listener the kernel runs it on each segment before the segment is processed, so a
// new client's SYN goes unanswered (its kernel sends it again after a second), while the ACK that
// completes a handshake passes and its connection joins the accept queue. A connection accepted
// afterwards inherits the filter: detaching it from that socket gives the connection back as the
// kernel made it.
#include <errno.h>
#include <linux/filter.h>
#include <stdint.h>
#include <sys/socket.h>

#include "finwait.h"

namespace finwait {

// Offsets are from the start of the TCP header, where the kernel points a TCP socket's filter.
static struct sock_filter kDropSyns[] = {
    BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),                 // the flags byte
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),              // SYN | ACK
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),        // SYN without ACK:
    BPF_STMT(BPF_RET | BPF_K, 0),                           //   dropped
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),                  // anything else: kept whole
};

Napi::Value DropSyns(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  if (fd < 0) throw ErrnoError(info.Env(), EBADF, "setsockopt");
  bool on = info.Length() > 1 && info[1].ToBoolean().Value();
  if (on) {
    struct sock_fprog program = {sizeof(kDropSyns) / sizeof(kDropSyns[0]), kDropSyns};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) != 0) {
      int err = errno;
      throw ErrnoError(info.Env(), err, "setsockopt");
    }
  } else {
    int unused = 0;
    // ENOENT: no filter to detach (a connection accepted before the listener's was attached).
    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)) != 0 && errno != ENOENT) {
      int err = errno;
      throw ErrnoError(info.Env(), err, "setsockopt");
    }
  }
  return info.Env().Undefined();
}

}  // namespace finwait
