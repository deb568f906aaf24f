// ernie::cuda_backend() in a build without ERNIE_CUDA (node-gyp, `npm install`): there is no CUDA
// backend, and asking for one says so. The CUDA build defines it in cuda/cuda_backend.cu.
#if !defined(ERNIE_CUDA)
#include "backend/backend.h"
#include "cuda/backend.h"

namespace ernie {

Backend& cuda_backend(int) { throw cuda::NotBuiltError(); }

}  // namespace ernie
#endif
