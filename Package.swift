// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // Specialise generic code (the pool state machine, NIO) across modules in release builds.
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
    // Exclusivity is checked statically and in debug builds (the tests); release builds skip the dynamic checks.
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

// Linux only: the agent's loop is built on epoll and io_uring (Sources/CPoolIO), and server connections on libpq.
let package = Package(
    name: "poolagent",
    products: [
        .executable(name: "poolagent", targets: ["poolagent"]),
        .executable(name: "poolctl", targets: ["poolctl"]),
        .library(name: "PoolAgent", targets: ["PoolAgent"]),
        // For the parser fuzz targets in Tests/Fuzz/Parsers.
        .library(name: "PGWire", targets: ["PGWire"]),
        .library(name: "ControlRPC", targets: ["ControlRPC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CJansson", pkgConfig: "jansson", providers: [.apt(["libjansson-dev"])]),
        .target(name: "CJanssonShim", dependencies: ["CJansson"]),
        // OpenSSL: the same library libpq links, to carry on the TLS sessions libpq negotiates with servers.
        .target(name: "CPoolIO", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(
            name: "PGWire",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(name: "PoolCore", swiftSettings: strict),
        .target(name: "ControlRPC", dependencies: ["CJansson", "CJanssonShim"], swiftSettings: strict),
        .target(
            name: "PoolAgent",
            dependencies: [
                "CLibPQ", "CPoolIO", "PGWire", "PoolCore", "ControlRPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            // The OpenRPC document of protocol/, compiled in for rpc.discover.
            resources: [.embedInCode("Resources/openrpc.json")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "poolagent",
            dependencies: [
                "PoolAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "poolctl",
            dependencies: [
                "ControlRPC",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "PGWireTests", dependencies: ["PGWire"], swiftSettings: strict),
        .testTarget(name: "PoolCoreTests", dependencies: ["PoolCore"], swiftSettings: strict),
        .testTarget(name: "ControlRPCTests", dependencies: ["ControlRPC"], swiftSettings: strict),
        .testTarget(
            name: "PoolAgentTests",
            dependencies: ["PoolAgent", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["CLibPQ", "ControlRPC"],
            exclude: ["Drivers"],
            swiftSettings: strict
        ),
    ]
)
