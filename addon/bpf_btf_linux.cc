// The kernel's own type information (/sys/kernel/btf/vmlinux, world-readable): where the fields
// the state-change program reads sit in this kernel's struct sock, tcp_sock and net, and the id
// of the tracepoint's BTF typedef it attaches to. Read and parsed once per process, on first use,
// and never changed afterwards, so every environment (worker thread) shares the one result.
#include <errno.h>
#include <fcntl.h>
#include <linux/btf.h>
#include <string.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "bpf_linux.h"

namespace finwait {

namespace {

// Kinds newer than some build machines' linux/btf.h (Linux 5.13 to 6.0).
constexpr int kFloat = 16, kDeclTag = 17, kTypeTag = 18, kEnum64 = 19;

class Btf {
 public:
  explicit Btf(std::vector<char> data) : data_(std::move(data)) {}

  // Fills the offsets of every type; false with `why` set if the file is not BTF as we know it.
  bool Index(std::string* why);
  // The id of the first type of this kind and name, 0 if none.
  uint32_t Find(int kind, const char* name) const;
  // The byte offset and size of `name` inside struct/union `id`, looking through anonymous
  // members; false with `why` set if absent or a bitfield.
  bool Member(uint32_t id, const char* name, uint32_t* offset, uint32_t* size, uint32_t* type,
              std::string* why) const;

 private:
  const btf_type* Type(uint32_t id) const {
    return reinterpret_cast<const btf_type*>(types_ + offsets_[id]);
  }
  const char* Name(uint32_t off) const { return off < str_len_ ? strings_ + off : ""; }
  // Through typedefs and qualifiers to the type that has a size.
  uint32_t Resolve(uint32_t id) const;
  uint32_t SizeOf(uint32_t id) const;
  bool Lookup(uint32_t id, const char* name, uint32_t base_bits, uint32_t* bits, uint32_t* type,
              bool* bitfield, int depth) const;

  std::vector<char> data_;
  const char* types_ = nullptr;
  const char* strings_ = nullptr;
  uint32_t str_len_ = 0;
  std::vector<uint32_t> offsets_;  // offsets_[id]: where type `id` starts in the type section
};

bool Btf::Index(std::string* why) {
  if (data_.size() < sizeof(btf_header)) return *why = "too short", false;
  btf_header header;
  memcpy(&header, data_.data(), sizeof(header));
  if (header.magic != BTF_MAGIC) return *why = "bad magic (or another byte order)", false;
  uint64_t start = header.hdr_len;
  if (start + header.type_off + header.type_len > data_.size() ||
      start + header.str_off + header.str_len > data_.size()) {
    return *why = "sections past the end of the file", false;
  }
  types_ = data_.data() + start + header.type_off;
  strings_ = data_.data() + start + header.str_off;
  str_len_ = header.str_len;
  offsets_.push_back(0);  // id 0 is void
  for (uint32_t off = 0; off + sizeof(btf_type) <= header.type_len;) {
    btf_type t;
    memcpy(&t, types_ + off, sizeof(t));
    uint32_t vlen = BTF_INFO_VLEN(t.info), extra = 0;
    switch (BTF_INFO_KIND(t.info)) {
      case BTF_KIND_INT: extra = 4; break;
      case BTF_KIND_ARRAY: extra = sizeof(btf_array); break;
      case BTF_KIND_STRUCT:
      case BTF_KIND_UNION: extra = vlen * sizeof(btf_member); break;
      case BTF_KIND_ENUM: extra = vlen * sizeof(btf_enum); break;
      case BTF_KIND_FUNC_PROTO: extra = vlen * sizeof(btf_param); break;
      case BTF_KIND_VAR: extra = sizeof(btf_var); break;
      case BTF_KIND_DATASEC: extra = vlen * sizeof(btf_var_secinfo); break;
      case kDeclTag: extra = 4; break;
      case kEnum64: extra = vlen * 12; break;  // name_off, val_lo32, val_hi32
      case BTF_KIND_PTR: case BTF_KIND_FWD: case BTF_KIND_TYPEDEF: case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST: case BTF_KIND_RESTRICT: case BTF_KIND_FUNC: case kFloat:
      case kTypeTag: break;
      default: return *why = "unknown type kind " + std::to_string(BTF_INFO_KIND(t.info)), false;
    }
    offsets_.push_back(off);
    off += sizeof(btf_type) + extra;
  }
  return true;
}

uint32_t Btf::Find(int kind, const char* name) const {
  for (uint32_t id = 1; id < offsets_.size(); id++) {
    const btf_type* t = Type(id);
    if (static_cast<int>(BTF_INFO_KIND(t->info)) == kind && strcmp(Name(t->name_off), name) == 0) {
      return id;
    }
  }
  return 0;
}

uint32_t Btf::Resolve(uint32_t id) const {
  for (int i = 0; i < 32 && id != 0 && id < offsets_.size(); i++) {
    switch (BTF_INFO_KIND(Type(id)->info)) {
      case BTF_KIND_TYPEDEF: case BTF_KIND_VOLATILE: case BTF_KIND_CONST: case BTF_KIND_RESTRICT:
      case kTypeTag: id = Type(id)->type; break;
      default: return id;
    }
  }
  return id < offsets_.size() ? id : 0;
}

uint32_t Btf::SizeOf(uint32_t id) const {
  id = Resolve(id);
  if (id == 0) return 0;
  const btf_type* t = Type(id);
  switch (BTF_INFO_KIND(t->info)) {
    case BTF_KIND_PTR: return 8;
    case BTF_KIND_ARRAY: {
      btf_array a;
      memcpy(&a, t + 1, sizeof(a));
      return a.nelems * SizeOf(a.type);
    }
    case BTF_KIND_INT: case BTF_KIND_ENUM: case BTF_KIND_STRUCT: case BTF_KIND_UNION:
    case kFloat: case kEnum64: return t->size;
    default: return 0;
  }
}

// Members of an anonymous struct or union are members of the enclosing one (C11): look inside
// those too. With kind_flag set, a member's offset holds the bitfield size in its top 8 bits.
bool Btf::Lookup(uint32_t id, const char* name, uint32_t base_bits, uint32_t* bits,
                 uint32_t* type, bool* bitfield, int depth) const {
  id = Resolve(id);
  if (id == 0 || depth > 8) return false;
  const btf_type* t = Type(id);
  int kind = BTF_INFO_KIND(t->info);
  if (kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION) return false;
  const btf_member* members = reinterpret_cast<const btf_member*>(t + 1);
  for (uint32_t i = 0; i < BTF_INFO_VLEN(t->info); i++) {
    btf_member m;
    memcpy(&m, members + i, sizeof(m));
    uint32_t off = BTF_INFO_KFLAG(t->info) ? BTF_MEMBER_BIT_OFFSET(m.offset) : m.offset;
    uint32_t field_bits = BTF_INFO_KFLAG(t->info) ? BTF_MEMBER_BITFIELD_SIZE(m.offset) : 0;
    if (m.name_off != 0 && strcmp(Name(m.name_off), name) == 0) {
      *bits = base_bits + off;
      *type = m.type;
      *bitfield = field_bits != 0;
      return true;
    }
    if (m.name_off == 0 && Lookup(m.type, name, base_bits + off, bits, type, bitfield, depth + 1)) {
      return true;
    }
  }
  return false;
}

bool Btf::Member(uint32_t id, const char* name, uint32_t* offset, uint32_t* size, uint32_t* type,
                 std::string* why) const {
  uint32_t bits = 0;
  bool bitfield = false;
  if (!Lookup(id, name, 0, &bits, type, &bitfield, 0)) return *why = "has no member", false;
  // A plain integer member read as a whole is a bitfield only if BTF says so; an int member of
  // a struct without kind_flag whose offset is not byte-aligned is one too.
  if (bitfield || bits % 8 != 0) return *why = "is a bitfield", false;
  *offset = bits / 8;
  *size = SizeOf(*type);
  return true;
}

struct Want {
  const char* where;  // the struct
  const char* name;   // its member
  uint32_t size;      // the size the program reads
  uint32_t* out;      // the offset from the start of struct sock (or net)
};

SockLayout Parse() {
  SockLayout layout;
  layout.err = ENOTSUP;
  const char* path = "/sys/kernel/btf/vmlinux";
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    layout.syscall = "open";
    layout.err = errno == EACCES ? EACCES : ENOTSUP;
    layout.why = std::string(path) + ": " + strerror(errno) + " (a kernel built without CONFIG_DEBUG_INFO_BTF)";
    return layout;
  }
  std::vector<char> data;
  char chunk[1 << 16];
  ssize_t got;
  while ((got = read(fd, chunk, sizeof(chunk))) != 0) {
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      layout.why = std::string(path) + ": " + strerror(errno);
      close(fd);
      return layout;
    }
    data.insert(data.end(), chunk, chunk + got);
  }
  close(fd);
  Btf btf(std::move(data));
  std::string why;
  if (!btf.Index(&why)) return layout.why = std::string(path) + ": " + why, layout;
  layout.attach_btf_id = btf.Find(BTF_KIND_TYPEDEF, "btf_trace_inet_sock_set_state");
  if (layout.attach_btf_id == 0) {
    layout.why = "the kernel's BTF has no btf_trace_inet_sock_set_state (tracepoint sock:inet_sock_set_state)";
    return layout;
  }
  // struct sock starts with struct sock_common __sk_common; inet_sock and tcp_sock with a sock.
  // The local port is inet_sport, not skc_num: releasing the port at CLOSE zeroes skc_num.
  uint32_t common = 0;
  const Want wants[] = {
      {"sock", "__sk_common", 0, &common},
      {"sock_common", "skc_family", 2, &layout.family},
      {"inet_sock", "inet_sport", 2, &layout.sport},
      {"sock_common", "skc_dport", 2, &layout.dport},
      {"sock_common", "skc_daddr", 4, &layout.daddr},
      {"sock_common", "skc_rcv_saddr", 4, &layout.rcv_saddr},
      {"sock_common", "skc_v6_daddr", 16, &layout.v6_daddr},
      {"sock_common", "skc_v6_rcv_saddr", 16, &layout.v6_rcv_saddr},
      {"sock_common", "skc_net", 8, &layout.net},
      {"sock", "sk_err", 4, &layout.err_field},
      {"net", "net_cookie", 8, &layout.net_cookie},
      {"tcp_sock", "total_retrans", 4, &layout.total_retrans},
      {"tcp_sock", "snd_una", 4, &layout.snd_una},
      {"tcp_sock", "snd_nxt", 4, &layout.snd_nxt},
      {"tcp_sock", "bytes_received", 8, &layout.bytes_received},
      {"tcp_sock", "bytes_acked", 8, &layout.bytes_acked},
      {"tcp_sock", "data_segs_in", 4, &layout.data_segs_in},
  };
  for (const Want& want : wants) {
    uint32_t id = btf.Find(BTF_KIND_STRUCT, want.where), size = 0, type = 0;
    if (id == 0 || !btf.Member(id, want.name, want.out, &size, &type, &why)) {
      layout.why = std::string("struct ") + want.where + (id == 0 ? " is not in the kernel's BTF" : " " + why + " " + want.name);
      return layout;
    }
    // skc_net is possible_net_t, a struct holding the pointer `net` (absent without CONFIG_NET_NS).
    uint32_t inner = 0, inner_size = 0;
    if (want.out == &layout.net && btf.Member(type, "net", &inner, &inner_size, &type, &why)) {
      *want.out += inner;
      size = inner_size;
    }
    if (want.out == &common) continue;
    if (strcmp(want.where, "sock_common") == 0) *want.out += common;
    if (*want.out > 32767 - want.size) {  // a load's offset is a signed 16-bit number
      layout.why = std::string("struct ") + want.where + " member " + want.name + " is past 32 KiB";
      return layout;
    }
    if (size != want.size) {
      layout.why = std::string("struct ") + want.where + " member " + want.name + " is " + std::to_string(size) +
                   " bytes, not " + std::to_string(want.size);
      return layout;
    }
  }
  // sk_flags (unsigned long): skc_flags in struct sock_common on recent kernels, sk_flags in struct sock before.
  uint32_t sock_common = btf.Find(BTF_KIND_STRUCT, "sock_common"), sock = btf.Find(BTF_KIND_STRUCT, "sock");
  uint32_t size = 0, type = 0;
  if (btf.Member(sock_common, "skc_flags", &layout.flags, &size, &type, &why)) {
    layout.flags += common;
  } else if (!btf.Member(sock, "sk_flags", &layout.flags, &size, &type, &why)) {
    layout.why = "neither struct sock_common skc_flags nor struct sock sk_flags is in the kernel's BTF";
    return layout;
  }
  if (size != 8 || layout.flags > 32767 - 8) {
    layout.why = "sk_flags is " + std::to_string(size) + " bytes at " + std::to_string(layout.flags) + ", not 8 below 32 KiB";
    return layout;
  }
  layout.err = 0;
  return layout;
}

}  // namespace

const SockLayout& KernelSockLayout() {
  static const SockLayout layout = Parse();  // thread-safe, once per process, then read-only
  return layout;
}

}  // namespace finwait
