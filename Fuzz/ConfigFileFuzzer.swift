// libFuzzer harness for the configuration. Not a SwiftPM target: scripts/fuzz compiles it
// together with Sources/HealthCore (-sanitize=fuzzer,address) and runs it.
//
// The first byte of an input says where the rest goes: a config file, one key's flag value, a
// file after a line holding a password, or a password inside a connection string given to
// the scrubber. A broken property traps, and libFuzzer keeps the input that did it.

/// The password planted in every configuration: no error may repeat it.
private let password = "Sentinel-fz-PW"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let selector = bytes.first else { return 0 }
    let text = String(decoding: bytes.dropFirst(), as: UTF8.self)
    let keys = ConfigKey.allCases
    let key = keys[Int(selector >> 2) % keys.count]

    if selector & 3 == 3 {
        checkScrubber(text)
        return 0
    }
    var layers = ConfigurationLayers(
        environment: ["DATABASE_URL": "postgresql://env:\(password)@h/db"],
        credentials: ["database-password": password]
    )
    var file = ""
    do throws(ConfigurationError) {
        switch selector & 3 {
        case 0:
            file = text
        case 1:
            layers.setFlag(key, text)
        default:
            file = "database_url = 'postgresql://u:\(password)@h/db'\n\(key.rawValue) = \(text)\n"
        }
        try layers.parseFile(file, path: "/etc/fuzz.conf")
        checkValid(try layers.resolve())
    } catch {
        checkClear(error, file: file)
    }
    return 0
}

/// A failure names the key or the line, stays short and printable, and holds no password.
private func checkClear(_ error: ConfigurationError, file: String) {
    let description = error.description
    precondition(error.key != nil || error.source != nil, "names neither key nor source: \(description)")
    precondition(!description.utf8.contains(password.utf8), "password in: \(description)")
    precondition(description.utf8.count <= 1_000, "\(description.utf8.count) bytes long")
    precondition(
        !description.unicodeScalars.contains { $0.properties.generalCategory == .control },
        "control character in: \(description.debugDescription)"
    )
    if let source = error.source, source.hasPrefix("/etc/fuzz.conf:") {
        let line = Int(source.dropFirst("/etc/fuzz.conf:".count)) ?? 0
        precondition(line >= 1 && line <= lineCount(file), "line \(line) of \(lineCount(file))")
    }
}

private func checkValid(_ config: DaemonConfiguration) {
    precondition(config.interval >= .milliseconds(100) && config.interval <= .seconds(86_400))
    precondition(config.timeout >= .milliseconds(10) && config.timeout <= .seconds(60))
    precondition((1...1_000).contains(config.fall) && (1...1_000).contains(config.rise))
    precondition((1...1_000).contains(config.flapThreshold) && config.flapWindow >= .seconds(1))
    precondition((1...10_000_000).contains(config.spoolLimit))
    precondition(!config.socketPath.isEmpty && config.socketPath.utf8.count <= 103)
    for text in [config.socketPath, config.stateDirectory, config.alertLogPath, config.databaseURL ?? "", config.eventsDatabaseURL ?? ""] {
        precondition(!text.utf8.contains(0), "NUL in \(text.debugDescription)")
    }
    _ = config.detectionBound
    _ = config.stalenessBound
}

/// `text` as a password: masked wherever a message repeats it, whatever its neighbours.
private func checkScrubber(_ text: String) {
    let delimiters: Set<UInt8> = [UInt8(ascii: "@"), UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "*"), UInt8(ascii: "\"")]
    guard text.utf8.count >= 4, !text.utf8.contains(where: delimiters.contains) else { return }
    let scrubber = SecretScrubber(connectionString: "postgresql://u:\(text)@h/db")
    let scrubbed = scrubber.scrub("failed for u:\(text)\u{301} and \(text)")
    precondition(!scrubbed.utf8.contains(text.utf8), "not masked: \(scrubbed.debugDescription)")
    let quoted = SecretScrubber.maskQuoted("missing \"=\" after \"\(text)\" in connection info string")
    precondition(!quoted.utf8.contains(text.utf8), "not masked: \(quoted.debugDescription)")
}

/// Lines as an editor counts them: ended by LF, CRLF or CR.
private func lineCount(_ text: String) -> Int {
    var lines = 1
    var previous: UInt8 = 0
    for byte in text.utf8 {
        if byte == UInt8(ascii: "\n") && previous != UInt8(ascii: "\r") || byte == UInt8(ascii: "\r") { lines += 1 }
        previous = byte
    }
    return lines
}
