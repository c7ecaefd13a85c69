import AEDistCore
import AEDistIO
import Foundation

extension Trainer {
    /// Collective: the state to start from, on every rank: a checkpoint's (resume) or fresh parameters from the
    /// seed, then rank 0's broadcast so that every replica starts bit-identical.
    func restoreOrInitialize() throws {
        let comm = communicator
        let checkpointPath: String?
        switch session.resume {
        case .none: checkpointPath = nil
        case .auto:
            // Rank 0 picks the newest checkpoint that passes verification; every rank then reads that one.
            let chosen = try comm.whileRootWorksAlone { try comm.together { comm.isRoot ? try newestIntactCheckpoint() ?? "" : "" } }
            let agreed = try comm.broadcast(chosen)
            checkpointPath = agreed.isEmpty ? nil : agreed
        case .path(let path): checkpointPath = path
        }
        if let checkpointPath {
            let checkpoint = try comm.together { try Checkpoint.read(from: checkpointPath, expectedLayout: model.layout) }
            model.parameters.copy(from: checkpoint.parameters)
            model.buffers.copy(from: checkpoint.buffers)
            try comm.together {
                guard checkpoint.config.model == config.model else {
                    var storedModel = config
                    storedModel.model = checkpoint.config.model
                    let differing = session.flagsThatDiffer(storedModel, config)
                    throw RunFailure("\(checkpointPath) was trained as \(try ModelArchitecture(checkpoint.config.model).description) with other model options (\(differing.joined(separator: ", "))) than this run's \(architecture.description); pass the options it was trained with (aedist inspect shows them), or a new --checkpoint-dir")
                }
                guard checkpoint.optimizerName == config.optimizer.kind.rawValue else {
                    throw RunFailure("\(checkpointPath) holds \(checkpoint.optimizerName) state, but this run uses --optimizer \(config.optimizer.kind.rawValue)")
                }
                for (name, buffer) in optimizer.state {
                    guard let stored = checkpoint.optimizerState.first(where: { $0.name == name }) else {
                        throw RunFailure("\(checkpointPath) has no optimizer state '\(name)' (it has: \(checkpoint.optimizerState.map(\.name).joined(separator: ", ")))")
                    }
                    buffer.copy(from: stored.buffer)
                }
            }
            optimizer.stepCount = checkpoint.optimizerStep
            progress = checkpoint.progress
            history = checkpoint.metrics
            model.codePenalty.sparsity?.restore(progress.sparsityEstimate)
            priorWallTime = history.last?.wallTime ?? 0
            lastCheckpoint = checkpointPath
            let sameBatches = checkpoint.config.schedule.batchSize == config.schedule.batchSize
                && checkpoint.config.schedule.seed == config.schedule.seed && checkpoint.config.data.path == config.data.path
                && checkpoint.config.data.trainDataset == config.data.trainDataset
                && checkpoint.config.data.valFraction == config.data.valFraction
            if progress.stepInEpoch > 0 && (!sameBatches || progress.stepInEpoch > schedule.stepsPerEpoch) {
                throw RunFailure("\(checkpointPath) stopped in the middle of epoch \(progress.epochsCompleted + 1) (after its step \(progress.stepInEpoch)); continuing it needs the same --batch-size, --seed and training data it used (batch \(checkpoint.config.schedule.batchSize), seed \(checkpoint.config.schedule.seed)), or resume from an epoch-end checkpoint instead")
            }
            if !sameBatches {
                console.warning("resuming with a different --batch-size, --seed or training data than \(checkpointPath) was trained with: the sample order will not continue the original run's")
            }
            if case .path = session.resume {
                // Resuming from anything but the folder's own latest checkpoint starts a new line of checkpoints
                // there: the ones it holds move aside, whole, rather than be mixed with, renamed over or pruned.
                let resolved = { (path: String) in (path as NSString).resolvingSymlinksInPath }
                let archived = try comm.together { () -> String? in
                    guard comm.isRoot, directory.latest.map(resolved) != resolved(checkpointPath) else { return nil }
                    return try directory.archiveEarlierRun()
                }
                if let archived { console.line("moved the checkpoints already in \(directory.path) to \(archived) before continuing from \(checkpointPath)") }
            }
            console.line("resumed from \(checkpointPath): epoch \(progress.epochsCompleted), step \(progress.globalStep), \(progress.samplesSeen) samples seen")
        } else {
            if session.resume == .auto { console.line("no checkpoint in \(directory.path) yet: starting fresh") }
            let archived = try comm.together { comm.isRoot ? try directory.archiveEarlierRun() : nil }
            if let archived {
                console.line("\(directory.path) held an earlier run's checkpoints: moved them to \(archived) (use --resume auto to continue a run instead)")
            }
            if comm.isRoot { model.initializeParameters(seed: config.schedule.seed) }
        }
        // Rank 0's state is the truth: broadcasting it makes every replica start bit-identical.
        try comm.broadcast(model.parameters)
        try comm.broadcast(model.buffers)
        for (_, buffer) in optimizer.state { try comm.broadcast(buffer) }
        try comm.together { if comm.isRoot { try directory.writeMetrics(history) } }
    }

    /// `latest.h5`'s target, or when that is damaged (truncated, failed checksum, inconsistent) the newest
    /// checkpoint that is intact, saying what was skipped. nil when the folder holds no checkpoint.
    private func newestIntactCheckpoint() throws -> String? {
        var candidates = directory.checkpointFiles.reversed().map { $0 }
        if let latest = directory.latest {
            candidates.removeAll { $0 == latest }
            candidates.insert(latest, at: 0)
        }
        guard !candidates.isEmpty else { return nil }
        for candidate in candidates {
            do {
                try Checkpoint.verify(candidate)
                return candidate
            } catch {
                console.warning("skipping damaged checkpoint \(candidate): \(userMessage(error))")
            }
        }
        throw RunFailure("no intact checkpoint in \(directory.path) (all \(candidates.count) failed verification); move them aside to start fresh")
    }
}
