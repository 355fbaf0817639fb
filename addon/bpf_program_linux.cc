// The state-change program in BPF assembly, for the tracepoint sock:inet_sock_set_state (tp_btf:
// ctx holds its arguments as u64: the struct sock, the old and the new state). It reads the
// socket with plain loads at the offsets this kernel's BTF gives (bpf_btf_linux.cc), which the
// verifier checks against the BTF types and runs as loads that cannot fault (a helper call per
// field, bpf_probe_read_kernel, cost 1.5 times as much), and writes one record (layout in
// bpf_linux.h) per change of a TCP socket into the ring buffer.
#include <linux/bpf.h>
#include <netinet/in.h>
#include <string.h>

#include <vector>

#include "bpf_linux.h"

namespace finwait {

namespace {

bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn insn;
  memset(&insn, 0, sizeof(insn));
  insn.code = code;
  insn.dst_reg = dst;
  insn.src_reg = src;
  insn.off = off;
  insn.imm = imm;
  return insn;
}

// The program, in BPF assembly. r6 = sk, r7 = the reserved record, r8/r9 = old/new state.
class Assembler {
 public:
  std::vector<bpf_insn> code;
  std::vector<size_t> to_out;  // jumps to the final `return 0`, patched by Finish()

  void Emit(bpf_insn insn) { code.push_back(insn); }
  void Mov(int dst, int src) { Emit(Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)); }
  void MovImm(int dst, int32_t imm) { Emit(Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)); }
  void AddImm(int dst, int32_t imm) { Emit(Insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)); }
  void Load(int size, int dst, int src, int16_t off) { Emit(Insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0)); }
  void Store(int size, int dst, int16_t off, int src) { Emit(Insn(BPF_STX | size | BPF_MEM, dst, src, off, 0)); }
  void StoreImm(int size, int dst, int16_t off, int32_t imm) { Emit(Insn(BPF_ST | size | BPF_MEM, dst, 0, off, imm)); }
  void Call(int helper) { Emit(Insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)); }
  void LoadMap(int dst, int fd) {
    Emit(Insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd));
    Emit(Insn(0, 0, 0, 0, 0));
  }
  // if (dst op imm) goto out
  void JumpOut(int op, int dst, int32_t imm) {
    to_out.push_back(code.size());
    Emit(Insn(BPF_JMP | op | BPF_K, dst, 0, 0, imm));
  }
  // record->field = sk->field, through r1: a load the verifier checks against the BTF type of
  // r6 (run as a faulting-safe kernel load), then a store into the ring's memory.
  void Copy(int16_t record_off, int size, uint32_t sk_off) {
    static const int kSizes[] = {0, BPF_B, BPF_H, 0, BPF_W, 0, 0, 0, BPF_DW};
    for (int done = 0; done < size; done += size > 8 ? 8 : size) {
      int width = kSizes[size > 8 ? 8 : size];
      Load(width, BPF_REG_1, BPF_REG_6, static_cast<int16_t>(sk_off + done));
      Store(width, BPF_REG_7, static_cast<int16_t>(record_off + done), BPF_REG_1);
    }
  }
  void Finish() {
    for (size_t at : to_out) code[at].off = static_cast<int16_t>(code.size() - at - 1);
    MovImm(BPF_REG_0, 0);
    Emit(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  }
};

}  // namespace

std::vector<bpf_insn> StateChangeProgram(const SockLayout& l, int ring_fd, int lost_fd, bool close_only,
                                         int cookies_fd, int ports_fd, uint32_t wake_bytes) {
  Assembler a;
  // ctx is the tracepoint's arguments as u64: sk, oldstate, newstate.
  a.Load(BPF_DW, BPF_REG_8, BPF_REG_1, 8);
  a.Load(BPF_DW, BPF_REG_9, BPF_REG_1, 16);
  // Ends only: any other new state is dropped before anything is read (TCP_CLOSE is 7).
  if (close_only) a.JumpOut(BPF_JNE, BPF_REG_9, 7);
  // TCP only: bpf_skc_to_tcp_sock() is NULL for anything but a full TCP socket (the tracepoint
  // fires for other protocols' state stores too), and its result is typed struct tcp_sock, so the
  // loads below may go past struct sock into tcp_sock's counters.
  a.Load(BPF_DW, BPF_REG_1, BPF_REG_1, 0);
  a.Call(BPF_FUNC_skc_to_tcp_sock);
  a.JumpOut(BPF_JEQ, BPF_REG_0, 0);
  a.Mov(BPF_REG_6, BPF_REG_0);
  // The socket's cookie, kept on the stack (fp - 16) for the filter and the record.
  a.Mov(BPF_REG_1, BPF_REG_6);
  a.Call(BPF_FUNC_get_socket_cookie);
  a.Store(BPF_DW, BPF_REG_10, -16, BPF_REG_0);
  // Jumps to the record's writing, from a filter that kept the change (patched below).
  std::vector<size_t> to_write;
  if (cookies_fd >= 0) {
    // Only the sockets whose cookie is in the map; their end (a change into CLOSE) takes it out,
    // so a socket costs one update from user space, not two.
    a.LoadMap(BPF_REG_1, cookies_fd);
    a.Mov(BPF_REG_2, BPF_REG_10);
    a.AddImm(BPF_REG_2, -16);
    a.Call(BPF_FUNC_map_lookup_elem);
    size_t absent = a.code.size();
    // Not in the map: the port filter may still keep it, or nothing does.
    if (ports_fd < 0) a.JumpOut(BPF_JEQ, BPF_REG_0, 0);
    else a.Emit(Insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0));
    size_t open = a.code.size();
    a.Emit(Insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_9, 0, 0, 7));  // not an end: keep it
    a.LoadMap(BPF_REG_1, cookies_fd);
    a.Mov(BPF_REG_2, BPF_REG_10);
    a.AddImm(BPF_REG_2, -16);
    a.Call(BPF_FUNC_map_delete_elem);
    a.code[open].off = static_cast<int16_t>(a.code.size() - open - 1);
    if (ports_fd >= 0) {
      to_write.push_back(a.code.size());
      a.Emit(Insn(BPF_JMP | BPF_JA, 0, 0, 0, 0));
      a.code[absent].off = static_cast<int16_t>(a.code.size() - absent - 1);
    }
  }
  if (ports_fd >= 0) {
    // Only the sockets whose (namespace cookie, local port) is in the map: a server's listening
    // port, so its connections cost nothing in user space when they are accepted. The key, at
    // fp - 32: u64 net_cookie, then the port's 2 bytes as in inet_sport (network order), then 0s.
    a.Load(BPF_DW, BPF_REG_1, BPF_REG_6, static_cast<int16_t>(l.net));
    a.Load(BPF_DW, BPF_REG_1, BPF_REG_1, static_cast<int16_t>(l.net_cookie));
    a.Store(BPF_DW, BPF_REG_10, -32, BPF_REG_1);
    a.StoreImm(BPF_DW, BPF_REG_10, -24, 0);
    a.Load(BPF_H, BPF_REG_1, BPF_REG_6, static_cast<int16_t>(l.sport));
    a.Store(BPF_H, BPF_REG_10, -24, BPF_REG_1);
    a.LoadMap(BPF_REG_1, ports_fd);
    a.Mov(BPF_REG_2, BPF_REG_10);
    a.AddImm(BPF_REG_2, -32);
    a.Call(BPF_FUNC_map_lookup_elem);
    a.JumpOut(BPF_JEQ, BPF_REG_0, 0);
  }
  for (size_t at : to_write) a.code[at].off = static_cast<int16_t>(a.code.size() - at - 1);
  a.LoadMap(BPF_REG_1, ring_fd);
  a.MovImm(BPF_REG_2, kRecord);
  a.MovImm(BPF_REG_3, 0);
  a.Call(BPF_FUNC_ringbuf_reserve);
  size_t full = a.code.size();
  a.Emit(Insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 0, 0));  // ring full: count it, below
  a.Mov(BPF_REG_7, BPF_REG_0);
  a.Call(BPF_FUNC_ktime_get_ns);
  a.Store(BPF_DW, BPF_REG_7, 0, BPF_REG_0);
  a.Load(BPF_DW, BPF_REG_1, BPF_REG_10, -16);
  a.Store(BPF_DW, BPF_REG_7, 8, BPF_REG_1);
  a.Call(BPF_FUNC_get_current_pid_tgid);
  a.Store(BPF_DW, BPF_REG_7, 24, BPF_REG_0);
  a.Store(BPF_B, BPF_REG_7, 32, BPF_REG_8);
  a.Store(BPF_B, BPF_REG_7, 33, BPF_REG_9);
  // sk->__sk_common.skc_net.net->net_cookie: a load through the pointer just loaded (a NULL one
  // reads 0: faulting loads are caught).
  a.Load(BPF_DW, BPF_REG_1, BPF_REG_6, static_cast<int16_t>(l.net));
  a.Load(BPF_DW, BPF_REG_1, BPF_REG_1, static_cast<int16_t>(l.net_cookie));
  a.Store(BPF_DW, BPF_REG_7, 16, BPF_REG_1);
  a.Copy(34, 2, l.family);
  a.Copy(36, 4, l.err_field);
  a.Copy(40, 2, l.sport);
  a.Copy(42, 2, l.dport);
  a.Copy(44, 4, l.total_retrans);
  a.Copy(48, 4, l.snd_una);
  a.Copy(52, 4, l.snd_nxt);
  a.Copy(56, 8, l.bytes_received);
  a.Copy(64, 8, l.bytes_acked);
  a.Copy(72, 16, l.v6_rcv_saddr);
  a.Copy(88, 16, l.v6_daddr);
  a.Mov(BPF_REG_1, BPF_REG_7);
  a.AddImm(BPF_REG_1, 104);
  a.MovImm(BPF_REG_2, 16);
  a.Call(BPF_FUNC_get_current_comm);
  a.Copy(120, 4, l.rcv_saddr);
  a.Copy(124, 4, l.daddr);
  a.Copy(128, 4, l.data_segs_in);
  // sk_flags is an unsigned long: loaded whole, its low 32 bits stored (whatever the byte order).
  a.Load(BPF_DW, BPF_REG_1, BPF_REG_6, static_cast<int16_t>(l.flags));
  a.Store(BPF_W, BPF_REG_7, 132, BPF_REG_1);
  if (wake_bytes > 0) {
    // The reader is woken (an IRQ-work interrupt each time) only once wake_bytes wait in the
    // ring; it reads the rest on its own timer.
    a.LoadMap(BPF_REG_1, ring_fd);
    a.MovImm(BPF_REG_2, BPF_RB_AVAIL_DATA);
    a.Call(BPF_FUNC_ringbuf_query);
    a.MovImm(BPF_REG_2, BPF_RB_FORCE_WAKEUP);
    a.Emit(Insn(BPF_JMP | BPF_JGE | BPF_K, BPF_REG_0, 0, 1, static_cast<int32_t>(wake_bytes)));
    a.MovImm(BPF_REG_2, BPF_RB_NO_WAKEUP);
  } else {
    a.MovImm(BPF_REG_2, 0);
  }
  a.Mov(BPF_REG_1, BPF_REG_7);
  a.Call(BPF_FUNC_ringbuf_submit);
  a.JumpOut(BPF_JA, 0, 0);
  // The ring was full: the record is lost; add one to the counter (array map, key 0).
  a.code[full].off = static_cast<int16_t>(a.code.size() - full - 1);
  a.StoreImm(BPF_W, BPF_REG_10, -4, 0);
  a.LoadMap(BPF_REG_1, lost_fd);
  a.Mov(BPF_REG_2, BPF_REG_10);
  a.AddImm(BPF_REG_2, -4);
  a.Call(BPF_FUNC_map_lookup_elem);
  a.JumpOut(BPF_JEQ, BPF_REG_0, 0);
  a.MovImm(BPF_REG_1, 1);
  a.Emit(Insn(BPF_STX | BPF_DW | BPF_ATOMIC, BPF_REG_0, BPF_REG_1, 0, BPF_ADD));
  a.Finish();
  return a.code;
}

}  // namespace finwait
