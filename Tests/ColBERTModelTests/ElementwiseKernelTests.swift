import CKernels
import Foundation
import Testing
@testable import ColBERTModel

@Suite struct ElementwiseKernelTests {
    /// GELU (dispatched and portable) against the erf form in double precision, over both signs, the tails and a length
    /// that leaves a remainder after the 8-wide loop.
    @Test func geluMatchesErfForm() {
        var x: [Float] = (0..<203).map { Float($0 - 101) * 0.08 }
        x += [-30, -9, -5.5, 0, 5.5, 9, 30]
        let want = x.map { v -> Double in let d = Double(v); return d * 0.5 * (1 + erf(d / 2.0.squareRoot())) }
        var got = x, portable = x
        got.withUnsafeMutableBufferPointer { Kernels.gelu($0.baseAddress!, count: $0.count) }
        portable.withUnsafeMutableBufferPointer { ck_gelu_portable($0.baseAddress!, $0.count) }
        for (i, w) in want.enumerated() {
            #expect(abs(Double(got[i]) - w) <= 2e-6 * max(1, abs(w)), "x = \(x[i]): \(got[i]) vs \(w)")
            #expect(abs(Double(portable[i]) - w) <= 2e-6 * max(1, abs(w)), "portable, x = \(x[i])")
        }
    }

    /// Softmax rows (dispatched and portable) against a double-precision reference, with all keys and with masked keys
    /// (which get exactly 0 and do not set the maximum).
    @Test(arguments: [1, 7, 8, 19])
    func softmaxMatchesReference(cols: Int) {
        let rows = 3
        let s: [Float] = (0..<(rows * cols)).map { Float(($0 * 37) % 23) * 0.7 - 6 }
        let mask: [Float] = (0..<cols).map { $0 % 3 == 2 ? 0 : 1 }
        for masked in [false, true] {
            var got = s, portable = s
            got.withUnsafeMutableBufferPointer { g in
                mask.withUnsafeBufferPointer { m in
                    Kernels.maskedSoftmax(g.baseAddress!, rows: rows, cols: cols, keyMask: m.baseAddress!, allKeys: !masked)
                }
            }
            portable.withUnsafeMutableBufferPointer { g in
                mask.withUnsafeBufferPointer { m in
                    ck_softmax_rows_portable(g.baseAddress!, Int32(rows), Int32(cols), masked ? m.baseAddress! : nil)
                }
            }
            for r in 0..<rows {
                let row = (0..<cols).map { Double(s[r * cols + $0]) }
                let keep = (0..<cols).map { !masked || mask[$0] != 0 }
                let mx = zip(row, keep).filter(\.1).map(\.0).max() ?? 0
                let e = (0..<cols).map { keep[$0] ? Foundation.exp(row[$0] - mx) : 0 }
                let total = e.reduce(0, +)
                for j in 0..<cols {
                    #expect(abs(Double(got[r * cols + j]) - e[j] / total) < 1e-6, "row \(r) col \(j) masked \(masked)")
                    #expect(abs(Double(portable[r * cols + j]) - e[j] / total) < 1e-6, "portable, row \(r) col \(j)")
                    if masked && mask[j] == 0 { #expect(got[r * cols + j] == 0) }
                }
            }
        }
    }
}
