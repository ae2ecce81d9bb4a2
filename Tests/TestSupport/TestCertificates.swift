import Foundation

/// A certificate authority of the test's own and a server certificate it signed, for
/// `127.0.0.1` and `localhost`, made with the `openssl` command in a directory of their own.
///
/// Clients verify against `authorityFile` (`sslrootcert`); a second `TestCertificates` is an
/// authority the server's certificate does not chain to.
public struct TestCertificates: Sendable {
    public let directory: URL
    /// The authority's certificate: what a client trusts.
    public var authorityFile: URL { directory.appendingPathComponent("ca.crt") }
    public var serverCertificateFile: URL { directory.appendingPathComponent("server.crt") }
    public var serverKeyFile: URL { directory.appendingPathComponent("server.key") }

    /// `names`: the server certificate's subjectAltName entries.
    public static func make(names: [String] = ["IP:127.0.0.1", "DNS:localhost"]) throws -> TestCertificates {
        let directory = try temporaryDirectory(prefix: "tls-")
        let certificates = TestCertificates(directory: directory)
        let extensions = directory.appendingPathComponent("server.ext")
        try "subjectAltName = \(names.joined(separator: ","))\nextendedKeyUsage = serverAuth\n"
            .write(to: extensions, atomically: true, encoding: .utf8)
        // P-256 keys: quick to make, and what managed providers commonly serve.
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try certificates.openssl(["req", "-x509"] + key + [
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "3", "-subj", "/CN=dreamnet-healthd test authority",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try certificates.openssl(["req"] + key + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"])
        try certificates.openssl([
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "3", "-extfile", "server.ext", "-out", "server.crt",
        ])
        return certificates
    }

    public func destroy() {
        try? FileManager.default.removeItem(at: directory)
    }

    private func openssl(_ arguments: [String]) throws {
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/openssl"), arguments, currentDirectory: directory, timeout: .seconds(30))
        guard result.status == 0 else {
            throw TestSupportError("openssl \(arguments.first ?? "") failed (\(result.status)): \(result.stderr)")
        }
    }
}
