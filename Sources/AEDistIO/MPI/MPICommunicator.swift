import AEDistCore
import CMPI
import Foundation

public struct MPIError: UserFacingError {
    public let description: String
}

/// The world communicator of Open MPI. Errors come back as Swift errors (the shim sets MPI_ERRORS_RETURN), so the
/// trainer can report them and end every rank itself.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localSize: Int

    /// MPI_Init can happen once per process; later calls return the same world.
    public static func world() throws -> MPICommunicator {
        if let shared = MPICommunicator.shared { return shared }
        if aedmpi_is_initialized() == 0 {
            try check(aedmpi_init(), "MPI_Init")
        }
        let world = MPICommunicator(rank: Int(aedmpi_rank()), size: Int(aedmpi_size()), localSize: Int(aedmpi_local_size()))
        MPICommunicator.shared = world
        return world
    }

    nonisolated(unsafe) private static var shared: MPICommunicator?

    private init(rank: Int, size: Int, localSize: Int) {
        self.rank = rank
        self.size = size
        self.localSize = max(1, localSize)
    }

    /// Ends MPI for this process; every rank must call it, after its last collective.
    public static func finalize() {
        if aedmpi_is_initialized() != 0 && aedmpi_is_finalized() == 0 { _ = aedmpi_finalize() }
    }

    /// Tears the whole job down at once, for a failure one rank cannot tell the others about.
    public static func abort(exitCode: Int32) -> Never {
        aedmpi_abort(exitCode)
        Foundation.exit(exitCode)
    }

    private static func check(_ code: Int32, _ operation: String) throws {
        guard code != 0 else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        aedmpi_error_string(code, &buffer, Int32(buffer.count))
        throw MPIError(description: "\(operation) failed: \(String(cString: buffer))")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try Self.check(aedmpi_allreduce_sum_float(base, Int64(values.count)), "MPI_Allreduce")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try Self.check(aedmpi_allreduce_sum_double(base, Int64(values.count)), "MPI_Allreduce")
    }

    public func allReduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try Self.check(aedmpi_allreduce_max_double(base, Int64(values.count)), "MPI_Allreduce")
    }

    public func allReduceMin(_ values: UnsafeMutableBufferPointer<Int64>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try Self.check(aedmpi_allreduce_min_int64(base, Int64(values.count)), "MPI_Allreduce")
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let base = bytes.baseAddress, size > 1 else { return }
        try Self.check(aedmpi_bcast_bytes(base, Int64(bytes.count), Int32(root)), "MPI_Bcast")
    }

    public func allGather(_ value: UInt64) throws -> [UInt64] {
        guard size > 1 else { return [value] }
        var values = [UInt64](repeating: 0, count: size)
        try Self.check(aedmpi_allgather_uint64(value, &values), "MPI_Allgather")
        return values
    }
}
