import Dispatch
import Foundation
import Synchronization
import Testing
@testable import ColBERTModel

/// The spinning helpers must run every part of every job exactly once, whether they are spinning
/// or parked when the job arrives, and must turn away a second owner instead of mixing jobs.
@Suite struct SpinningWorkersTests {
    /// Per-part hit counters, one row per job.
    final class Hits: Sendable {
        let counts: Mutex<[Int]>
        init(_ n: Int) { counts = Mutex(Array(repeating: 0, count: n)) }
        func hit(_ i: Int) { counts.withLock { $0[i] += 1 } }
        func count(_ i: Int) -> Int { counts.withLock { $0[i] } }
        func allOnce() -> Bool { counts.withLock { $0.allSatisfy { $0 == 1 } } }
    }

    @Test func everyPartOnceAcrossManyJobs() {
        let pool = SpinningWorkers(helpers: 3)
        let jobs = 3000
        let hits = Hits(jobs * 5)
        for j in 0..<jobs {
            let parts = 1 + j % 5
            let ran = pool.tryRun(parts) { p in hits.hit(j * 5 + p) }
            #expect(ran)
        }
        for j in 0..<jobs {
            for p in 0..<5 {
                let expected = p < 1 + j % 5 ? 1 : 0
                #expect(hits.count(j * 5 + p) == expected, "job \(j) part \(p)")
            }
        }
    }

    @Test func jobsAfterTheHelpersParked() {
        // A spin of 0 µs parks the helpers at once, so each job has to wake them.
        let pool = SpinningWorkers(helpers: 2, spinMicroseconds: 0)
        let hits = Hits(200 * 3)
        for j in 0..<200 {
            if j % 20 == 0 { usleep(2000) }
            #expect(pool.tryRun(3) { p in hits.hit(j * 3 + p) })
        }
        #expect(hits.allOnce())
    }

    @Test func aNestedCallIsTurnedAway() {
        let pool = SpinningWorkers(helpers: 1)
        let nested = Atomic(0)
        let ran = pool.tryRun(2) { _ in
            if !pool.tryRun(2, { _ in }) { nested.add(1, ordering: .relaxed) }
        }
        #expect(ran)
        #expect(nested.load(ordering: .relaxed) == 2)
        #expect(!pool.tryRun(0) { _ in })
    }

    @Test func concurrentCallersThroughWorkSplit() {
        // Two threads splitting work at once: one gets the helpers, the other Dispatch's pool;
        // either way every part runs once.
        let split = WorkSplit(workers: 2)
        let rounds = 500
        let hits = Hits(2 * rounds * 2)
        DispatchQueue.concurrentPerform(iterations: 2) { caller in
            for r in 0..<rounds {
                split.run(2) { p in hits.hit((caller * rounds + r) * 2 + p) }
            }
        }
        #expect(hits.allOnce())
    }

    @Test func droppedPoolsStopTheirThreads() throws {
        // Dropped pools must stop their threads: 20 pools of 2 helpers would leave 40 behind.
        func threadCount() -> Int? { try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count }
        let before = threadCount()
        for _ in 0..<20 {
            let pool = SpinningWorkers(helpers: 2)
            let hits = Hits(3)
            #expect(pool.tryRun(3) { p in hits.hit(p) })
            #expect(hits.allOnce())
        }
        guard let before else { return }  // no /proc (not Linux): the jobs above still ran
        var after = threadCount() ?? 0
        for _ in 0..<100 where after > before + 20 {
            usleep(10_000)
            after = threadCount() ?? 0
        }
        #expect(after <= before + 20, "threads before \(before), after \(after)")
    }
}
