// Kernel families compiled once per ISA, and their run-time dispatch.
//
// A family is an X-macro list of (name, signature):
//     #define ERNIE_NORM_KERNELS(X) X(rmsnorm_fwd, void(const float*, float*, int64_t))
//     ERNIE_DECLARE_KERNELS(norm, ERNIE_NORM_KERNELS)   // in the family's header
//     ERNIE_DEFINE_KERNELS(norm, ERNIE_NORM_KERNELS)    // in one .cc outside cpu/kernels/
// cpu/kernels/*.cc define the functions inside `namespace ernie::cpu::ERNIE_ISA_NS`; the build
// compiles those files once per ISA. norm_kernels().rmsnorm_fwd(...) calls the active ISA's copy.
//
// Rule for cpu/kernels/: everything lives inside namespace ERNIE_ISA_NS (helpers `static` or
// in an anonymous namespace), and no std:: templates are instantiated there: a template
// instantiated in two copies compiled with different flags is one symbol to the linker, which
// may pick the AVX-512 copy for the generic path.
#pragma once
#include <type_traits>

#include "cpu/isa.h"

#define ERNIE_KDECL_(name, sig) using name##_sig = sig; name##_sig name;
#define ERNIE_KFIELD_(name, sig) std::add_pointer_t<sig> name;

#define ERNIE_DECLARE_KERNELS(family, LIST)                        \
  namespace ernie::cpu {                                           \
  namespace generic { LIST(ERNIE_KDECL_) }                         \
  namespace avx2 { LIST(ERNIE_KDECL_) }                            \
  namespace avx512 { LIST(ERNIE_KDECL_) }                          \
  namespace avx512bf16 { LIST(ERNIE_KDECL_) }                      \
  struct family##_kernel_table { LIST(ERNIE_KFIELD_) };            \
  const family##_kernel_table& family##_kernels();                 \
  const family##_kernel_table& family##_kernels_for(Isa isa);      \
  }

#define ERNIE_KENTRY_generic_(name, sig) &generic::name,
#if defined(ERNIE_X86_VARIANTS)
#define ERNIE_KENTRY_avx2_(name, sig) &avx2::name,
#define ERNIE_KENTRY_avx512_(name, sig) &avx512::name,
#define ERNIE_KENTRY_avx512bf16_(name, sig) &avx512bf16::name,
#else  // only the generic copy exists; isa_supported() never selects the others
#define ERNIE_KENTRY_avx2_(name, sig) &generic::name,
#define ERNIE_KENTRY_avx512_(name, sig) &generic::name,
#define ERNIE_KENTRY_avx512bf16_(name, sig) &generic::name,
#endif

#define ERNIE_DEFINE_KERNELS(family, LIST)                                              \
  namespace ernie::cpu {                                                                \
  const family##_kernel_table& family##_kernels_for(Isa isa) {                          \
    static const family##_kernel_table tables[] = {                                     \
        {LIST(ERNIE_KENTRY_generic_)}, {LIST(ERNIE_KENTRY_avx2_)},                      \
        {LIST(ERNIE_KENTRY_avx512_)}, {LIST(ERNIE_KENTRY_avx512bf16_)}};                \
    return tables[static_cast<int>(isa)];                                               \
  }                                                                                     \
  const family##_kernel_table& family##_kernels() { return family##_kernels_for(active_isa()); } \
  }
