// Shared by the state-change program's files: what this kernel's BTF says (bpf_btf_linux.cc), the
// program built with it (bpf_program_linux.cc), loaded and read by bpf_linux.cc.
#ifndef FINWAIT_ADDON_BPF_LINUX_H_
#define FINWAIT_ADDON_BPF_LINUX_H_

#include <stdint.h>

#include <linux/bpf.h>

#include <string>
#include <vector>

namespace finwait {

// Byte offsets from the start of struct sock (a tcp_sock starts with one) of the fields the
// program reads (each below 32 KiB: a load's offset is 16 bits), and of net_cookie in struct net; err is 0, or an errno with `why` saying what is
// missing (ENOTSUP: no BTF, or a kernel without one of the fields).
struct SockLayout {
  int err = 0;
  const char* syscall = "read";  // what failed: "open", or "read" (what it read lacks something)
  std::string why;
  uint32_t attach_btf_id = 0;  // the typedef btf_trace_inet_sock_set_state
  uint32_t family = 0, sport = 0, dport = 0, daddr = 0, rcv_saddr = 0, v6_daddr = 0, v6_rcv_saddr = 0;
  uint32_t net = 0, err_field = 0, flags = 0;
  uint32_t net_cookie = 0;  // in struct net
  uint32_t total_retrans = 0, snd_una = 0, snd_nxt = 0, bytes_received = 0, bytes_acked = 0, data_segs_in = 0;
};

// bpf(BPF_PROG_LOAD): the program's fd, or -1 with errno. The verifier gives up with EAGAIN
// whenever a signal is pending for the thread (node --cpu-prof's SIGPROF comes every 20 µs to 1 ms): the
// thread's signals are held while it runs, and delivered after.
long LoadBpfProgram(bpf_attr* attr);

// Parsed from /sys/kernel/btf/vmlinux on the first call, then the same for every caller.
const SockLayout& KernelSockLayout();

// The record, 136 bytes, host byte order unless said: u64 time (bpf_ktime_get_ns) at 0, u64
// socket cookie at 8, u64 netns cookie at 16, u64 pid_tgid at 24, u8 old state at 32, u8 new
// state at 33, u16 family at 34, i32 sk_err at 36, u16 local and remote ports (network order)
// at 40 and 42, u32 total_retrans at 44, u32 snd_una at 48, u32 snd_nxt at 52, u64
// bytes_received at 56, u64 bytes_acked at 64, 16-byte IPv6 local and remote addresses at 72 and
// 88, comm (16 bytes) at 104, IPv4 local and remote addresses (network order) at 120 and 124,
// u32 data_segs_in at 128, u32 the low half of sk_flags at 132 (bit 1, SOCK_DONE: the peer's FIN
// was received).
constexpr int kRecord = 136;

// The program's instructions; ring_fd and lost_fd are its maps (ring buffer; array of one u64
// counting the records dropped when the ring was full).
// `close_only`: only changes into CLOSE (a full socket's end) are written, one record per end
// instead of one per change.
// `cookies_fd` (-1: none) is a hash map keyed by socket cookie (u64): only changes of sockets
// whose cookie is in it are written, and a change into CLOSE (the socket's end) takes it out.
// With neither map, every change is written.
// `ports_fd` (-1: none) is a hash map keyed by 16 bytes, the namespace cookie (u64) then the local
// port as in the record (2 bytes, network order) and 6 zero bytes: the changes of the sockets on
// those ports are written too (with `cookies_fd`, a change is written if either map has it).
// `wake_bytes` (0: every record wakes the reader): a record wakes the reader only when that many
// bytes (or more) wait in the ring, so a reader that also reads on a timer takes no interrupt per
// record.
std::vector<bpf_insn> StateChangeProgram(const SockLayout& layout, int ring_fd, int lost_fd, bool close_only,
                                         int cookies_fd, int ports_fd, uint32_t wake_bytes);

}  // namespace finwait

#endif  // FINWAIT_ADDON_BPF_LINUX_H_
