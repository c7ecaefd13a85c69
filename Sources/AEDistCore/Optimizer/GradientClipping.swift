/// Rescales the first `count` gradients to global L2 norm `limit` when larger (PyTorch's `clip_grad_norm_`). Every
/// rank holds the same averaged gradient, so each computes the same norm and the same scale.
public func clipGradientNorm(_ gradients: FlatBuffer, count: Int, to limit: Float) {
    var squares: Double = 0
    for i in 0..<count { squares += Double(gradients[i]) * Double(gradients[i]) }
    let norm = Float(squares.squareRoot())
    guard norm > limit else { return }
    let factor = limit / norm
    for i in 0..<count { gradients.pointer[i] *= factor }
}
