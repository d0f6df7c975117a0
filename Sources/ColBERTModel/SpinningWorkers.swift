import CKernels
import Dispatch
import Foundation
import Synchronization

/// Helper threads for the forward pass's many short parallel sections.
///
/// A single query's forward pass splits about fifty sections of 10–300 µs between the workers.
/// Waking a parked thread for each (what `DispatchQueue.concurrentPerform` does) costs tens of
/// microseconds on a VM, as much as some sections take. These helpers instead spin for a short
/// while after each section, so back-to-back sections start without a wake-up, and park once the
/// encoder goes quiet.
///
/// One caller at a time owns the helpers; a second caller (or a nested call) is told so and
/// splits its work elsewhere.
final class SpinningWorkers: Sendable {
    private let core: Core
    /// Helper threads; a job runs on at most `helpers + 1` threads, the caller's included.
    let helpers: Int

    /// Starts `helpers` threads that spin `spinMicroseconds` after each job before parking.
    init(helpers: Int, spinMicroseconds: Int = 200) {
        self.helpers = max(0, helpers)
        self.core = Core(spinNanoseconds: UInt64(max(0, spinMicroseconds)) * 1000)
        for _ in 0..<self.helpers {
            let core = self.core
            let thread = Thread { core.helperLoop() }
            thread.name = "colbert-encoder"
            thread.start()
        }
    }

    deinit { core.stop() }

    /// Runs `body(part)` for every part in `0..<parts`, on the caller's thread and the helpers,
    /// returning when all parts are done. Returns false without running anything when another
    /// caller owns the helpers (or `parts` is out of range); the caller then splits its work
    /// some other way.
    func tryRun(_ parts: Int, _ body: (Int) -> Void) -> Bool {
        guard parts >= 1, parts <= Core.maxParts else { return false }
        return core.run(parts, body)
    }
}

/// The state the helper threads share with the owning caller.
///
/// The job's closure sits in a plain stored property: the owner writes it only while no helper
/// is inside a job (`inside == 0`) and before publishing the job's ticket; a helper reads it
/// only after claiming a part of that ticket. That ordering is what makes the unchecked
/// `Sendable` sound.
private final class Core: @unchecked Sendable {
    static let maxParts = 0xFFFF

    /// generation (32 bits) | parts (16 bits) | next unclaimed part (16 bits).
    private let ticket = Atomic<UInt64>(0)
    private let finished = Atomic<Int>(0)
    /// Helpers between noticing a job and leaving it.
    private let inside = Atomic<Int>(0)
    private let owned = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let condition = NSCondition()
    private let spinNanoseconds: UInt64
    private var body: ((Int) -> Void)?

    init(spinNanoseconds: UInt64) { self.spinNanoseconds = spinNanoseconds }

    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    func run(_ parts: Int, _ work: (Int) -> Void) -> Bool {
        guard owned.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        withoutActuallyEscaping(work) { work in
            body = work
            finished.store(0, ordering: .relaxed)
            let generation = (ticket.load(ordering: .relaxed) >> 32) &+ 1
            let fresh = (generation << 32) | (UInt64(parts) << 16)
            ticket.store(fresh, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            while let part = claim(generation) {
                work(part)
                finished.add(1, ordering: .releasing)
            }
            Self.wait(until: { finished.load(ordering: .acquiring) >= parts })
            // A helper that noticed the job may still hold the closure; it must let go before
            // the closure's lifetime ends here.
            Self.wait(until: { inside.load(ordering: .acquiring) == 0 })
            body = nil
        }
        owned.store(false, ordering: .releasing)
        return true
    }

    /// Spins until `done`; after ~100 µs it yields the core between checks, so that a helper
    /// that was preempted in the middle of its part (more runnable threads than cores) gets to
    /// finish it.
    private static func wait(until done: () -> Bool) {
        var spins = 0
        while !done() {
            spins += 1
            if spins < 4096 { ck_cpu_relax() } else { sched_yield() }
        }
    }

    /// The next unclaimed part of job `generation`, or nil when it has none left (or a newer
    /// job replaced it).
    private func claim(_ generation: UInt64) -> Int? {
        var t = ticket.load(ordering: .acquiring)
        while true {
            let parts = (t >> 16) & 0xFFFF, next = t & 0xFFFF
            guard t >> 32 == generation, next < parts else { return nil }
            let (exchanged, original) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            if exchanged { return Int(next) }
            t = original
        }
    }

    func helperLoop() {
        var seen = ticket.load(ordering: .acquiring) >> 32
        while !stopping.load(ordering: .relaxed) {
            let generation = waitForJob(after: seen)
            guard let generation else { return }
            seen = generation
            inside.add(1, ordering: .sequentiallyConsistent)
            help(generation)
            inside.subtract(1, ordering: .releasing)
        }
    }

    /// Runs parts of job `generation` until none are left. Kept out of line so the closure's
    /// reference is released before the caller leaves the job.
    @inline(never)
    private func help(_ generation: UInt64) {
        while let part = claim(generation) {
            if let body { body(part) }
            finished.add(1, ordering: .releasing)
        }
    }

    /// Spins, then parks, until a job newer than `seen` is published; nil when stopping.
    private func waitForJob(after seen: UInt64) -> UInt64? {
        let deadline = DispatchTime.now().uptimeNanoseconds &+ spinNanoseconds
        var spins = 0
        while true {
            let generation = ticket.load(ordering: .acquiring) >> 32
            if generation != seen { return generation }
            if stopping.load(ordering: .relaxed) { return nil }
            spins += 1
            if spins & 31 == 0, DispatchTime.now().uptimeNanoseconds > deadline {
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while ticket.load(ordering: .sequentiallyConsistent) >> 32 == seen,
                      !stopping.load(ordering: .sequentiallyConsistent) {
                    condition.wait()
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
                continue
            }
            ck_cpu_relax()
        }
    }
}
