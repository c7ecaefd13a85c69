import AEDistCore
import Foundation

/// The KL sparsity penalty weight·Σ_j KL(ρ ‖ ρ̂_j) on sigmoid code units, with ρ̂_j the mean activation of unit j.
/// In data-parallel training ρ̂ must not depend on how the batch is split, so it is the mean over the previous
/// step's global batch, whose activation sums travel in that step's all-reduce: no extra collective, the same at
/// any number of ranks. Until the first step has been seen, ρ̂ = ρ (no penalty).
final class KLSparsity {
    let target: Double
    let weight: Double
    let units: Int
    /// Per unit: weight·(−ρ/ρ̂ + (1−ρ)/(1−ρ̂)), the penalty's gradient for each sample's activation.
    let unitGradient: FlatBuffer
    private(set) var estimate: [Double]

    init(target: Double, weight: Double, units: Int) {
        self.target = target
        self.weight = weight
        self.units = units
        unitGradient = FlatBuffer(count: units)
        estimate = [Double](repeating: target, count: units)
    }

    /// weight·Σ_j KL(ρ ‖ ρ̂_j) at the current estimate.
    var penalty: Double {
        let rho = target
        return weight * estimate.reduce(0) { sum, rhoHat in
            let p = min(max(rhoHat, 1e-6), 1 - 1e-6)
            return sum + rho * log(rho / p) + (1 - rho) * log((1 - rho) / (1 - p))
        }
    }

    func update(activationSums: UnsafePointer<Float>, samples: Int) {
        guard samples > 0 else { return }
        restore((0..<units).map { Double(activationSums[$0]) / Double(samples) })
    }

    /// Sets ρ̂ (from a batch, or from a checkpoint so a resumed run continues exactly).
    func restore(_ values: [Double]) {
        guard values.count == units else { return }
        for j in 0..<units {
            let rhoHat = min(max(values[j], 1e-6), 1 - 1e-6)
            estimate[j] = rhoHat
            unitGradient[j] = Float(weight * (-target / rhoHat + (1 - target) / (1 - rhoHat)))
        }
    }
}
