import ColBERTServer

/// The server's stored document, named apart from the index's type of the same name.
typealias ServerStoredDocument = StoredDocument
