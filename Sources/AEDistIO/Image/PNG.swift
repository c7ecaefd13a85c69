import AEDistCore
import CPNG
import Foundation

/// An 8-bit grey or RGB picture, written to PNG by libpng.
public struct Picture {
    public let width: Int
    public let height: Int
    public let channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, background: UInt8 = 255) {
        self.width = width
        self.height = height
        self.channels = channels
        pixels = [UInt8](repeating: background, count: width * height * channels)
    }

    public subscript(x: Int, y: Int) -> [UInt8] {
        get { Array(pixels[((y * width + x) * channels)..<((y * width + x + 1) * channels)]) }
        set {
            guard x >= 0, y >= 0, x < width, y < height else { return }
            for c in 0..<channels { pixels[(y * width + x) * channels + c] = newValue[c % newValue.count] }
        }
    }

    /// Written atomically, so a reader never sees half a picture.
    public func writePNG(to path: String) throws {
        try AtomicFile.write(to: path) { temporary in
            var message = [CChar](repeating: 0, count: 256)
            let status = pixels.withUnsafeBufferPointer {
                aedpng_write(temporary, Int32(width), Int32(height), Int32(channels), $0.baseAddress, &message, Int32(message.count))
            }
            guard status == 0 else { throw PictureError(description: "cannot write \(path): \(String(cString: message))") }
        }
    }
}

public struct PictureError: UserFacingError {
    public let description: String
}
