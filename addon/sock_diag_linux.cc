// sock_diag for TCP (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, struct inet_diag_req_v2): sends one
// request and returns the kernel's reply messages as raw bytes; src/diag.ts decodes them. A
// netlink socket per call: nothing survives between calls, so any environment may call at once.
// The socket is made in the caller's network namespace, or in the one given (the lab's hosts).
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "finwait.h"

namespace finwait {

namespace {

// The kernel fills a dump reply up to ~32 KiB (netlink caps max_recvmsg_len there), so a 64 KiB
// recv never truncates one; MSG_TRUNC is still checked.
constexpr size_t kRecvSize = 64 * 1024;

struct NetlinkFd {
  int fd;
  ~NetlinkFd() {
    if (fd >= 0) close(fd);
  }
};

// Optional Uint8Array argument of exactly `size` bytes (0: any size); empty when null/undefined.
Napi::TypedArrayOf<uint8_t> OptionalBytes(const Napi::CallbackInfo& info, size_t i, size_t size) {
  if (info[i].IsNull() || info[i].IsUndefined()) return Napi::TypedArrayOf<uint8_t>();
  Napi::TypedArrayOf<uint8_t> bytes = Uint8ArrayArg(info, i);
  if ((size != 0 && bytes.ByteLength() != size) || bytes.ByteLength() > 0xffff - NLA_HDRLEN) {
    Napi::RangeError error = Napi::RangeError::New(info.Env(), "argument has the wrong length");
    error.Set("code", Napi::String::New(info.Env(), "ERR_OUT_OF_RANGE"));
    throw error;
  }
  return bytes;
}

}  // namespace

Napi::Value SockDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = IntArg(info, 0);
  uint32_t states = static_cast<uint32_t>(IntArg(info, 1));
  Napi::TypedArrayOf<uint8_t> id = OptionalBytes(info, 2, sizeof(inet_diag_sockid));
  Napi::TypedArrayOf<uint8_t> bytecode = OptionalBytes(info, 3, 0);
  bool exact = !id.IsEmpty();
  size_t code_len = bytecode.IsEmpty() ? 0 : bytecode.ByteLength();

  // nlmsghdr, inet_diag_req_v2, then the bytecode as an INET_DIAG_REQ_BYTECODE attribute.
  size_t base = NLMSG_LENGTH(sizeof(inet_diag_req_v2));
  std::vector<uint8_t> request(base + (code_len ? NLA_HDRLEN + NLA_ALIGN(code_len) : 0));
  nlmsghdr nlh = {};
  nlh.nlmsg_len = static_cast<uint32_t>(request.size());
  nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  nlh.nlmsg_flags = NLM_F_REQUEST | (exact ? 0 : NLM_F_DUMP);
  nlh.nlmsg_seq = 1;
  inet_diag_req_v2 req = {};
  req.sdiag_family = static_cast<uint8_t>(family);
  req.sdiag_protocol = IPPROTO_TCP;
  req.idiag_states = states;
  if (exact) memcpy(&req.id, id.Data(), sizeof(req.id));
  memcpy(request.data(), &nlh, sizeof(nlh));
  memcpy(request.data() + NLMSG_HDRLEN, &req, sizeof(req));
  if (code_len) {
    nlattr attr = {static_cast<uint16_t>(NLA_HDRLEN + code_len), INET_DIAG_REQ_BYTECODE};
    memcpy(request.data() + base, &attr, sizeof(attr));
    memcpy(request.data() + base + NLA_HDRLEN, bytecode.Data(), code_len);
  }

  // A netlink socket answers for the namespace it was made in: with nsFd, make it there.
  auto make = [] { return socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG); };
  NetlinkFd nl = {-1};
  if (info[4].IsNull() || info[4].IsUndefined()) {
    nl.fd = make();
    if (nl.fd < 0) {
      int err = errno;
      throw ErrnoError(env, err, "socket");
    }
  } else {
    nl.fd = InNetns(env, IntArg(info, 4), "socket", make);
  }
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  const sockaddr* to = reinterpret_cast<const sockaddr*>(&kernel);
  while (sendto(nl.fd, request.data(), request.size(), 0, to, sizeof(kernel)) < 0) {
    int err = errno;
    if (err != EINTR) throw ErrnoError(env, err, "sendto");
  }

  // Keep the data messages, headers included; stop at NLMSG_DONE, or after a reply that is not
  // part of a dump (NLM_F_MULTI unset: the exact lookup). NLMSG_ERROR becomes the errno error.
  std::unique_ptr<uint8_t[]> chunk(new uint8_t[kRecvSize]);
  std::vector<uint8_t> out;
  for (bool done = false; !done;) {
    iovec iov = {chunk.get(), kRecvSize};
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
      memcpy(&h, chunk.get() + off, sizeof(h));
      if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > size - off) {
        throw ErrnoError(env, EPROTO, "recvmsg");
      }
      if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) {
        // NLMSG_DONE carries the dump's result, NLMSG_ERROR nlmsgerr.error: both -errno or 0.
        int result = 0;
        if (h.nlmsg_len >= NLMSG_LENGTH(sizeof(result))) {
          memcpy(&result, chunk.get() + off + NLMSG_HDRLEN, sizeof(result));
        }
        if (result < 0) throw ErrnoError(env, -result, "recvmsg");
        done = true;
        break;
      }
      off += NLMSG_ALIGN(h.nlmsg_len);
      keep = off < size ? off : size;
      if (!(h.nlmsg_flags & NLM_F_MULTI)) done = true;
    }
    out.insert(out.end(), chunk.get(), chunk.get() + keep);
  }
  return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
}

}  // namespace finwait
