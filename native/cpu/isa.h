// Instruction-set dispatch. The kernels in cpu/kernels/ are compiled once per ISA, each copy
// in namespace ernie::cpu::<isa> (the build defines ERNIE_ISA_NS). At run time the best ISA
// the CPU supports is chosen from CPUID, so one binary runs on any x86-64 CPU without SIGILL;
// ERNIE_ISA=avx2 (etc.) or setIsa() from JavaScript picks a lower one.
#pragma once
#include <string>
#include <vector>

namespace ernie::cpu {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2, avx512bf16 = 3 };

const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* out);
// Whether this CPU (and OS: XSAVE state enabled) can run the ISA, and this binary holds it.
// In the emulated build (isa_avx512_emulated()) the AVX-512 ISAs run wherever AVX2 does.
bool isa_supported(Isa isa);
// Whether this is the test-only build whose AVX-512 kernels are AVX2 code emulating AVX-512
// (CMake -DERNIE_EMULATE_AVX512=ON): right, but slow.
bool isa_avx512_emulated();
std::vector<Isa> supported_isas();
// The ISA in use: the best supported one, unless ERNIE_ISA or set_isa() chose another.
Isa active_isa();
// Throws std::invalid_argument when the ISA is not supported here.
void set_isa(Isa isa);

}  // namespace ernie::cpu
