// GCC 11 and later make std::allocator<T>::allocate() (std::vector of any T larger than a byte)
// call std::__throw_bad_array_new_length(), which libstdc++ exports only from GLIBCXX_3.4.29:
// newer than the libstdc++ of the oldest distributions Node's own binaries run on, so the
// prebuilt addon would not load there (scripts/prebuild.mjs refuses such a build). Defined here,
// the addon needs no such symbol. It is reached only for an impossible size (more elements than
// memory can hold), never for the sizes the addon asks for.
#include <new>

namespace std {

void __throw_bad_array_new_length() {
  throw std::bad_alloc();
}

}  // namespace std
