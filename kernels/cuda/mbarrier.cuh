// Shared-memory mbarriers (sm_90), by shared-memory address: the one set of primitives behind the TMA pipelines
// of the wgmma attention kernels (flash_attention_sm90.cuh) and the bulk-copy staging of cross-entropy and group
// norm (smem_staging.cuh, which wraps them for pointers). Phases complete in order; a waiter names the parity
// (0, 1, 0, ...) of the phase it waits for. Only kernels built for sm_90 may call them (the others' bodies are
// compiled out by their own architecture guards; inline functions nobody calls emit no code).
#pragma once
#include <cstdint>

namespace latte::cuda {

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes mbarrier initialisations visible to the async proxy (TMA) and the other threads (with a barrier after).
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also announces `bytes` of TMA transactions to come.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase with this parity (0, 1, 0, ... per completion) has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// The same wait with its spin loop inside the asm: placed between the wgmma steps of one accumulation, a C++ loop
// makes ptxas serialize the wgmma (C7520, "WG.AR in divergent path"); this form does not. (Not the only form:
// mbar_wait as this one costs the (192,128) wgmma backward a 4-byte spill in its 240-register consumers.)
__device__ __forceinline__ void mbar_wait_spin(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT_%=:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra.uni WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

}  // namespace latte::cuda
