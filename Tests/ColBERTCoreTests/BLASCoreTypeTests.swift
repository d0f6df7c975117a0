import CKernels
import Testing
@testable import ColBERTCore

/// OpenBLAS's SSE3 fallback on CPUs newer than the library is overridden, and nothing else.
@Suite struct BLASCoreTypeTests {
    @Test func onlyThePrescottFallbackIsOverridden() {
        #expect(BLAS.coreTypeOverride(detected: "Prescott", environment: nil, cpuBest: "SkylakeX") == "SkylakeX")
        #expect(BLAS.coreTypeOverride(detected: "prescott", environment: nil, cpuBest: "Haswell") == "Haswell")
        // OpenBLAS knew the CPU.
        #expect(BLAS.coreTypeOverride(detected: "Haswell", environment: nil, cpuBest: "SkylakeX") == nil)
        #expect(BLAS.coreTypeOverride(detected: "Zen", environment: nil, cpuBest: "Haswell") == nil)
        // The user chose, even an empty value.
        #expect(BLAS.coreTypeOverride(detected: "Prescott", environment: "Prescott", cpuBest: "SkylakeX") == nil)
        #expect(BLAS.coreTypeOverride(detected: "Prescott", environment: "", cpuBest: "SkylakeX") == nil)
        // A CPU without AVX2: Prescott is what it can run.
        #expect(BLAS.coreTypeOverride(detected: "Prescott", environment: nil, cpuBest: nil) == nil)
    }

    /// The CPU's best core type agrees with the features the project's own kernels detect.
    @Test func cpuBestMatchesTheKernelsFeatures() {
        let best = ck_blas_core_for_cpu().map { String(cString: $0) }
        if ck_uses_avx2() != 0 {
            #expect(best == "Haswell" || best == "SkylakeX")
        }
        #expect(!BLAS.coreName.isEmpty)
    }
}
