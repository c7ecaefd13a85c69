import AEDistCore
import AEDistIO
import Foundation
import XCTest

/// The one way aedist writes files: the old file or the whole new one, never a part, and no litter.
final class AtomicFileTests: XCTestCase {
    func contents(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    func testAFailedWriteLeavesTheOldFileAndNoTemporary() throws {
        let folder = temporaryFolder(), path = folder + "/out.csv"
        try AtomicFile.write(Data("old\n".utf8), to: path)
        struct Interrupted: Error {}
        XCTAssertThrowsError(try AtomicFile.write(to: path) { temporary in
            try Data("half a ne".utf8).write(to: URL(fileURLWithPath: temporary))
            throw Interrupted()
        })
        XCTAssertEqual(contents(path), "old\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["out.csv"], "no temporary left behind")
        try AtomicFile.write(Data("new\n".utf8), to: path)
        XCTAssertEqual(contents(path), "new\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["out.csv"])
    }

    func testLinksAreReplacedInOneStep() throws {
        let folder = temporaryFolder()
        try AtomicFile.write(Data("a".utf8), to: folder + "/a")
        try AtomicFile.write(Data("b".utf8), to: folder + "/b")
        try AtomicFile.link(folder + "/latest", to: "a")
        XCTAssertEqual(contents(folder + "/latest"), "a")
        try AtomicFile.link(folder + "/latest", to: "b")
        XCTAssertEqual(contents(folder + "/latest"), "b")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), ["a", "b", "latest"])
    }

    func testAnUnwritableFolderIsNamed() {
        XCTAssertThrowsError(try AtomicFile.write(Data("x".utf8), to: "/nonexistent-folder/out.csv")) {
            XCTAssertTrue("\($0)".contains("/nonexistent-folder/out.csv"), "\($0)")
        }
    }
}
