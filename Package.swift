// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "colbert-swift",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "colbert", targets: ["colbert"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // C wrappers over Debian's liblmdb-dev and libopenblas-dev.
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),

        // Hot loops that need AVX2/FMA, picked at run time with a portable fallback.
        // Optimised in debug builds too, so that tests run the kernels at the speed they ship at.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O2"])]),

        // Shared numeric kernels and types: BLAS wrapper, residual codec, token embeddings, JSON lines,
        // latency percentiles.
        .target(name: "ColBERTCore", dependencies: [
            "COpenBLAS", "CKernels",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        // WordPiece tokenizer read from a Hugging Face tokenizer.json.
        .target(name: "ColBERTTokenizer"),
        // Checkpoint loading (safetensors, configs) and the BERT + Dense forward pass with PyLate's rules.
        .target(name: "ColBERTModel", dependencies: ["ColBERTCore", "ColBERTTokenizer", "COpenBLAS", "CKernels"]),
        // The LMDB-backed compressed index: k-means, build, add, delete, verify, stats.
        .target(name: "ColBERTIndex", dependencies: [
            "ColBERTCore", "CLMDB", "COpenBLAS", "CKernels",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Centroid-pruned (WARP-style) and exhaustive MaxSim, BEIR metrics.
        .target(name: "ColBERTSearch", dependencies: ["ColBERTCore", "COpenBLAS", "CKernels"]),
        // Line-delimited JSON over a Unix domain socket.
        .target(name: "ColBERTServer", dependencies: [
            "ColBERTCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOExtras", package: "swift-nio-extras"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Subcommands of the `colbert` executable; the executable itself stays thin.
        .target(name: "ColBERTCLI", dependencies: [
            "ColBERTCore", "ColBERTTokenizer", "ColBERTModel", "ColBERTIndex", "ColBERTSearch", "ColBERTServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .executableTarget(name: "colbert", dependencies: ["ColBERTCLI", "ColBERTCore"]),

        .testTarget(name: "ColBERTCoreTests", dependencies: ["ColBERTCore", "CKernels"]),
        .testTarget(name: "ColBERTTokenizerTests", dependencies: ["ColBERTTokenizer"]),
        .testTarget(name: "ColBERTModelTests", dependencies: ["ColBERTModel", "ColBERTCore", "ColBERTTokenizer", "CKernels"]),
        .testTarget(name: "ColBERTIndexTests", dependencies: ["ColBERTIndex", "ColBERTCore"]),
        .testTarget(name: "ColBERTSearchTests", dependencies: ["ColBERTSearch", "ColBERTCore"]),
        .testTarget(name: "ColBERTServerTests", dependencies: [
            "ColBERTServer", "ColBERTCore",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "ColBERTCLITests", dependencies: ["ColBERTCLI"]),
    ]
)
