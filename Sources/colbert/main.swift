import ColBERTCLI

// At top level, `ColBERTCommand.main()` binds to the synchronous overload; inside an async
// function it binds to AsyncParsableCommand's async one.
func runColBERT() async { await ColBERTCommand.main() }
await runColBERT()
