// Read-only memory-mapped files (the MappedFile class in mmap.cc), as seen from other native code.
#pragma once
#include <napi.h>

#include <cstddef>
#include <memory>

namespace ernie::addon {

// Keeps the mapping that holds [data, data + bytes) alive until the returned handle is released,
// even if its MappedFile is disposed meanwhile (dispose then defers the munmap to the last
// release). Null when the range lies in no live mapping. Ops pin every array they are given, so
// a job running on a worker thread never reads unmapped memory. Thread-safe.
std::shared_ptr<void> pin_mapped(const void* data, size_t bytes);

// Throws ERR_FILE_CHANGED (naming the file) when the file behind a pin from pin_mapped was
// truncated or rewritten in place since it was mapped: reading it could raise SIGBUS. Called
// before each native call that reads mapped memory; a change during a call is not caught.
void check_mapped_unchanged(Napi::Env env, const std::shared_ptr<void>& pin);

}  // namespace ernie::addon
