// sock_diag for TCP (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, struct inet_diag_req_v2): a dump
// (one request, the kernel's reply messages as raw bytes), a batch of exact lookups (many
// requests in one sendmsg, the replies as raw inet_diag_msg records), and the record that names
// one connected socket to a lookup. src/diag.ts decodes. A dump makes its own netlink socket;
// lookups go through one the caller made with sockDiagSocket and keeps (watch() asks many times a
// second). Either is made in the caller's network namespace, or in the one given (the lab's
// hosts, a watched socket's own).
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57  // asm-generic/socket.h; older libc headers lack it
#endif

#include <atomic>
#include <memory>
#include <vector>

#include "finwait.h"

namespace finwait {

namespace {

// The kernel fills a dump reply up to ~32 KiB (netlink caps max_recvmsg_len there), so a 64 KiB
// recv never truncates one (each recv has at least that much room); MSG_TRUNC is still checked.
constexpr size_t kRecvSize = 64 * 1024;

// The record naming one connection to sockDiagFind (see finwait.h).
constexpr size_t kIdRecord = 64;

struct NetlinkFd {
  int fd;
  ~NetlinkFd() {
    if (fd >= 0) close(fd);
  }
};

// Optional Uint8Array argument of at most 64 KiB; empty when null/undefined.
Napi::TypedArrayOf<uint8_t> OptionalBytes(const Napi::CallbackInfo& info, size_t i) {
  if (info[i].IsNull() || info[i].IsUndefined()) return Napi::TypedArrayOf<uint8_t>();
  Napi::TypedArrayOf<uint8_t> bytes = Uint8ArrayArg(info, i);
  if (bytes.ByteLength() > 0xffff - NLA_HDRLEN) {
    throw OutOfRange(info.Env(), "argument has the wrong length");
  }
  return bytes;
}

// A netlink socket for sock_diag, in this thread's network namespace or in the one whose fd is
// argument `ns_arg` (null or undefined: this one).
int OpenNetlink(const Napi::CallbackInfo& info, size_t ns_arg) {
  return MakeFd(info, ns_arg, "socket",
                [] { return socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG); });
}

void SendAll(Napi::Env env, int fd, const void* data, size_t size) {
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  const sockaddr* to = reinterpret_cast<const sockaddr*>(&kernel);
  while (sendto(fd, data, size, 0, to, sizeof(kernel)) < 0) {
    int err = errno;
    if (err != EINTR) throw ErrnoError(env, err, "sendto");
  }
}

void CheckSockDiagSocket(Napi::Env env, int fd) {
  int domain = 0, protocol = 0;
  socklen_t len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  len = sizeof(protocol);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  if (domain != AF_NETLINK || protocol != NETLINK_SOCK_DIAG) throw ErrnoError(env, EPROTOTYPE, "sendto");
}

nlmsghdr RequestHeader(size_t size, uint16_t flags, uint32_t seq) {
  nlmsghdr nlh = {};
  nlh.nlmsg_len = static_cast<uint32_t>(size);
  nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  nlh.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  nlh.nlmsg_seq = seq;
  return nlh;
}

}  // namespace

Napi::Value SockDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = IntArg(info, 0);
  uint32_t states = static_cast<uint32_t>(IntArg(info, 1));
  Napi::TypedArrayOf<uint8_t> bytecode = OptionalBytes(info, 2);
  size_t code_len = bytecode.IsEmpty() ? 0 : bytecode.ByteLength();

  // nlmsghdr, inet_diag_req_v2, then the bytecode as an INET_DIAG_REQ_BYTECODE attribute.
  size_t base = NLMSG_LENGTH(sizeof(inet_diag_req_v2));
  std::vector<uint8_t> request(base + (code_len ? NLA_HDRLEN + NLA_ALIGN(code_len) : 0));
  nlmsghdr nlh = RequestHeader(request.size(), NLM_F_DUMP, 1);
  inet_diag_req_v2 req = {};
  req.sdiag_family = static_cast<uint8_t>(family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = states;
  memcpy(request.data(), &nlh, sizeof(nlh));
  memcpy(request.data() + NLMSG_HDRLEN, &req, sizeof(req));
  if (code_len) {
    nlattr attr = {static_cast<uint16_t>(NLA_HDRLEN + code_len), INET_DIAG_REQ_BYTECODE};
    memcpy(request.data() + base, &attr, sizeof(attr));
    memcpy(request.data() + base + NLA_HDRLEN, bytecode.Data(), code_len);
  }

  // The reply goes straight into the caller's scratch array (argument 4), which it keeps from
  // call to call: no allocation and no page faults once it is big enough (a page fault costs
  // ~10 us on a VM, and a 50,000-socket dump is ~4.8 MB). When it is too small, a larger
  // ArrayBuffer takes over, and the caller keeps that one.
  Napi::Uint8Array scratch = Uint8ArrayArg(info, 4);
  Napi::ArrayBuffer buffer = scratch.ArrayBuffer();
  size_t start = scratch.ByteOffset();
  size_t cap = scratch.ByteLength();
  uint8_t* data = static_cast<uint8_t*>(buffer.Data()) + start;

  NetlinkFd nl = {OpenNetlink(info, 3)};
  SendAll(env, nl.fd, request.data(), request.size());

  // Keep the data messages, headers included; stop at NLMSG_DONE. NLMSG_ERROR becomes the errno
  // error.
  size_t used = 0;
  for (bool done = false; !done;) {
    if (cap - used < kRecvSize) {
      size_t grown_cap = cap * 2 > used + kRecvSize ? cap * 2 : used + kRecvSize;
      Napi::ArrayBuffer grown = Napi::ArrayBuffer::New(env, grown_cap);
      if (used > 0) memcpy(grown.Data(), data, used);
      buffer = grown;
      start = 0;
      cap = grown_cap;
      data = static_cast<uint8_t*>(grown.Data());
    }
    uint8_t* chunk = data + used;
    iovec iov = {chunk, kRecvSize};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = recvmsg(nl.fd, &msg, 0);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      throw ErrnoError(env, err, "recvmsg");
    }
    if (msg.msg_flags & MSG_TRUNC) throw ErrnoError(env, EMSGSIZE, "recvmsg");
    if (n == 0) break;
    size_t size = static_cast<size_t>(n), off = 0, keep = 0;
    while (!done && size - off >= sizeof(nlmsghdr)) {
      nlmsghdr h;
      memcpy(&h, chunk + off, sizeof(h));
      if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > size - off) {
        throw ErrnoError(env, EPROTO, "recvmsg");
      }
      if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) {
        // NLMSG_DONE carries the dump's result, NLMSG_ERROR nlmsgerr.error: both -errno or 0.
        int result = 0;
        if (h.nlmsg_len >= NLMSG_LENGTH(sizeof(result))) {
          memcpy(&result, chunk + off + NLMSG_HDRLEN, sizeof(result));
        }
        if (result < 0) throw ErrnoError(env, -result, "recvmsg");
        done = true;
        break;
      }
      // The last message of a datagram may lack its padding: never step past the data.
      off = NLMSG_ALIGN(h.nlmsg_len) < size - off ? off + NLMSG_ALIGN(h.nlmsg_len) : size;
      keep = off;
    }
    used += keep;
  }
  return Napi::Uint8Array::New(env, used, buffer, start);
}

Napi::Value SockDiagSocket(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), OpenNetlink(info, 0));
}

Napi::Value SockDiagFind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nl = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> requests = Uint8ArrayArg(info, 1);
  Napi::TypedArrayOf<uint8_t> replies = Uint8ArrayArg(info, 2);
  Napi::TypedArrayOf<int32_t> status = Int32ArrayArg(info, 3);
  size_t count = status.ElementLength();
  if (requests.ByteLength() < count * kIdRecord || replies.ByteLength() < count * sizeof(inet_diag_msg)) {
    throw OutOfRange(env, "buffers too short for the lookups");
  }
  if (count == 0) return env.Undefined();
  // Anything but a sock_diag netlink socket would get the requests as data (a TCP socket sends
  // them to its peer, and the reads below would eat what the peer sent).
  CheckSockDiagSocket(env, nl);
  int32_t* result = status.Data();
  for (size_t i = 0; i < count; i++) result[i] = -EAGAIN;
  // The socket outlives the call: sequence numbers never used on it before say which replies are
  // this call's (a call that threw can have left replies queued; they are read and skipped).
  static std::atomic<uint32_t> next_seq{1};
  const uint32_t base = next_seq.fetch_add(static_cast<uint32_t>(count));

  // The kernel answers each request inside sendmsg, each reply a datagram of its own queued on
  // our socket; a batch is kept small enough that the replies fit the socket's receive buffer
  // (one that did not fit would be dropped, and stays -EAGAIN), then read with recvmmsg.
  constexpr size_t kBatch = 32;
  constexpr size_t kReplySize = 1024;  // inet_diag_msg and a few small attributes; the rest is cut
  constexpr size_t kMsgSize = NLMSG_LENGTH(sizeof(inet_diag_req_v2));
  std::unique_ptr<uint8_t[]> in(new uint8_t[kBatch * kReplySize]);
  uint8_t out[kBatch * NLMSG_ALIGN(kMsgSize)];
  for (size_t first = 0; first < count; first += kBatch) {
    size_t n = count - first < kBatch ? count - first : kBatch;
    for (size_t j = 0; j < n; j++) {
      const uint8_t* record = requests.Data() + (first + j) * kIdRecord;
      // The sequence number says which request a reply answers.
      nlmsghdr nlh = RequestHeader(kMsgSize, 0, base + static_cast<uint32_t>(first + j));
      inet_diag_req_v2 req = {};
      req.sdiag_family = record[0];
      req.sdiag_protocol = IPPROTO_TCP;
      memcpy(&req.id, record + 4, sizeof(req.id));
      memcpy(out + j * NLMSG_ALIGN(kMsgSize), &nlh, sizeof(nlh));
      memcpy(out + j * NLMSG_ALIGN(kMsgSize) + NLMSG_HDRLEN, &req, sizeof(req));
    }
    SendAll(env, nl, out, n * NLMSG_ALIGN(kMsgSize));
    for (size_t answered = 0; answered < n;) {
      mmsghdr msgs[kBatch];
      iovec iovs[kBatch];
      memset(msgs, 0, sizeof(msgs));
      for (size_t j = 0; j < kBatch; j++) {
        iovs[j] = {in.get() + j * kReplySize, kReplySize};
        msgs[j].msg_hdr.msg_iov = &iovs[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
      }
      int got = recvmmsg(nl, msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (got < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) break;  // every reply that was queued is read
        if (err == ENOBUFS) continue;  // replies were dropped (they stay -EAGAIN); read the rest
        throw ErrnoError(env, err, "recvmmsg");
      }
      for (int j = 0; j < got; j++) {
        const uint8_t* data = in.get() + j * kReplySize;
        size_t size = msgs[j].msg_len < kReplySize ? msgs[j].msg_len : kReplySize;
        if (size < sizeof(nlmsghdr)) continue;
        nlmsghdr h;
        memcpy(&h, data, sizeof(h));
        const uint32_t k = h.nlmsg_seq - base;  // modulo 2^32, as the counter wraps
        if (k < first || k >= first + n) continue;
        size_t i = k;
        if (h.nlmsg_type == NLMSG_ERROR && size >= NLMSG_LENGTH(sizeof(int))) {
          int error = 0;
          memcpy(&error, data + NLMSG_HDRLEN, sizeof(error));
          result[i] = error < 0 ? error : -EPROTO;
          answered++;
        } else if (h.nlmsg_type == SOCK_DIAG_BY_FAMILY && size >= NLMSG_LENGTH(sizeof(inet_diag_msg))) {
          memcpy(replies.Data() + i * sizeof(inet_diag_msg), data + NLMSG_HDRLEN, sizeof(inet_diag_msg));
          result[i] = 1;
          answered++;
        }
      }
    }
  }
  return env.Undefined();
}

Napi::Value SockDiagId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Napi::TypedArrayOf<uint8_t> out = Uint8ArrayArg(info, 1);
  if (out.ByteLength() < kIdRecord) throw OutOfRange(env, "the record must have 64 bytes");
  uint8_t* record = out.Data();
  memset(record, 0, kIdRecord);
  // The state first (one syscall, all there is to read for a socket without a peer). TCP_INFO
  // fails with EOPNOTSUPP on what is not a TCP socket (Unix, UDP).
  uint8_t state = 0;
  socklen_t len = sizeof(state);  // tcp_info begins with tcpi_state: one byte is enough
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &state, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockopt");
  }
  record[1] = state;
  if (state == TCP_CLOSE || state == TCP_LISTEN || state == TCP_SYN_SENT) {
    return Napi::Boolean::New(env, false);
  }
  // Then the cookie: a TIME_WAIT socket copies the cookie its connection had when TIME_WAIT
  // began, and a peer name read afterwards proves it had not begun (the fd would be in CLOSE,
  // which has no peer). All ones (INET_DIAG_NOCOOKIE) where SO_COOKIE is missing (before 4.12).
  uint64_t cookie = 0;
  len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) {
    int err = errno;
    if (err != ENOPROTOOPT) throw ErrnoError(env, err, "getsockopt");
    cookie = ~static_cast<uint64_t>(0);
  }
  sockaddr_storage local = {}, remote = {};
  socklen_t local_len = sizeof(local), remote_len = sizeof(remote);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "getsockname");
  }
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) {
    throw ErrnoError(env, EOPNOTSUPP, "getsockname");
  }
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &remote_len) != 0) {
    int err = errno;
    // It went to CLOSE since the state was read (TIME_WAIT began, or a reset came).
    if (err == ENOTCONN) {
      record[1] = TCP_CLOSE;
      return Napi::Boolean::New(env, false);
    }
    throw ErrnoError(env, err, "getpeername");
  }
  uint64_t netns = NetnsCookieOf(env, fd);
  inet_diag_sockid id = {};
  if (local.ss_family == AF_INET) {
    const sockaddr_in* l = reinterpret_cast<const sockaddr_in*>(&local);
    const sockaddr_in* r = reinterpret_cast<const sockaddr_in*>(&remote);
    id.idiag_sport = l->sin_port;
    id.idiag_dport = r->sin_port;
    id.idiag_src[0] = l->sin_addr.s_addr;
    id.idiag_dst[0] = r->sin_addr.s_addr;
  } else {
    const sockaddr_in6* l = reinterpret_cast<const sockaddr_in6*>(&local);
    const sockaddr_in6* r = reinterpret_cast<const sockaddr_in6*>(&remote);
    id.idiag_sport = l->sin6_port;
    id.idiag_dport = r->sin6_port;
    memcpy(id.idiag_src, &l->sin6_addr, 16);
    memcpy(id.idiag_dst, &r->sin6_addr, 16);
    // A link-local connection is bound to its interface: the lookup finds it only with it.
    id.idiag_if = l->sin6_scope_id;
  }
  id.idiag_cookie[0] = static_cast<uint32_t>(cookie);
  id.idiag_cookie[1] = static_cast<uint32_t>(cookie >> 32);
  record[0] = static_cast<uint8_t>(local.ss_family);
  memcpy(record + 4, &id, sizeof(id));
  memcpy(record + 56, &netns, sizeof(netns));
  return Napi::Boolean::New(env, true);
}

}  // namespace finwait
