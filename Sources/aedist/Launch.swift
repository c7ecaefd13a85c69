import AEDistCore
import Foundation

/// Process-level setup that must happen before anything else runs.
enum Launch {
    /// When this process started (after any re-execution): --time-limit counts from here.
    nonisolated(unsafe) static var startTime = Date()
    /// When MPI_Init returned on this rank.
    nonisolated(unsafe) static var mpiStart: Date?

    /// The rank this process will have, read from the launcher's environment before MPI starts, so that a bad
    /// command line is reported once (by rank 0) rather than once per rank.
    static var rankFromEnvironment: Int {
        for name in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"] {
            if let value = ProcessInfo.processInfo.environment[name], let rank = Int(value) { return rank }
        }
        return 0
    }

    /// Debian's OpenBLAS can misdetect recent CPUs and fall back to slow generic kernels. OpenBLAS reads
    /// OPENBLAS_CORETYPE only when it loads, so when it chose a generic kernel on a CPU that has AVX2 or AVX-512,
    /// set the variable and re-execute this same process image. A user's own OPENBLAS_CORETYPE always wins.
    static func selectOptimizedBLASKernels() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, environment["AEDIST_BLAS_REEXEC"] == nil else { return }
        let generic = ["Prescott", "Core2", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood", "Banias", "Unknown", "generic"]
        guard generic.contains(where: { BLAS.coreName.caseInsensitiveCompare($0) == .orderedSame }) else { return }
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        let core: String
        if flags.contains("avx512f") && flags.contains("avx512vl") {
            core = flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        } else if flags.contains("avx2") && flags.contains("fma") {
            core = "Haswell"
        } else {
            return
        }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("AEDIST_BLAS_REEXEC", "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // execv returns only on failure; carry on with the slow kernels.
    }

    /// One BLAS thread per core this rank has to itself: ranks ≥ cores means one thread each, since
    /// oversubscribed BLAS threads only fight. OPENBLAS_NUM_THREADS or OMP_NUM_THREADS, when set, win.
    static func configureBLASThreads(ranksOnThisNode: Int, requested: Int?) {
        if let requested {
            BLAS.threads = requested
            return
        }
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_NUM_THREADS"] == nil, environment["OMP_NUM_THREADS"] == nil else { return }
        BLAS.threads = max(1, ProcessInfo.processInfo.processorCount / max(1, ranksOnThisNode))
    }
}
