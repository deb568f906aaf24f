# node-gyp build of the native addon (what `npm install` runs when no prebuild matches).
# CMakeLists.txt builds the same sources with cmake-js; keep the two in step. (The test-only
# build with emulated AVX-512, ERNIE_EMULATE_AVX512, exists in CMakeLists.txt alone.)
#
# The kernels in native/cpu/kernels/ are compiled once per instruction set, each copy in
# its own namespace (ERNIE_ISA_NS); native/cpu/isa.cc picks one at run time from CPUID.
{
  "variables": {
    "kernel_sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu/kernels').filter(f => f.endsWith('.cc')).map(f => 'native/cpu/kernels/' + f).join(' ')\")"],
    "core_sources": ["<!@(node -p \"['native/addon', 'native/backend', 'native/cpu', 'native/engine'].filter(d => require('fs').existsSync(d)).flatMap(d => require('fs').readdirSync(d).filter(f => f.endsWith('.cc')).map(f => d + '/' + f)).join(' ')\")"],
    "common_cflags": ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
  },
  "target_defaults": {
    "cflags!": ["-fno-exceptions", "-O2", "-O0"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17", "-std=gnu++20"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "<@(common_cflags)"],
    "include_dirs": ["native"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "OTHER_CPLUSPLUSFLAGS": ["-O3", "-fno-math-errno"]
    },
    "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } }
  },
  "targets": [
    {
      "target_name": "ernie_kernels_generic",
      "type": "static_library",
      "sources": ["<@(kernel_sources)"],
      "defines": ["ERNIE_ISA_NS=generic"]
    },
    {
      "target_name": "ernie",
      "sources": ["<@(core_sources)"],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except",
        "ernie_kernels_generic"
      ],
      "conditions": [
        ["target_arch == 'x64'", {
          "defines": ["ERNIE_X86_VARIANTS=1"],
          "dependencies": ["ernie_kernels_avx2", "ernie_kernels_avx512", "ernie_kernels_avx512bf16"]
        }]
      ]
    }
  ],
  "conditions": [
    ["target_arch == 'x64'", {
      "targets": [
        {
          "target_name": "ernie_kernels_avx2",
          "type": "static_library",
          "sources": ["<@(kernel_sources)"],
          "defines": ["ERNIE_ISA_NS=avx2"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c"] }
        },
        {
          "target_name": "ernie_kernels_avx512",
          "type": "static_library",
          "sources": ["<@(kernel_sources)"],
          "defines": ["ERNIE_ISA_NS=avx512"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"] }
        },
        {
          "target_name": "ernie_kernels_avx512bf16",
          "type": "static_library",
          "sources": ["<@(kernel_sources)"],
          "defines": ["ERNIE_ISA_NS=avx512bf16"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16"],
          "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16"] }
        }
      ]
    }]
  ]
}
