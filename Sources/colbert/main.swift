import ColBERTCLI

await ColBERTCommand.main()
