import AEDistCore
import AEDistIO
import Foundation

/// Pictures people look at: samples beside their reconstructions, and loss curves.
public enum Pictures {
    /// Rows of images (e.g. originals above reconstructions), each image H×W×C values in [0, 1], scaled up by
    /// `zoom` with a white gap between images, as the Keras tutorial draws them with matplotlib.
    public static func grid(_ imageRows: [[[Float]]], shape: [Int], zoom: Int = 2) -> Picture {
        let height = shape[0], width = shape.count > 1 ? shape[1] : 1, channels = shape.count > 2 ? shape[2] : 1
        let gap = 2
        let columns = imageRows.map(\.count).max() ?? 0
        var picture = Picture(width: gap + columns * (width * zoom + gap), height: gap + imageRows.count * (height * zoom + gap),
                              channels: channels == 3 ? 3 : 1)
        for (row, images) in imageRows.enumerated() {
            for (column, image) in images.enumerated() {
                let left = gap + column * (width * zoom + gap), top = gap + row * (height * zoom + gap)
                for y in 0..<(height * zoom) {
                    for x in 0..<(width * zoom) {
                        let base = ((y / zoom) * width + x / zoom) * channels
                        let value = (0..<min(channels, 3)).map { UInt8(max(0, min(1, image[base + $0])) * 255) }
                        picture[left + x, top + y] = value
                    }
                }
            }
        }
        return picture
    }

    /// Training and validation loss per epoch: blue and orange lines over a grid, with the axes' ranges written in.
    public static func lossCurves(_ history: [EpochMetrics], lossName: String) -> Picture {
        var picture = Picture(width: 640, height: 400, channels: 3)
        let left = 70, right = 620, top = 30, bottom = 350
        let values = history.flatMap { [$0.trainLoss, $0.valLoss] }.filter { $0.isFinite && abs($0) < 1e30 }
        var low = values.min() ?? 0, high = values.max() ?? 1
        if !(high - low > max(1e-12, abs(low) * 1e-6)) { (low, high) = (low - 0.5, low + 0.5) }
        let epochs = max(history.count, 2)
        func point(_ index: Int, _ value: Double) -> (Int, Int) {
            (left + (right - left) * index / (epochs - 1), bottom - Int(Double(bottom - top) * (value - low) / (high - low)))
        }
        for tick in 0...4 {
            let y = bottom - (bottom - top) * tick / 4
            line(&picture, from: (left, y), to: (right, y), color: [225, 225, 225])
            text(&picture, String(format: "%.4g", low + (high - low) * Double(tick) / 4), at: (4, y - 3), color: [60, 60, 60])
        }
        line(&picture, from: (left, top), to: (left, bottom), color: [0, 0, 0])
        line(&picture, from: (left, bottom), to: (right, bottom), color: [0, 0, 0])
        text(&picture, "1", at: (left - 2, bottom + 8), color: [60, 60, 60])
        text(&picture, "\(history.last?.epoch ?? 1)", at: (right - 8, bottom + 8), color: [60, 60, 60])
        text(&picture, "epoch", at: ((left + right) / 2 - 15, bottom + 20), color: [0, 0, 0])
        let series: [(String, KeyPath<EpochMetrics, Double>, [UInt8])] = [("train \(lossName)", \.trainLoss, [31, 119, 180]),
                                                                        ("val \(lossName)", \.valLoss, [255, 127, 14])]
        for (index, (name, path, color)) in series.enumerated() {
            let points = history.enumerated().filter { $0.element[keyPath: path].isFinite }.map { point($0.offset, $0.element[keyPath: path]) }
            for (a, b) in zip(points, points.dropFirst()) { line(&picture, from: a, to: b, color: color, thickness: 2) }
            if points.count == 1 { line(&picture, from: points[0], to: points[0], color: color, thickness: 3) }
            line(&picture, from: (right - 150, top + 10 + index * 14), to: (right - 130, top + 10 + index * 14), color: color, thickness: 2)
            text(&picture, name, at: (right - 124, top + 7 + index * 14), color: [0, 0, 0])
        }
        return picture
    }

    static func line(_ picture: inout Picture, from a: (Int, Int), to b: (Int, Int), color: [UInt8], thickness: Int = 1) {
        let steps = max(abs(b.0 - a.0), abs(b.1 - a.1), 1)
        for step in 0...steps {
            let x = a.0 + (b.0 - a.0) * step / steps, y = a.1 + (b.1 - a.1) * step / steps
            for dx in 0..<thickness { for dy in 0..<thickness { picture[x + dx, y + dy] = color } }
        }
    }

    /// A 5×7 pixel font, enough for numbers and the labels above.
    static func text(_ picture: inout Picture, _ string: String, at origin: (Int, Int), color: [UInt8]) {
        var x = origin.0
        for character in string.lowercased() {
            if let rows = glyphs[character] {
                for (dy, bits) in rows.enumerated() {
                    for dx in 0..<5 where bits & (1 << (4 - dx)) != 0 { picture[x + dx, origin.1 + dy] = color }
                }
            }
            x += 6
        }
    }

    static let glyphs: [Character: [UInt8]] = [
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12], ".": [0, 0, 0, 0, 0, 12, 12], "-": [0, 0, 0, 31, 0, 0, 0],
        "+": [0, 4, 4, 31, 4, 4, 0], "a": [0, 0, 14, 1, 15, 17, 15], "b": [16, 16, 22, 25, 17, 17, 30],
        "c": [0, 0, 14, 16, 16, 17, 14], "e": [0, 0, 14, 17, 31, 16, 14], "h": [16, 16, 22, 25, 17, 17, 17],
        "i": [4, 0, 12, 4, 4, 4, 14], "l": [12, 4, 4, 4, 4, 4, 14], "m": [0, 0, 26, 21, 21, 17, 17],
        "n": [0, 0, 22, 25, 17, 17, 17], "o": [0, 0, 14, 17, 17, 17, 14], "p": [0, 0, 30, 17, 30, 16, 16],
        "r": [0, 0, 22, 25, 16, 16, 16], "s": [0, 0, 14, 16, 14, 1, 30], "t": [8, 8, 28, 8, 8, 9, 6],
        "v": [0, 0, 17, 17, 17, 10, 4],
    ]
}
