import ColBERTCLI
import ColBERTCore

// Before anything else: a process whose OpenBLAS fell back to its slowest kernels on a CPU newer
// than the library re-executes itself once with the right core type (see BLAS.coreTypeOverride).
BLAS.reexecWithFasterCoreTypeIfNeeded()

// At top level, `ColBERTCommand.main()` binds to the synchronous overload; inside an async
// function it binds to AsyncParsableCommand's async one.
func runColBERT() async { await ColBERTCommand.main() }
await runColBERT()
