import Foundation

/// What sparse autoencoders add to each sample's loss for its code: the L1 activity penalty λ·Σ|code| and the KL
/// sparsity penalty weight·Σ_j KL(ρ ‖ ρ̂_j) on sigmoid code units. The model applies both where the backward pass
/// crosses the code.
public struct CodePenalty {
    /// λ of the L1 activity penalty (0: off).
    public var l1: Float = 0
    public var sparsity: KLSparsity?

    public init(l1: Float = 0, sparsity: KLSparsity? = nil) {
        self.l1 = l1
        self.sparsity = sparsity
    }

    /// The penalties' share of the loss summed over `batch` code rows.
    func sum(code: UnsafePointer<Float>, batch: Int, codeSize: Int) -> Double {
        var total = 0.0
        if l1 > 0 {
            var magnitude = 0.0
            for i in 0..<(batch * codeSize) { magnitude += Double(abs(code[i])) }
            total += Double(l1) * magnitude
        }
        if let sparsity { total += sparsity.penalty * Double(batch) }
        return total
    }

    /// gradient += d(penalties)/d(code) for `batch` rows.
    func addGradient(code: UnsafePointer<Float>, into gradient: UnsafeMutablePointer<Float>, batch: Int, codeSize: Int) {
        if l1 > 0 {
            for i in 0..<(batch * codeSize) where code[i] != 0 { gradient[i] += code[i] > 0 ? l1 : -l1 }
        }
        if let sparsity {
            let unitGradient = sparsity.unitGradient.pointer
            for row in 0..<batch { for j in 0..<codeSize { gradient[row * codeSize + j] += unitGradient[j] } }
        }
    }
}

/// KL sparsity: ρ̂_j is the mean activation of code unit j. In data-parallel training ρ̂ must not depend on how the
/// batch is split, so it is the mean over the previous step's global batch, whose activation sums travel in that
/// step's all-reduce: no extra collective, the same at any number of ranks. Until the first step has been seen,
/// ρ̂ = ρ (no penalty).
public final class KLSparsity {
    public let target: Double
    public let weight: Double
    public let units: Int
    /// Per unit: weight·(−ρ/ρ̂ + (1−ρ)/(1−ρ̂)), the penalty's gradient for each sample's activation.
    let unitGradient: FlatBuffer
    public private(set) var estimate: [Double]

    public init(target: Double, weight: Double, units: Int) {
        self.target = target
        self.weight = weight
        self.units = units
        unitGradient = FlatBuffer(count: units)
        estimate = [Double](repeating: target, count: units)
    }

    /// weight·Σ_j KL(ρ ‖ ρ̂_j) at the current estimate.
    public var penalty: Double {
        let rho = target
        return weight * estimate.reduce(0) { sum, rhoHat in
            let p = min(max(rhoHat, 1e-6), 1 - 1e-6)
            return sum + rho * log(rho / p) + (1 - rho) * log((1 - rho) / (1 - p))
        }
    }

    /// Adds each unit's activations over `batch` code rows to `sums` (which then travel in the step's all-reduce).
    public func accumulate(code: UnsafePointer<Float>, batch: Int, into sums: UnsafeMutablePointer<Float>) {
        for row in 0..<batch { for j in 0..<units { sums[j] += code[row * units + j] } }
    }

    /// ρ̂ from the global batch's activation sums.
    public func update(activationSums: UnsafePointer<Float>, samples: Int) {
        guard samples > 0 else { return }
        restore((0..<units).map { Double(activationSums[$0]) / Double(samples) })
    }

    /// Sets ρ̂ (from a batch, or from a checkpoint so a resumed run continues exactly).
    public func restore(_ values: [Double]) {
        guard values.count == units else { return }
        for j in 0..<units {
            let rhoHat = min(max(values[j], 1e-6), 1 - 1e-6)
            estimate[j] = rhoHat
            unitGradient[j] = Float(weight * (-target / rhoHat + (1 - target) / (1 - rhoHat)))
        }
    }
}
