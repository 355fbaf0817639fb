// Registers the exports; the functions live one concern per file. No mutable static state, so
// the addon loads in any number of environments (worker threads). FINWAIT_LINUX_BACKEND (set by
// binding.gyp with the Linux sources) adds what only the Linux back-end has; without it the
// build is addon/unsupported.cc's, whose every call throws ENOTSUP.
#include "finwait.h"

namespace finwait {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("getLinger", Napi::Function::New(env, GetLinger, "getLinger"));
  exports.Set("setLinger", Napi::Function::New(env, SetLinger, "setLinger"));
  exports.Set("getIntOption", Napi::Function::New(env, GetIntOption, "getIntOption"));
  exports.Set("setIntOption", Napi::Function::New(env, SetIntOption, "setIntOption"));
  exports.Set("tcpInfo", Napi::Function::New(env, TcpInfo, "tcpInfo"));
  exports.Set("tcpState", Napi::Function::New(env, TcpState, "tcpState"));
  exports.Set("tcpStates", Napi::Function::New(env, TcpStates, "tcpStates"));
  exports.Set("ioctlInt", Napi::Function::New(env, IoctlInt, "ioctlInt"));
  exports.Set("sockDiag", Napi::Function::New(env, SockDiag, "sockDiag"));
  exports.Set("sockDiagSocket", Napi::Function::New(env, SockDiagSocket, "sockDiagSocket"));
  exports.Set("sockDiagFind", Napi::Function::New(env, SockDiagFind, "sockDiagFind"));
  exports.Set("sockDiagId", Napi::Function::New(env, SockDiagId, "sockDiagId"));
  exports.Set("socketCookie", Napi::Function::New(env, SocketCookie, "socketCookie"));
  exports.Set("socketNetnsCookie", Napi::Function::New(env, SocketNetnsCookie, "socketNetnsCookie"));
  exports.Set("socketNetns", Napi::Function::New(env, SocketNetns, "socketNetns"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("netnsSocket", Napi::Function::New(env, NetnsSocket, "netnsSocket"));
  exports.Set("netnsOpen", Napi::Function::New(env, NetnsOpen, "netnsOpen"));
  exports.Set("bind", Napi::Function::New(env, Bind, "bind"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
#ifdef FINWAIT_LINUX_BACKEND
  exports.Set("reusePortSocket", Napi::Function::New(env, ReusePortSocket, "reusePortSocket"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("SealedListener", SealedListenerClass(env));
  exports.Set("detachFilter", Napi::Function::New(env, DetachFilter, "detachFilter"));
  exports.Set("seqpacketSocket", Napi::Function::New(env, SeqpacketSocket, "seqpacketSocket"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("acceptUnix", Napi::Function::New(env, AcceptUnix, "acceptUnix"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
#endif
  exports.Set("tunSetIff", Napi::Function::New(env, TunSetIff, "tunSetIff"));
  exports.Set("tunRead", Napi::Function::New(env, TunRead, "tunRead"));
  exports.Set("tunWrite", Napi::Function::New(env, TunWrite, "tunWrite"));
  exports.Set("FdPoll", FdPollClass(env));
#ifdef FINWAIT_LINUX_BACKEND
  // The sock_diag destroy multicast exists on Linux only: elsewhere watch() cannot run at all.
  exports.Set("SockDiagEventsSocket", SockDiagEventsSocketClass(env));
  exports.Set("sockDiagJoin", Napi::Function::New(env, SockDiagJoin, "sockDiagJoin"));
  exports.Set("sockDiagLeave", Napi::Function::New(env, SockDiagLeave, "sockDiagLeave"));
  exports.Set("sockDiagReadEvents", Napi::Function::New(env, SockDiagReadEvents, "sockDiagReadEvents"));
  exports.Set("closeLook", Napi::Function::New(env, CloseLook, "closeLook"));
  exports.Set("BpfStateChanges", BpfStateChangesClass(env));
#endif
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace finwait

static Napi::Object InitFinwait(Napi::Env env, Napi::Object exports) {
  return finwait::Init(env, exports);
}

NODE_API_MODULE(finwait, InitFinwait)
