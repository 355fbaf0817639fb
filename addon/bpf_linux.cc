// TCP state changes from the kernel: a BPF program on the tracepoint sock:inet_sock_set_state
// (tp_btf, so it gets the struct sock itself) writes one fixed-size record per change of a TCP
// socket into a BPF ring buffer, which this process maps and reads. This is the one place C++
// does more than a syscall: the program is assembled here, with the field offsets this kernel's
// BTF gives (bpf_btf_linux.cc), so no compiler, libbpf or kernel headers are needed where it runs.
// Here: loading and attaching it, and reading the ring; the records are decoded in TypeScript
// (src/bpf.ts).
#include <errno.h>
#include <linux/bpf.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "bpf_linux.h"
#include "finwait.h"

namespace finwait {

namespace {

long Bpf(int cmd, bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

}  // namespace

// Signals held (bpf_linux.h): a profiler's SIGPROF would make the verifier give up. sigprocmask()
// changes the calling thread's mask on Linux, as pthread_sigmask() does, whose symbol in libc.so.6
// would need glibc 2.32, newer than Node's own binaries.
long LoadBpfProgram(bpf_attr* attr) {
  sigset_t all, before;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &before);
  long fd = Bpf(BPF_PROG_LOAD, attr);
  int err = errno;
  sigprocmask(SIG_SETMASK, &before, nullptr);
  errno = err;
  return fd;
}

namespace {

// A coded error for a failed bpf(2) command, "bpf <CODE>" plus what it was doing.
Napi::Error BpfError(Napi::Env env, int err, const char* command, const std::string& detail = "") {
  Napi::Error error = ErrnoError(env, err, "bpf");
  std::string message = error.Message() + " (" + command + ")" + (detail.empty() ? "" : ": " + detail);
  error.Set("message", Napi::String::New(env, message));
  error.Set("command", Napi::String::New(env, command));
  return error;
}

// Owns everything the program needs: the ring buffer and the lost-records counter (maps), the
// program, its attachment (the link: the program runs as long as it is open) and the ring's
// mappings. close(), the object's collection or its environment's end (a Worker terminated with
// it open) releases them all, which detaches the program from the kernel.
class StateChanges : public Napi::ObjectWrap<StateChanges> {
 public:
  explicit StateChanges(const Napi::CallbackInfo& info);
  ~StateChanges() override { Release(); }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), ring_fd_); }
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Lost(const Napi::CallbackInfo& info);
  Napi::Value AddCookie(const Napi::CallbackInfo& info);
  Napi::Value RemoveCookie(const Napi::CallbackInfo& info);
  Napi::Value AddPort(const Napi::CallbackInfo& info);
  Napi::Value RemovePort(const Napi::CallbackInfo& info);
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

 private:
  void Release();
  void Load(Napi::Env env, const SockLayout& layout);
  void Map(Napi::Env env);
  // The `size` bytes of a key at info[0] + info[1], for the calls on the map `fd` (made when
  // `made` > 0: else EINVAL, EBADF once closed).
  const uint8_t* KeyArg(const Napi::CallbackInfo& info, size_t size, int fd, uint32_t made);
  // One element of a filter map: in (BPF_ANY) or out; the outcome of the bpf(2) call.
  static Napi::Value Update(const Napi::CallbackInfo& info, int fd, const uint8_t* key);
  static Napi::Value Delete(const Napi::CallbackInfo& info, int fd, const uint8_t* key);

  int ring_fd_ = -1, lost_fd_ = -1, cookies_fd_ = -1, ports_fd_ = -1, prog_fd_ = -1, link_fd_ = -1;
  size_t ring_size_ = 0, page_ = 0;
  void* consumer_ = MAP_FAILED;  // one page, read-write: consumer_pos
  void* producer_ = MAP_FAILED;  // producer_pos page, then the data twice (records may wrap)
  void* lost_ = MAP_FAILED;      // the lost-records counter's page (the array map, mmapable)
  bool close_only_ = false;      // the program writes only changes into CLOSE
  uint32_t max_cookies_ = 0;     // > 0: the cookie map's size, and only its sockets are written
  uint32_t wake_bytes_ = 0;      // > 0: a record wakes the reader only once this many bytes wait
  uint32_t max_ports_ = 0;       // > 0: the port map's size, and the sockets on its ports are written
};

void StateChanges::Release() {
  // The link first: no record is written once it is closed.
  for (int* fd : {&link_fd_, &prog_fd_, &cookies_fd_, &ports_fd_, &lost_fd_, &ring_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (consumer_ != MAP_FAILED) munmap(consumer_, page_);
  if (producer_ != MAP_FAILED) munmap(producer_, page_ + 2 * ring_size_);
  if (lost_ != MAP_FAILED) munmap(lost_, page_);
  consumer_ = producer_ = lost_ = MAP_FAILED;
}

StateChanges::StateChanges(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StateChanges>(info) {
  Napi::Env env = info.Env();
  int ring = IntArg(info, 0);
  close_only_ = info.Length() > 1 && info[1].ToBoolean().Value();
  int max_cookies = info.Length() > 2 ? IntArg(info, 2) : 0;
  if (max_cookies < 0) throw OutOfRange(env, "argument 2 must be >= 0");
  max_cookies_ = static_cast<uint32_t>(max_cookies);
  int wake_bytes = info.Length() > 3 ? IntArg(info, 3) : 0;
  if (wake_bytes < 0) throw OutOfRange(env, "argument 3 must be >= 0");
  wake_bytes_ = static_cast<uint32_t>(wake_bytes);
  int max_ports = info.Length() > 4 ? IntArg(info, 4) : 0;
  if (max_ports < 0) throw OutOfRange(env, "argument 4 must be >= 0");
  max_ports_ = static_cast<uint32_t>(max_ports);
  page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // The kernel wants a power of 2 that is a multiple of the page size.
  if (ring < static_cast<int>(page_) || (ring & (ring - 1)) != 0) {
    throw OutOfRange(env, "argument 0 must be a power of 2 and at least the page size");
  }
  ring_size_ = static_cast<size_t>(ring);
  const SockLayout& layout = KernelSockLayout();
  if (layout.err != 0) {
    Napi::Error error = ErrnoError(env, layout.err, layout.syscall);
    error.Set("message", Napi::String::New(env, error.Message() + ": " + layout.why));
    throw error;
  }
  try {
    Load(env, layout);
    Map(env);
  } catch (...) {
    Release();  // the destructor does not run for a constructor that throws
    throw;
  }
}

namespace {

// One BPF map (BPF_MAP_CREATE), its fd; throws the kernel's errno.
int CreateMap(Napi::Env env, uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
              uint32_t flags, const char* name) {
  bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_type = type;
  attr.key_size = key_size;
  attr.value_size = value_size;
  attr.max_entries = max_entries;
  attr.map_flags = flags;
  strncpy(attr.map_name, name, sizeof(attr.map_name) - 1);
  int fd = static_cast<int>(Bpf(BPF_MAP_CREATE, &attr));
  if (fd < 0) {
    int err = errno;
    throw BpfError(env, err, "BPF_MAP_CREATE");
  }
  return fd;
}

}  // namespace

void StateChanges::Load(Napi::Env env, const SockLayout& layout) {
  ring_fd_ = CreateMap(env, BPF_MAP_TYPE_RINGBUF, 0, 0, static_cast<uint32_t>(ring_size_), 0, "finwait_ring");
  // Read by a load from its mapping, not a bpf(2) call per drain.
  lost_fd_ = CreateMap(env, BPF_MAP_TYPE_ARRAY, 4, 8, 1, BPF_F_MMAPABLE, "finwait_lost");
  // Preallocated: with BPF_F_NO_PREALLOC the deletes the program makes at each end stalled the
  // sockets of a busy process (its event loop idle 60% of a benchmark run, waiting).
  if (max_cookies_ > 0) cookies_fd_ = CreateMap(env, BPF_MAP_TYPE_HASH, 8, 1, max_cookies_, 0, "finwait_cookies");
  if (max_ports_ > 0) ports_fd_ = CreateMap(env, BPF_MAP_TYPE_HASH, 16, 1, max_ports_, 0, "finwait_ports");
  std::vector<bpf_insn> code = StateChangeProgram(layout, ring_fd_, lost_fd_, close_only_, cookies_fd_, ports_fd_, wake_bytes_);
  static const char kLicense[] = "Dual MIT/GPL";  // GPL-compatible: GPL-only helpers allowed
  std::vector<char> log;
  bpf_attr attr;
  for (int attempt = 0; attempt < 2 && prog_fd_ < 0; attempt++) {
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_TRACING;
    attr.expected_attach_type = BPF_TRACE_RAW_TP;
    attr.attach_btf_id = layout.attach_btf_id;
    attr.insns = reinterpret_cast<uint64_t>(code.data());
    attr.insn_cnt = static_cast<uint32_t>(code.size());
    attr.license = reinterpret_cast<uint64_t>(kLicense);
    memcpy(attr.prog_name, "finwait_state", 14);
    if (attempt == 1) {
      // Failed: load again with the verifier's log, for the error message.
      log.assign(1 << 20, '\0');
      attr.log_level = 1;
      attr.log_buf = reinterpret_cast<uint64_t>(log.data());
      attr.log_size = static_cast<uint32_t>(log.size());
    }
    prog_fd_ = static_cast<int>(LoadBpfProgram(&attr));
    int err = errno;
    if (prog_fd_ >= 0) break;
    if (attempt == 1 || err == EPERM) {
      // The last lines say why; keep the message bounded.
      std::string text(log.data(), strnlen(log.data(), log.size()));
      while (!text.empty() && text.back() == '\n') text.pop_back();
      if (text.size() > 2000) text = "..." + text.substr(text.size() - 2000);
      throw BpfError(env, err, "BPF_PROG_LOAD", text.empty() ? "" : "the verifier said:\n" + text);
    }
  }
  memset(&attr, 0, sizeof(attr));
  attr.raw_tracepoint.name = 0;  // tp_btf: the target is the program's attach_btf_id
  attr.raw_tracepoint.prog_fd = static_cast<uint32_t>(prog_fd_);
  link_fd_ = static_cast<int>(Bpf(BPF_RAW_TRACEPOINT_OPEN, &attr));
  if (link_fd_ < 0) {
    int err = errno;
    throw BpfError(env, err, "BPF_RAW_TRACEPOINT_OPEN");
  }
}

void StateChanges::Map(Napi::Env env) {
  consumer_ = mmap(nullptr, page_, PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd_, 0);
  if (consumer_ == MAP_FAILED) {
    int err = errno;
    throw ErrnoError(env, err, "mmap");
  }
  // The kernel maps the data pages twice in a row, so a record that wraps reads as one piece.
  producer_ = mmap(nullptr, page_ + 2 * ring_size_, PROT_READ, MAP_SHARED, ring_fd_, static_cast<off_t>(page_));
  if (producer_ == MAP_FAILED) {
    int err = errno;
    throw ErrnoError(env, err, "mmap");
  }
  lost_ = mmap(nullptr, page_, PROT_READ, MAP_SHARED, lost_fd_, 0);
  if (lost_ == MAP_FAILED) {
    int err = errno;
    throw ErrnoError(env, err, "mmap");
  }
}

// read(buffer) -> count: copies the waiting records, kRecord bytes each, into buffer (as many as
// fit) and frees their space in the ring. Never blocks; 0 when none is waiting.
Napi::Value StateChanges::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArrayOf<uint8_t> buffer = Uint8ArrayArg(info, 0);
  if (producer_ == MAP_FAILED) throw ErrnoError(env, EBADF, "read");
  size_t room = buffer.ByteLength() / kRecord, count = 0;
  uint64_t* consumer_pos = static_cast<uint64_t*>(consumer_);
  const uint64_t* producer_pos = static_cast<const uint64_t*>(producer_);
  const uint8_t* data = static_cast<const uint8_t*>(producer_) + page_;
  uint64_t cons = __atomic_load_n(consumer_pos, __ATOMIC_ACQUIRE);
  uint64_t prod = __atomic_load_n(producer_pos, __ATOMIC_ACQUIRE);
  while (cons < prod && count < room) {
    const uint8_t* header = data + (cons & (ring_size_ - 1));
    uint32_t word = __atomic_load_n(reinterpret_cast<const uint32_t*>(header), __ATOMIC_ACQUIRE);
    if (word & BPF_RINGBUF_BUSY_BIT) break;  // reserved, not yet submitted: the next call gets it
    uint32_t len = word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
    if (!(word & BPF_RINGBUF_DISCARD_BIT)) {
      uint8_t* out = buffer.Data() + count * kRecord;
      memcpy(out, header + BPF_RINGBUF_HDR_SZ, len < kRecord ? len : kRecord);
      if (len < kRecord) memset(out + len, 0, kRecord - len);
      count++;
    }
    cons += (len + BPF_RINGBUF_HDR_SZ + 7) & ~static_cast<uint64_t>(7);
    __atomic_store_n(consumer_pos, cons, __ATOMIC_RELEASE);
  }
  return Napi::Number::New(env, static_cast<double>(count));
}

// lost() -> records dropped because the ring was full (the counter the program keeps, read
// from its mapping).
Napi::Value StateChanges::Lost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (lost_ == MAP_FAILED) throw ErrnoError(env, EBADF, "bpf");
  uint64_t value = __atomic_load_n(static_cast<const uint64_t*>(lost_), __ATOMIC_RELAXED);
  return Napi::Number::New(env, static_cast<double>(value));
}

const uint8_t* StateChanges::KeyArg(const Napi::CallbackInfo& info, size_t size, int fd, uint32_t made) {
  Napi::Env env = info.Env();
  Napi::TypedArrayOf<uint8_t> bytes = Uint8ArrayArg(info, 0);
  int offset = IntArg(info, 1);
  if (offset < 0 || static_cast<size_t>(offset) + size > bytes.ByteLength()) {
    throw OutOfRange(env, "argument 1 must leave " + std::to_string(size) + " bytes of argument 0 from it");
  }
  if (fd < 0) throw ErrnoError(env, made > 0 ? EBADF : EINVAL, "bpf");
  return bytes.Data() + offset;
}

Napi::Value StateChanges::Update(const Napi::CallbackInfo& info, int fd, const uint8_t* key) {
  uint8_t value = 1;
  bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = reinterpret_cast<uint64_t>(key);
  attr.value = reinterpret_cast<uint64_t>(&value);
  attr.flags = BPF_ANY;
  if (Bpf(BPF_MAP_UPDATE_ELEM, &attr) != 0) {
    int err = errno;
    throw BpfError(info.Env(), err, "BPF_MAP_UPDATE_ELEM");
  }
  return info.Env().Undefined();
}

Napi::Value StateChanges::Delete(const Napi::CallbackInfo& info, int fd, const uint8_t* key) {
  bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.map_fd = static_cast<uint32_t>(fd);
  attr.key = reinterpret_cast<uint64_t>(key);
  if (Bpf(BPF_MAP_DELETE_ELEM, &attr) != 0) {
    int err = errno;
    if (err == ENOENT) return Napi::Boolean::New(info.Env(), false);
    throw BpfError(info.Env(), err, "BPF_MAP_DELETE_ELEM");
  }
  return Napi::Boolean::New(info.Env(), true);
}

// addCookie(bytes, offset): the cookie (8 bytes, host order) joins the filter. E2BIG when full.
Napi::Value StateChanges::AddCookie(const Napi::CallbackInfo& info) {
  return Update(info, cookies_fd_, KeyArg(info, 8, cookies_fd_, max_cookies_));
}

// removeCookie(bytes, offset) -> whether the cookie was in the filter.
Napi::Value StateChanges::RemoveCookie(const Napi::CallbackInfo& info) {
  return Delete(info, cookies_fd_, KeyArg(info, 8, cookies_fd_, max_cookies_));
}

// addPort(bytes, offset): the 16-byte key (namespace cookie, port; bpf_linux.h) joins the port
// filter. E2BIG when full.
Napi::Value StateChanges::AddPort(const Napi::CallbackInfo& info) {
  return Update(info, ports_fd_, KeyArg(info, 16, ports_fd_, max_ports_));
}

// removePort(bytes, offset) -> whether the key was in the port filter.
Napi::Value StateChanges::RemovePort(const Napi::CallbackInfo& info) {
  return Delete(info, ports_fd_, KeyArg(info, 16, ports_fd_, max_ports_));
}

}  // namespace

Napi::Function BpfStateChangesClass(Napi::Env env) {
  return StateChanges::DefineClass(env, "BpfStateChanges",
                                   {StateChanges::InstanceAccessor<&StateChanges::Fd>("fd"),
                                    StateChanges::InstanceMethod<&StateChanges::Read>("read"),
                                    StateChanges::InstanceMethod<&StateChanges::Lost>("lost"),
                                    StateChanges::InstanceMethod<&StateChanges::AddCookie>("addCookie"),
                                    StateChanges::InstanceMethod<&StateChanges::RemoveCookie>("removeCookie"),
                                    StateChanges::InstanceMethod<&StateChanges::AddPort>("addPort"),
                                    StateChanges::InstanceMethod<&StateChanges::RemovePort>("removePort"),
                                    StateChanges::InstanceMethod<&StateChanges::CloseMethod>("close")});
}

}  // namespace finwait
