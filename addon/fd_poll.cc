// Readiness of an fd that no Node handle watches (a TUN device): a uv_poll_t on the calling
// environment's loop calls a JavaScript function when the fd becomes readable; the reads
// themselves are separate calls. Nothing blocks a thread, and the handle is unref'd: it never
// keeps the process alive by itself (the sockets whose packets it carries do).
#include <uv.h>

#include <memory>

#include "finwait.h"

namespace finwait {

namespace {

// Heap-allocated and freed by uv_close's callback: libuv owns the handle until then, which can
// be after the JavaScript object is gone.
struct PollState {
  uv_poll_t handle;
  napi_env env;
  Napi::FunctionReference callback;
  std::unique_ptr<Napi::AsyncContext> context;
};

class FdPoll : public Napi::ObjectWrap<FdPoll> {
 public:
  explicit FdPoll(const Napi::CallbackInfo& info);
  ~FdPoll() override { Stop(false); }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop(false);
    return info.Env().Undefined();
  }

 private:
  static void OnReadable(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle) { delete static_cast<PollState*>(handle->data); }
  static void OnEnvTeardown(void* self) { static_cast<FdPoll*>(self)->Stop(true); }
  void Stop(bool env_teardown);

  PollState* state_ = nullptr;
};

FdPoll::FdPoll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdPoll>(info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "argument 1 must be a function");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
  std::unique_ptr<PollState> state(new PollState());
  int r = uv_poll_init(loop, &state->handle, fd);
  if (r != 0) throw ErrnoError(env, -r, "uv_poll_init");
  state->handle.data = state.get();
  state->env = env;
  state->callback = Napi::Persistent(info[1].As<Napi::Function>());
  state->context.reset(new Napi::AsyncContext(env, "finwait:FdPoll"));
  r = uv_poll_start(&state->handle, UV_READABLE, OnReadable);
  if (r != 0) {
    state->callback.Reset();
    state->context.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&state.release()->handle), OnClosed);
    throw ErrnoError(env, -r, "uv_poll_start");
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&state->handle));
  state_ = state.release();
  // A worker's loop must have no open handle when it is closed: close ours first if the
  // environment ends before close() was called.
  napi_add_env_cleanup_hook(env, OnEnvTeardown, this);
}

void FdPoll::OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  PollState* state = static_cast<PollState*>(handle->data);
  Napi::Env env(state->env);
  Napi::HandleScope scope(env);
  try {
    state->callback.MakeCallback(env.Global(), {Napi::Number::New(env, status)}, *state->context);
  } catch (const Napi::Error& error) {
    // Thrown by the callback: uncaught, as from any other event.
    napi_fatal_exception(env, error.Value());
  }
}

void FdPoll::Stop(bool env_teardown) {
  PollState* state = state_;
  if (state == nullptr) return;
  state_ = nullptr;
  if (env_teardown) {
    // References must go while the environment still exists; the close callback may run later.
    state->callback.Reset();
    state->context.reset();
  } else {
    napi_remove_env_cleanup_hook(state->env, OnEnvTeardown, this);
  }
  uv_poll_stop(&state->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&state->handle), OnClosed);
}

}  // namespace

Napi::Function FdPollClass(Napi::Env env) {
  return FdPoll::DefineClass(env, "FdPoll", {FdPoll::InstanceMethod<&FdPoll::Close>("close")});
}

}  // namespace finwait
