#include <math.h>
#include <stdint.h>

#include <string>

#include <uv.h>

#include "finwait.h"

namespace finwait {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  int uv_err = uv_translate_sys_error(err);
  const char* code = uv_err_name(uv_err);
  Napi::Error error = Napi::Error::New(env, std::string(syscall) + " " + code);
  error.Set("errno", Napi::Number::New(env, uv_err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

static Napi::Error ArgTypeError(const Napi::CallbackInfo& info, size_t i, const char* expected) {
  Napi::TypeError error = Napi::TypeError::New(
      info.Env(), "argument " + std::to_string(i) + " must be " + expected);
  error.Set("code", Napi::String::New(info.Env(), "ERR_INVALID_ARG_TYPE"));
  return error;
}

Napi::RangeError OutOfRange(Napi::Env env, const std::string& message) {
  Napi::RangeError error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  return error;
}

int IntArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throw ArgTypeError(info, i, "a number");
  // Int32Value() would wrap 2^32 + 5 to 5 and truncate 5.9 and NaN: the wrong fd, silently.
  double value = info[i].As<Napi::Number>().DoubleValue();
  if (!(value >= INT32_MIN && value <= INT32_MAX) || value != trunc(value)) {
    throw OutOfRange(info.Env(), "argument " + std::to_string(i) +
                                     " must be an integer >= -2147483648 and <= 2147483647");
  }
  return static_cast<int>(value);
}

Napi::TypedArrayOf<int32_t> Int32ArrayArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw ArgTypeError(info, i, "an Int32Array");
  }
  return info[i].As<Napi::TypedArrayOf<int32_t>>();
}

Napi::TypedArrayOf<uint8_t> Uint8ArrayArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw ArgTypeError(info, i, "a Uint8Array");
  }
  return info[i].As<Napi::TypedArrayOf<uint8_t>>();
}

}  // namespace finwait
