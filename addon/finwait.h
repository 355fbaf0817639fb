// Declarations shared by every back-end: each platform's sources define the same functions, so
// binding.cc registers one set of exports whatever the platform (binding.gyp picks the files).
// One syscall per function, except where watch() needs many per socket at once and one call
// across N-API costs less than several: tcpStates (a batch), sockDiagFind (a batch of lookups)
// and sockDiagId (the syscalls that name one socket for a lookup).
#ifndef FINWAIT_ADDON_FINWAIT_H_
#define FINWAIT_ADDON_FINWAIT_H_

#include <napi.h>

#include <stdint.h>

#include <functional>
#include <string>

namespace finwait {

// The one place errors are built: a Node-style error ("<syscall> <CODE>", .code, .errno as the
// negative libuv number, .syscall) from an errno value saved right after the syscall.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall);
// A RangeError with code ERR_OUT_OF_RANGE, for arguments of the right type and a wrong value.
Napi::RangeError OutOfRange(Napi::Env env, const std::string& message);

// Argument guards. TypeScript validates first with Node's codes; these only make sure a direct
// call with wrong arguments throws instead of crashing the process or acting on the wrong fd.
// IntArg takes only integers in int32's range (ERR_OUT_OF_RANGE otherwise).
int IntArg(const Napi::CallbackInfo& info, size_t i);
Napi::TypedArrayOf<int32_t> Int32ArrayArg(const Napi::CallbackInfo& info, size_t i);
Napi::TypedArrayOf<uint8_t> Uint8ArrayArg(const Napi::CallbackInfo& info, size_t i);

// shutdown(fd, how): shutdown(2); how is SHUT_RD, SHUT_WR or SHUT_RDWR.
Napi::Value Shutdown(const Napi::CallbackInfo& info);
// getLinger(fd) -> { onoff, linger }; setLinger(fd, onoff, linger): SO_LINGER.
Napi::Value GetLinger(const Napi::CallbackInfo& info);
Napi::Value SetLinger(const Napi::CallbackInfo& info);
// getIntOption(fd, level, name) -> int; setIntOption(fd, level, name, value): int options.
Napi::Value GetIntOption(const Napi::CallbackInfo& info);
Napi::Value SetIntOption(const Napi::CallbackInfo& info);
// tcpInfo(fd, buffer) -> bytes the kernel wrote; tcpState(fd) -> tcpi_state;
// tcpStates(fds, out): out[i] = tcpi_state of fds[i], or the negative libuv errno.
Napi::Value TcpInfo(const Napi::CallbackInfo& info);
Napi::Value TcpState(const Napi::CallbackInfo& info);
Napi::Value TcpStates(const Napi::CallbackInfo& info);
// ioctlInt(fd, request) -> int, for SIOCINQ, SIOCOUTQ and SIOCOUTQNSD only.
Napi::Value IoctlInt(const Napi::CallbackInfo& info);
// sockDiag(family, states, bytecode?, nsFd?, scratch) -> Uint8Array: one NETLINK_SOCK_DIAG dump
// request for TCP (inet_diag_req_v2) of the sockets in the `states` mask, filtered by the
// optional INET_DIAG_REQ_BYTECODE. Returns the reply's netlink messages (nlmsghdr +
// inet_diag_msg + attributes), received straight into `scratch` (a Uint8Array the caller keeps
// between calls), or into a larger ArrayBuffer when it does not fit: the result is a view of
// whichever holds them, from its start. With nsFd, the netlink socket is made inside that network
// namespace, so it sees that one's sockets.
Napi::Value SockDiag(const Napi::CallbackInfo& info);
// sockDiagSocket(nsFd?) -> fd: socket(AF_NETLINK, NETLINK_SOCK_DIAG), close-on-exec, here or in
// the network namespace nsFd; the caller keeps it for sockDiagFind and closes it.
Napi::Value SockDiagSocket(const Napi::CallbackInfo& info);
// sockDiagFind(nlFd, requests, replies, status): status.length exact lookups through the
// netlink socket nlFd, sent 32 per sendmsg and read with recvmmsg. Request i is the 64-byte
// record at requests[64 i] (u8 family, 3 bytes pad, struct inet_diag_sockid, the rest ignored);
// status[i] becomes 1 with the reply's struct inet_diag_msg at replies[72 i], or the kernel's
// -errno (-ENOENT: no such socket), or -EAGAIN if no reply came. An nlFd that is not a
// NETLINK_SOCK_DIAG socket throws EPROTOTYPE before anything is sent.
Napi::Value SockDiagFind(const Napi::CallbackInfo& info);
// sockDiagId(fd, record) -> connected: byte 1 of the record is the socket's tcpi_state
// (TCP_INFO, read first); if it has a peer, the rest is the 64-byte record sockDiagFind takes
// for it: SO_COOKIE (read before the peer's name), getsockname, getpeername, and its network
// namespace's cookie (SO_NETNS_COOKIE, 0 before Linux 5.14) as a u64 at byte 56. False, with
// nothing but the state, in CLOSE, LISTEN and SYN_SENT (one syscall).
Napi::Value SockDiagId(const Napi::CallbackInfo& info);
// closeLook(fd, out, stopStates) -> read on: what decides a close, before Node closes the fd.
// out[0] = tcpi_state and out[5] = tcpi_data_segs_in (-1 before Linux 4.6) from one TCP_INFO;
// false, with out[1..4] = 0, when bit tcpi_state of the mask stopStates is set; else out[1],
// out[2] = SO_LINGER's l_onoff, l_linger, out[3] = SIOCINQ, out[4] = TCP_LINGER2 (four syscalls
// in one call).
Napi::Value CloseLook(const Napi::CallbackInfo& info);
// socketCookie(fd) -> BigInt: getsockopt(SO_COOKIE), the socket's 64-bit cookie (any socket;
// ENOPROTOOPT before Linux 4.12).
Napi::Value SocketCookie(const Napi::CallbackInfo& info);
// socketNetnsCookie(fd) -> BigInt: getsockopt(SO_NETNS_COOKIE) of the socket fd, its network
// namespace's 64-bit id, with no privilege; 0 before Linux 5.14.
Napi::Value SocketNetnsCookie(const Napi::CallbackInfo& info);
// socketNetns(fd) -> fd: ioctl(SIOCGSKNS), an fd of the network namespace the socket lives in.
Napi::Value SocketNetns(const Napi::CallbackInfo& info);
// netnsCookie(nsFd?) -> BigInt: SO_NETNS_COOKIE of a socket made in this thread's network
// namespace (or in nsFd's): the namespace's 64-bit id; 0 before Linux 5.14.
Napi::Value NetnsCookie(const Napi::CallbackInfo& info);
// InNetns(env, nsFd, syscall, make) (Linux): runs make() with the calling thread inside the
// network namespace nsFd and returns it home at once; returns make()'s fd, or throws the errno
// make() left, named after `syscall`. A socket keeps the namespace it was created in.
int InNetns(Napi::Env env, int ns_fd, const char* syscall, const std::function<int()>& make);
// MakeFd(info, i, syscall, make) (Linux): make() here if argument i is null or undefined, else in
// the network namespace whose fd it is (InNetns); throws the errno make() left.
int MakeFd(const Napi::CallbackInfo& info, size_t i, const char* syscall, const std::function<int()>& make);
// NetnsCookieOf(env, fd) (Linux): SO_NETNS_COOKIE of the socket fd, its network namespace's
// 64-bit id; 0 before Linux 5.14, which lacks it.
uint64_t NetnsCookieOf(Napi::Env env, int fd);
// The lab (finwait/testing): netnsSocket(nsFd, family, type) -> fd and netnsOpen(nsFd, path,
// flags) -> fd make the fd with the calling thread inside the network namespace nsFd (setns(2)),
// then return it home (EPERM, before it moves, if it could not come back); netnsOpen adds
// O_NONBLOCK and refuses O_CREAT and O_TMPFILE (EINVAL); bind(fd, sockaddr) is bind(2) with
// sockaddr_in/sockaddr_in6 bytes.
Napi::Value NetnsSocket(const Napi::CallbackInfo& info);
Napi::Value NetnsOpen(const Napi::CallbackInfo& info);
Napi::Value Bind(const Napi::CallbackInfo& info);
// closeFd(fd): close(2) of an fd the addon made.
Napi::Value CloseFd(const Napi::CallbackInfo& info);
// Linux only (registered only there): reusePortSocket(family, nsFd?) -> fd: socket(2), stream,
// close-on-exec and non-blocking, made here or in the network namespace nsFd, with SO_REUSEPORT
// set (setsockopt(2)) before anything binds it; listen(fd, backlog): listen(2).
Napi::Value ReusePortSocket(const Napi::CallbackInfo& info);
Napi::Value Listen(const Napi::CallbackInfo& info);
// new SealedListener(fd, maxMs?) (Linux only; registered only there): attaches to the listener fd
// a socket filter that drops every segment with SYN set and ACK clear, so no new handshake starts
// while those under way complete, and keeps a copy of the fd (close-on-exec); release() detaches
// the filter through the copy and closes it in one call (also when the object is collected or its
// environment ends). With maxMs, where BPF may be loaded, the filter is an eBPF one that stops
// dropping maxMs from now (a process killed while sealed leaves no listener sealed for ever):
// `expires` says which was attached. EPERM where neither can be had (Linux 6.18, on a TCP socket:
// the classic one needs CAP_NET_ADMIN, the eBPF one CAP_BPF or CAP_SYS_ADMIN, or nothing where
// kernel.unprivileged_bpf_disabled is 0). detachFilter(fd): SO_DETACH_FILTER
// (none attached is no error), for a connection accepted from a sealed listener, which inherited
// its filter.
Napi::Function SealedListenerClass(Napi::Env env);
Napi::Value DetachFilter(const Napi::CallbackInfo& info);
// Passing fds between processes (Linux only; registered only there). seqpacketSocket() -> fd:
// socket(AF_UNIX, SOCK_SEQPACKET), non-blocking and close-on-exec (bound with bind(), listened
// with listen()); connectUnix(fd, sockaddr_un bytes): connect(2); acceptUnix(fd) -> fd, or -1
// when none waits: accept4(2), non-blocking and close-on-exec; peerCredentials(fd) -> { pid, uid,
// gid }: SO_PEERCRED; sendFds(fd, fds, count, payload) -> bytes: one sendmsg(2) of payload (at
// least a byte) with the first count fds (at most 253) as SCM_RIGHTS, MSG_DONTWAIT;
// recvFds(fd, payload, fds) -> bytes (0: the peer closed; -1: nothing waits): one recvmsg(2),
// close-on-exec, the fds received into fds (the rest set to -1; fds beyond its length closed);
// a message cut short throws EMSGSIZE with every fd it carried closed.
Napi::Value SeqpacketSocket(const Napi::CallbackInfo& info);
Napi::Value ConnectUnix(const Napi::CallbackInfo& info);
Napi::Value AcceptUnix(const Napi::CallbackInfo& info);
Napi::Value PeerCredentials(const Napi::CallbackInfo& info);
Napi::Value SendFds(const Napi::CallbackInfo& info);
Napi::Value RecvFds(const Napi::CallbackInfo& info);
// tunSetIff(fd, name, flags) -> name: ioctl(TUNSETIFF); tunRead(fd, buffer) -> packet length,
// 0 when none is waiting (EAGAIN); tunWrite(fd, buffer, length) -> bytes written. The fd must
// be non-blocking (netnsOpen makes it so), or a read with nothing waiting would block.
Napi::Value TunSetIff(const Napi::CallbackInfo& info);
Napi::Value TunRead(const Napi::CallbackInfo& info);
Napi::Value TunWrite(const Napi::CallbackInfo& info);
// The sock_diag destroy multicast (Linux only; registered only there). new
// SockDiagEventsSocket(nsFd?, rcvbuf) -> { fd, close() }: a NETLINK_SOCK_DIAG socket, non-blocking
// and close-on-exec, made here or in the network namespace nsFd, its SO_RCVBUF set to rcvbuf bytes
// if > 0, bound (multicast reaches only a bound socket); the object owns the fd, closed by close()
// or with the object or its environment. sockDiagJoin(fd, group) / sockDiagLeave(fd, group):
// NETLINK_ADD_MEMBERSHIP and NETLINK_DROP_MEMBERSHIP (SKNLGRP_INET_TCP_DESTROY 1,
// SKNLGRP_INET6_TCP_DESTROY 3).
// sockDiagReadEvents(fd, buffer, lengths) -> count: one recvmmsg of what is queued, message i
// into slot i of buffer (buffer.length / lengths.length bytes each), lengths[i] its length
// (negative: cut to its slot); 0 when nothing is queued, -ENOBUFS when messages were lost.
Napi::Function SockDiagEventsSocketClass(Napi::Env env);
Napi::Value SockDiagJoin(const Napi::CallbackInfo& info);
Napi::Value SockDiagLeave(const Napi::CallbackInfo& info);
Napi::Value SockDiagReadEvents(const Napi::CallbackInfo& info);
// TCP state changes from a BPF program (Linux only; registered only there). new
// BpfStateChanges(ringBytes) -> { fd, read(buffer), lost(), close() }: loads a program on the
// tracepoint sock:inet_sock_set_state that writes one 128-byte record per TCP state change into a
// BPF ring buffer of ringBytes (a power of 2, at least a page), attaches it and maps the ring; the
// object owns it all (released by close(), with the object or with its environment). fd is the
// ring's, readable (epoll) while records wait; read(buffer) copies waiting records into buffer and
// returns how many; lost() is the number of records the program dropped because the ring was
// full. Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) and the kernel's BTF.
Napi::Function BpfStateChangesClass(Napi::Env env);
// new FdPoll(fd, onReadable(status), ownsFd?): a uv_poll_t for readability on this environment's
// loop, unref'd; .close() stops it. Closed with the environment if still open; with ownsFd the fd
// is closed when the handle is.
Napi::Function FdPollClass(Napi::Env env);
// The platform's numbers for the constants above (empty where unsupported).
Napi::Object Constants(Napi::Env env);

}  // namespace finwait

#endif  // FINWAIT_ADDON_FINWAIT_H_
