// A listener that lets the handshakes under way finish but starts no new one: a socket filter
// that drops every segment with SYN set and ACK clear. On a listener the kernel runs it on each
// segment before the segment is processed, so a new client's SYN goes unanswered (its kernel sends
// it again after a second), while the ACK that completes a handshake passes and its connection
// joins the accept queue. A connection accepted afterwards inherits the filter: detachFilter()
// gives it back as the kernel made it. On a TCP socket Linux 6.18 attaches a classic filter
// (SO_ATTACH_FILTER) only with CAP_NET_ADMIN, and an eBPF one (SO_ATTACH_BPF) with CAP_BPF or
// CAP_SYS_ADMIN, which loading it needs, and not CAP_NET_ADMIN (else EPERM; with
// kernel.unprivileged_bpf_disabled = 0 any process loads and attaches the eBPF one).
//
// The filter belongs to the socket, not to an fd: another process holding the same listening
// socket (a Node cluster worker with a shared handle, a server sent to a child process, the
// listening socket systemd passes on) would keep a sealed listener after this one closes its fd.
// So the seal holds a copy of the fd (dup), and its release, after the caller closed its own fd,
// detaches the filter and closes the copy in one call: a socket nobody else holds closes then
// (nothing can have joined its queue while sealed), one held elsewhere lives on unsealed. The copy
// is closed with the object, or with its environment (a Worker that ends).
//
// A process killed while sealed never releases: a socket held elsewhere would answer no SYN ever
// again. So, given a deadline, where this process may load BPF, the filter is an eBPF program
// that keeps every segment once bpf_ktime_get_ns() is past it. Elsewhere it is a classic filter,
// which cannot read a clock, and lasts until released.
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bpf_linux.h"
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

// The same filter in eBPF, kept only until `deadline` (ns of the host's CLOCK_MONOTONIC, the clock
// of bpf_ktime_get_ns()); LD_ABS reads from the TCP header too. Returns the program's fd, or -1.
int LoadExpiringFilter(uint64_t deadline) {
  const bpf_insn code[] = {
      {BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0},          // r6 = skb (LD_ABS reads it)
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns},              // r0 = now
      {BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, 0, 0, static_cast<int32_t>(deadline & 0xffffffffu)},
      {0, 0, 0, 0, static_cast<int32_t>(deadline >> 32)},                 // r1 = deadline
      {BPF_JMP | BPF_JGT | BPF_X, BPF_REG_0, BPF_REG_1, 5, 0},            // past it: kept
      {BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 13},                            // r0 = the flags byte
      {BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_0, 0, 0, 0x12},               // SYN | ACK
      {BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 2, 0x02},                 // not SYN without ACK: kept
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},                  // dropped
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
      {BPF_ALU | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, -1},                   // kept whole
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  static const char kLicense[] = "Dual MIT/GPL";
  bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = reinterpret_cast<uint64_t>(code);
  attr.insn_cnt = sizeof(code) / sizeof(code[0]);
  attr.license = reinterpret_cast<uint64_t>(kLicense);
  memcpy(attr.prog_name, "finwait_seal", 13);
  return static_cast<int>(LoadBpfProgram(&attr));
}

// The offset of this process's time namespace from the host's CLOCK_MONOTONIC, in ns: what
// clock_gettime() adds and bpf_ktime_get_ns() does not. 0 outside a time namespace, and where the
// kernel has none (before Linux 5.6, no /proc/self/timens_offsets); false if it cannot be read.
bool MonotonicOffset(int64_t* offset) {
  *offset = 0;
  int fd = open("/proc/self/timens_offsets", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT;
  char text[256];
  ssize_t got;
  do {
    got = read(fd, text, sizeof(text) - 1);
  } while (got < 0 && errno == EINTR);
  close(fd);
  if (got <= 0) return false;
  text[got] = '\0';
  // Lines of "<clock> <seconds> <nanoseconds>", the seconds signed.
  long long seconds = 0;
  long nanoseconds = 0;
  const char* line = strstr(text, "monotonic");
  if (line == nullptr || sscanf(line, "monotonic %lld %ld", &seconds, &nanoseconds) != 2) return false;
  *offset = static_cast<int64_t>(seconds) * 1000000000 + nanoseconds;
  return true;
}

// Attaches the expiring filter for `max_ms` from now; false (nothing attached) where this process
// may not load or attach it, or cannot tell the host's time.
bool AttachExpiring(int fd, uint32_t max_ms) {
  timespec now;
  int64_t offset;
  if (clock_gettime(CLOCK_MONOTONIC, &now) != 0 || !MonotonicOffset(&offset)) return false;
  int64_t host_now = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec - offset;
  if (host_now < 0) return false;
  uint64_t deadline = static_cast<uint64_t>(host_now) + static_cast<uint64_t>(max_ms) * 1000000u;
  int prog = LoadExpiringFilter(deadline);
  if (prog < 0) return false;
  // The socket holds the program from now on; this fd is not needed.
  bool attached = setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof(prog)) == 0;
  close(prog);
  return attached;
}

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
  // maxMs (optional; at least 1, more than 2^31 - 1 counts as that): how long the seal may
  // outlive this process. Anything else, or none: the classic filter.
  double max_ms = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
  bool expires = max_ms >= 1 && AttachExpiring(fd, max_ms < 2147483647.0 ? static_cast<uint32_t>(max_ms) : 2147483647u);
  if (!expires) {
    struct sock_fprog program = {sizeof(kDropSyns) / sizeof(kDropSyns[0]), kDropSyns};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) != 0) {
      int err = errno;
      throw ErrnoError(env, err, "setsockopt");
    }
  }
  info.This().As<Napi::Object>().Set("expires", Napi::Boolean::New(env, expires));
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
