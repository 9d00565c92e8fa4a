// swift-tools-version:6.0
// libFuzzer targets for the parsers that read untrusted bytes. Built and run by scripts/fuzz --parsers
// (with -sanitize=fuzzer,address); not part of the main package's build.
import Foundation
import PackageDescription

// A path dependency is known by its folder's name, which is the clone's name.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../..").standardized
let poolagent = root.lastPathComponent.lowercased()

let package = Package(
    name: "poolagent-fuzz",
    dependencies: [
        .package(path: root.path),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "FuzzSupport"),
        .executableTarget(name: "FuzzStartupPacket", dependencies: [
            "FuzzSupport",
            .product(name: "PGWire", package: poolagent), .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "FuzzMessageScanner", dependencies: [
            "FuzzSupport",
            .product(name: "PGWire", package: poolagent), .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "FuzzSCRAM", dependencies: [
            "FuzzSupport",
            .product(name: "PoolAgent", package: poolagent), .product(name: "PGWire", package: poolagent),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "FuzzRPCLine", dependencies: ["FuzzSupport", .product(name: "ControlRPC", package: poolagent)]),
        .executableTarget(name: "FuzzAuthFile", dependencies: ["FuzzSupport", .product(name: "PoolAgent", package: poolagent)]),
        .executableTarget(name: "FuzzAdminCommand", dependencies: ["FuzzSupport", .product(name: "PoolAgent", package: poolagent)]),
        .executableTarget(name: "FuzzSessionEffects", dependencies: ["FuzzSupport", .product(name: "PGWire", package: poolagent)]),
    ]
)
