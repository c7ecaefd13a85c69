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

    /// Settings OpenBLAS reads only when it loads, so they are put in the environment and this same process image
    /// re-executed (once; a user's own settings always win):
    /// - Debian's OpenBLAS can misdetect recent CPUs and fall back to slow generic kernels: when it chose a generic
    ///   kernel on a CPU with AVX2 or AVX-512, OPENBLAS_CORETYPE names the right one.
    /// - OpenBLAS starts its worker threads as it loads, before main can flush denormals to zero, and a thread keeps
    ///   the floating-point mode it was created with. Loading with one thread (OPENBLAS_NUM_THREADS=1) and adding
    ///   workers after the flush (`configureBLASThreads`) gives every BLAS thread FTZ/DAZ; it also spares a rank
    ///   whose BLAS runs single-threaded an idle worker that spins at start-up on a core another rank needs.
    static func prepareBLASLibrary() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["AEDIST_BLAS_REEXEC"] == nil else { return }
        var changed = false
        if environment["OPENBLAS_NUM_THREADS"] == nil && environment["OMP_NUM_THREADS"] == nil {
            setenv("OPENBLAS_NUM_THREADS", "1", 1)
            setenv("AEDIST_BLAS_THREADS_DEFAULT", "1", 1)
            changed = true
        }
        if environment["OPENBLAS_CORETYPE"] == nil, let core = optimizedCoreForMisdetectedCPU() {
            setenv("OPENBLAS_CORETYPE", core, 1)
            changed = true
        }
        guard changed else { return }
        setenv("AEDIST_BLAS_REEXEC", "1", 1)
        // The binary's own path rather than /proc/self/exe, so the process keeps its name ("aedist" in ps and top).
        let binary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/proc/self/exe"
        execv(binary, CommandLine.unsafeArgv)
        // execv returns only on failure; carry on with what OpenBLAS chose.
    }

    /// The OpenBLAS kernel family for this CPU when OpenBLAS fell back to a generic one, else nil.
    private static func optimizedCoreForMisdetectedCPU() -> String? {
        let generic = ["Prescott", "Core2", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood", "Banias", "Unknown", "generic"]
        guard generic.contains(where: { BLAS.coreName.caseInsensitiveCompare($0) == .orderedSame }) else { return nil }
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if flags.contains("avx512f") && flags.contains("avx512vl") { return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    /// One BLAS thread per core this rank has to itself: the CPUs of its affinity mask (taskset, a Slurm cpuset,
    /// mpirun's binding) divided among the ranks on this node that share that same set, since oversubscribed BLAS
    /// threads only fight. --blas-threads, or OPENBLAS_NUM_THREADS / OMP_NUM_THREADS when the user set them, win.
    /// Collective. Call after `BLAS.flushDenormalsToZero()`: the workers it starts inherit that mode.
    static func configureBLASThreads(communicator: Communicator, requested: Int?) throws {
        let allowed = BLAS.allowedCores
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let key = FNV1a(String(cString: host) + "/\(allowed?.maskHash ?? 0)").value
        let sharing = max(1, try communicator.allGather(key).filter { $0 == key }.count)
        if let requested {
            BLAS.threads = requested
            BLAS.threadChoice = " (--blas-threads)"
            return
        }
        let environment = ProcessInfo.processInfo.environment
        let userSetThreads = environment["AEDIST_BLAS_THREADS_DEFAULT"] == nil
            && (environment["OPENBLAS_NUM_THREADS"] != nil || environment["OMP_NUM_THREADS"] != nil)
        guard !userSetThreads else {
            BLAS.threadChoice = " (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS)"
            return
        }
        let cores = allowed?.count ?? ProcessInfo.processInfo.activeProcessorCount
        BLAS.threads = max(1, cores / sharing)
        BLAS.threadChoice = " (\(cores) core\(cores == 1 ? "" : "s") in this rank's CPU set, shared by \(sharing) rank\(sharing == 1 ? "" : "s"))"
    }
}
