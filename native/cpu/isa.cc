#include "cpu/isa.h"

#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define ERNIE_ON_X86 1
#endif

namespace ernie::cpu {
namespace {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512bf16 = false;
};

CpuFeatures detect() {
  CpuFeatures f;
#if defined(ERNIE_ON_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave) return f;
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm_state = (xcr0_lo & 0x6) == 0x6;     // SSE + AVX registers saved by the OS
  const bool zmm_state = (xcr0_lo & 0xe6) == 0xe6;   // + opmask and ZMM registers
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = ymm_state && ((b >> 5) & 1);
  f.fma = ymm_state && fma;
  f.f16c = ymm_state && f16c;
  f.avx512f = zmm_state && ((b >> 16) & 1);
  f.avx512dq = zmm_state && ((b >> 17) & 1);
  f.avx512bw = zmm_state && ((b >> 30) & 1);
  f.avx512vl = zmm_state && ((b >> 31) & 1);
  __cpuid_count(7, 1, a, b, c, d);
  f.avx512bf16 = f.avx512f && ((a >> 5) & 1);
#endif
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa best_supported() {
  for (Isa isa : {Isa::avx512bf16, Isa::avx512, Isa::avx2})
    if (isa_supported(isa)) return isa;
  return Isa::generic;
}

Isa initial_isa() {
  const char* env = std::getenv("ERNIE_ISA");
  Isa chosen;
  // An unknown or unsupported ERNIE_ISA falls back to the best ISA rather than failing to load.
  if (env && *env && isa_from_name(env, &chosen) && isa_supported(chosen)) return chosen;
  return best_supported();
}

Isa g_active = initial_isa();

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512bf16: return "avx512bf16";
  }
  return "unknown";
}

bool isa_from_name(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::avx512bf16}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = features();
  switch (isa) {
    case Isa::generic: return true;
#if defined(ERNIE_X86_VARIANTS)
    case Isa::avx2: return f.avx2 && f.fma && f.f16c;
#if defined(ERNIE_EMULATED_AVX512)
    case Isa::avx512:
    case Isa::avx512bf16: return isa_supported(Isa::avx2);
#else
    case Isa::avx512:
      return isa_supported(Isa::avx2) && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
    case Isa::avx512bf16: return isa_supported(Isa::avx512) && f.avx512bf16;
#endif
#endif
    default: return false;
  }
  (void)f;
}

bool isa_avx512_emulated() {
#if defined(ERNIE_EMULATED_AVX512)
  return true;
#else
  return false;
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::avx512bf16})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa active_isa() { return g_active; }

void set_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) + "' is not supported by this CPU");
  g_active = isa;
}

}  // namespace ernie::cpu
