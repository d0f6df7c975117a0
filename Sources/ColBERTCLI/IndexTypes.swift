import ColBERTIndex

/// The index module's stored document, named apart from the server's type of the same name.
typealias IndexStoredDocument = StoredDocument
