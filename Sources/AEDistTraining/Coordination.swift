import AEDistCore

/// A failure that every rank has agreed on: the message of the lowest-numbered rank that failed. Every rank throws
/// it at the same point, so all of them leave together and none is left waiting in a collective.
public struct RunFailure: UserFacingError {
    public let message: String
    public var description: String { message }

    public init(_ message: String) {
        self.message = message
    }
}

extension Communicator {
    /// Runs `body` on every rank, then agrees (one small all-reduce) on whether it worked anywhere. If any rank
    /// failed, every rank throws the same `RunFailure`.
    public func together<T>(_ body: () throws -> T) throws -> T {
        let outcome = Result { try body() }
        var localError: Error?
        if case .failure(let error) = outcome { localError = error }
        try agreeOnFailure(localError)
        return try outcome.get()
    }

    /// Collective: if any rank passes an error, every rank throws the lowest failing rank's message.
    public func agreeOnFailure(_ localError: Error?) throws {
        var firstFailing = [Int64(localError == nil ? size : rank)]
        try firstFailing.withUnsafeMutableBufferPointer { try allReduceMin($0) }
        let failingRank = Int(firstFailing[0])
        guard failingRank < size else { return }
        try shareFailure(localError, from: failingRank)
    }

    /// Collective, once every rank knows `failingRank` failed: hands its message to all and throws it.
    public func shareFailure(_ localError: Error?, from failingRank: Int) throws -> Never {
        let message = try broadcast(rank == failingRank ? localError.map(userMessage) ?? "unknown error" : "", root: failingRank)
        throw RunFailure(failingRank > 0 ? "rank \(failingRank): \(message)" : message)
    }
}
