// swift-tools-version:6.0
import Foundation
import PackageDescription

// Layers, one way only: C shims (the only code that sees C headers) → AEDistCore (pure math: model, loss,
// optimizer, batch schedule) → AEDistIO (HDF5 data and checkpoints, MPI communicator) → AEDistTraining (the
// training loop, inspect) → aedist (the command line).
let openMPIInclude = ["-I/usr/lib/x86_64-linux-gnu/openmpi/include", "-I/usr/lib/x86_64-linux-gnu/openmpi/include/openmpi"]

// The hot loops (activations, losses, the optimizer, im2col) are plain Swift that the compiler vectorizes; for the
// baseline x86-64 target it may use only 128-bit SSE. When the building machine has AVX2 and FMA, compile for
// Haswell's instruction set (AVX2 and FMA: every x86 server CPU since 2015). AEDIST_TARGET_CPU overrides: "x86-64" for a binary that runs on
// any x86-64, "native" for the building CPU's full instruction set (e.g. AVX-512), when the nodes match it.
func targetCPUFlags() -> [SwiftSetting] {
    #if arch(x86_64)
    let environment = Context.environment
    if let cpu = environment["AEDIST_TARGET_CPU"], !cpu.isEmpty { return [.unsafeFlags(["-target-cpu", cpu])] }
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let flags = Set(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ") ?? [])
    return flags.isSuperset(of: ["avx2", "fma", "bmi2", "f16c", "movbe"]) ? [.unsafeFlags(["-target-cpu", "haswell"])] : []
    #else
    return []
    #endif
}

let package = Package(
    name: "aedist",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "aedist", targets: ["aedist"]),
        // A measuring tool for benchmarks and tests (LD_PRELOAD); aedist itself never links it.
        .library(name: "AEDistHeapCounter", type: .dynamic, targets: ["AEDistHeapCounter"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenMPI", path: "Sources/Shims/COpenMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CHDF5Library", path: "Sources/Shims/CHDF5Library", pkgConfig: "hdf5-serial",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/Shims/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .target(name: "CMPI", dependencies: ["COpenMPI"], path: "Sources/Shims/CMPI"),
        .target(name: "CHDF5", dependencies: ["CHDF5Library"], path: "Sources/Shims/CHDF5"),
        .target(name: "CBLAS", dependencies: ["COpenBLAS"], path: "Sources/Shims/CBLAS"),
        .target(name: "CSignals", path: "Sources/Shims/CSignals"),
        .target(name: "CHeapAllocations", path: "Sources/Shims/CHeapAllocations"),
        .target(name: "AEDistHeapCounter", path: "Sources/Tools/AEDistHeapCounter"),
        .systemLibrary(name: "CPNGLibrary", path: "Sources/Shims/CPNGLibrary", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .target(name: "CPNG", dependencies: ["CPNGLibrary"], path: "Sources/Shims/CPNG"),

        .target(name: "AEDistCore", dependencies: ["CBLAS"], swiftSettings: targetCPUFlags()),
        .target(name: "AEDistIO", dependencies: ["AEDistCore", "CMPI", "CHDF5", "CPNG"], swiftSettings: targetCPUFlags()),
        .target(name: "AEDistTraining", dependencies: ["AEDistCore", "AEDistIO", "CSignals", "CHeapAllocations", .product(name: "Yams", package: "Yams")],
                resources: [.copy("Resources/mnist5k.h5")], swiftSettings: targetCPUFlags()),
        .executableTarget(name: "aedist", dependencies: [
            "AEDistTraining", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "AEDistCoreTests", dependencies: ["AEDistCore"]),
        .testTarget(name: "AEDistIOTests", dependencies: ["AEDistIO", "AEDistTraining"]),
        // The trainer in-process at several ranks (InProcessGroup): rank agreement, failures, stops and drift in seconds.
        .testTarget(name: "AEDistTrainingTests", dependencies: ["AEDistTraining", "AEDistIO", "AEDistCore"]),
        .testTarget(name: "EndToEndTests"),
    ],
    swiftLanguageModes: [.v5]
)
