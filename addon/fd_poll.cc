// Readiness of an fd that no Node handle watches (a TUN device): a uv_poll_t on the calling
// environment's loop calls a JavaScript function when the fd becomes readable; the reads
// themselves are separate calls. Nothing blocks a thread, and the handle is unref'd: it never
// keeps the process alive by itself (the sockets whose packets it carries do). Made with
// ownsFd, it also closes the fd once the handle is closed, whichever way (close(), the object
// collected, the environment ending): a socket that must not outlive its Worker.
#include <unistd.h>
#include <uv.h>

#include <memory>

#include "finwait.h"

namespace finwait {

namespace {

class FdPoll;

// Owned by libuv from uv_poll_init until uv_close's callback, which can come after the
// JavaScript object is gone. An async cleanup hook stays registered until that callback, so an
// environment that ends (a worker exiting) first closes the handle, then waits for the close to
// finish before it goes (and before the addon may be unloaded). The close callback makes no
// call that needs the environment alive beyond removing that hook: the references are released
// when closing starts, or right after the JavaScript callback returns if it is what closed.
struct PollState {
  uv_poll_t handle;
  napi_env env;
  Napi::FunctionReference callback;
  std::unique_ptr<Napi::AsyncContext> context;
  napi_async_cleanup_hook_handle hook = nullptr;
  FdPoll* owner = nullptr;
  bool in_callback = false;
  bool closing = false;
  int owned_fd = -1;

  void ReleaseReferences() {
    callback.Reset();
    context.reset();
  }
};

void OnClosed(uv_handle_t* handle);

void StartClose(PollState* state) {
  if (state->closing) return;
  state->closing = true;
  if (!state->in_callback) state->ReleaseReferences();
  uv_poll_stop(&state->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&state->handle), OnClosed);
}

void OnEnvTeardown(napi_async_cleanup_hook_handle /*hook*/, void* arg) {
  StartClose(static_cast<PollState*>(arg));
}

class FdPoll : public Napi::ObjectWrap<FdPoll> {
 public:
  explicit FdPoll(const Napi::CallbackInfo& info);
  ~FdPoll() override { Detach(); }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Detach();
    return info.Env().Undefined();
  }
  // Called by OnClosed when the handle closed without close() (the environment ended).
  void Forget() { state_ = nullptr; }

 private:
  static void OnReadable(uv_poll_t* handle, int status, int events);
  void Detach() {
    PollState* state = state_;
    if (state == nullptr) return;
    state_ = nullptr;
    state->owner = nullptr;
    StartClose(state);
  }

  PollState* state_ = nullptr;
};

void OnClosed(uv_handle_t* handle) {
  PollState* state = static_cast<PollState*>(handle->data);
  if (state->owned_fd >= 0) close(state->owned_fd);
  if (state->owner != nullptr) state->owner->Forget();
  napi_remove_async_cleanup_hook(state->hook);
  delete state;
}

FdPoll::FdPoll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdPoll>(info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "argument 1 must be a function");
  bool owns_fd = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
  std::unique_ptr<PollState> state(new PollState());
  // What can throw comes before uv_poll_init: from then on libuv owns the handle, and the state
  // may only be freed from uv_close's callback.
  state->env = env;
  state->callback = Napi::Persistent(info[1].As<Napi::Function>());
  state->context.reset(new Napi::AsyncContext(env, "finwait:FdPoll"));
  int r = uv_poll_init(loop, &state->handle, fd);
  if (r != 0) throw ErrnoError(env, -r, "uv_poll_init");
  state->handle.data = state.get();
  r = uv_poll_start(&state->handle, UV_READABLE, OnReadable);
  if (r == 0 && napi_add_async_cleanup_hook(env, OnEnvTeardown, state.get(), &state->hook) != napi_ok) {
    r = UV_ENOMEM;
  }
  if (r != 0) {
    PollState* failed = state.release();
    failed->ReleaseReferences();
    failed->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&failed->handle), [](uv_handle_t* handle) {
      PollState* state = static_cast<PollState*>(handle->data);
      if (state->hook != nullptr) napi_remove_async_cleanup_hook(state->hook);
      delete state;
    });
    throw ErrnoError(env, -r, "uv_poll_start");
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&state->handle));
  // Owned from here on: closed with the handle.
  if (owns_fd) state->owned_fd = fd;
  state->owner = this;
  state_ = state.release();
}

// Raw N-API calls with their status checked, no node-addon-api wrappers: while an environment
// is torn down (a Worker terminated with the fd still readable) calls into JavaScript fail, and
// node-addon-api would turn that failure into a C++ exception whose Error object cannot be made
// then either, which aborts the process. A failed call there means "the environment is going".
void FdPoll::OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  PollState* state = static_cast<PollState*>(handle->data);
  if (state->closing) return;
  napi_env env = state->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, global, arg, result;
  state->in_callback = true;
  if (napi_get_reference_value(env, state->callback, &callback) == napi_ok && callback != nullptr &&
      napi_get_global(env, &global) == napi_ok && napi_create_int32(env, status, &arg) == napi_ok &&
      napi_make_callback(env, *state->context, global, callback, 1, &arg, &result) != napi_ok) {
    // Thrown by the callback: uncaught, as from any other event. No exception pending means the
    // call could not run at all (the environment is shutting down): nothing to report.
    napi_value error;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
        napi_get_and_clear_last_exception(env, &error) == napi_ok) {
      napi_fatal_exception(env, error);
    }
  }
  state->in_callback = false;
  napi_close_handle_scope(env, scope);
  // Closed from inside the callback: its references could not go while it ran.
  if (state->closing) state->ReleaseReferences();
}

}  // namespace

Napi::Function FdPollClass(Napi::Env env) {
  return FdPoll::DefineClass(env, "FdPoll", {FdPoll::InstanceMethod<&FdPoll::Close>("close")});
}

}  // namespace finwait
