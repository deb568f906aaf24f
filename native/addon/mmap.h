// Read-only memory-mapped files (the MappedFile class in mmap.cc), as seen from other native code.
#pragma once
#include <cstddef>
#include <memory>

namespace ernie::addon {

// Keeps the mapping that holds [data, data + bytes) alive until the returned handle is released,
// even if its MappedFile is disposed meanwhile (dispose then defers the munmap to the last
// release). Null when the range lies in no live mapping. Ops pin every array they are given, so
// a job running on a worker thread never reads unmapped memory. Thread-safe.
std::shared_ptr<void> pin_mapped(const void* data, size_t bytes);

}  // namespace ernie::addon
