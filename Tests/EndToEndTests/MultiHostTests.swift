import Foundation
import XCTest

/// Ranks on two hosts that talk over TCP only: the hosts are network namespaces joined by a veth pair, and mpirun
/// reaches the second one through an rsh agent that runs `ip netns exec`. Training and checkpoints must behave
/// exactly as on one host.
final class MultiHostTests: XCTestCase {
    struct TestHosts {
        let namespaces: [String]
        let addresses: [String]
        let agent: String
        let ip: String

        /// Creates the two hosts, or throws XCTSkip saying why it cannot here.
        static func create() throws -> TestHosts {
            let tag = String(getpid() % 100_000)
            let namespaces = ["aedist\(tag)a", "aedist\(tag)b"]
            let links = ["aed\(tag)a", "aed\(tag)b"]
            let addresses = ["10.77.\(getpid() % 200).1", "10.77.\(getpid() % 200).2"]
            let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
            guard let ip else { throw XCTSkip("no `ip` command (Debian's iproute2) to create test hosts") }
            let steps: [[String]] = [
                ["netns", "add", namespaces[0]], ["netns", "add", namespaces[1]],
                ["link", "add", links[0], "type", "veth", "peer", "name", links[1]],
                ["link", "set", links[0], "netns", namespaces[0]], ["link", "set", links[1], "netns", namespaces[1]],
                ["-n", namespaces[0], "addr", "add", "\(addresses[0])/24", "dev", links[0]],
                ["-n", namespaces[1], "addr", "add", "\(addresses[1])/24", "dev", links[1]],
                ["-n", namespaces[0], "link", "set", links[0], "up"], ["-n", namespaces[1], "link", "set", links[1], "up"],
                ["-n", namespaces[0], "link", "set", "lo", "up"], ["-n", namespaces[1], "link", "set", "lo", "up"],
            ]
            let hosts = TestHosts(namespaces: namespaces, addresses: addresses, agent: Harness.temporaryDirectory() + "/netns-agent", ip: ip)
            for step in steps {
                let outcome = try Harness.run(ip, step, timeout: 10)
                if outcome.status != 0 {
                    hosts.remove()
                    throw XCTSkip("cannot create network namespaces here (`ip \(step.joined(separator: " "))`: \(outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); needs root")
                }
            }
            // mpirun calls the agent as `agent HOST COMMAND…`, like ssh; it runs COMMAND on that host.
            let agent = """
            #!/bin/sh
            host=$1; shift
            case "$host" in
              \(addresses[0])) ns=\(namespaces[0]) ;;
              \(addresses[1])) ns=\(namespaces[1]) ;;
              *) echo "netns-agent: unknown host $host" >&2; exit 1 ;;
            esac
            exec \(ip) netns exec "$ns" /bin/sh -c "$*"

            """
            try agent.write(toFile: hosts.agent, atomically: true, encoding: .utf8)
            chmod(hosts.agent, 0o755)
            return hosts
        }

        func remove() {
            for namespace in namespaces { _ = try? Harness.run(ip, ["netns", "del", namespace], timeout: 10) }
        }

        /// mpirun started on the first host, one rank per host, TCP only (no shared memory between hosts).
        func aedist(_ arguments: [String]) throws -> Harness.Outcome {
            let subnet = addresses[0].split(separator: ".").prefix(3).joined(separator: ".") + ".0/24"
            return try Harness.run(ip, ["netns", "exec", namespaces[0], Harness.mpirun,
                                                    "--mca", "plm_rsh_agent", agent,
                                                    "-H", "\(addresses[0]):1,\(addresses[1]):1", "-n", "2",
                                                    "--mca", "btl", "tcp,self",
                                                    "--mca", "btl_tcp_if_include", subnet, "--mca", "oob_tcp_if_include", subnet,
                                                    Harness.binary] + arguments, timeout: 180)
        }
    }

    func testTrainingAndCheckpointsAcrossTwoHostsOverTCPMatchOneHost() throws {
        let hosts = try TestHosts.create()
        defer { hosts.remove() }
        let oneHost = Harness.temporaryDirectory(), twoHosts = Harness.temporaryDirectory()
        let arguments = ["train", "--deterministic", "--epochs", "2"]
        assertSucceeded(try Harness.aedist(ranks: 2, arguments + ["--checkpoint-dir", oneHost]))
        let distributed = try hosts.aedist(arguments + ["--checkpoint-dir", twoHosts])
        assertSucceeded(distributed)
        XCTAssertTrue(distributed.stdout.contains("replicas identical"), distributed.stdout)
        let comparison = try Harness.python(["compare", "\(oneHost)/latest.h5", "\(twoHosts)/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("bit_identical True"), comparison.stdout)

        // Resume across hosts continues the same run.
        let resumed = try hosts.aedist(arguments.dropLast() + ["3", "--resume", "auto", "--checkpoint-dir", twoHosts])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("resumed from \(twoHosts)/ckpt-e0002-s0000032.h5"), resumed.stdout)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(twoHosts)/latest.h5"]))
    }
}
